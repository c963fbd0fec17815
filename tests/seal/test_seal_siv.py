"""Deterministic sealing: the same bytes each time, and nothing opens that was not sealed
under the key and for the purpose."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coffre.exceptions import SealError
from coffre.seal.siv import KEY_BYTES, DeterministicSeal

KEY = bytes(range(KEY_BYTES))
SEAL = DeterministicSeal(KEY, b"purpose")


@given(st.binary(max_size=512))
def test_a_sealed_text_opens_to_itself_and_seals_alike_each_time(data: bytes) -> None:
    sealed = SEAL.close(data)
    assert SEAL.open(sealed) == data
    assert SEAL.close(data) == sealed
    assert len(data) < 16 or data not in sealed  # shorter ones may occur by chance


@given(st.binary(min_size=1, max_size=256), st.data())
def test_any_changed_byte_fails_to_open(data: bytes, draw: st.DataObject) -> None:
    sealed = bytearray(SEAL.close(data))
    position = draw.draw(st.integers(0, len(sealed) - 1))
    sealed[position] ^= draw.draw(st.integers(1, 255))
    with pytest.raises(SealError):
        SEAL.open(bytes(sealed))


@pytest.mark.parametrize(
    "other",
    [DeterministicSeal(bytes(KEY_BYTES), b"purpose"), DeterministicSeal(KEY, b"another purpose")],
    ids=["another key", "another purpose"],
)
def test_another_key_or_purpose_opens_nothing(other: DeterministicSeal) -> None:
    with pytest.raises(SealError):
        other.open(SEAL.close(b"an export job"))


@pytest.mark.parametrize("sealed", [b"", b"short"])
def test_too_short_to_be_sealed_fails_alike(sealed: bytes) -> None:
    with pytest.raises(SealError):
        SEAL.open(sealed)


def test_a_key_of_another_size_is_refused() -> None:
    with pytest.raises(ValueError, match="64 bytes"):
        DeterministicSeal(bytes(32), b"purpose")
