"""The research hub's one error, apart so that every module of it may raise it."""

from __future__ import annotations

from coffre.exceptions import CoffreError


class ProjectError(CoffreError):
    """A project Coffre refuses, one it does not know or that may no longer receive data,
    or a projects file it cannot read."""
