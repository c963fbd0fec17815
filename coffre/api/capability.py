"""The CapabilityStatement at /metadata: what this server really does, and nothing more."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import coffre
from coffre.api.history import UNSUPPORTED as HISTORY_REFUSES
from coffre.fhir.json_patch import MEDIA_TYPE as JSON_PATCH
from coffre.fhir.validation import REST_TYPES
from coffre.search.criteria import MODIFIERS, parameter_of
from coffre.search.normalise import PHONETIC
from coffre.search.parameters import parameters_for

_INTERACTIONS = [
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
]
_MODIFIER_NOTE = {
    kind: "modifiers: " + ", ".join(f":{m}" for m in sorted({*modifiers, "missing"}))
    for kind, modifiers in MODIFIERS.items()
}
_MODIFIER_NOTE["reference"] += ", :[Type], chains (subject:Patient.name) and _has"
for _kind in ("date", "number", "quantity"):
    _MODIFIER_NOTE[_kind] += "; prefixes eq ne gt lt ge le sa eb ap"
_PHONETIC = (
    "the American Soundex code of each word of the name (Tremblay and Tramblay, Müller and"
    " Mueller alike); modifiers: :missing"
)
_RESULT_PARAMETERS = (
    "_count, _sort, _total (none|estimate|accurate), _summary (true|count|data|text|false),"
    " _elements, _include and _revinclude (with :iterate); GET and POST _search;"
    " unknown parameters are ignored and reported unless Prefer: handling=strict"
)
_EVERYTHING = "http://hl7.org/fhir/OperationDefinition/Patient-everything"
_PATIENT_OPERATIONS = [
    {"name": "everything", "definition": _EVERYTHING},
    {
        "name": "research-consent",
        "definition": "urn:coffre:OperationDefinition:Patient-research-consent",
        "documentation": "GET: the patient's research Consent; PUT or POST a Parameters"
        " with optOut (boolean) to record or withdraw their refusal of research use",
    },
    {
        "name": "access-history",
        "definition": "urn:coffre:OperationDefinition:Patient-access-history",
        "documentation": "GET: who wrote or opened the patient's records, as AuditEvents each"
        " checked against the log; for the patient and auditors",
    },
]
_MAP_PROOF = {
    "name": "map-proof",
    "definition": "urn:coffre:OperationDefinition:Resource-map-proof",
    "documentation": "GET: the sparse Merkle proof, against the latest signed checkpoint,"
    " of the record's latest write, and its location (for /ledger/proof/map); a read",
}
_VALIDATE = {
    "name": "validate",
    "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate",
    "documentation": "POST the resource, or Parameters with resource and mode (create or"
    " update), to [type]/$validate or [type]/[id]/$validate: 200 and an OperationOutcome"
    " whether it is valid or not, with the R4 schema and element rules a write applies;"
    " no profile; nothing written",
}
_STARTED = datetime.now(UTC).isoformat(timespec="seconds")
_BULK = "http://hl7.org/fhir/uv/bulkdata"
_EXPORTS = {
    "Patient": [{"name": "export", "definition": f"{_BULK}/OperationDefinition/patient-export"}],
    "Group": [{"name": "export", "definition": f"{_BULK}/OperationDefinition/group-export"}],
}
_BOOKING = [
    {
        "name": "find",
        "definition": "urn:coffre:OperationDefinition:Appointment-find",
        "documentation": "GET: the next free times (start, end, location, practitioner,"
        " schedule, service-type, patient, _count), each once, as proposed Appointments",
    },
    {
        "name": "book",
        "definition": "urn:coffre:OperationDefinition:Appointment-book",
        "documentation": "POST Parameters with appointment-resource (or the Appointment): booked"
        " on its slot, or on another free seat of the same place and time; 409 when none is"
        " left. No slot is ever held by two appointments, whatever writes them",
    },
]
_SYSTEM_EXPORT = {
    "name": "export",
    "definition": f"{_BULK}/OperationDefinition/export",
    "documentation": "Bulk Data export (IG v2): GET, or POST with a Parameters body, and"
    " Prefer: respond-async; _type, _since, _outputFormat=application/fhir+ndjson,"
    " _typeFilter (the search parameters, modifiers and prefixes a search of the type takes;"
    " no result parameter), _elements (root elements, Type.element or element), patient"
    " (POST, Patient and Group level); not includeAssociatedData; the NDJSON is made as it"
    " is downloaded",
}


def _resource(resource_type: str) -> dict[str, Any]:
    params = [
        p for code in parameters_for(resource_type) if (p := parameter_of(resource_type, code))
    ]
    operations = _PATIENT_OPERATIONS if resource_type == "Patient" else []
    if resource_type == "Appointment":
        operations = _BOOKING
    operations = [*operations, *_EXPORTS.get(resource_type, []), _MAP_PROOF, _VALIDATE]
    return {
        "type": resource_type,
        "interaction": [{"code": code} for code in _INTERACTIONS],
        "versioning": "versioned-update",
        "readHistory": True,
        "updateCreate": True,
        "conditionalCreate": True,
        "conditionalRead": "full-support",
        "conditionalUpdate": True,
        "conditionalDelete": "multiple",
        "searchInclude": ["*"],
        "searchRevInclude": ["*"],
        "searchParam": [
            {
                "name": p.code,
                "definition": p.url,
                "type": p.type,
                "documentation": _PHONETIC
                if p.code == PHONETIC
                else _MODIFIER_NOTE.get(p.type, ""),
            }
            for p in params
        ],
        "operation": operations,
    }


def capability_statement(base_url: str) -> dict[str, Any]:
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": _STARTED,
        "publisher": "Coffre",
        "kind": "instance",
        "software": {"name": "Coffre", "version": coffre.__version__},
        "implementation": {"description": "Coffre sealed FHIR R4 store", "url": base_url},
        "instantiates": [f"{_BULK}/CapabilityStatement/bulk-data"],
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json", "application/json"],
        "patchFormat": [JSON_PATCH],
        "rest": [
            {
                "mode": "server",
                "documentation": "Every resource is sealed (AES-256-GCM) before it reaches the"
                " storage host; search runs over blind tokens. Search: "
                + _RESULT_PARAMETERS
                + ". Read and vread: _summary (true|data|text|false) and _elements."
                " History: _since, _at and _count; "
                + ", ".join(HISTORY_REFUSES)
                + " are refused (400)",
                "resource": [_resource(name) for name in sorted(REST_TYPES)],
                "interaction": [
                    {"code": "transaction"},
                    {"code": "batch"},
                    {"code": "history-system"},
                ],
                "operation": [_SYSTEM_EXPORT],
            }
        ],
    }
