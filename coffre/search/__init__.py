"""FHIR search planned onto blind index look-ups, and exact filtering after decryption."""

from coffre.search.criteria import Criterion, parse_criteria
from coffre.search.index import index_entries, matches, query_keys

__all__ = ["Criterion", "index_entries", "matches", "parse_criteria", "query_keys"]
