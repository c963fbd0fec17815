"""What every command prints to the operator, and the one way a command ends on an error.

Rich reads ``[...]`` as markup: a path or a message (``/srv/[old]/vault``) is escaped
before it is printed, or Rich refuses it with a traceback, or swallows part of it.
"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

console = Console(stderr=True, soft_wrap=True)


def fail(error: Exception | str) -> typer.Exit:
    """Print ``error`` as one line and return the exit to raise (status 1).

    An OSError names its file and the system's reason, never a traceback."""
    if isinstance(error, OSError) and error.strerror:
        error = f"{error.filename}: {error.strerror}" if error.filename else error.strerror
    console.print(f"[red]error:[/red] {escape(str(error))}")
    return typer.Exit(code=1)
