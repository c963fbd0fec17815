"""FHIR resources as rows of OMOP-like tables, minimised for research.

A row keeps the patient's project pseudonym, codes (a coding's system and code, never its
display nor any text), numbers with their UCUM unit, and dates generalised: a birth to
its year, an event to the first day of its month. Names, identifiers, telecom, addresses
(but the region), references to other records and free text never reach a row.
docs/research.md says why.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

Row = dict[str, Any]

_YEAR_MONTH_LENGTH = 7  # "2024-03"


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    kind: str
    """``string``, ``int``, ``float`` or ``month`` (a date, always the 1st of its month)."""


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    dated_by: str | None
    """The column a project's period of data applies to; None: the table is not dated."""


PERSON_ID = Column("person_id", "string")
_CONCEPT = (Column("vocabulary", "string"), Column("code", "string"))

PERSON = Table(
    "person",
    (
        PERSON_ID,
        Column("gender", "string"),
        Column("year_of_birth", "int"),
        Column("region", "string"),
    ),
    None,
)
VISIT = Table(
    "visit_occurrence",
    (
        PERSON_ID,
        Column("visit_class", "string"),
        *_CONCEPT,
        Column("start_month", "month"),
        Column("end_month", "month"),
    ),
    "start_month",
)
CONDITION = Table(
    "condition_occurrence",
    (
        PERSON_ID,
        *_CONCEPT,
        Column("clinical_status", "string"),
        Column("start_month", "month"),
        Column("end_month", "month"),
    ),
    "start_month",
)
MEASUREMENT = Table(
    "measurement",
    (
        PERSON_ID,
        *_CONCEPT,
        Column("month", "month"),
        Column("value_as_number", "float"),
        Column("unit", "string"),
        Column("value_vocabulary", "string"),
        Column("value_code", "string"),
    ),
    "month",
)
DRUG = Table(
    "drug_exposure",
    (PERSON_ID, *_CONCEPT, Column("status", "string"), Column("start_month", "month")),
    "start_month",
)
PROCEDURE = Table(
    "procedure_occurrence",
    (PERSON_ID, *_CONCEPT, Column("status", "string"), Column("month", "month")),
    "month",
)
IMMUNIZATION = Table(
    "immunization",
    (PERSON_ID, *_CONCEPT, Column("status", "string"), Column("month", "month")),
    "month",
)


def year_of(value: Any) -> int | None:
    """The year of a FHIR date or dateTime; None for anything else."""
    if not isinstance(value, str) or len(value) < 4 or not value[:4].isdigit():
        return None
    return int(value[:4])


def month_of(value: Any) -> date | None:
    """The first day of the month of a FHIR date, dateTime or instant (in the time zone it
    was written in); None for a year alone, or anything else."""
    if not isinstance(value, str) or len(value) < _YEAR_MONTH_LENGTH or value[4] != "-":
        return None
    try:
        return date(int(value[:4]), int(value[5:7]), 1)
    except ValueError:
        return None


def _concept(element: Any) -> tuple[str | None, str | None]:
    """A CodeableConcept's first coding with a code: its system and code."""
    if isinstance(element, dict):
        for coding in element.get("coding", []):
            if isinstance(coding, dict) and "code" in coding:
                return coding.get("system"), coding["code"]
    return None, None


def _concept_columns(element: Any) -> Row:
    vocabulary, code = _concept(element)
    return {"vocabulary": vocabulary, "code": code}


def _first(resource: dict[str, Any], *paths: tuple[str, ...]) -> Any:
    """The first of ``paths`` (element names, one level down each) that holds a value."""
    for path in paths:
        value: Any = resource
        for name in path:
            value = value.get(name) if isinstance(value, dict) else None
        if value is not None:
            return value
    return None


def _person(patient: dict[str, Any]) -> Iterator[Row]:
    addresses = patient.get("address", [])
    yield {
        "gender": patient.get("gender"),
        "year_of_birth": year_of(patient.get("birthDate")),
        "region": addresses[0].get("state") if addresses else None,
    }


