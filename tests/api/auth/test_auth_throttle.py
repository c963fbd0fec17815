"""Password guessing is slowed down: per user name and per address, across processes, and
on both sign-in forms (the authorisation endpoint's and the portal's)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from coffre.api.auth.throttle import (
    FIRST_WAIT_SECONDS,
    FORGOTTEN_AFTER_SECONDS,
    FREE_FAILURES_PER_ADDRESS,
    FREE_FAILURES_PER_NAME,
    LONGEST_WAIT_SECONDS,
    Attempt,
    SignInThrottle,
    wait_after,
)

NOW = 1_800_000_000.0


@given(st.integers(0, 200), st.integers(1, 30))
def test_the_wait_is_free_at_first_then_doubles_up_to_a_cap(failures: int, free: int) -> None:
    wait = wait_after(failures, free)
    if failures < free:
        assert wait == 0
    else:
        assert FIRST_WAIT_SECONDS <= wait <= LONGEST_WAIT_SECONDS
        assert wait_after(failures + 1, free) in (2 * wait, LONGEST_WAIT_SECONDS)


def _fail(throttle: SignInThrottle, attempt: Attempt, times: int, now: float = NOW) -> None:
    for _ in range(times):
        throttle.failed(attempt, now)


def test_a_name_waits_after_its_free_failures_whatever_the_address() -> None:
    throttle = SignInThrottle(":memory:")
    for n in range(FREE_FAILURES_PER_NAME - 1):
        throttle.failed(Attempt("marie", f"10.0.0.{n}"), NOW)
    assert throttle.seconds_to_wait(Attempt("marie", "10.9.9.9"), NOW) == 0
    throttle.failed(Attempt(" Marie ", "10.0.0.99"), NOW)  # the same name, as typed
    assert throttle.seconds_to_wait(Attempt("marie", "10.9.9.9"), NOW) == FIRST_WAIT_SECONDS
    assert throttle.seconds_to_wait(Attempt("jean", "10.9.9.9"), NOW) == 0
    later = NOW + FIRST_WAIT_SECONDS
    assert throttle.seconds_to_wait(Attempt("marie", None), later) == 0
    throttle.failed(Attempt("marie", None), later)
    assert throttle.seconds_to_wait(Attempt("marie", None), later) == 2 * FIRST_WAIT_SECONDS


def test_success_clears_the_name_but_not_the_address() -> None:
    throttle = SignInThrottle(":memory:")
    _fail(throttle, Attempt("marie", "10.0.0.1"), FREE_FAILURES_PER_NAME - 1)
    throttle.succeeded(Attempt("marie", "10.0.0.1"))
    throttle.failed(Attempt("marie", "10.0.0.2"), NOW)
    assert throttle.seconds_to_wait(Attempt("marie", None), NOW) == 0
    for n in range(FREE_FAILURES_PER_ADDRESS - (FREE_FAILURES_PER_NAME - 1)):
        throttle.failed(Attempt(f"name-{n}", "10.0.0.1"), NOW)
    throttle.succeeded(Attempt("marie", "10.0.0.1"))
    assert throttle.seconds_to_wait(Attempt("someone", "10.0.0.1"), NOW) == FIRST_WAIT_SECONDS
    assert throttle.seconds_to_wait(Attempt("someone", "10.0.0.2"), NOW) == 0


def test_old_failures_are_forgotten() -> None:
    throttle = SignInThrottle(":memory:")
    _fail(throttle, Attempt("marie", None), FREE_FAILURES_PER_NAME)
    much_later = NOW + FORGOTTEN_AFTER_SECONDS + 1
    throttle.failed(Attempt("jean", None), much_later)  # any failure sweeps the old counts
    throttle.failed(Attempt("marie", None), much_later)
    assert throttle.seconds_to_wait(Attempt("marie", None), much_later) == 0


def test_the_processes_of_a_gateway_share_the_counts(tmp_path: Path) -> None:
    first, second = SignInThrottle(tmp_path / "s.sqlite"), SignInThrottle(tmp_path / "s.sqlite")
    for n in range(FREE_FAILURES_PER_NAME):
        (first if n % 2 else second).failed(Attempt("marie", None), NOW)
    assert first.seconds_to_wait(Attempt("marie", None), NOW) == FIRST_WAIT_SECONDS
    assert (tmp_path / "s.sqlite").stat().st_mode & 0o777 == 0o600
    assert b"marie" not in (tmp_path / "s.sqlite").read_bytes()
