"""The blind tokens a record is stored with, and a search looks up.

A blind token is the parameter's domain (8 bytes: which type and parameter) followed by
2 bytes of the keyed hash of an index key, so that distinct values of one parameter
share tokens (see docs/leakage.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

from coffre.seal import PurposeKeys
from coffre.search.extract import index_values
from coffre.search.parameters import parameters_for
from coffre.search.plan import PRESENT, value_keys
from coffre.search.values import Value
from coffre.storage.base import TOKEN_BYTES

DOMAIN_BYTES = 8
VALUE_BYTES = TOKEN_BYTES - DOMAIN_BYTES
VALUE_TOKENS_CACHED = 8192
"""Index values whose tokens a process keeps, some 650 bytes each. More would hardly
help: indexing 9,562 Synthea resources, 4,096 kept values served 63% of the look-ups,
65,536 served 65%."""


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
    these parameters): a parameter with a value is present, and each value has the keys
    ``plan.value_keys`` gives, each blinded."""
    resource_type = resource["resourceType"]
    tokens = set()
    for param, items in index_values(resource, only=only).items():
        if items:  # an element without a value (only its extensions) is no value
            tokens.add(blind(keys, resource_type, param, PRESENT))
        for value in items:
            tokens.update(_value_tokens(keys, resource_type, param, type(value).__name__, value))
    return sorted(tokens)


@lru_cache(maxsize=VALUE_TOKENS_CACHED)
def _value_tokens(
    keys: PurposeKeys, resource_type: str, parameter: str, kind: str, value: Value
) -> tuple[bytes, ...]:
    """Kept: a value comes back in many resources (a code, a town, a day, a name) and in
    each version of a record; its tokens cost some 2 µs a key, and a name has twenty
    keys. ``kind``: the value's type, as two kinds of values may be equal tuples."""
    domain = _domain(keys, resource_type, parameter)
    return tuple(
        domain + keys.short_index(resource_type, parameter, key, VALUE_BYTES)
        for key in value_keys(value)
    )


WRITE_SET_PARAMETERS = frozenset({"_id", "_lastUpdated"})
"""The search parameters whose values a write sets itself: the id (of a create), and
``meta.lastUpdated``."""


@cache
def _own_parameters(resource_type: str, later: frozenset[str]) -> frozenset[str]:
    return frozenset(parameters_for(resource_type)) - later


@dataclass(frozen=True, slots=True)
class OwnTokens:
    """The blind tokens of a resource's own values, all but those of the parameters
    ``later`` (the write-set ones at least), computed before its write: the write lock
    then only adds those of its id and time, and of any other parameter ``later`` names.

    The resource must not change before its write, besides its id, ``meta``'s server
    fields and the values of the parameters ``later``."""

    resource_type: str
    tokens: frozenset[bytes]
    later: frozenset[str] = WRITE_SET_PARAMETERS


def write_tokens(
    keys: PurposeKeys, resource: dict[str, Any], own_tokens: OwnTokens | None
) -> list[bytes]:
    """A resource's index tokens, those of its own values taken from ``own_tokens`` if
    they were computed ahead."""
    if own_tokens is None:
        return index_tokens(keys, resource)
    if own_tokens.resource_type != resource["resourceType"]:
        raise ValueError("index tokens computed ahead for another resource type")
    written = index_tokens(keys, resource, own_tokens.later)
    return sorted(own_tokens.tokens.union(written))


def own_tokens(
    keys: PurposeKeys, resource: dict[str, Any], later: frozenset[str] = WRITE_SET_PARAMETERS
) -> OwnTokens:
    """The index tokens of a valid resource that its write will not change: all but
    those of the parameters ``later`` (and of the write-set ones)."""
    resource_type = resource["resourceType"]
    later = later | WRITE_SET_PARAMETERS
    only = _own_parameters(resource_type, later)
    return OwnTokens(resource_type, frozenset(index_tokens(keys, resource, only)), later)
