"""Files replaced whole: the old content or the new after a crash, never a mix or nothing."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from coffre.files import replace_file


def test_the_new_content_is_synced_and_renamed_over_the_old(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state"
    path.write_text("old")
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(descriptor: int) -> None:
        target = Path(os.readlink(f"/proc/self/fd/{descriptor}"))
        # the file is synced before it is renamed over the old one, the folder after
        synced.append("folder" if target == tmp_path else path.read_text())
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    replace_file(path, "new")
    assert path.read_text() == "new"
    assert synced == ["old", "folder"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["state"]


def test_a_failed_replacement_leaves_the_old_content_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state"
    path.write_text("old")

    def fail(source: str, target: Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="No space"):
        replace_file(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["state"]
