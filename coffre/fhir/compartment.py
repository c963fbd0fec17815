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


def compartment_patients(resource: dict[str, Any]) -> tuple[str, ...]:
    """The patients whose record a resource of the compartment is, sorted, once each.

    A Patient is its own. Other resources follow the compartment's parameters in their
    order, and take the patients the first one that names any Patient names: one for an
    Observation's subject (whoever performed it), several for a Group's members or an
    Appointment's actors.
    """
    resource_type = resource["resourceType"]
    if resource_type == "Patient":
        patient_id = resource.get("id")
        return (patient_id,) if isinstance(patient_id, str) else ()
    for path in PATIENT_COMPARTMENT_PATHS.get(resource_type, ()):
        found = {
            reference.removeprefix("Patient/").split("/", 1)[0]
            for value in _values_at(resource, path)
            if isinstance(value, dict)
            and isinstance(reference := value.get("reference"), str)
            and reference.startswith("Patient/")
        }
        if found:
            return tuple(sorted(found))
    return ()


def patient_of(resource: dict[str, Any]) -> str | None:
    """The id of the one patient whose compartment holds this resource; None for a
    resource of no patient, or of several (``compartment_patients`` names them)."""
    patients = compartment_patients(resource)
    return patients[0] if len(patients) == 1 else None
