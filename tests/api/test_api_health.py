"""The health checks a load balancer or an orchestrator probes: open, quiet (no record, no
count, no access logged), and failing when the gateway cannot serve what the storage
holds. (A storage that is away: tests/storage/test_storage_postgres_outage.py.)"""

from __future__ import annotations

import base64
import os

import pytest
from conftest import FHIR_JSON
from pg import HostDatabase
from starlette.testclient import TestClient

from coffre.service import RecordStore
from coffre.storage import SqliteStorage

PROBES = ("/health/live", "/health/ready")


def _passes(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/health+json"
    assert response.json() == {"status": "pass"}


def test_both_probes_pass_on_a_new_vault_and_after_writes(
    client: TestClient, records: RecordStore
) -> None:
    for path in PROBES:
        _passes(client, path)
    patient = {"resourceType": "Patient", "name": [{"family": "Côté"}]}
    assert client.post("/fhir/Patient", json=patient, headers=FHIR_JSON).status_code == 201
    leaves = records.storage.leaf_count()
    for path in PROBES:
        _passes(client, path)
        assert client.head(path).status_code == 200
    assert records.storage.leaf_count() == leaves  # a probe is no access


def test_readiness_fails_on_a_checkpoint_this_gateway_did_not_sign(
    client: TestClient, records: RecordStore
) -> None:
    patient = {"resourceType": "Patient", "name": [{"family": "Côté"}]}
    assert client.post("/fhir/Patient", json=patient, headers=FHIR_JSON).status_code == 201
    note = records.storage.latest_checkpoint()
    assert note is not None
    head, _, line = note.rstrip("\n").rpartition("\n")
    name, _, signature = line.rpartition(" ")
    flipped = bytearray(base64.b64decode(signature))
    flipped[10] ^= 1  # past the key's 4-byte hash: a signature of the right key, wrong
    forged = f"{head}\n{name} {base64.b64encode(bytes(flipped)).decode()}\n"
    with HostDatabase.of(records.storage) as host:
        host.execute("UPDATE checkpoints SET note = ? WHERE note = ?", (forged, note))
    assert client.get("/health/ready").status_code == 500
    _passes(client, "/health/live")


def test_a_full_disk_is_told_as_such_and_the_server_is_not_ready(
    client: TestClient, records: RecordStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = records.storage
    if not isinstance(storage, SqliteStorage):
        pytest.skip("SQLite's page limit stands in for a full disk; PostgreSQL has none")
    pages = storage._write_db.execute("PRAGMA page_count").fetchone()[0]
    storage._write_db.execute(f"PRAGMA max_page_count = {pages}")
    big = {"resourceType": "Patient", "name": [{"text": "Côté " * 40_000}]}
    refused = client.post("/fhir/Patient", json=big, headers=FHIR_JSON)
    assert refused.status_code == 503, refused.text
    assert refused.headers["Retry-After"] == "60"
    assert "disk is full, so this request changed nothing" in refused.text
    storage._write_db.execute("PRAGMA max_page_count = 1073741823")
    assert client.post("/fhir/Patient", json=big, headers=FHIR_JSON).status_code == 201
    _passes(client, "/health/ready")

    def no_space_left(path: str) -> os.statvfs_result:
        return os.statvfs_result((4096, 4096, 1000, 0, 0, 100, 0, 0, 0, 255))

    monkeypatch.setattr(os, "statvfs", no_space_left)
    not_ready = client.get("/health/ready")
    assert not_ready.status_code != 200 and "is full" in not_ready.text
    _passes(client, "/health/live")
