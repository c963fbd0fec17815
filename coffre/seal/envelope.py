"""The sealed body of a record: AES-256-GCM with a random 96-bit nonce.

The associated data binds the ciphertext to where it lives (location, version,
compartment, time): a ciphertext moved, replayed under another version or swapped with
another patient's fails to open. Every failure is the same ``SealError``.
"""

from __future__ import annotations

from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from coffre.exceptions import SealError
from coffre.seal.entropy import random_bytes

NONCE_BYTES = 12


class Envelope(Protocol):
    """Closes plaintext under a data key and opens it again."""

    def close(self, key: bytes, plaintext: bytes, associated: bytes) -> bytes: ...

    def open(self, key: bytes, sealed: bytes, associated: bytes) -> bytes: ...


class AeadEnvelope:
    """nonce || AES-256-GCM(ciphertext || tag). The production envelope."""

    def __init__(self) -> None:
        self._ciphers: dict[bytes, AESGCM] = {}

    def _cipher(self, key: bytes) -> AESGCM:
        cipher = self._ciphers.get(key)
        if cipher is None:
            cipher = self._ciphers[key] = AESGCM(key)
        return cipher

    def close(self, key: bytes, plaintext: bytes, associated: bytes) -> bytes:
        nonce = random_bytes(NONCE_BYTES)
        return nonce + self._cipher(key).encrypt(nonce, plaintext, associated)

    def open(self, key: bytes, sealed: bytes, associated: bytes) -> bytes:
        try:
            return self._cipher(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated)
        except (InvalidTag, ValueError):
            raise SealError() from None


class PlainEnvelope:
    """No encryption at all: only for the benchmarks' plaintext baseline, never a vault."""

    def close(self, key: bytes, plaintext: bytes, associated: bytes) -> bytes:
        return plaintext

    def open(self, key: bytes, sealed: bytes, associated: bytes) -> bytes:
        return sealed
