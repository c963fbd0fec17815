"""What $find offers of a campaign's free seats: each place and time once, earliest
first, through one of its seats."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from coffre.booking.find import offered, place_and_time


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


@given(seats=seats, count=st.integers(min_value=1, max_value=10), seed=st.integers())
def test_each_place_and_time_is_offered_once_earliest_first(
    seats: list[tuple[str, int]], count: int, seed: int
) -> None:
    slots = [(f"s{n}", _seat(schedule, minute)) for n, (schedule, minute) in enumerate(seats)]
    chosen = offered(slots, count, random.Random(seed))
    kinds = [place_and_time(slot) for _, slot in chosen]
    assert len(set(kinds)) == len(kinds)
    assert len(chosen) == min(count, len({place_and_time(slot) for _, slot in slots}))
    starts = [slot["start"] for _, slot in chosen]
    assert starts == sorted(starts)
    every = {(schedule, minute) for schedule, minute in seats}
    earliest = sorted(every, key=lambda pair: (pair[1], f"Schedule/{pair[0]}"))[:count]
    assert [(s["schedule"]["reference"][9:], int(s["start"][14:16])) for _, s in chosen] == earliest
    assert all(dict(slots)[slot_id] is slot for slot_id, slot in chosen)


def test_a_crowd_is_spread_over_the_seats_of_one_time() -> None:
    slots = [(f"s{n}", _seat("laval", 0)) for n in range(5)]
    choose = random.Random(7)
    picked = {offered(slots, 1, choose)[0][0] for _ in range(200)}
    assert picked == {f"s{n}" for n in range(5)}
