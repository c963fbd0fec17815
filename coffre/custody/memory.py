"""Keys held in memory only: for tests and throw-away vaults."""

from __future__ import annotations

import uuid

from coffre.custody.base import WrappedKey
from coffre.exceptions import SealError
from coffre.seal import random_key, unwrap_key, wrap_key
from coffre.seal.signing import Ed25519Signer


def new_origin() -> str:
    """A log name unique to a vault: checkpoints of two vaults can never be confused."""
    return f"coffre.vault/{uuid.uuid4()}"


class MemoryCustodian:
    def __init__(
        self,
        root: bytes | None = None,
        kek: bytes | None = None,
        log_seed: bytes | None = None,
        origin: str | None = None,
    ) -> None:
        self._root = root or random_key()
        self._keks = {"kek-1": kek or random_key()}
        self._active = "kek-1"
        self._log_signer = Ed25519Signer(log_seed or random_key())
        self._origin = origin or new_origin()

    def log_signer(self) -> Ed25519Signer:
        return self._log_signer

    def log_origin(self) -> str:
        return self._origin

    def root_secret(self) -> bytes:
        return self._root

    def wrap(self, data_key: bytes) -> WrappedKey:
        return WrappedKey(self._active, wrap_key(self._keks[self._active], data_key))

    def unwrap(self, wrapped: WrappedKey) -> bytes:
        kek = self._keks.get(wrapped.kek_id)
        if kek is None:
            raise SealError()
        return unwrap_key(kek, wrapped.wrapped)
