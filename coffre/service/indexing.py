"""The blind tokens a record is stored with, and a search looks up.

A blind token is the parameter's domain (8 bytes: which type and parameter) followed by
2 bytes of the keyed hash of an index key, so that distinct values of one parameter
share tokens (see docs/leakage.md).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from coffre.seal import PurposeKeys
from coffre.search.extract import index_values
from coffre.search.plan import index_keys
from coffre.storage.base import TOKEN_BYTES

DOMAIN_BYTES = 8
VALUE_BYTES = TOKEN_BYTES - DOMAIN_BYTES


@lru_cache(maxsize=8192)
def _domain(keys: PurposeKeys, resource_type: str, parameter: str) -> bytes:
    return keys.index(resource_type, parameter, "\x00domain")[:DOMAIN_BYTES]


def blind(keys: PurposeKeys, resource_type: str, parameter: str, key: str) -> bytes:
    """The token of an index key: the parameter's domain, then 2 bytes of the key's hash."""
    value = keys.short_index(resource_type, parameter, key, VALUE_BYTES)
    return _domain(keys, resource_type, parameter) + value


def index_tokens(
    keys: PurposeKeys, resource: dict[str, Any], only: frozenset[str] | None = None
) -> list[bytes]:
    """The distinct blind tokens a current resource is stored with (``only``: those of
    these parameters)."""
    resource_type = resource["resourceType"]
    domains: dict[str, bytes] = {}  # a dict look-up, where _domain's cache hashes the keys
    tokens = set()
    for param, key in index_keys(index_values(resource, only=only)):
        domain = domains.get(param)
        if domain is None:
            domain = domains[param] = _domain(keys, resource_type, param)
        tokens.add(domain + keys.short_index(resource_type, param, key, VALUE_BYTES))
    return sorted(tokens)
