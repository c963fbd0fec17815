"""The summary's rows: every R4 value and date an Observation may carry reads as text."""

from __future__ import annotations

from typing import Any

import pytest

from coffre.api.portal.summary import SECTIONS, observed_value

RESULTS = next(section for section in SECTIONS if section.title == "observations")


@pytest.mark.parametrize(
    ("value", "reads"),
    [
        ({"valueBoolean": False}, "false"),
        (
            {"valueRange": {"low": {"value": 4, "unit": "mmol/L"}, "high": {"value": 6}}},
            "4 mmol/L \u2013 6",
        ),
        ({"valueRange": {"high": {"value": 6, "unit": "%"}}}, "6 %"),
        ({"valueRatio": {"numerator": {"value": 1}, "denominator": {"value": 128}}}, "1 / 128"),
        ({"valuePeriod": {"start": "2026-11-02T08:00:00Z"}}, "2026-11-02 08:00 UTC"),
        ({"valueTime": "08:30:00"}, "08:30:00"),
        ({"valueInteger": 3}, "3"),
    ],
)
def test_every_value_reads_as_text(value: dict[str, Any], reads: str) -> None:
    assert observed_value(value) == reads


@pytest.mark.parametrize(
    "when",
    [
        {"effectiveDateTime": "2026-12-05T10:00:00Z"},
        {"effectiveInstant": "2026-12-05T10:00:00.000Z"},
        {"effectivePeriod": {"start": "2026-12-05", "end": "2026-12-06"}},
        {"issued": "2026-12-05T11:00:00Z"},
    ],
)
def test_a_result_is_dated_by_any_of_its_effective_times(when: dict[str, Any]) -> None:
    """Undated, it sorted last and fell out of the twenty most recent."""
    assert RESULTS.row({"resourceType": "Observation", **when})[1] == "2026-12-05"
