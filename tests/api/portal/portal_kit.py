"""What the portal tests share: a vault with a patient, their record, a clinician's
earlier read, a registered patient user, and signing in the way a browser does."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from conftest import id_token_pem
from joserfc.jwk import ECKey
from starlette.testclient import TestClient

from coffre.api.auth import Authority, AuthSettings
from coffre.api.auth.onetime import OneTime
from coffre.api.auth.registry import Registry, RegistryFile, new_user, save, with_user
from coffre.ledger.leaf import LeafKind
from coffre.service import RecordStore
from coffre.service.audit import Access
from coffre.service.notices import notice_first_access

PASSWORD = "un mot de passe assez long"
PATIENT = "p-gagnon"
CLINICIAN = Access(
    "Practitioner/dr-roy (clinician, via client ehr)",
    address="10.1.2.3",
    fhir_user="Practitioner/dr-roy",
    role="clinician",
    client_id="ehr",
)


def authority_with_users(folder: Path) -> Authority:
    """An authority whose registry has a patient (``marie``) and a clinician (``roy``)."""
    save(folder / "keyring.access.json", _registry_with_users())
    key = ECKey.generate_key("P-256", private=True).as_dict(private=True)
    return Authority(
        key,
        id_token_pem(),
        RegistryFile(folder / "keyring.access.json"),
        OneTime(":memory:"),
        AuthSettings(),
    )


@cache
def _registry_with_users() -> Registry:
    """Made once per test process: each password's hash costs a third of a second (scrypt,
    as it should)."""
    registry = with_user(Registry(), new_user("marie", "patient", f"Patient/{PATIENT}", PASSWORD))
    return with_user(registry, new_user("roy", "clinician", "Practitioner/dr-roy", PASSWORD))


def patient_record(records: RecordStore) -> None:
    """Marie Gagnon, a condition, an observation, and her physician, who read her record
    (and so sent her a first-access notice)."""
    subject = {"reference": f"Patient/{PATIENT}"}
    with records.writer() as writer:
        writer.update(
            "Patient",
            PATIENT,
            {
                "resourceType": "Patient",
                "id": PATIENT,
                "name": [{"given": ["Marie"], "family": "Gagnon"}],
                "birthDate": "1961-04-12",
            },
        )
        writer.create(
            {
                "resourceType": "Condition",
                "code": {"text": "Diabète de type 2 <b>"},
                "subject": subject,
                "onsetDateTime": "2019-03-01",
                "clinicalStatus": {"coding": [{"code": "active"}]},
            }
        )
        writer.create(
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"coding": [{"display": "Hemoglobin A1c"}]},
                "subject": subject,
                "effectiveDateTime": "2026-11-02",
                "valueQuantity": {"value": 7.1, "unit": "%"},
            }
        )
        writer.update(
            "Practitioner",
            "dr-roy",
            {"resourceType": "Practitioner", "id": "dr-roy", "name": [{"text": "Dr Jean Roy"}]},
        )
    with records.writer() as writer, writer.request(CLINICIAN):
        writer.log_access(LeafKind.READ, [records.read("Patient", PATIENT)])
        notice_first_access(writer, "Practitioner/dr-roy", PATIENT)


def hidden(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert match, f"no hidden field {name}"
    return match.group(1)


def sign_in(
    client: TestClient,
    username: str = "marie",
    password: str = PASSWORD,
    next_page: str | None = None,
) -> object:
    form = client.get("/portal/sign-in", params={"next": next_page} if next_page else None)
    data = {"token": hidden(form.text, "token"), "username": username, "password": password}
    return client.post(
        "/portal/sign-in", data={**data, "next": hidden(form.text, "next")}, follow_redirects=False
    )


MONTREAL = "-05:00"
CENTRE = "Centre de vaccination du Stade olympique"


def tomorrow() -> date:
    return datetime.now(UTC).date() + timedelta(days=1)


def _slot(slot_id: str, day: date, hour_minute: str) -> dict[str, Any]:
    start = datetime.fromisoformat(f"{day.isoformat()}T{hour_minute}:00{MONTREAL}")
    return {
        "resourceType": "Slot",
        "id": slot_id,
        "schedule": {"reference": "Schedule/stade"},
        "status": "free",
        "start": start.isoformat(),
        "end": (start + timedelta(minutes=5)).isoformat(),
    }


def centre_opening() -> list[dict[str, Any]]:
    """The Stade olympique (its place, in Montréal) and its schedule (Montreal time), two
    seats at 09:00 and at 19:30 tomorrow (19:30 there is the day after in UTC), one at 00:30
    the day after."""
    day = tomorrow()
    schedule = {
        "resourceType": "Schedule",
        "id": "stade",
        "active": True,
        "serviceType": [{"coding": [{"system": "http://snomed.info/sct", "code": "33879002"}]}],
        "actor": [{"reference": "Location/stade", "display": CENTRE}],
        "planningHorizon": {"start": f"{day.isoformat()}T08:00:00{MONTREAL}"},
    }
    seats = [
        _slot(f"{name}-{seat}", day, hour_minute)
        for name, hour_minute in (("nine", "09:00"), ("evening", "19:30"))
        for seat in ("a", "b")
    ]
    place = {
        "resourceType": "Location",
        "id": "stade",
        "name": CENTRE,
        "address": {"city": "Montréal", "postalCode": "H1V 3N7"},
    }
    return [place, schedule, *seats, _slot("after", day + timedelta(days=1), "00:30")]
