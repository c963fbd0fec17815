"""Telling a patient the first time a professional opens their record.

The notice is a FHIR Communication in the patient's compartment, sealed like any record
and written in the same transaction as the access it reports: sender the practitioner,
subject and recipient the patient, the text in French and English. Its id is a keyed
hash of the (practitioner, patient) pair, so the notice is also the marker that the pair
met: "first time" is one look-up of that id, and the host learns nothing it can link to
either of them. A notice the patient deleted still counts as sent.

Deployments with an e-mail or SMS gateway set ``COFFRE_NOTICE_WEBHOOK``: Coffre posts it
``{"event": "access-notice", "notice": "Communication/<id>"}`` once the access is
committed, and nothing else (no name, no patient id, no health data); the gateway reads
the Communication with its own token to know whom to tell. A hook that fails never fails
the read: it is tried again, then logged without the notice's content.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import httpx

from coffre.fhir.names import human_name
from coffre.fhir.references import parse_reference
from coffre.service.records import RecordStore
from coffre.service.stored import instant, now_us
from coffre.service.writer import Writer

NOTICE_CATEGORY = "urn:coffre:CodeSystem:notice"
FIRST_ACCESS = "first-access"
TRANSLATION = "http://hl7.org/fhir/StructureDefinition/translation"
HOOK_ATTEMPTS = 3
HOOK_TIMEOUT_SECONDS = 5.0
_TEXT = {
    "fr": (
        "Un professionnel de santé ({who}) a ouvert votre dossier pour la première fois"
        "{why}. Vous pouvez voir chaque accès dans « Qui a consulté mon dossier »."
    ),
    "en": (
        "A health professional ({who}) opened your record for the first time{why}. You can"
        " see every access under “Who accessed my record”."
    ),
}
_BREAK_GLASS = {"fr": ", en urgence (accès exceptionnel)", "en": ", in an emergency (break-glass)"}
log = logging.getLogger("coffre.notices")


def notice_id(records: RecordStore, practitioner_ref: str, patient_id: str) -> str:
    token = records.keys.index(
        "Communication", "$access-notice", f"{practitioner_ref}\x1f{patient_id}"
    )
    return "notice-" + token.hex()


def noticed(records: RecordStore, practitioner_ref: str, patient_id: str) -> bool:
    """Whether the pair met before, as committed: a look-up outside any transaction, so
    that the usual case (they did) costs no write."""
    notice = notice_id(records, practitioner_ref, patient_id)
    return records.checked_latest(records.keys.location("Communication", notice)) is not None


def notice_text(lang: str, who: str, break_glass: bool) -> str:
    return _TEXT[lang].format(who=who, why=_BREAK_GLASS[lang] if break_glass else "")


def first_access_notice(
    notice: str, practitioner_ref: str, patient_id: str, sent: str, who: str, *, break_glass: bool
) -> dict[str, Any]:
    """The Communication that tells the patient that ``who`` opened their record; the
    text in French, with its English translation (FHIR's translation extension)."""
    patient = {"reference": f"Patient/{patient_id}"}
    return {
        "resourceType": "Communication",
        "id": notice,
        "language": "fr",
        "status": "completed",
        "category": [{"coding": [{"system": NOTICE_CATEGORY, "code": FIRST_ACCESS}]}],
        "priority": "urgent" if break_glass else "routine",
        "subject": patient,
        "recipient": [patient],
        "sender": {"reference": practitioner_ref},
        "sent": sent,
        "payload": [
            {
                "contentString": notice_text("fr", who, break_glass),
                "_contentString": {
                    "extension": [
                        {
                            "url": TRANSLATION,
                            "extension": [
                                {"url": "lang", "valueCode": "en"},
                                {
                                    "url": "content",
                                    "valueString": notice_text("en", who, break_glass),
                                },
                            ],
                        }
                    ]
                },
            }
        ],
    }


def payload_text(communication: dict[str, Any], lang: str) -> str:
    """A notice's text in ``lang`` when it has it, else in its own language."""
    texts = []
    for payload in communication.get("payload", []):
        text = payload.get("contentString")
        for extension in payload.get("_contentString", {}).get("extension", []):
            parts = {e.get("url"): e for e in extension.get("extension", [])}
            if (
                extension.get("url") == TRANSLATION
                and parts.get("lang", {}).get("valueCode") == lang
            ):
                text = parts.get("content", {}).get("valueString", text)
        if text:
            texts.append(text)
    return " ".join(texts)


@dataclass(frozen=True, slots=True)
class Notice:
    """A notice just written: its reference is all the outbound hook may carry."""

    reference: str


def notice_first_access(
    writer: Writer, practitioner_ref: str, patient_id: str, *, break_glass: bool = False
) -> Notice | None:
    """Write the notice of ``practitioner_ref``'s first access to ``patient_id``'s record
    in ``writer``'s transaction; None when the pair met before (or the patient is not in
    the vault). Call it where a professional's access is recorded."""
    parsed = parse_reference(practitioner_ref)
    if parsed is None:
        raise ValueError("practitioner_ref is a reference such as Practitioner/abc")
    records = writer.records
    notice = notice_id(records, practitioner_ref, patient_id)
    if writer.latest("Communication", notice) is not None:  # deleted or not: it was sent
        return None
    patient = writer.latest("Patient", patient_id)
    if patient is None or patient.deleted:
        return None
    sent = instant(now_us())
    professional = writer.latest(*parsed)
    name = human_name(professional.resource()) if professional and not professional.deleted else ""
    who = f"{name}, {practitioner_ref}" if name else practitioner_ref
    resource = first_access_notice(
        notice, practitioner_ref, patient_id, sent, who, break_glass=break_glass
    )
    writer.create(resource, notice)
    return Notice(f"Communication/{notice}")


def hook_body(notice: Notice) -> dict[str, str]:
    """What the outbound hook is told: that there is a notice, and where. Nothing else."""
    return {"event": "access-notice", "notice": notice.reference}


async def post_notice_hook(
    url: str,
    notice: Notice,
    *,
    attempts: int = HOOK_ATTEMPTS,
    backoff_seconds: float = 1.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> bool:
    """POST the notice to the deployment's hook, trying ``attempts`` times (backing off
    between tries); whether it was accepted (a 2xx). Never raises: a hook that fails is
    logged by its status or error class, never with the notice's content."""
    failure = ""
    async with httpx.AsyncClient(timeout=HOOK_TIMEOUT_SECONDS, transport=transport) as client:
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(backoff_seconds * 2 ** (attempt - 1))
            try:
                response = await client.post(url, json=hook_body(notice))
            except (httpx.HTTPError, httpx.InvalidURL) as error:
                failure = type(error).__name__
                continue
            if response.is_success:
                return True
            failure = f"HTTP {response.status_code}"
    log.warning(
        "the notice hook failed %d times (%s); the notice is in the portal", attempts, failure
    )
    return False