def _visit(encounter: dict[str, Any]) -> Iterator[Row]:
    types = encounter.get("type", [])
    yield {
        "visit_class": encounter.get("class", {}).get("code"),
        **_concept_columns(types[0] if types else None),
        "start_month": month_of(_first(encounter, ("period", "start"))),
        "end_month": month_of(_first(encounter, ("period", "end"))),
    }


def _condition(condition: dict[str, Any]) -> Iterator[Row]:
    yield {
        **_concept_columns(condition.get("code")),
        "clinical_status": _concept(condition.get("clinicalStatus"))[1],
        "start_month": month_of(
            _first(condition, ("onsetDateTime",), ("onsetPeriod", "start"), ("recordedDate",))
        ),
        "end_month": month_of(
            _first(condition, ("abatementDateTime",), ("abatementPeriod", "end"))
        ),
    }


def _measured(element: dict[str, Any]) -> Row:
    """The code and value of an Observation, or of one of its components."""
    quantity = element.get("valueQuantity", {})
    value = quantity.get("value")
    value_vocabulary, value_code = _concept(element.get("valueCodeableConcept"))
    return {
        **_concept_columns(element.get("code")),
        "value_as_number": float(value) if isinstance(value, int | float) else None,
        "unit": quantity.get("code"),
        "value_vocabulary": value_vocabulary,
        "value_code": value_code,
    }


def _measurement(observation: dict[str, Any]) -> Iterator[Row]:
    """A row for the Observation and one for each component (a blood pressure's two)."""
    month = month_of(
        _first(
            observation,
            ("effectiveDateTime",),
            ("effectivePeriod", "start"),
            ("effectiveInstant",),
            ("issued",),
        )
    )
    for element in [observation, *observation.get("component", [])]:
        yield {**_measured(element), "month": month}


def _drug(request: dict[str, Any]) -> Iterator[Row]:
    yield {
        **_concept_columns(request.get("medicationCodeableConcept")),
        "status": request.get("status"),
        "start_month": month_of(request.get("authoredOn")),
    }


def _procedure(procedure: dict[str, Any]) -> Iterator[Row]:
    yield {
        **_concept_columns(procedure.get("code")),
        "status": procedure.get("status"),
        "month": month_of(_first(procedure, ("performedDateTime",), ("performedPeriod", "start"))),
    }


def _immunization(immunization: dict[str, Any]) -> Iterator[Row]:
    yield {
        **_concept_columns(immunization.get("vaccineCode")),
        "status": immunization.get("status"),
        "month": month_of(immunization.get("occurrenceDateTime")),
    }


TABLE_OF: dict[str, tuple[Table, Callable[[dict[str, Any]], Iterator[Row]]]] = {
    "Patient": (PERSON, _person),
    "Encounter": (VISIT, _visit),
    "Condition": (CONDITION, _condition),
    "Observation": (MEASUREMENT, _measurement),
    "MedicationRequest": (DRUG, _drug),
    "Procedure": (PROCEDURE, _procedure),
    "Immunization": (IMMUNIZATION, _immunization),
}
"""The resource types a project may receive, each with its table and its rows."""


def tables_of(types: Iterable[str]) -> list[Table]:
    """The tables of some of ``TABLE_OF``'s types, in a stable order."""
    return sorted({TABLE_OF[name][0] for name in types}, key=lambda table: table.name)


def rows_of(
    resource: dict[str, Any], person_id: str, period: tuple[date, date]
) -> Iterator[tuple[Table, Row]]:
    """The rows a resource gives, for a person (their pseudonym), with only the events of
    ``period`` (first and last day, counted in whole months): an undated event is left out."""
    table, rows = TABLE_OF[resource["resourceType"]]
    first = period[0].replace(day=1)
    for row in rows(resource):
        if table.dated_by is not None:
            when = row[table.dated_by]
            if when is None or not first <= when <= period[1]:
                continue
        yield table, {"person_id": person_id, **row}
