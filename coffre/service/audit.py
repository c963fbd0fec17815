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
    LeafKind.EXPORT: ("operation", "E"),
    LeafKind.KEY_ROTATION: ("update", "U"),  # purposeOfEvent.text says which key
    LeafKind.INTEGRITY: ("read", "R"),
    LeafKind.ERASE: ("delete", "D"),
    LeafKind.DATA_KEY: ("create", "C"),
}
# DICOM's outcome codes, as AuditEvent.outcome uses them.
_SUCCESS, _SERIOUS_FAILURE = "0", "8"
INTEGRITY_FAILURE = "what the storage returned failed its integrity check; nothing was served"
ERASURE = (
    "the patient's data key was destroyed: their records and access history can no longer be opened"
)
DATA_KEY_MADE = "a data key was made for a compartment, its first record's or AuditEvent's"
_DESCRIPTIONS = {
    LeafKind.INTEGRITY: INTEGRITY_FAILURE,
    LeafKind.ERASE: ERASURE,
    LeafKind.DATA_KEY: DATA_KEY_MADE,
}


@dataclass(frozen=True, slots=True)
class Access:
    """The party behind a request, as the gateway knows it.

    ``who`` names the acting person or system; ``purpose`` is a v3 PurposeOfUse code
    (``TREAT``, ``ETREAT`` for break-glass...) when the request states one; ``address``
    is the client's network address; ``reason`` is free text (why an operator erased,
    why a clinician broke the glass). With a token: ``fhir_user`` (``Practitioner/abc``),
    ``role`` and ``client_id`` name the principal; ``patient``: the patient it acts as,
    confined to her records (her own token, her app's, the portal for her:
    ``Principal.acting_patient`` of ``coffre.api.auth.scopes``, which this layer does not
    import), whom what a patient may do holds ("" when it is confined to nobody).
    """

    who: str
    address: str | None = None
    purpose: str | None = None
    reason: str | None = None
    fhir_user: str | None = None
    role: str | None = None
    client_id: str | None = None
    patient: str | None = None

    @property
    def is_patient(self) -> bool:
        """Whether a patient acts: a token confined to her records, whatever its role
        says."""
        return self.patient is not None


OPERATOR = Access("the vault's operator, on the sovereign side (coffre command line)")
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
BREAK_GLASS = "BTG"
_APPLICATION = {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110150"}


def _agents(access: Access) -> list[dict[str, Any]]:
    """The requesting person or system, and the app it came through (IHE BALP)."""
    who: dict[str, Any] = {"display": access.who}
    if access.fhir_user:
        who["reference"] = access.fhir_user
    agent: dict[str, Any] = {"who": who, "requestor": True}
    if access.role:
        agent["role"] = [{"text": access.role}]
    if access.address:
        agent["network"] = {"address": access.address, "type": "2"}
    if not access.client_id:
        return [agent]
    application = {
        "type": {"coding": [{**_APPLICATION, "display": "Application"}]},
        "who": {"identifier": {"value": access.client_id}},
        "requestor": False,
    }
    return [agent, application]


def is_break_glass(event: dict[str, Any]) -> bool:
    """Whether an AuditEvent records a break-glass access."""
    return any(
        coding.get("system") == ACT_REASON and coding.get("code") == BREAK_GLASS
        for purpose in event.get("purposeOfEvent", ())
        for coding in purpose.get("coding", ())
    )


def audit_event(
    access: Access, kind: LeafKind, versions: list[str], recorded: str
) -> dict[str, Any]:
    """The AuditEvent of ``access`` doing ``kind`` to ``versions`` (``Type/id/_history/n``);
    an ``INTEGRITY`` event is a read refused because the storage's answer failed its check."""
    interaction, action = _KINDS[kind]
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
        "agent": _agents(access),
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
    if kind in _DESCRIPTIONS:
        event["outcomeDesc"] = _DESCRIPTIONS[kind]
    purpose: dict[str, Any] = {}
    if access.purpose:
        purpose["coding"] = [{"system": ACT_REASON, "code": access.purpose}]
    if access.reason:
        purpose["text"] = access.reason
    if purpose:
        event["purposeOfEvent"] = [purpose]
    return event
