"""A generous bound on how long a call may run, for inputs that once made a regular
expression read the same text over and over: those took minutes, so a bound in seconds
tells the two apart on any machine without timing anything closely."""

from __future__ import annotations

from contextlib import AbstractContextManager

from coffre.cli.audit import alarm


def within(seconds: float) -> AbstractContextManager[None]:
    """Raise TimeoutError in the block once it has run ``seconds`` (the regular expression
    engine checks for signals as it goes, so a long match is cut short too)."""
    return alarm(seconds, TimeoutError(f"still running after {seconds} seconds"))
