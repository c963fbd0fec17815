"""The one seam between Coffre and whatever holds its keys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class LogSigner(Protocol):
    """The log's Ed25519 key: in software (``Ed25519Signer``) or in a token."""

    @property
    def public_key(self) -> bytes: ...

    def sign(self, message: bytes) -> bytes: ...


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

    def log_signer(self) -> LogSigner:
        """The key that signs the ledger's checkpoints."""
        ...

    def log_origin(self) -> str:
        """The name of this vault's log, the first line of its checkpoints."""
        ...

    def check(self) -> None:
        """CustodyError where the custody cannot serve now: a token gone, a keyring that
        can no longer be read. A readiness probe's question."""
        ...

    def holder(self) -> str:
        """What holds the keys, as a message names it (the keyring at PATH, the PKCS#11
        token 'LABEL')."""
        ...

    def kek_ids(self) -> list[str]:
        """The key-encryption keys the custody holds, by id, the active one among them."""
        ...

    def active_kek(self) -> str:
        """The id of the key-encryption key that wraps new data keys."""
        ...

    def add_kek(self) -> str:
        """Make a new key-encryption key, active from now on in every process that uses
        this custody (each notices it at its next wrap); return its id."""
        ...

    def retire_kek(self, kek_id: str) -> None:
        """Destroy a key-encryption key that is not the active one, for good."""
        ...


class NewKeys(Protocol):
    """A new vault's keys, in two steps so that an init checks everything before it makes
    anything: getting one checks the custody (refuses where keys are already), ``make``
    makes the keys, ``destroy`` undoes what ``make`` made (the init failed later on),
    ``close`` lets the custody go."""

    def make(self) -> str:
        """Make the keys; the name of the new vault's log (its origin)."""
        ...

    def destroy(self) -> None: ...

    def close(self) -> None: ...
