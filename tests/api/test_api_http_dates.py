"""HTTP-dates as RFC 9110 §5.6.7 writes them: the three formats a recipient must accept,
and nothing else (a conditional header with anything else is ignored, §13.1.3)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from coffre.api.http_dates import http_date

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SUNDAY = datetime(1994, 11, 6, 8, 49, 37, tzinfo=UTC)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("Sun, 06 Nov 1994 08:49:37 GMT", id="imf-fixdate"),
        pytest.param("Sunday, 06-Nov-94 08:49:37 GMT", id="rfc850"),
        pytest.param("Sun Nov  6 08:49:37 1994", id="asctime"),
    ],
)
def test_the_three_formats_name_the_same_moment(value: str) -> None:
    assert http_date(value, NOW) == SUNDAY


def test_a_two_digit_year_is_the_nearest_not_more_than_50_years_ahead() -> None:
    """§5.6.7: a timestamp that appears to be more than 50 years in the future is the most
    recent past year with the same last two digits."""
    assert http_date("Sunday, 01-Mar-76 12:00:00 GMT", NOW) == datetime(2076, 3, 1, 12, tzinfo=UTC)
    assert http_date("Monday, 01-Mar-76 12:00:01 GMT", NOW) == datetime(
        1976, 3, 1, 12, 0, 1, tzinfo=UTC
    )


def test_a_leap_second_is_the_next_second() -> None:
    assert http_date("Sat, 31 Dec 2016 23:59:60 GMT", NOW) == datetime(2017, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param("yesterday", id="words"),
        pytest.param("1994-11-06T08:49:37Z", id="iso"),
        pytest.param("Sun, 06 Nov 1994 08:49:37 +0000", id="numeric-zone"),
        pytest.param("Sun, 06 Nov 1994 08:49:37 UTC", id="utc"),
        pytest.param("Sun, 06 Nov 1994 08:49:37 gmt", id="lower-gmt"),
        pytest.param("sun, 06 nov 1994 08:49:37 GMT", id="lower-names"),
        pytest.param("06 Nov 1994 08:49:37 GMT", id="no-day-name"),
        pytest.param("Sun, 6 Nov 1994 08:49:37 GMT", id="one-digit-day"),
        pytest.param("Sun,  06 Nov 1994 08:49:37 GMT", id="extra-space"),
        pytest.param(" Sun, 06 Nov 1994 08:49:37 GMT", id="leading-space"),
        pytest.param("Sun, 06 Nov 94 08:49:37 GMT", id="two-digit-year-fixdate"),
        pytest.param("Mon, 06 Nov 1994 08:49:37 GMT", id="wrong-day-name"),
        pytest.param("Sun, 31 Feb 1994 08:49:37 GMT", id="no-such-day"),
        pytest.param("Sun, 06 Nov 1994 24:00:00 GMT", id="hour-24"),
        pytest.param("Sun, 06 Nov 1994 08:60:00 GMT", id="minute-60"),
        pytest.param("Sun, 06 Nov 1994 08:49:61 GMT", id="second-61"),
        pytest.param("Sun, 06 Nov 1994 08:49:37 GMT, Sun, 06 Nov 1994 08:49:37 GMT", id="two"),
        pytest.param("Sun Nov 06 08:49:37 1994 GMT", id="asctime-zone"),
        pytest.param("Sun Nov 6 08:49:37 1994", id="asctime-one-space"),
        pytest.param("Sun,\u00a006 Nov 1994 08:49:37 GMT", id="nbsp"),
        pytest.param("Sun, \u0660\u0666 Nov 1994 08:49:37 GMT", id="arabic-digits"),
    ],
)
def test_anything_else_is_no_http_date(value: str) -> None:
    assert http_date(value, NOW) is None
