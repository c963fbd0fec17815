"""Ed25519 signing keys, for the ledger's checkpoints and witness cosignatures (RFC 8032).

The ledger sees these only through its ``Signer`` and ``Verifier`` protocols, so a key
held in an HSM can take the place of ``Ed25519Signer``.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ED25519_SEED_BYTES = 32
ED25519_PUBLIC_KEY_BYTES = 32


class Ed25519Signer:
    """An Ed25519 private key, from its 32-byte seed."""

    __slots__ = ("_key", "_public_key")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != ED25519_SEED_BYTES:
            raise ValueError("an Ed25519 seed is 32 bytes")
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self._public_key = self._key.public_key().public_bytes_raw()

    @classmethod
    def generate(cls) -> Ed25519Signer:
        return cls(os.urandom(ED25519_SEED_BYTES))

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte public key."""
        return self._public_key

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def __repr__(self) -> str:
        return f"Ed25519Signer(public_key={self._public_key.hex()})"


class Ed25519Verifier:
    """An Ed25519 public key, from its raw 32 bytes."""

    __slots__ = ("_key", "_public_key")

    def __init__(self, public_key: bytes) -> None:
        if len(public_key) != ED25519_PUBLIC_KEY_BYTES:
            raise ValueError("an Ed25519 public key is 32 bytes")
        self._key = Ed25519PublicKey.from_public_bytes(public_key)
        self._public_key = public_key

    @property
    def public_key(self) -> bytes:
        return self._public_key

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            return False
        return True
