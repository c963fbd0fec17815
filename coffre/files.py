"""Small files replaced whole: keyrings, client registries, witness and auditor states."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


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
