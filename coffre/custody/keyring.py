"""The embedded default custody: a keyring file kept apart from the storage, mode 0600.

The file holds the root secret and the key-encryption keys in base64 JSON. It is the
sovereign side's secret: back it up apart from the storage, never beside it on the host.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Any

from coffre.custody.memory import MemoryCustodian, new_origin
from coffre.exceptions import CustodyError, VaultStateError
from coffre.seal import random_key

FORMAT = "coffre-keyring/1"


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


class KeyringCustodian(MemoryCustodian):
    """Keys read from a keyring file; the file must be readable by its owner only."""

    def __init__(self, path: Path) -> None:
        content = self._read(path)
        try:
            keks = {entry["id"]: base64.b64decode(entry["key"]) for entry in content["keks"]}
            root = base64.b64decode(content["root"])
            active = content["active"]
            log_seed = base64.b64decode(content["log_seed"])
            origin = str(content["origin"])
        except KeyError as missing:
            raise CustodyError(
                f"the keyring {path} has no {missing}: it is damaged, or was made by an older"
                " Coffre; make a new vault with 'coffre init'"
            ) from None
        except (TypeError, ValueError) as error:
            raise CustodyError(f"the keyring {path} is damaged: {type(error).__name__}") from None
        if active not in keks:
            raise CustodyError(f"the keyring {path} names no active key-encryption key")
        super().__init__(root=root, kek=keks[active], log_seed=log_seed, origin=origin)
        self._keks = keks
        self._active = active

    @staticmethod
    def _read(path: Path) -> dict[str, Any]:
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise VaultStateError(
                f"no keyring at {path}: create a vault with 'coffre init'"
            ) from None
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
    def create(path: Path) -> None:
        """Write a new keyring; refuses to overwrite one."""
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
            raise VaultStateError(f"a keyring already exists at {path}") from None
        with os.fdopen(fd, "w") as file:
            json.dump(content, file, indent=2)
            file.flush()
            os.fsync(file.fileno())
