"""The one seam between Coffre and whatever holds its keys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from coffre.seal.signing import Ed25519Signer


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A data key as the storage keeps it: wrapped, with the name of the key that wrapped it."""

    kek_id: str
    wrapped: bytes


class KeyCustodian(Protocol):
    def root_secret(self) -> bytes:
        """The deployment's root secret, from which the purpose keys are derived."""
        ...

    def wrap(self, data_key: bytes) -> WrappedKey:
        """Wrap a data key under the active key-encryption key."""
        ...

    def unwrap(self, wrapped: WrappedKey) -> bytes:
        """Unwrap a data key; raises SealError when it does not unwrap."""
        ...

    def log_signer(self) -> Ed25519Signer:
        """The key that signs the ledger's checkpoints."""
        ...

    def log_origin(self) -> str:
        """The name of this vault's log, the first line of its checkpoints."""
        ...
