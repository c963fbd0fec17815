"""Wrapping data keys under a key-encryption key (AES key wrap with padding, RFC 5649)."""

from __future__ import annotations

from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap_with_padding,
    aes_key_wrap_with_padding,
)

from coffre.exceptions import SealError


def wrap_key(kek: bytes, key: bytes) -> bytes:
    return aes_key_wrap_with_padding(kek, key)


def unwrap_key(kek: bytes, wrapped: bytes) -> bytes:
    try:
        return aes_key_unwrap_with_padding(kek, wrapped)
    except (InvalidUnwrap, ValueError):
        raise SealError() from None
