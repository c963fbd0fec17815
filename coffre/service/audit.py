"""Who acted, why and from where: the FHIR AuditEvent each request leaves in the log.

One AuditEvent per request, kind of access and patient compartment, listing the record
versions concerned; it is sealed under that compartment's data key, so that a patient's
access history holds only what concerns them, and erasing the patient erases it too.
The codes follow FHIR R4's AuditEvent and IHE's Basic Audit Log Patterns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from coffre.ledger.leaf import LeafKind

_INTERACTIONS = "http://hl7.org/fhir/restful-interaction"
# Each kind of leaf: the RESTful interaction it records, and the AuditEvent action code.
_KINDS: dict[LeafKind, tuple[str, str]] = {
    LeafKind.CREATE: ("create", "C"),
    LeafKind.UPDATE: ("update", "U"),
    LeafKind.DELETE: ("delete", "D"),
    LeafKind.READ: ("read", "R"),
    LeafKind.SEARCH: ("search", "E"),
    LeafKind.HISTORY: ("history", "R"),
    LeafKind.INTEGRITY: ("read", "R"),
}
# DICOM's outcome codes, as AuditEvent.outcome uses them.
_SUCCESS, _SERIOUS_FAILURE = "0", "8"
INTEGRITY_FAILURE = "what the storage returned failed its integrity check; nothing was served"


@dataclass(frozen=True, slots=True)
class Access:
    """The party behind a request, as the gateway knows it.

    ``who`` names the acting person or system; ``purpose`` is a v3 PurposeOfUse code
    (``TREAT``, ``ETREAT`` for break-glass...) when the request states one; ``address``
    is the client's network address.
    """

    who: str
    address: str | None = None
    purpose: str | None = None


OPERATOR = Access("the vault's operator, on the sovereign side (coffre command line)")


def audit_event(
    access: Access, kind: LeafKind, versions: list[str], recorded: str
) -> dict[str, Any]:
    """The AuditEvent of ``access`` doing ``kind`` to ``versions`` (``Type/id/_history/n``);
    an ``INTEGRITY`` event is a read refused because the storage's answer failed its check."""
    interaction, action = _KINDS[kind]
    agent: dict[str, Any] = {"who": {"display": access.who}, "requestor": True}
    if access.address:
        agent["network"] = {"address": access.address, "type": "2"}
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": {
            "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
            "code": "rest",
            "display": "RESTful Operation",
        },
        "subtype": [{"system": _INTERACTIONS, "code": interaction}],
        "action": action,
        "recorded": recorded,
        "outcome": _SERIOUS_FAILURE if kind is LeafKind.INTEGRITY else _SUCCESS,
        "agent": [agent],
        "source": {
            "observer": {"display": "Coffre gateway"},
            "type": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                    "code": "4",
                    "display": "Application Server",
                }
            ],
        },
    }
    if versions:
        event["entity"] = [{"what": {"reference": version}} for version in versions]
    if kind is LeafKind.INTEGRITY:
        event["outcomeDesc"] = INTEGRITY_FAILURE
    if access.purpose:
        purpose = [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                        "code": access.purpose,
                    }
                ]
            }
        ]
        event["purposeOfEvent"] = purpose
    return event
