"""Wall-clock times of France and Quebec, written as FHIR dateTimes with their UTC offset.

The offset follows each place's summer-time rules (France's since 1976, Quebec's three
successive North American ones), near enough to agree with the tz database on every day
since 1981 in France and 1957 in Quebec. It is decided by the local date: a time on the
night of a change gets that day's offset.
"""

from __future__ import annotations

import calendar
from datetime import date, datetime, timedelta
from functools import cache

from coffre.synth.builders import Region

_OFFSETS: dict[Region, tuple[str, str]] = {"FR": ("+01:00", "+02:00"), "QC": ("-05:00", "-04:00")}


def _sunday(year: int, month: int, nth: int) -> date:
    """The nth Sunday of a month, counting from the end when nth is negative."""
    if nth > 0:
        first = date(year, month, 1)
        return first + timedelta(days=(6 - first.weekday()) % 7 + 7 * (nth - 1))
    last = date(year, month, calendar.monthrange(year, month)[1])
    return last - timedelta(days=(last.weekday() + 1) % 7 + 7 * (-nth - 1))


@cache
def _summer_time(region: Region, year: int) -> tuple[date, date] | None:
    """The first day of summer time and the first day after it, if the year had one."""
    if region == "FR":
        if year < 1976:
            return None
        return _sunday(year, 3, -1), _sunday(year, 9 if year < 1996 else 10, -1)
    if year >= 2007:
        return _sunday(year, 3, 2), _sunday(year, 11, 1)
    if year >= 1987:
        return _sunday(year, 4, 1), _sunday(year, 10, -1)
    return _sunday(year, 4, -1), _sunday(year, 10, -1)


def utc_offset(region: Region, day: date) -> str:
    standard, summer = _OFFSETS[region]
    span = _summer_time(region, day.year)
    return summer if span is not None and span[0] <= day < span[1] else standard


def stamp(region: Region, moment: datetime) -> str:
    """A naive local time to the minute, as a FHIR dateTime with the offset of its day."""
    return moment.isoformat(timespec="seconds") + utc_offset(region, moment.date())
