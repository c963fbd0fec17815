"""A vault on disk: where its storage and its keyring are, and opening them together.

The storage is an SQLite file in the vault folder, or a PostgreSQL database whose URL
(never a password) the folder records in ``storage.url``.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass
from itertools import takewhile
from pathlib import Path

from coffre import config
from coffre.custody import KEYRING, PKCS11, KeyCustodian, chosen_custody, new_keys, open_custody
from coffre.exceptions import CoffreError, CustodyError, VaultStateError
from coffre.ledger import VerifierKey
from coffre.seal import AeadEnvelope, Envelope, PlainEnvelope
from coffre.service.ledger import verifier_key_of
from coffre.service.records import RecordStore
from coffre.storage import SqliteStorage, Storage
from coffre.storage.base import UNFINISHED_COPY
from coffre.storage.postgres import PostgresStorage, check_room
from coffre.storage.sqlite import holds_storage

STORAGE_FILE = "storage.sqlite"
STORAGE_URL_FILE = "storage.url"
KEYRING_FILE = "keyring.json"
BENCHMARK_FILE = "benchmark-only"
"""In a vault made for a benchmark, what it was made for: ``plaintext`` (its bodies are
not encrypted: ``coffre init`` with COFFRE_BENCH_PLAINTEXT=1) or ``sealed``. The
benchmarks' switches open no other vault, and such a vault opens for nothing else."""
PLAINTEXT = "plaintext"
CUSTODY_FILE = "custody"
"""What holds the vault's keys and the name of its log, as ``coffre init`` made them
(``pkcs11 coffre.vault/…``): a vault opens with that custody and those keys only, never
with another vault's token or keyring that a setting left over would name."""


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
    def storage_url(self) -> str | None:
        """The PostgreSQL URL of the storage, or None: the SQLite file in the folder."""
        path = self.folder / STORAGE_URL_FILE
        return path.read_text().strip() if path.exists() else None

    @property
    def checkpoint_memory(self) -> Path:
        """Beside the keyring, on the sovereign side: the last checkpoint this side signed."""
        return self.keyring.with_name(self.keyring.stem + ".checkpoint")

    def create(self, storage_url: str = "") -> None:
        """Make a new vault, its storage in ``storage_url`` (PostgreSQL) or else in an
        SQLite file in the folder; all or nothing. What can be checked is checked before
        anything is made: no vault in the folder, the database reachable, free and open
        to new tables, no keyring at its path (or no keys in the token, and the token
        usable). A failure after that undoes what this call made (folders, keyring file,
        objects in the token, files in the folder), never what was there before; the
        PostgreSQL tables come last, all in one transaction."""
        if self.storage_path.exists() or self.storage_url is not None:
            raise VaultStateError(f"a vault already exists at {self.folder}")
        if storage_url:
            check_room(storage_url)
        with closing(new_keys(self.keyring)) as keys, _undone_on_failure() as undo:
            for wanted in (self.folder, self.keyring.parent):
                undo.extend(made.rmdir for made in _missing_folders(wanted))
                wanted.mkdir(parents=True, exist_ok=True)
            undo.append(keys.destroy)
            origin = keys.make()
            undo.append((self.folder / CUSTODY_FILE).unlink)
            self._record_custody(chosen_custody(), origin)
            if config.BENCH_PLAINTEXT.value() == "1":
                undo.append((self.folder / BENCHMARK_FILE).unlink)
                (self.folder / BENCHMARK_FILE).write_text(PLAINTEXT + "\n")
            if storage_url:
                undo.append((self.folder / STORAGE_URL_FILE).unlink)
                self._record_url(storage_url)
                PostgresStorage(storage_url, create=True, origin=origin).close()
            else:
                undo.extend(path.unlink for path in _sqlite_files(self.storage_path))
                SqliteStorage(self.storage_path, create=True, origin=origin).close()

    def sovereign_files_beside_storage(self) -> bool:
        """Whether the sovereign side's files (the checkpoint memory, the access registry)
        lie in the folder of an SQLite storage without a keyring to say they must be kept
        apart: a token's vault whose COFFRE_KEYRING names no path of its own."""
        return (
            chosen_custody() != KEYRING
            and self.storage_url is None
            and self.keyring.parent.resolve() == self.folder.resolve()
        )

    def recorded_custody(self) -> tuple[str, str] | None:
        """What holds this vault's keys and its log's name, as recorded (CUSTODY_FILE);
        None for a vault made before Coffre recorded them, until it first opens."""
        with suppress(FileNotFoundError):
            kind, _, origin = (self.folder / CUSTODY_FILE).read_text().strip().partition(" ")
            return kind, origin
        return None

    def _record_custody(self, kind: str, origin: str) -> None:
        path = self.folder / CUSTODY_FILE
        try:
            path.write_text(f"{kind} {origin}\n")
        except OSError as error:
            raise VaultStateError(f"cannot write {path}: {error.strerror}") from None

    def _open_own_custody(self, recorded: tuple[str, str] | None) -> KeyCustodian:
        """The vault's custodian; refused where the keys are not those ``recorded`` (its
        ``recorded_custody``): another custody than its own, or another vault's keyring or
        token (whose keys would wrap and sign as if they were)."""
        if recorded is not None and recorded[0] != chosen_custody():
            kind = recorded[0]
            raise VaultStateError(
                f"{self.folder} keeps its keys in {_CUSTODIES.get(kind, kind)} (since 'coffre"
                f" init'), but {config.CUSTODY.env}={chosen_custody()}: set"
                f" {config.CUSTODY.env}={kind}"
            )
        custodian = open_custody(self.keyring)
        if recorded is not None and custodian.log_origin() != (origin := recorded[1]):
            raise VaultStateError(
                f"{custodian.holder()} holds the keys of another vault (log"
                f" {custodian.log_origin()}), not those of {self.folder} (log {origin}): name"
                " this vault's own"
            )
        return custodian

    def _check_storage_is_ours(self, storage: Storage, custodian: KeyCustodian) -> None:
        """Refuse a storage that another vault's init made: a folder put together by hand
        (a keyring copied, a storage URL written) could open another vault's database
        while it is still empty, and write into it with the wrong keys."""
        theirs = storage.vault_origin()
        if theirs is not None and theirs != custodian.log_origin():
            raise VaultStateError(
                f"the storage of {self.folder} is another vault's (its log is {theirs}), not"
                f" that of {custodian.holder()} ({custodian.log_origin()}): name this vault's"
                " storage, or its keys"
            )

    def _check_no_copy_under_way(self, storage: Storage) -> None:
        """Refuse a storage that a copy into it (a restore, a migration) has not finished:
        it holds part of the records, of the log or of the keys, and a vault opened on it
        would sign a new log over records its log does not cover."""
        source = storage.meta(UNFINISHED_COPY)
        if source is not None:
            # The host's text: quoted as a shell word, or shown as Python would.
            named = shlex.quote(source) if source.isprintable() else repr(source)
            raise VaultStateError(
                f"the storage of {self.folder} is an unfinished copy of {named}: a coffre"
                " restore (or coffre migrate) into it stopped before its end, and it holds"
                " part of the vault only. Run the same command again to finish it (coffre"
                f" restore {named} --vault {self.folder}); refusing to serve it"
            )

    def _record_url(self, storage_url: str) -> None:
        # 0600 like the keyring: the URL names the server, the database and the user.
        path = self.folder / STORAGE_URL_FILE
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
            file.write(storage_url + "\n")

    def open_storage(self) -> Storage:
        url = self.storage_url
        if url is not None:
            return PostgresStorage(url)
        if not self.storage_path.exists():
            raise VaultStateError(
                f"no vault at {self.folder}: create one with 'coffre init {self.folder}'"
            )
        if not holds_storage(self.storage_path):  # coffre init makes its tables at once
            raise VaultStateError(
                f"{self.storage_path} holds no Coffre storage (no tables): a coffre restore"
                " into it stopped before it began, or a file made by hand. Run the restore"
                " again, or move the file aside"
            )
        return SqliteStorage(
            self.storage_path, create=True, synchronous=config.SQLITE_SYNCHRONOUS.value()
        )

    def held_keys(self) -> tuple[set[str], VerifierKey, str]:
        """The key-encryption keys the vault's custody holds, the key its log's
        checkpoints verify with (what a storage brought in must have been made with), and
        what holds them, as a message names it. Refuses a vault whose keys are not there:
        no keyring at its path (or one that cannot be read), or no keys in the token."""
        custody = self._open_own_custody(self.recorded_custody())
        custody.root_secret()
        return set(custody.kek_ids()), verifier_key_of(custody), custody.holder()

    def benchmark_mode(self) -> str | None:
        """What the vault was made for if it was made for a benchmark (BENCHMARK_FILE)."""
        with suppress(FileNotFoundError):
            return (self.folder / BENCHMARK_FILE).read_text().strip()
        return None

    def _check_benchmark_switches(self) -> bool:
        """Whether bodies are stored unencrypted: only in a vault made so for a benchmark,
        which opens for nothing else; unchecked reads only in a benchmark's vault."""
        plaintext = config.BENCH_PLAINTEXT.value() == "1"
        made = self.benchmark_mode()
        if plaintext and made != PLAINTEXT:
            raise VaultStateError(
                f"{config.BENCH_PLAINTEXT.env}=1 stores health data unencrypted: it opens only"
                f" a vault made with it for a benchmark, not {self.folder}; unset it"
            )
        if made == PLAINTEXT and not plaintext:
            raise VaultStateError(
                f"{self.folder} was made for a benchmark and holds its data unencrypted: it"
                f" opens with {config.BENCH_PLAINTEXT.env}=1 only, and is no vault for real data"
            )
        if config.BENCH_UNVERIFIED_READS.value() == "1" and made is None:
            raise VaultStateError(
                f"{config.BENCH_UNVERIFIED_READS.env}=1 serves reads without checking them:"
                f" it opens only a vault made for a benchmark, not {self.folder}; unset it"
            )
        return plaintext

    def open(self, *, every_kek_held: bool = True) -> RecordStore:
        """The record store; its start checks refuse a storage the host tampered with, and
        the storage is closed then (a PostgreSQL one holds connections and threads).
        ``every_kek_held``: refuse a storage whose data keys need a key-encryption key the
        custody does not hold (``coffre keys list`` opens it all the same, to say which)."""
        plaintext = self._check_benchmark_switches()
        storage = self.open_storage()
        envelope: Envelope = PlainEnvelope() if plaintext else AeadEnvelope()
        recorded = self.recorded_custody()
        try:
            self._check_no_copy_under_way(storage)
            custodian = self._open_own_custody(recorded)
            self._check_storage_is_ours(storage, custodian)
            if every_kek_held:
                _check_keks_held(storage, custodian)
            records = RecordStore(
                storage,
                custodian,
                envelope,
                self.checkpoint_memory,
                verify_reads=config.BENCH_UNVERIFIED_READS.value() != "1",
                key_cache_size=_key_cache_size(),
            )
        except BaseException:
            storage.close()
            raise
        if recorded is None and storage.latest_checkpoint() is not None:
            # An older vault's: its log's signature has just proven these keys its own.
            self._record_custody(chosen_custody(), custodian.log_origin())
        return records


