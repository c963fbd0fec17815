"""Who a cohort admits: a code in one of its rows, a year of birth in its range."""

from __future__ import annotations

import pytest

from coffre.research.cohort import CODED, Cohort
from coffre.research.projects import ProjectError

SNOMED = "http://snomed.info/sct"
DIABETES = f"{SNOMED}|44054006"


def test_a_cohort_admits_a_row_with_one_of_its_codes() -> None:
    cohort = Cohort((DIABETES, "http://loinc.org|4548-4"))
    assert cohort.holds({"vocabulary": SNOMED, "code": "44054006"})
    assert not cohort.holds({"vocabulary": "http://loinc.org", "code": "44054006"})
    assert not cohort.holds({"vocabulary": None, "code": "44054006"})
    assert not cohort.holds({"gender": "female"})  # a person row carries no code
    assert (
        cohort.types
        == CODED
        == {
            "Condition",
            "Encounter",
            "Immunization",
            "MedicationRequest",
            "Observation",
            "Procedure",
        }
    )
    assert Cohort().types == frozenset()


@pytest.mark.parametrize(
    ("born_from", "born_to", "admitted"),
    [
        (None, None, [1949, 1950, 1970, 1971, None]),
        (1950, 1970, [1950, 1970]),
        (1950, None, [1950, 1970, 1971]),
        (None, 1950, [1949, 1950]),
    ],
)
def test_a_cohort_admits_the_years_of_its_range_inclusive(
    born_from: int | None, born_to: int | None, admitted: list[int | None]
) -> None:
    cohort = Cohort(born_from=born_from, born_to=born_to)
    years = [1949, 1950, 1970, 1971, None]
    assert [year for year in years if cohort.born_in(year)] == admitted


def test_a_cohort_says_itself_in_a_few_words() -> None:
    assert Cohort().summary() == "everyone"
    assert Cohort((DIABETES,), 1950).summary() == f"codes {DIABETES}; born 1950.."


@pytest.mark.parametrize(
    ("cohort", "message"),
    [
        ({"codes": ("44054006",)}, "SYSTEM|CODE, not '44054006'"),
        ({"codes": (f"{SNOMED}|",)}, "SYSTEM|CODE"),
        ({"codes": ("|44054006",)}, "SYSTEM|CODE"),
        ({"codes": (44054006,)}, "SYSTEM|CODE"),  # a damaged projects file
        ({"born_from": 1971, "born_to": 1970}, "end before they start"),
    ],
)
def test_a_cohort_that_means_nothing_is_refused(cohort: dict[str, object], message: str) -> None:
    with pytest.raises(ProjectError, match=message):
        Cohort(**cohort)  # type: ignore[arg-type]
