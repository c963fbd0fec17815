"""The CapabilityStatement at /metadata: what this server really does, and nothing more."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import coffre
from coffre.fhir._definitions_r4 import RESOURCE_TYPES
from coffre.search.criteria import SUPPORTED

_INTERACTIONS = [
    "read",
    "vread",
    "update",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
]
_SEARCH_TYPES = {"_id": "token", "identifier": "token"}
_STARTED = datetime.now(UTC).isoformat(timespec="seconds")


def _resource(resource_type: str) -> dict[str, Any]:
    params = [p for p in SUPPORTED if p == "_id" or resource_type != "Parameters"]
    return {
        "type": resource_type,
        "interaction": [{"code": code} for code in _INTERACTIONS],
        "versioning": "versioned-update",
        "readHistory": True,
        "updateCreate": True,
        "conditionalCreate": True,
        "conditionalRead": "not-match",
        "conditionalUpdate": True,
        "conditionalDelete": "multiple",
        "searchParam": [{"name": name, "type": _SEARCH_TYPES[name]} for name in params],
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
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [
            {
                "mode": "server",
                "documentation": "Every resource is sealed (AES-256-GCM) before it reaches the storage host.",
                "resource": [_resource(name) for name in sorted(RESOURCE_TYPES)],
                "interaction": [
                    {"code": "transaction"},
                    {"code": "batch"},
                    {"code": "history-system"},
                ],
            }
        ],
    }
