"""A portal page that meets a record failing its integrity check shows none of it, and the
refusal is in the log, as the FHIR API's are (its AuditEvent names the signed-in patient)."""

from __future__ import annotations

from pathlib import Path

from pg import HostDatabase
from portal_kit import PATIENT, authority_with_users, patient_record, sign_in
from starlette.testclient import TestClient

from coffre.api import create_app
from coffre.ledger.leaf import Leaf, LeafKind
from coffre.service import RecordStore, Vault


def test_a_tampered_record_is_not_shown_and_its_refusal_is_logged(
    records: RecordStore, vault: Vault, tmp_path: Path
) -> None:
    patient_record(records)
    app = create_app(records, authority=authority_with_users(tmp_path))
    with TestClient(app, raise_server_exceptions=False) as portal:
        sign_in(portal)
        loc = records.keys.location("Patient", PATIENT)
        with HostDatabase.of(vault) as db:
            (body,) = db.execute("SELECT body FROM versions WHERE loc = ?", (loc,)).fetchone()
            db.execute("UPDATE versions SET body = ? WHERE loc = ?", (bytes(body)[::-1], loc))
        before = records.storage.leaf_count()
        page = portal.get("/portal/?lang=en")
    assert page.status_code == 500
    assert "Marie" not in page.text and "Gagnon" not in page.text
    logged = [Leaf.decode(d) for d in records.storage.leaves(before, records.storage.leaf_count())]
    assert [leaf.kind for leaf in logged] == [LeafKind.INTEGRITY]
    gateway = records.storage.events_of(records.keys.shared_compartment("AuditEvent"))
    assert logged[0].event_hash in [event.digest for event in gateway]  # beside data keys' events
