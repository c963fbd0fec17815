"""The bounded cache of unwrapped data keys: the least recently used go first."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coffre.service.keycache import KeyCache


def test_the_least_recently_used_key_is_dropped() -> None:
    cache = KeyCache(2)
    cache.put(b"a", b"1")
    cache.put(b"b", b"2")
    assert cache.get(b"a") == b"1"  # now b is the least recently used
    cache.put(b"c", b"3")
    assert (cache.get(b"a"), cache.get(b"b"), cache.get(b"c")) == (b"1", None, b"3")
    cache.forget(b"a")
    assert cache.get(b"a") is None and len(cache) == 1


def test_a_cache_holds_at_least_one_key() -> None:
    with pytest.raises(ValueError, match="at least one"):
        KeyCache(0)


@given(st.integers(1, 5), st.lists(st.tuples(st.sampled_from("abcdefg"), st.booleans())))
def test_it_holds_the_capacity_most_recently_used(
    capacity: int, uses: list[tuple[str, bool]]
) -> None:
    """Against a plain model: a list of keys, most recent last."""
    cache, model = KeyCache(capacity), list[str]()
    for name, write in uses:
        comp = name.encode()
        if write:
            cache.put(comp, comp * 2)
        elif cache.get(comp) is None:
            assert name not in model
            continue
        model = [*(n for n in model if n != name), name][-capacity:]
    assert len(cache) == len(model)
    assert all(cache.get(n.encode()) == n.encode() * 2 for n in model)
