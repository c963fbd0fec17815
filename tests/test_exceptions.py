"""Error messages bounded: a long value a client sent is quoted by its beginning and length."""

from __future__ import annotations

import re

from deadline import within
from hypothesis import example, given
from hypothesis import strategies as st

from coffre.exceptions import _LONG, QUOTED_MAX, _shortened, bounded

_OLD_LONG = re.compile(
    rf"""(['"])((?:(?!\1).){{{QUOTED_MAX + 1},}})\1|[^\s'"]{{{QUOTED_MAX + 1},}}""", re.DOTALL
)
"""The expression long values were once found with."""
_PIECES = ["a" * 100, "a", " ", "\n", "'", '"', "é"]


def _old_shortened(found: re.Match[str]) -> str:
    quote, value = found[1] or "", found[2] or found[0]
    return f"{quote}{value[: QUOTED_MAX - 1]}…{quote} ({len(value):,} characters)"


@given(st.lists(st.sampled_from(_PIECES), max_size=12).map("".join))
@example("a" * 101)
@example("'" + "a" * 101 + "'" + "a" * 101)
@example("x" + "a" * 100 + '"' + "b" * 101 + '"')
def test_long_values_are_those_found_before(message: str) -> None:
    """Read once, any text has the long values it had before shortened as they were."""
    assert _LONG.sub(_shortened, message) == _OLD_LONG.sub(_old_shortened, message)


def test_runs_without_spaces_are_read_once() -> None:
    """A run of 100 characters without spaces was read again from each of them: 15 MB
    of such runs between quotes, as a 64 MB body's resourceType quotes them in its
    refusal, took some 20 s to bound, ten times as long as one read needs at most."""
    value = '"' + ("'" + "a" * 98) * 150_000
    with within(6):
        message = bounded(f"{value!r} is not a FHIR R4 resource type")
    assert message.endswith("… (cut from 15,000,034 characters)")
