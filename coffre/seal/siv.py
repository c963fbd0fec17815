"""Deterministic sealing (AES-SIV, RFC 5297) of the small descriptions that travel in
URLs, such as a bulk export's job: the same data always seals to the same bytes (whose
hash can name it), and without the key nothing of it can be read, changed or made.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from coffre.exceptions import SealError

KEY_BYTES = 64
"""AES-256-SIV: two 256-bit keys."""


class DeterministicSeal:
    """Seals and opens under one key, bound to ``associated`` (what the bytes are for)."""

    def __init__(self, key: bytes, associated: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"an AES-256-SIV key is {KEY_BYTES} bytes")
        self._cipher = AESSIV(key)
        self._associated = [associated]

    def close(self, data: bytes) -> bytes:
        return self._cipher.encrypt(data, self._associated)

    def open(self, sealed: bytes) -> bytes:
        try:
            return self._cipher.decrypt(sealed, self._associated)
        except (InvalidTag, ValueError):
            raise SealError() from None
