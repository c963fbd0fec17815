"""FHIR search planned onto blind index look-ups, and exact filtering after decryption."""

from coffre.search.criteria import Criterion, check_criteria, parse_criteria

__all__ = ["Criterion", "check_criteria", "parse_criteria"]
