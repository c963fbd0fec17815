"""The patients a resource outside the patient compartment names (a Task's ``for``, a
Device's ``patient``...), by the official search parameters of its type: those of type
reference whose targets include Patient.

Access decisions treat such a resource as a record of the patients it names
(docs/access.md). A record of one patient alone (of the compartment or not) is sealed in
that patient's compartment, so that erasing them shreds it; one of several patients
(a Task for one that focuses on another, a Group's members) is sealed under its type's
shared key. A patient is named by a relative reference, ``Patient/<id>``, as the
compartment and the search index count them.

A Binary has no such parameter, but its ``securityContext`` is the resource whose access
rules it takes (R4 binary.html): one that is a patient makes the Binary (a scanned
letter, a photo) that patient's record, read as theirs and erased with them.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from coffre.fhir._definitions_r4 import PATIENT_COMPARTMENT_PATHS
from coffre.fhir.compartment import compartment_patients
from coffre.search.parameters import Extracted, Extractor, parameters_for
from coffre.search.values import Ref, reference_values


def _security_context(r: Any, root: Any = None) -> Extracted:
    context = r.get("securityContext")
    return (("securityContext", [context]),) if context is not None else ()


_PROXIES: dict[str, tuple[Extractor, ...]] = {"Binary": (_security_context,)}
"""Elements that are no search parameter and name whose record a resource is."""


@cache
def _naming(resource_type: str) -> tuple[Extractor, ...]:
    if resource_type == "Patient" or resource_type in PATIENT_COMPARTMENT_PATHS:
        return ()
    extractors = (
        param.extract
        for param in parameters_for(resource_type).values()
        if param.type == "reference" and "Patient" in param.targets and param.extract is not None
    )
    return tuple(dict.fromkeys(extractors)) + _PROXIES.get(resource_type, ())


def names_patients(resource_type: str) -> bool:
    """Whether records of a type outside the compartment can name a patient at all."""
    return bool(_naming(resource_type))


def named_patients(resource: dict[str, Any]) -> tuple[str, ...]:
    """The ids of the patients the resource names, sorted, once each; () for a resource
    of the compartment (``patient_of`` says whose it is) or of a type that names none."""
    found: set[str] = set()
    for extract in _naming(resource["resourceType"]):
        for value in reference_values(extract(resource), None):
            if isinstance(value, Ref) and value.type == "Patient" and value.local_id:
                found.add(value.local_id)
    return tuple(sorted(found))


def record_patients(resource: dict[str, Any]) -> tuple[str, ...]:
    """The patients whose record a resource is judged as, sorted: those of its
    compartment (``compartment_patients``), or those a resource outside it names (each
    function finds none for a resource of the other kind)."""
    return compartment_patients(resource) or named_patients(resource)


def sealing_patient(resource: dict[str, Any]) -> str | None:
    """The patient whose compartment key seals a resource, when it is the record of one
    patient alone; None for a record of no patient or of several, sealed under its
    type's shared key."""
    patients = record_patients(resource)
    return patients[0] if len(patients) == 1 else None
