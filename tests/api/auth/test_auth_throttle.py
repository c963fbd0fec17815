"""Password guessing is slowed down: per user name and per address, across processes, and
on both sign-in forms (the authorisation endpoint's and the portal's)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
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
        throttle.admit(attempt, now)


def test_a_name_waits_after_its_free_failures_whatever_the_address() -> None:
    throttle = SignInThrottle(":memory:")
    for n in range(FREE_FAILURES_PER_NAME - 1):
        throttle.admit(Attempt("marie", f"10.0.0.{n}"), NOW)
    assert throttle.seconds_to_wait(Attempt("marie", "10.9.9.9"), NOW) == 0
    throttle.admit(Attempt(" Marie ", "10.0.0.99"), NOW)  # the same name, as typed
    assert throttle.seconds_to_wait(Attempt("marie", "10.9.9.9"), NOW) == FIRST_WAIT_SECONDS
    assert throttle.seconds_to_wait(Attempt("jean", "10.9.9.9"), NOW) == 0
    later = NOW + FIRST_WAIT_SECONDS
    assert throttle.seconds_to_wait(Attempt("marie", None), later) == 0
    throttle.admit(Attempt("marie", None), later)
    assert throttle.seconds_to_wait(Attempt("marie", None), later) == 2 * FIRST_WAIT_SECONDS


def test_success_clears_the_name_and_takes_back_its_own_count_of_the_address() -> None:
    throttle = SignInThrottle(":memory:")
    _fail(throttle, Attempt("marie", "10.0.0.1"), FREE_FAILURES_PER_NAME - 1)
    assert throttle.admit(Attempt("marie", "10.0.0.1"), NOW) == 0
    throttle.succeeded(Attempt("marie", "10.0.0.1"))
    throttle.admit(Attempt("marie", "10.0.0.2"), NOW)
    assert throttle.seconds_to_wait(Attempt("marie", None), NOW) == 0
    # The address keeps the four failures: sixteen more names, then it waits.
    for n in range(FREE_FAILURES_PER_ADDRESS - (FREE_FAILURES_PER_NAME - 1) - 1):
        throttle.admit(Attempt(f"name-{n}", "10.0.0.1"), NOW)
    assert throttle.seconds_to_wait(Attempt("someone", "10.0.0.1"), NOW) == 0
    assert throttle.admit(Attempt("marie", "10.0.0.1"), NOW) == 0  # the twentieth
    assert throttle.seconds_to_wait(Attempt("someone", "10.0.0.1"), NOW) == FIRST_WAIT_SECONDS
    throttle.succeeded(Attempt("marie", "10.0.0.1"))  # it was hers: not a failure
    assert throttle.seconds_to_wait(Attempt("someone", "10.0.0.1"), NOW) == 0
    assert throttle.seconds_to_wait(Attempt("someone", "10.0.0.2"), NOW) == 0


def test_attempts_made_at_once_count_against_each_other(tmp_path: Path) -> None:
    """Each is counted as it is let through, before its password is checked: a burst
    from several processes gets no more checks than the free ones."""
    throttles = [SignInThrottle(tmp_path / "s.sqlite") for _ in range(4)]
    with ThreadPoolExecutor(8) as pool:
        waits = list(
            pool.map(
                lambda n: throttles[n % 4].admit(Attempt("marie", f"10.0.1.{n}"), NOW), range(40)
            )
        )
    assert waits.count(0) == FREE_FAILURES_PER_NAME
    assert set(waits) - {0} == {FIRST_WAIT_SECONDS}


def test_old_failures_are_forgotten() -> None:
    throttle = SignInThrottle(":memory:")
    _fail(throttle, Attempt("marie", None), FREE_FAILURES_PER_NAME)
    much_later = NOW + FORGOTTEN_AFTER_SECONDS + 1
    throttle.admit(Attempt("jean", None), much_later)  # any failure sweeps the old counts
    throttle.admit(Attempt("marie", None), much_later)
    assert throttle.seconds_to_wait(Attempt("marie", None), much_later) == 0


def test_the_processes_of_a_gateway_share_the_counts(tmp_path: Path) -> None:
    first, second = SignInThrottle(tmp_path / "s.sqlite"), SignInThrottle(tmp_path / "s.sqlite")
    for n in range(FREE_FAILURES_PER_NAME):
        (first if n % 2 else second).admit(Attempt("marie", None), NOW)
    assert first.seconds_to_wait(Attempt("marie", None), NOW) == FIRST_WAIT_SECONDS
    assert (tmp_path / "s.sqlite").stat().st_mode & 0o777 == 0o600
    assert b"marie" not in (tmp_path / "s.sqlite").read_bytes()
