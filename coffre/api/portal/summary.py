"""A readable summary of a patient's compartment: rows of plain text per section."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from coffre.service import Stored

RECENT_RESULTS = 20
Row = tuple[str, str, str]
"""(name, date, status or value): what a line of a section shows."""


def concept(value: Any) -> str:
    """A CodeableConcept as a person reads it: its text, else its first display or code."""
    if not isinstance(value, dict):
        return ""
    if value.get("text"):
        return str(value["text"])
    for coding in value.get("coding", []):
        if coding.get("display") or coding.get("code"):
            return str(coding.get("display") or coding.get("code"))
    return ""


def day(value: Any) -> str:
    """The date part of a FHIR date or dateTime."""
    return value[:10] if isinstance(value, str) else ""


def _status(resource: dict[str, Any], element: str) -> str:
    """A status's code (``resolved``), which the page puts in the patient's language,
    even where a CodeableConcept also gives an English display."""
    value = resource.get(element)
    if not isinstance(value, dict):
        return str(value or "")
    codes = (c.get("code") for c in value.get("coding", []) if isinstance(c, dict))
    return next((code for code in codes if isinstance(code, str) and code), concept(value))


def _quantity(value: dict[str, Any]) -> str:
    number = value.get("value")
    unit = value.get("unit") or value.get("code") or ""
    if isinstance(number, float):
        number = f"{round(number, 2):g}"  # 101.61138329252928 reads 101.61
    return f"{number} {unit}".strip() if number is not None else ""


def _between(low: str, high: str, joined: str = " \u2013 ") -> str:
    return joined.join(part for part in (low, high) if part)


def observed_value(resource: dict[str, Any]) -> str:
    """An Observation's value (any of R4's ``value[x]`` but sampled data), or its
    components' (a blood pressure), as text."""
    if "valueQuantity" in resource:
        return _quantity(resource["valueQuantity"])
    if "valueCodeableConcept" in resource:
        return concept(resource["valueCodeableConcept"])
    if "valueBoolean" in resource:
        return "true" if resource["valueBoolean"] else "false"  # as FHIR writes it
    if "valueRange" in resource:
        found = resource["valueRange"]
        return _between(_quantity(found.get("low", {})), _quantity(found.get("high", {})))
    if "valueRatio" in resource:
        found = resource["valueRatio"]
        numerator, denominator = (found.get(side, {}) for side in ("numerator", "denominator"))
        return _between(_quantity(numerator), _quantity(denominator), " / ")
    if "valuePeriod" in resource:
        found = resource["valuePeriod"]
        return _between(moment(found.get("start")), moment(found.get("end")))
    for name in ("valueString", "valueInteger", "valueDateTime", "valueTime"):
        if name in resource:
            return str(resource[name])
    parts = [
        f"{concept(c.get('code'))}: {observed_value(c)}"
        for c in resource.get("component", [])
        if observed_value(c)
    ]
    return "; ".join(parts)


def _condition(r: dict[str, Any]) -> Row:
    return (
        concept(r.get("code")),
        day(r.get("onsetDateTime") or r.get("recordedDate")),
        _status(r, "clinicalStatus"),
    )


def _medication(r: dict[str, Any]) -> Row:
    name = concept(r.get("medicationCodeableConcept")) or r.get("medicationReference", {}).get(
        "display", ""
    )
    return name, day(r.get("authoredOn") or r.get("effectiveDateTime")), _status(r, "status")


def _allergy(r: dict[str, Any]) -> Row:
    return (
        concept(r.get("code")),
        day(r.get("recordedDate") or r.get("onsetDateTime")),
        _status(r, "clinicalStatus"),
    )


def _immunization(r: dict[str, Any]) -> Row:
    return concept(r.get("vaccineCode")), day(r.get("occurrenceDateTime")), _status(r, "status")


def _observation(r: dict[str, Any]) -> Row:
    period = r.get("effectivePeriod")
    begun = period.get("start") if isinstance(period, dict) else None
    when = r.get("effectiveDateTime") or r.get("effectiveInstant") or begun or r.get("issued")
    return concept(r.get("code")), day(when), observed_value(r)


def moment(value: Any) -> str:
    """A FHIR instant as a person reads it, to the minute, with its time zone as recorded
    (``2031-03-01 09:00 UTC``, ``2031-03-01 09:00 -05:00``)."""
    if not isinstance(value, str) or len(value) < 16:
        return day(value)
    zone = value[19:].lstrip(".0123456789")
    return f"{value[:10]} {value[11:16]} {'UTC' if zone in ('Z', '+00:00') else zone}".strip()


def _appointment(r: dict[str, Any]) -> Row:
    what = next((concept(c) for c in r.get("serviceType", ()) if concept(c)), "")
    return what or str(r.get("description", "")), moment(r.get("start")), _status(r, "status")


@dataclass(frozen=True, slots=True)
class Section:
    """A part of the summary: its title's key, the types it shows, how a row reads, and
    how many rows at most (the most recent first)."""

    title: str
    types: tuple[str, ...]
    row: Callable[[dict[str, Any]], Row]
    third: str
    limit: int | None = None


SECTIONS = (
    Section("conditions", ("Condition",), _condition, "status"),
    Section("medications", ("MedicationRequest", "MedicationStatement"), _medication, "status"),
    Section("allergies", ("AllergyIntolerance",), _allergy, "status"),
    Section("immunizations", ("Immunization",), _immunization, "status"),
    Section("observations", ("Observation",), _observation, "value", RECENT_RESULTS),
    Section("appointments", ("Appointment",), _appointment, "status"),
)
SUMMARY_TYPES = tuple(t for section in SECTIONS for t in section.types)


def shown(section: Section, found: list[Stored]) -> list[tuple[Stored, Row]]:
    """What a section shows of the records found: each with its row, newest first, at
    most ``section.limit`` (only these leave the gateway, and are logged)."""
    kept = [(s, section.row(s.resource())) for s in found if s.resource_type in section.types]
    kept.sort(key=lambda pair: pair[1][1], reverse=True)
    return kept[: section.limit] if section.limit is not None else kept
