"""What $find makes of a campaign's free seats: each place and time once, earliest first;
the days its window covers, and the seats within it."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coffre.booking.find import by_time, parse_find, place_and_time
from coffre.exceptions import FhirError
from coffre.search.normalise import date_range


def _seat(schedule: str, minute: int) -> dict[str, Any]:
    return {
        "resourceType": "Slot",
        "schedule": {"reference": f"Schedule/{schedule}"},
        "status": "free",
        "start": f"2031-03-01T09:{minute:02d}:00Z",
        "end": f"2031-03-01T09:{minute + 5:02d}:00Z",
    }


seats = st.lists(
    st.tuples(st.sampled_from(["laval", "gatineau"]), st.integers(min_value=0, max_value=50)),
    max_size=40,
)


@given(seats=seats)
def test_each_place_and_time_is_one_group_earliest_first(seats: list[tuple[str, int]]) -> None:
    slots = [(f"s{n}", _seat(schedule, minute)) for n, (schedule, minute) in enumerate(seats)]
    groups = by_time(slots)
    assert sorted(seat for group in groups for seat in group) == sorted(slots)
    for group in groups:
        assert len({place_and_time(slot) for _, slot in group}) == 1
    every = sorted(set(seats), key=lambda pair: (pair[1], f"Schedule/{pair[0]}"))
    firsts = [(g[0][1]["schedule"]["reference"][9:], int(g[0][1]["start"][14:16])) for g in groups]
    assert firsts == every


def _micros(instant: str) -> int:
    found = date_range(instant)
    assert found is not None
    return found[0]


def test_the_window_starts_now_at_the_earliest_and_covers_its_days() -> None:
    now = _micros("2031-03-01T22:30:00Z")
    query = parse_find([("start", "2031-02-01T00:00:00Z")], now)
    assert query.days == ("2031-03-01", "2031-03-02")  # a day from now
    assert not query.in_window(_seat("laval", 0))  # 9:00 that morning is gone
    assert query.in_window({"start": "2031-03-02T09:00:00Z"})
    assert not query.in_window({"start": "2031-03-02T22:30:00Z"})
    week = parse_find([("start", "2031-03-03T10:00:00+02:00"), ("end", "2031-03-10")], now)
    # The 10th begins at 05:00 UTC in Montreal: its seats before then are of the 9th there.
    assert week.days[0] == "2031-03-03" and week.days[-1] == "2031-03-10"


def test_a_date_is_the_centre_s_own_day() -> None:
    """start=2031-03-01 at a Montreal centre is its 1st, 19:30 (00:30 UTC the 2nd) in, 21:00
    of the 28th (02:00 UTC the 1st) out; end=<date> is that day's midnight there too."""
    now, montreal = _micros("2031-02-20T12:00:00Z"), ZoneInfo("America/Montreal")
    day = parse_find([("start", "2031-03-01")], now)
    assert day.days == ("2031-02-28", "2031-03-01", "2031-03-02")
    assert day.in_window({"start": "2031-03-02T00:30:00Z"}, montreal)
    assert not day.in_window({"start": "2031-03-01T02:00:00Z"}, montreal)
    assert day.in_window({"start": "2031-03-01T02:00:00Z"})  # a centre in UTC
    two = parse_find([("start", "2031-03-01T12:00:00-05:00"), ("end", "2031-03-03")], now)
    assert two.in_window({"start": "2031-03-03T04:30:00Z"}, montreal)  # 23:30 the 2nd
    assert not two.in_window({"start": "2031-03-03T05:30:00Z"}, montreal)
    with pytest.raises(FhirError, match="the day of start=2031-02-01 is not after now"):
        parse_find([("start", "2031-02-01")], now)


def test_an_end_date_is_after_a_start_its_centre_s_midnight_follows() -> None:
    """end=2031-03-02 is 05:00 UTC in Montreal: after a start of 20:00 there the 1st, 01:00
    UTC the 2nd, though UTC's midnight of the 2nd is not."""
    now, montreal = _micros("2031-02-20T12:00:00Z"), ZoneInfo("America/Montreal")
    evening = parse_find([("start", "2031-03-01T20:00:00-05:00"), ("end", "2031-03-02")], now)
    assert evening.in_window({"start": "2031-03-02T04:30:00Z"}, montreal)  # 23:30 the 1st
    assert not evening.in_window({"start": "2031-03-02T05:00:00Z"}, montreal)
    for start, end in (("2031-03-02T13:00:00Z", "2031-03-02"), ("2031-03-02", "2031-03-02")):
        with pytest.raises(FhirError, match=f"end={end} is not after start={start}"):
            parse_find([("start", start), ("end", end)], now)
