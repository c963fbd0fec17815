"""HTTP-dates (RFC 9110 §5.6.7), read exactly: ``If-Modified-Since`` is ignored when its
value is not one (§13.1.3), so a lenient reading would turn a malformed date a century
ahead into a 304 for every read."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_LONG_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_TIME = r"(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})"
_MONTH = f"(?P<month>{'|'.join(_MONTHS)})"
# Case-sensitive, no whitespace but the grammar's single spaces, ASCII digits only.
_FORMATS = (
    # IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
    re.compile(
        f"(?P<day_name>{'|'.join(_DAYS)}), (?P<day>[0-9]{{2}}) {_MONTH} (?P<year>[0-9]{{4}})"
        f" {_TIME} GMT"
    ),
    # rfc850-date: Sunday, 06-Nov-94 08:49:37 GMT
    re.compile(
        f"(?P<day_name>{'|'.join(_LONG_DAYS)}), (?P<day>[0-9]{{2}})-{_MONTH}-(?P<yy>[0-9]{{2}})"
        f" {_TIME} GMT"
    ),
    # asctime-date: Sun Nov  6 08:49:37 1994
    re.compile(
        f"(?P<day_name>{'|'.join(_DAYS)}) {_MONTH} (?P<day>[0-9]{{2}}| [0-9]) {_TIME}"
        r" (?P<year>[0-9]{4})"
    ),
)


def http_date(value: str, now: datetime | None = None) -> datetime | None:
    """The moment an HTTP-date names, in any of the three formats a recipient must accept;
    None for anything else. ``now`` (the server's clock, §13.1.3) places an rfc850-date's
    two-digit year. The day's name must be that of the date (RFC 5322 §3.3, whose meaning
    §5.6.7 takes); a leap second (``23:59:60``) is the second after ``:59``."""
    match = next((m for f in _FORMATS if (m := f.fullmatch(value)) is not None), None)
    if match is None:
        return None
    parts = match.groupdict()
    rest = (
        _MONTHS.index(parts["month"]) + 1,
        int(parts["day"]),
        int(parts["hour"]),
        int(parts["minute"]),
        int(parts["second"]),
    )
    yy = parts.get("yy")
    if yy is None:
        year = int(parts["year"])
    else:
        year = _two_digit_year(int(yy), rest, now or datetime.now(UTC))
    month, day, hour, minute, second = rest
    if hour > 23 or minute > 59 or second > 60:
        return None
    try:
        moment = datetime(year, month, day, hour, minute, tzinfo=UTC)
    except ValueError:  # no such day: 31 Feb, or 29 Feb of a common year
        return None
    names = _DAYS if yy is None else _LONG_DAYS
    if names[moment.weekday()] != parts["day_name"]:
        return None
    return moment + timedelta(seconds=second)


def _two_digit_year(yy: int, rest: tuple[int, ...], now: datetime) -> int:
    """§5.6.7: "a timestamp that appears to be more than 50 years in the future" is of "the
    most recent year in the past that had the same last two digits": the year ending in
    ``yy`` whose timestamp is the latest not more than 50 years ahead of ``now``."""
    limit = (now.year + 50, now.month, now.day, now.hour, now.minute, now.second)
    year = limit[0] - (limit[0] - yy) % 100
    return year if (year, *rest) <= limit else year - 100
