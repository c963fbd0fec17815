"""Command-line arguments several commands read alike."""

from __future__ import annotations

from pathlib import Path

import typer


def named_folder(raw: str) -> Path:
    """A folder a command makes; an empty name (an unset shell variable, ``"$VAULT"``) is
    refused rather than read as the current folder, which ``Path("")`` would be."""
    if not raw.strip():
        raise typer.BadParameter("the folder's name is empty: name one (. for this folder)")
    return Path(raw)
