"""Small files replaced whole: keyrings, client registries, witness and auditor states;
and small secret files read whole: a PIN, a token."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from coffre.exceptions import CoffreError


def replace_file(path: Path, text: str, sync: bool = True) -> None:
    """Put ``text`` in ``path`` so that a crash or a power cut leaves the old content or the
    new one, never a mix or nothing: a new file beside it (0600 from its first byte, of its
    own, so that several processes may replace the same file at once), synced, renamed
    over it, and the folder synced so that the rename itself lasts. ``sync=False``: no
    disk sync, where an older content after a power cut does no harm. A failure leaves no
    temporary file behind."""
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(text)
            if sync:
                file.flush()
                os.fsync(file.fileno())
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    if not sync:
        return
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def secret_text(path: Path, name: str, error: type[CoffreError] = CoffreError) -> str:
    """The text of a secret file, its line end left out; each refusal (an ``error``) names
    the file as ``name`` ("the PIN file …") and says what is wrong with it, never a byte
    of it. Not a pipe: each server process reads the file again, and would wait forever
    for a writer that fed the first one."""
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            raise error(f"{name} is no regular file: name a file")
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise error(f"{name} is readable by others: chmod 600 it")
        return path.read_bytes().decode().rstrip("\r\n")
    except OSError as failure:
        raise error(f"{name} cannot be read: {type(failure).__name__}") from None
    except UnicodeDecodeError:
        raise error(f"{name} is not UTF-8 text") from None
