"""A vault on disk: where its storage and its keyring are, and opening them together."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from coffre import config
from coffre.custody import create_custody, open_custody
from coffre.exceptions import VaultStateError
from coffre.seal import AeadEnvelope, Envelope, PlainEnvelope
from coffre.service.records import RecordStore
from coffre.storage import SqliteStorage

STORAGE_FILE = "storage.sqlite"
KEYRING_FILE = "keyring.json"


@dataclass(frozen=True, slots=True)
class Vault:
    """The two halves of a vault: the host's storage and the sovereign side's keyring."""

    folder: Path
    keyring: Path

    @classmethod
    def at(cls, folder: Path | str, keyring: Path | str | None = None) -> Vault:
        folder = Path(folder)
        return cls(folder, Path(keyring) if keyring else folder / KEYRING_FILE)

    @classmethod
    def from_settings(cls) -> Vault:
        return cls.at(config.VAULT.value(), config.KEYRING.value() or None)

    @property
    def storage_path(self) -> Path:
        return self.folder / STORAGE_FILE

    @property
    def checkpoint_memory(self) -> Path:
        """Beside the keyring, on the sovereign side: the last checkpoint this side signed."""
        return self.keyring.with_name(self.keyring.stem + ".checkpoint")

    def create(self) -> None:
        """Make a new vault; refuses to touch an existing one."""
        if self.storage_path.exists():
            raise VaultStateError(f"a vault already exists at {self.folder}")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.keyring.parent.mkdir(parents=True, exist_ok=True)
        create_custody(self.keyring)
        SqliteStorage(self.storage_path, create=True).close()

    def open(self) -> RecordStore:
        if not self.storage_path.exists():
            raise VaultStateError(
                f"no vault at {self.folder}: create one with 'coffre init {self.folder}'"
            )
        envelope: Envelope = (
            PlainEnvelope() if config.BENCH_PLAINTEXT.value() == "1" else AeadEnvelope()
        )
        storage = SqliteStorage(
            self.storage_path, create=True, synchronous=config.SQLITE_SYNCHRONOUS.value()
        )
        return RecordStore(
            storage,
            open_custody(self.keyring),
            envelope,
            self.checkpoint_memory,
            verify_reads=config.BENCH_UNVERIFIED_READS.value() != "1",
        )
