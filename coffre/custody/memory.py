"""Keys held in memory only: for tests and throw-away vaults."""

from __future__ import annotations

import threading
import uuid

from coffre.custody.base import WrappedKey
from coffre.exceptions import CustodyError, SealError
from coffre.seal import random_key, unwrap_key, wrap_key
from coffre.seal.signing import Ed25519Signer


def next_kek_id(existing: list[str]) -> str:
    """``kek-N`` one past the highest held: an id is never given twice, since the active
    key, the highest, is never retired."""
    numbers = [int(kek.rsplit("-", 1)[1]) for kek in existing if kek.rsplit("-", 1)[-1].isdigit()]
    return f"kek-{max(numbers, default=0) + 1}"


def check_retirable(kek_id: str, held: list[str], active: str) -> None:
    """Refuse to retire the active key-encryption key, or one the custody does not hold."""
    if kek_id == active:
        raise CustodyError(f"{kek_id} is the active key-encryption key: rotate first")
    if kek_id not in held:
        raise CustodyError(
            f"the custody holds no key-encryption key {kek_id}; it holds {', '.join(held)}"
            " (as 'coffre keys list' names them)"
        )


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
        # Server threads wrap and unwrap while one of them may take up a rotation.
        self._lock = threading.Lock()
        self._log_signer = Ed25519Signer(log_seed or random_key())
        self._origin = origin or new_origin()

    def log_signer(self) -> Ed25519Signer:
        return self._log_signer

    def log_origin(self) -> str:
        return self._origin

    def check(self) -> None:
        """Keys in memory are always there."""

    def holder(self) -> str:
        return "the keys in memory"

    def root_secret(self) -> bytes:
        return self._root

    def _reload(self) -> None:
        """Take up key-encryption keys another process added or retired (none here)."""

    def wrap(self, data_key: bytes) -> WrappedKey:
        with self._lock:
            self._reload()
            active, kek = self._active, self._keks[self._active]
        return WrappedKey(active, wrap_key(kek, data_key))

    def unwrap(self, wrapped: WrappedKey) -> bytes:
        with self._lock:
            if wrapped.kek_id not in self._keks:
                self._reload()
            kek = self._keks.get(wrapped.kek_id)
        if kek is None:
            raise SealError()
        return unwrap_key(kek, wrapped.wrapped)

    def kek_ids(self) -> list[str]:
        with self._lock:
            self._reload()
            return list(self._keks)

    def active_kek(self) -> str:
        with self._lock:
            self._reload()
            return self._active

    def add_kek(self) -> str:
        with self._lock:
            kek_id = next_kek_id(list(self._keks))
            self._keks = {**self._keks, kek_id: random_key()}
            self._active = kek_id
        return kek_id

    def retire_kek(self, kek_id: str) -> None:
        with self._lock:
            check_retirable(kek_id, list(self._keks), self._active)
            self._keks = {kek: key for kek, key in self._keks.items() if kek != kek_id}
