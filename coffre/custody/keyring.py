"""The embedded default custody: a keyring file kept apart from the storage, mode 0600.

The file holds the root secret and the key-encryption keys in base64 JSON. It is the
sovereign side's secret: back it up apart from the storage, never beside it on the host.
A rotation rewrites it atomically (a new file renamed over it); every process that has it
open reads it again when it changed, before it wraps a new data key and when it meets a
key id it does not know, so that the new active key reaches it without a restart.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Any

from coffre.custody.memory import MemoryCustodian, check_retirable, new_origin, next_kek_id
from coffre.exceptions import CustodyError, VaultStateError
from coffre.files import replace_file
from coffre.seal import random_key

FORMAT = "coffre-keyring/1"


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


class KeyringCustodian(MemoryCustodian):
    """Keys read from a keyring file; the file must be readable by its owner only."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._seen = _signature(path)
        content = self._read(path)
        keks, active = _keks(path, content)
        try:
            root = base64.b64decode(content["root"])
            log_seed = base64.b64decode(content["log_seed"])
            origin = str(content["origin"])
        except KeyError as missing:
            raise _missing(path, missing) from None
        except (TypeError, ValueError) as error:
            raise _damaged(path, error) from None
        super().__init__(root=root, kek=keks[active], log_seed=log_seed, origin=origin)
        self._keks = keks
        self._active = active

    def check(self) -> None:
        self._read(self._path)

    def holder(self) -> str:
        return f"the keyring {self._path}"

    def _reload(self) -> None:
        """Take up the key-encryption keys another process added or retired, if the file
        changed since it was read: a stat per new data key, none per read (call it under
        the lock)."""
        seen = _signature(self._path)
        if seen == self._seen:
            return
        content = self._read(self._path)
        if content.get("root") != _b64(self._root):
            raise CustodyError(f"the keyring {self._path} was replaced by another vault's")
        self._keks, self._active = _keks(self._path, content)
        self._seen = seen

    def add_kek(self) -> str:
        content = self._read(self._path)
        kek_id = next_kek_id(list(_keks(self._path, content)[0]))
        content["keks"].append({"id": kek_id, "key": _b64(random_key())})
        content["active"] = kek_id
        self._replace(content)
        return kek_id

    def retire_kek(self, kek_id: str) -> None:
        content = self._read(self._path)
        check_retirable(kek_id, list(_keks(self._path, content)[0]), content["active"])
        content["keks"] = [entry for entry in content["keks"] if entry["id"] != kek_id]
        self._replace(content)

    def _replace(self, content: dict[str, Any]) -> None:
        """Rewrite the keyring atomically, then take it up; nothing changes if it cannot be."""
        try:
            replace_file(self._path, json.dumps(content, indent=2))
        except OSError as error:
            raise CustodyError(f"cannot write the keyring {self._path}: {error.strerror}") from None
        with self._lock:
            self._reload()

    @staticmethod
    def _read(path: Path) -> dict[str, Any]:
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise VaultStateError(
                f"no keyring at {path} (a new vault gets its own from 'coffre init';"
                " an existing one's is where it was kept, apart from its storage)"
            ) from None
        if not stat.S_ISREG(mode):
            raise CustodyError(f"the keyring {path} is no file: name the keyring file itself")
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise CustodyError(f"the keyring {path} is readable by others: chmod 600 it")
        try:
            content: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise CustodyError(
                f"the keyring {path} cannot be read: {type(error).__name__}"
            ) from None
        if content.get("format") != FORMAT:
            raise CustodyError(f"{path} is not a Coffre keyring ({FORMAT})")
        return content

    @staticmethod
    def create(path: Path) -> str:
        """Write a new keyring; refuses to overwrite one. Returns its log's origin."""
        content = {
            "format": FORMAT,
            "root": _b64(random_key()),
            "active": "kek-1",
            "keks": [{"id": "kek-1", "key": _b64(random_key())}],
            "log_seed": _b64(random_key()),
            "origin": new_origin(),
        }
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise _exists(path) from None
        _write(fd, content)
        return str(content["origin"])


class NewKeyring:
    """A new vault's keyring file (``NewKeys``): refused at once where a file already is."""

    def __init__(self, path: Path) -> None:
        if path.exists():
            raise _exists(path)
        self._path = path
        self._made = False

    def make(self) -> str:
        origin = KeyringCustodian.create(self._path)
        self._made = True
        return origin

    def destroy(self) -> None:
        if self._made:
            self._path.unlink(missing_ok=True)
            self._made = False

    def close(self) -> None:
        """Nothing held open."""


def _exists(path: Path) -> VaultStateError:
    return VaultStateError(f"a keyring already exists at {path}")


def _write(descriptor: int, content: dict[str, Any]) -> None:
    with os.fdopen(descriptor, "w") as file:
        json.dump(content, file, indent=2)
        file.flush()
        os.fsync(file.fileno())


def _signature(path: Path) -> tuple[int, int, int] | None:
    """What changes when the file is rewritten (a rename gives a new inode)."""
    try:
        found = path.stat()
    except FileNotFoundError:
        return None
    return found.st_ino, found.st_mtime_ns, found.st_size


def _keks(path: Path, content: dict[str, Any]) -> tuple[dict[str, bytes], str]:
    """The key-encryption keys of a keyring's content, and the id of the active one."""
    try:
        keks = {entry["id"]: base64.b64decode(entry["key"]) for entry in content["keks"]}
        active = str(content["active"])
    except KeyError as missing:
        raise _missing(path, missing) from None
    except (TypeError, ValueError) as error:
        raise _damaged(path, error) from None
    if active not in keks:
        raise CustodyError(f"the keyring {path} names no active key-encryption key")
    return keks, active


def _missing(path: Path, missing: KeyError) -> CustodyError:
    return CustodyError(
        f"the keyring {path} has no {missing}: it is damaged, or was made by an older"
        " Coffre; make a new vault with 'coffre init'"
    )


def _damaged(path: Path, error: Exception) -> CustodyError:
    return CustodyError(f"the keyring {path} is damaged: {type(error).__name__}")
