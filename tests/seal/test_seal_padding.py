"""The padding of sealed bodies: few lengths, the same JSON, exactly undone."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from coffre.fhir import json
from coffre.seal.padding import pad, padded_length, unpad

SOME_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=40,
)


@given(value=SOME_JSON)
def test_a_padded_body_is_the_same_json_and_unpads_to_itself(value: object) -> None:
    body = json.canonical(value)
    padded = pad(body)
    assert orjson.loads(padded) == orjson.loads(body)
    assert unpad(padded) == body and len(padded) == padded_length(len(body))


@given(length=st.integers(min_value=0, max_value=1 << 26))
def test_a_length_is_padded_by_at_most_256_bytes_or_an_eighth(length: int) -> None:
    padded = padded_length(length)
    assert length <= padded <= max(length + 255, length * 9 // 8) or padded == 256
    assert padded % 256 == 0


def test_bodies_that_differ_by_a_name_s_length_show_one_length() -> None:
    """Two centres' Slots, 479 and 489 bytes, seal to bodies of one size."""
    assert padded_length(479) == padded_length(489) == 512
    assert len({padded_length(n) for n in range(4097, 8193)}) == 16
