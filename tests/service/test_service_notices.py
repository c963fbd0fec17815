"""The notice a patient gets the first time a professional opens their record, and the
outbound hook that carries no health data."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest

from coffre.fhir.validation import validate
from coffre.service import RecordStore
from coffre.service.notices import (
    Notice,
    notice_first_access,
    notice_id,
    noticed,
    payload_text,
    post_notice_hook,
)

DOCTOR = "Practitioner/dr-tremblay"


def _patients(records: RecordStore, *ids: str) -> None:
    with records.writer() as writer:
        for patient_id in ids:
            writer.update("Patient", patient_id, {"resourceType": "Patient", "id": patient_id})


def _notice(records: RecordStore, practitioner: str, patient: str, **kw: bool) -> Notice | None:
    with records.writer() as writer:
        return notice_first_access(writer, practitioner, patient, **kw)


def test_the_first_access_of_a_pair_writes_one_sealed_communication(records: RecordStore) -> None:
    _patients(records, "p1", "p2")
    assert not noticed(records, DOCTOR, "p1")
    notice = _notice(records, DOCTOR, "p1")
    assert noticed(records, DOCTOR, "p1") and not noticed(records, DOCTOR, "p2")
    assert notice == Notice(f"Communication/{notice_id(records, DOCTOR, 'p1')}")
    assert _notice(records, DOCTOR, "p1") is None
    assert _notice(records, DOCTOR, "p2") is not None
    assert _notice(records, "Practitioner/dr-roy", "p1") is not None
    stored = records.read("Communication", notice.reference.split("/")[1])
    assert stored.comp == records.keys.patient_compartment("p1")
    communication = stored.resource()
    assert validate(communication) == "Communication"
    assert communication["sender"] == {"reference": DOCTOR}
    assert communication["subject"] == {"reference": "Patient/p1"}
    assert communication["sent"]
    assert "première fois" in payload_text(communication, "fr")
    assert "first time" in payload_text(communication, "en")
    assert DOCTOR in payload_text(communication, "en")


def test_the_text_names_the_professional_when_the_vault_knows_them(records: RecordStore) -> None:
    _patients(records, "p1")
    with records.writer() as writer:
        practitioner = {
            "resourceType": "Practitioner",
            "id": "dr-tremblay",
            "name": [{"prefix": ["Dre"], "given": ["Anne"], "family": "Tremblay"}],
        }
        writer.update("Practitioner", "dr-tremblay", practitioner)
    notice = _notice(records, DOCTOR, "p1")
    assert notice is not None
    communication = records.read("Communication", notice.reference.split("/")[1]).resource()
    assert "(Dre Anne Tremblay, Practitioner/dr-tremblay)" in payload_text(communication, "fr")


def test_break_glass_says_so(records: RecordStore) -> None:
    _patients(records, "p1")
    notice = _notice(records, DOCTOR, "p1", break_glass=True)
    assert notice is not None
    communication = records.read("Communication", notice.reference.split("/")[1]).resource()
    assert communication["priority"] == "urgent"
    assert "break-glass" in payload_text(communication, "en")
    assert "urgence" in payload_text(communication, "fr")


def test_a_deleted_notice_still_counts_and_no_patient_gets_none(records: RecordStore) -> None:
    _patients(records, "p1")
    notice = _notice(records, DOCTOR, "p1")
    assert notice is not None
    with records.writer() as writer:
        writer.delete("Communication", notice.reference.split("/")[1])
    assert _notice(records, DOCTOR, "p1") is None
    assert _notice(records, DOCTOR, "absent") is None


def test_the_practitioner_must_be_a_reference(records: RecordStore) -> None:
    _patients(records, "p1")
    with records.writer() as writer, pytest.raises(ValueError):
        notice_first_access(writer, "Dr Tremblay", "p1")


def test_the_hook_gets_the_notice_reference_and_nothing_else() -> None:
    seen: list[dict[str, str]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(204)

    notice = Notice("Communication/notice-00ff")
    sent = asyncio.run(
        post_notice_hook("https://sms.example/hook", notice, transport=httpx.MockTransport(answer))
    )
    assert sent
    assert seen == [{"event": "access-notice", "notice": "Communication/notice-00ff"}]


def test_a_failing_hook_is_retried_then_logged_without_the_notice(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            raise httpx.ConnectError("refused")
        return httpx.Response(503)

    notice = Notice("Communication/notice-secret")
    with caplog.at_level(logging.WARNING, logger="coffre.notices"):
        sent = asyncio.run(
            post_notice_hook(
                "https://sms.example/hook",
                notice,
                backoff_seconds=0,
                transport=httpx.MockTransport(answer),
            )
        )
    assert not sent
    assert len(calls) == 3
    assert "HTTP 503" in caplog.text
    assert "notice-secret" not in caplog.text


def test_a_hook_that_recovers_is_sent_once() -> None:
    calls: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(500 if len(calls) == 1 else 200)

    notice = Notice("Communication/notice-1")
    assert asyncio.run(
        post_notice_hook(
            "https://sms.example/hook",
            notice,
            backoff_seconds=0,
            transport=httpx.MockTransport(answer),
        )
    )
    assert len(calls) == 2