@contextmanager
def _undone_on_failure() -> Iterator[list[Callable[[], object]]]:
    """Steps that undo what the block made, run last first if it fails. One that fails
    in turn is passed over (a file the block never got to make, a folder that is not
    empty): the error reported is the one that stopped the block."""
    undo: list[Callable[[], object]] = []
    try:
        yield undo
    except BaseException:
        for step in reversed(undo):
            with suppress(CoffreError, OSError):
                step()
        raise


def _missing_folders(folder: Path) -> list[Path]:
    """The folders that making ``folder`` makes, outermost first."""
    missing = list(takewhile(lambda path: not path.exists(), (folder, *folder.parents)))
    return missing[::-1]


def _sqlite_files(path: Path) -> list[Path]:
    """The files an SQLite storage at ``path`` is made of that are not there yet."""
    files = (path.with_name(path.name + suffix) for suffix in ("", "-wal", "-shm", ".lock"))
    return [file for file in files if not file.exists()]


_CUSTODIES = {KEYRING: "a keyring file", PKCS11: "a PKCS#11 token"}


def _check_keks_held(storage: Storage, custodian: KeyCustodian) -> None:
    """Refuse a storage whose data keys are wrapped by a key-encryption key the custody
    does not hold: its records could not be opened, and each refusal would be logged as
    the host's tampering, when the cause is the custody (a token restored from a backup
    older than a rotation, a key deleted from it)."""
    missing = sorted(set(storage.wrapped_key_counts()) - set(custodian.kek_ids()))
    if missing:
        raise CustodyError(
            f"the storage's data keys are wrapped by {', '.join(missing)}, which"
            f" {custodian.holder()} does not hold: restore it from a backup made after that"
            " key was (the key-encryption keys are listed by 'coffre keys list')"
        )


def _key_cache_size() -> int:
    text = config.DATA_KEY_CACHE.value()
    if not text.isdigit() or int(text) < 1:
        raise VaultStateError(f"{config.DATA_KEY_CACHE.env} must be a whole number above 0")
    return int(text)
