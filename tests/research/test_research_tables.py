"""Dates generalised, codes kept, the rest dropped: one resource's rows."""

from __future__ import annotations

from datetime import date

import pytest

from coffre.research.tables import MEASUREMENT, month_of, rows_of, year_of

PERIOD = (date(2020, 1, 15), date(2020, 12, 31))


@pytest.mark.parametrize(
    ("value", "month"),
    [
        ("2020-03-17T10:15:00+01:00", date(2020, 3, 1)),
        ("2020-12-31T23:30:00-05:00", date(2020, 12, 1)),  # as written, not in UTC
        ("2020-03", date(2020, 3, 1)),
        ("2020", None),
        ("2020-13-01", None),
        (None, None),
        (2020, None),
    ],
)
def test_an_event_keeps_its_month_at_most(value: object, month: date | None) -> None:
    assert month_of(value) == month


def test_a_birth_keeps_its_year() -> None:
    assert [year_of(v) for v in ("1984-02-29", "1984", "84", None)] == [1984, 1984, None, None]


def test_an_observation_gives_a_row_and_one_per_component_in_the_period() -> None:
    observation = {
        "resourceType": "Observation",
        "code": {
            "coding": [{"display": "no code"}, {"system": "http://loinc.org", "code": "85354-9"}]
        },
        "effectivePeriod": {"start": "2020-01-02"},  # January counts: the period is in months
        "component": [
            {
                "code": {"coding": [{"code": "8480-6"}]},
                "valueQuantity": {"value": 120, "code": "mm[Hg]"},
            },
            {"code": {"text": "free"}, "valueString": "free"},
        ],
    }
    rows = [row for table, row in rows_of(observation, "p", PERIOD) if table is MEASUREMENT]
    assert [
        (row["vocabulary"], row["code"], row["value_as_number"], row["unit"]) for row in rows
    ] == [
        ("http://loinc.org", "85354-9", None, None),
        (None, "8480-6", 120.0, "mm[Hg]"),
        (None, None, None, None),
    ]
    assert {row["month"] for row in rows} == {date(2020, 1, 1)}
    observation["effectivePeriod"] = {"start": "2019-12-31"}
    assert list(rows_of(observation, "p", PERIOD)) == []
