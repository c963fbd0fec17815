"""Which patient's compartment a resource belongs to (CompartmentDefinition-patient)."""

from __future__ import annotations

from typing import Any

from coffre.fhir._definitions_r4 import PATIENT_COMPARTMENT_PATHS


def _values_at(node: Any, path: tuple[str, ...]) -> list[Any]:
    values = [node]
    for step in path:
        found = []
        for value in values:
            child = value.get(step) if isinstance(value, dict) else None
            if isinstance(child, list):
                found.extend(child)
            elif child is not None:
                found.append(child)
        values = found
    return values


def patient_of(resource: dict[str, Any]) -> str | None:
    """The id of the patient whose compartment holds this resource, if any.

    A Patient is in its own compartment. Other resources follow the compartment's
    parameters in their order, and take the first reference that names a Patient.
    """
    resource_type = resource["resourceType"]
    if resource_type == "Patient":
        patient_id: str | None = resource.get("id")
        return patient_id
    for path in PATIENT_COMPARTMENT_PATHS.get(resource_type, ()):
        for value in _values_at(resource, path):
            reference = value.get("reference") if isinstance(value, dict) else None
            if isinstance(reference, str) and reference.startswith("Patient/"):
                return reference.removeprefix("Patient/").split("/", 1)[0]
    return None
