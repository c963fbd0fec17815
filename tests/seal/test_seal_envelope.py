"""The record envelope: what opens, and everything that must not."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coffre.exceptions import SealError
from coffre.seal import AeadEnvelope, random_key, unwrap_key, wrap_key

KEY = random_key()
envelope = AeadEnvelope()


@given(plaintext=st.binary(max_size=4096), associated=st.binary(max_size=96))
def test_a_sealed_body_opens_to_its_plaintext(plaintext: bytes, associated: bytes) -> None:
    assert envelope.open(KEY, envelope.close(KEY, plaintext, associated), associated) == plaintext


@given(
    plaintext=st.binary(min_size=1, max_size=512),
    position=st.integers(min_value=0),
    bit=st.integers(0, 7),
)
def test_any_flipped_bit_fails_to_open(plaintext: bytes, position: int, bit: int) -> None:
    sealed = bytearray(envelope.close(KEY, plaintext, b"where"))
    sealed[position % len(sealed)] ^= 1 << bit
    with pytest.raises(SealError):
        envelope.open(KEY, bytes(sealed), b"where")


@given(associated=st.binary(max_size=64), other=st.binary(max_size=64))
def test_a_body_moved_elsewhere_fails_to_open(associated: bytes, other: bytes) -> None:
    sealed = envelope.close(KEY, b'{"resourceType":"Patient"}', associated)
    if other != associated:
        with pytest.raises(SealError):
            envelope.open(KEY, sealed, other)


def test_another_key_fails_to_open() -> None:
    sealed = envelope.close(KEY, b"secret", b"")
    with pytest.raises(SealError):
        envelope.open(random_key(), sealed, b"")


def test_the_same_plaintext_never_seals_twice_the_same() -> None:
    assert envelope.close(KEY, b"same", b"") != envelope.close(KEY, b"same", b"")


def test_a_truncated_body_fails_to_open() -> None:
    with pytest.raises(SealError):
        envelope.open(KEY, b"short", b"")


@given(data_key=st.binary(min_size=16, max_size=64))
def test_wrapped_keys_unwrap_under_their_kek_only(data_key: bytes) -> None:
    kek = random_key()
    wrapped = wrap_key(kek, data_key)
    assert data_key not in wrapped
    assert unwrap_key(kek, wrapped) == data_key
    with pytest.raises(SealError):
        unwrap_key(random_key(), wrapped)
