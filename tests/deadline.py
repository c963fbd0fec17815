"""A generous bound on how long a call may run, for inputs that once made a regular
expression read the same text over and over: those took minutes, so a bound in seconds
tells the two apart on any machine without timing anything closely."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


@contextmanager
def within(seconds: float) -> Iterator[None]:
    """Raise TimeoutError in the block once it has run ``seconds`` (the regular expression
    engine checks for signals as it goes, so a long match is cut short too)."""

    def interrupt(_signal: int, _frame: FrameType | None) -> None:
        raise TimeoutError(f"still running after {seconds} seconds")

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
