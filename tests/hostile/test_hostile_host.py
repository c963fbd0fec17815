"""The hostile host (issue 4): the host edits the storage file behind the gateway's back.

Each test writes a few records through the API, then plays ONE attack on the storage's
database, SQLite's file or PostgreSQL's (the RecordStore's connections still open, or
reopened afterwards), and asserts WHICH mechanism catches it:

- **AEAD**: the body fails to open, because its associated data binds location,
  version, time, deletion flag and compartment (seen alone through
  ``RecordStore.open`` on the stored version, which does not consult the log);
- **latest-writes**: the gateway's memory, from its log, of each record's latest version
  and ciphertext hash (``RecordStore.checked_latest``), consulted by every read;
- either way the next read raises ``SealError`` and the API answers 500 with an
  OperationOutcome that says "integrity", never the data;
- **start**: the gateway refuses the storage when it opens (``vault.open()``): its
  sovereign memory of the last checkpoint it signed (``VaultStateError``), the gateway tag
  of each leaf (``LedgerError``), a gap in the leaves (``StorageError``);
- **auditor**: ``coffre audit`` (``audit_log``, in process, with the live app as its HTTP
  client), which exits 1 when its report holds a violation, named as below;
- **index check**: at opening, and before a search that found nothing is answered (at
  most once a second), records the log says carry tokens, picked at random, must hold
  those tokens and be found by them (``IndexCheck``); otherwise the search answers 500
  "integrity", and ``coffre repair-index`` rebuilds the index.

| attack                                  | detector                                                |
| --------------------------------------- | ------------------------------------------------------- |
| flip a ciphertext byte                  | AEAD (open) and latest-writes (read): SealError, 500    |
| swap two patients' ciphertexts          | AEAD (location, version, compartment) + latest-writes   |
| swap two records of the same patient    | AEAD (location; same DEK, same version) + latest-writes |
| put back an older version of one record | latest-writes: read, vread, searches, listings, bundle  |
|                                         | GET, history, an update on top, a restarted gateway,    |
|                                         | the searches of a write (conditional create, reference) |
|   ... under `coffre serve`, 2 processes | each process, and the server's log quotes nothing       |
| delete a record                         | latest-writes: read, vread, search by _id: 500, not 404 |
| drop a version that is not the latest   | vread: latest-writes; instance history: versions count  |
|                                         | down from 1 without a gap                               |
| give a version an old time, out of a    | instance history: the page counts down from the latest; |
| history ``_since``                      | the version below a short page is opened (AEAD)         |
| give a version another type's token     | type history: the version opened is of another type     |
| delete a leaf (renumbering the rest)    | start: VaultStateError; auditor --full: missing leaves  |
| delete a leaf, leaving a gap            | start: StorageError (gap); auditor --full: missing      |
|                                         | leaves (the leaves before the gap are served)           |
| alter a leaf                            | start: VaultStateError (LedgerError without memory);    |
|                                         | auditor --full: root mismatch                           |
| reorder two leaves                      | start: VaultStateError; auditor --full: root mismatch   |
| duplicate a leaf inside the log         | start: VaultStateError; auditor --full: root mismatch   |
| duplicate (replay) a leaf at the end    | the leaf's tag binds its index: read 500, writes fail   |
|                                         | (LedgerError: not written by this gateway)              |
| truncate the log, extend it otherwise   | start: VaultStateError; auditor: shrunk log, then       |
| (a fork)                                | inconsistent once the fork is longer                    |
| put an older copy back under a running  | each request that follows the log: its log is shorter   |
| gateway                                 | than the part followed (RolledBackError): 503           |
| give every stored node of the tree a    | each proof is checked against the signed root before it |
| random hash (``tree_nodes``)            | leaves: the tree is rebuilt from the leaves, its nodes  |
|                                         | rewritten (a warning); auditor and witness: consistent; |
|                                         | auditor --full: consistency on the leaves it fetched    |
| ... and alter a leaf                    | no proof: 503 OperationOutcome, nodes left alone;       |
|                                         | auditor --full: root mismatch                           |
| change, drop or add a blind index token | latest-writes (the leaf commits to the version's tokens)|
|                                         | at the next read of the record, or a search it becomes  |
|                                         | a false hit of (a search does not check what it returns)|
| (SQLite) add or drop postings in the    | not caught: an added posting makes a false hit that the |
| FTS5 index alone, not the token set     | search turns away; a dropped one hides the record from  |
|                                         | searches for that token until its next write            |
| (SQLite) zero, garble or empty the FTS5 | index check: searches, $everything 500; writes of tokens|
| index whole (every search finds nothing)| 500 as the index's damage, not 503; reads go on;        |
|                                         | ``coffre repair-index`` rebuilds it from the token sets |
| delete every index token (and SQLite's  | index check: searches 500 (the records probed lost their|
| FTS5 postings with them)                | tokens), reads 500; ``coffre repair-index`` says to     |
|                                         | restore a backup                                        |
| replace a wrapped data key              | AEAD (or the unwrap), at the next read by a gateway     |
|                                         | that unwraps it: SealError, 500                         |
| delete a sealed AuditEvent (a row of    | access history: the storage holds fewer events than the |
| the access history)                     | leaves followed commit to: SealError, 500               |
| ... and file a copy of another event of | access history: the same sealed event listed twice      |
| the patient under another of its leaves |                                                         |
| (gateway) read through a bundle GET     | logged like any read: a READ or SEARCH leaf             |
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from click.testing import Result
from conftest import FHIR_JSON, RunningServer, put_resource, write_organizations
from pg import HostDatabase, copy_storage
from starlette.testclient import TestClient
from typer.testing import CliRunner

from coffre.api import create_app
from coffre.api.witness import WitnessFolder, WitnessServer, witness_app
from coffre.cli.audit import Report, audit_log
from coffre.cli.main import app as cli
from coffre.exceptions import (
    LogDamagedError,
    RolledBackError,
    SealError,
    StorageError,
    VaultStateError,
)
from coffre.ledger import (
    Checkpoint,
    LedgerError,
    leaf_hash,
    merkle_root,
    open_checkpoint,
    verify_inclusion,
)
from coffre.ledger.leaf import Leaf, LeafKind
from coffre.service import RecordStore, Stored, Vault, indexcheck
from coffre.service.witnessing import WitnessEndpoint, Witnessing
from coffre.storage.base import TOKEN_BYTES

SYSTEM = "urn:hostile:test"
ALICE, BOB = "Alice-Secret", "Bob-Secret"
"""Plaintext markers: an answer to a tampered record must never carry them."""

ALICE_V1: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "alice",
    "identifier": [{"system": SYSTEM, "value": "A1"}],
    "name": [{"family": ALICE}],
}
ALICE_V2 = {**ALICE_V1, "birthDate": "1984-02-29"}
BOB_V1: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "bob",
    "identifier": [{"system": SYSTEM, "value": "B1"}],
    "name": [{"family": BOB}],
}


def _observation(resource_id: str, text: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": resource_id,
        "status": "final",
        "code": {"text": f"{ALICE} {text}"},
        "subject": {"reference": "Patient/alice"},
    }


# -- helpers ------------------------------------------------------------------------------


@pytest.fixture
def written(client: TestClient) -> TestClient:
    """Alice (2 versions) with two observations, and Bob: 5 writes, 5 leaves; and 2 for
    their data keys."""
    for resource in (
        ALICE_V1,
        BOB_V1,
        _observation("alice-weight", "weight"),
        _observation("alice-height", "height"),
        ALICE_V2,
    ):
        put_resource(client, resource)
    return client


def _host(vault: Vault) -> HostDatabase:
    """The host's own connection to the storage: what it edits is committed."""
    return HostDatabase.of(vault)


def _loc(records: RecordStore, reference: str) -> bytes:
    resource_type, resource_id = reference.split("/")
    return records.keys.location(resource_type, resource_id)


def _open(records: RecordStore, reference: str, version: int) -> Stored:
    """A stored version opened by AEAD alone, without the log's check."""
    resource_type, resource_id = reference.split("/")
    sealed = records.storage.version(_loc(records, reference), version)
    assert sealed is not None
    return records.open(resource_type, resource_id, sealed)


def _refused(response: httpx.Response, *secret: str) -> None:
    """A 500 OperationOutcome saying the record failed its integrity check, and no data."""
    assert response.status_code == 500, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "integrity" in outcome["issue"][0]["diagnostics"]
    for marker in secret:
        assert marker not in response.text


def _kinds(report: Report) -> list[str]:
    return [violation.kind for violation in report.violations]


def _accepted(client: TestClient, records: RecordStore) -> Checkpoint:
    """What an auditor accepted before the attack: the whole log, checked."""
    report = audit_log(client, records.ledger.verifier_key, None, full=True)
    assert report.consistent and report.checkpoint is not None, report.violations
    return report.checkpoint


def _rewrite_leaves(vault: Vault, change: Callable[[list[bytes]], list[bytes]]) -> None:
    """Replace the whole log by ``change(leaves)``, numbered from 0 without a gap."""
    with _host(vault) as db:
        leaves = [bytes(row[0]) for row in db.execute("SELECT data FROM leaves ORDER BY idx")]
        db.execute("DELETE FROM leaves")
        db.executemany(
            "INSERT INTO leaves (idx, data) VALUES (?, ?)", list(enumerate(change(leaves)))
        )


def _refused_at_start(vault: Vault, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        vault.open()


def _starts_without_memory(vault: Vault) -> RecordStore:
    """The gateway after losing its sovereign memory of the last checkpoint it signed."""
    vault.checkpoint_memory.unlink()
    return vault.open()


# -- ciphertexts --------------------------------------------------------------------------


def test_flip_a_ciphertext_byte(written: TestClient, records: RecordStore, vault: Vault) -> None:
    loc = _loc(records, "Patient/alice")
    with _host(vault) as db:
        (body,) = db.execute("SELECT body FROM versions WHERE loc = ? AND version = 2", (loc,))
        flipped = bytearray(body[0])
        flipped[len(flipped) // 2] ^= 0x01
        db.execute(
            "UPDATE versions SET body = ? WHERE loc = ? AND version = 2", (bytes(flipped), loc)
        )
    with pytest.raises(SealError):  # AEAD alone
        _open(records, "Patient/alice", 2)
    with pytest.raises(SealError):  # latest-writes: the hash is not the one the log holds
        records.checked_latest(loc)
    _refused(written.get("/fhir/Patient/alice"), ALICE)
    assert records.read("Patient", "bob").version == 1  # the others are still served


def test_swap_two_patients_ciphertexts(
    written: TestClient, records: RecordStore, vault: Vault
) -> None:
    alice, bob = _loc(records, "Patient/alice"), _loc(records, "Patient/bob")
    with _host(vault) as db:
        (alice_body,) = db.execute(
            "SELECT body FROM versions WHERE loc = ? AND version = 2", (alice,)
        )
        (bob_body,) = db.execute("SELECT body FROM versions WHERE loc = ?", (bob,))
        db.execute(
            "UPDATE versions SET body = ? WHERE loc = ? AND version = 2", (bob_body[0], alice)
        )
        db.execute("UPDATE versions SET body = ? WHERE loc = ?", (alice_body[0], bob))
    for resource_id, version in (("alice", 2), ("bob", 1)):
        with pytest.raises(SealError):  # AEAD: location, version and compartment differ
            _open(records, f"Patient/{resource_id}", version)
        with pytest.raises(SealError):
            records.read("Patient", resource_id)
        _refused(written.get(f"/fhir/Patient/{resource_id}"), ALICE, BOB)


def test_swap_two_records_of_the_same_patient(
    written: TestClient, records: RecordStore, vault: Vault
) -> None:
    """Two observations of Alice: same compartment (same DEK), same version; the host swaps
    bodies and times, so that only the location differs in the associated data."""
    weight, height = (
        _loc(records, "Observation/alice-weight"),
        _loc(records, "Observation/alice-height"),
    )
    with _host(vault) as db:
        rows = {
            loc: db.execute("SELECT body, ts, comp FROM versions WHERE loc = ?", (loc,)).fetchone()
            for loc in (weight, height)
        }
        assert rows[weight][2] == rows[height][2], "one patient, one compartment"
        for loc, other in ((weight, height), (height, weight)):
            db.execute(
                "UPDATE versions SET body = ?, ts = ? WHERE loc = ?",
                (rows[other][0], rows[other][1], loc),
            )
    for resource_id in ("alice-weight", "alice-height"):
        with pytest.raises(SealError):  # AEAD: the location is bound
            _open(records, f"Observation/{resource_id}", 1)
        with pytest.raises(SealError):
            records.read("Observation", resource_id)
        _refused(written.get(f"/fhir/Observation/{resource_id}"), ALICE)


# -- records: rollback and deletion -------------------------------------------------------


def _after_restart(vault: Vault, request: Callable[[TestClient], httpx.Response]) -> httpx.Response:
    """What a gateway started after the attack answers: it rebuilds latest-writes from the log."""
    reopened = vault.open()
    try:
        with TestClient(create_app(reopened), raise_server_exceptions=False) as fresh:
            return request(fresh)
    finally:
        reopened.storage.close()


def _transaction_get(url: str, bundle_type: str = "transaction") -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": bundle_type,
        "entry": [{"request": {"method": "GET", "url": url}}],
    }


def _transaction_naming(condition: str) -> dict[str, Any]:
    """A transaction creating an observation whose subject is a conditional reference."""
    observation = {**_observation("alice-pulse", "pulse"), "subject": {"reference": condition}}
    del observation["id"]
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": observation, "request": {"method": "POST", "url": "Observation"}}],
    }


Reach = Callable[[TestClient, Vault], httpx.Response]
"""One way a client reaches the record attacked (through the live app, or a restarted one)."""

_REACH_ALICE: dict[str, Reach] = {
    "read": lambda client, vault: client.get("/fhir/Patient/alice"),
    "search by _id": lambda client, vault: client.get("/fhir/Patient?_id=alice"),
    "search by identifier": lambda client, vault: client.get(
        f"/fhir/Patient?identifier={SYSTEM}|A1"
    ),
    "read by a gateway started afterwards": lambda client, vault: _after_restart(
        vault, lambda fresh: fresh.get("/fhir/Patient/alice")
    ),
    "type-level search without criteria": lambda client, vault: client.get("/fhir/Patient"),
    "vread of the version dropped": lambda client, vault: client.get(
        "/fhir/Patient/alice/_history/2"
    ),
    "GET entry of a transaction bundle": lambda client, vault: client.post(
        "/fhir", json=_transaction_get("Patient/alice"), headers=FHIR_JSON
    ),
    # Searches that run inside a write transaction, on what it sees of the storage:
    "search GET entry of a transaction bundle": lambda client, vault: client.post(
        "/fhir", json=_transaction_get(f"Patient?identifier={SYSTEM}|A1"), headers=FHIR_JSON
    ),
    "search GET entry of a batch bundle": lambda client, vault: client.post(
        "/fhir", json=_transaction_get("Patient?_id=alice", "batch"), headers=FHIR_JSON
    ),
    "conditional create that matches it": lambda client, vault: client.post(
        "/fhir/Patient",
        json=ALICE_V1,
        headers={
            **FHIR_JSON,
            "If-None-Exist": f"identifier={SYSTEM}|A1",
            "Prefer": "return=representation",
        },
    ),
    "conditional reference of a transaction to it": lambda client, vault: client.post(
        "/fhir", json=_transaction_naming(f"Patient?identifier={SYSTEM}|A1"), headers=FHIR_JSON
    ),
    "instance history": lambda client, vault: client.get("/fhir/Patient/alice/_history"),
    "update on top of it": lambda client, vault: client.put(
        "/fhir/Patient/alice", json={**ALICE_V1, "gender": "female"}, headers=FHIR_JSON
    ),
}


@pytest.mark.parametrize(
    "reach",
    list(_REACH_ALICE),
)
def test_put_back_an_older_version(
    reach: str, written: TestClient, records: RecordStore, vault: Vault
) -> None:
    """The host drops Alice's version 2 and makes version 1 current again. Version 1 is
    genuine (AEAD opens it), so only latest-writes can catch it: in the committed storage,
    and in a write transaction's view of it, whose searches (conditional creates and
    references, a Bundle's search entries) check what they find as any search does."""
    loc = _loc(records, "Patient/alice")
    with _host(vault) as db:
        db.execute("DELETE FROM versions WHERE loc = ? AND version = 2", (loc,))
        db.execute("UPDATE current SET version = 1 WHERE loc = ?", (loc,))
    assert _open(records, "Patient/alice", 1).resource()["name"] == [{"family": ALICE}]
    _refused(_REACH_ALICE[reach](written, vault), ALICE)


_REACH_BOB: dict[str, Reach] = {
    "read": lambda client, vault: client.get("/fhir/Patient/bob"),
    "search by _id": lambda client, vault: client.get("/fhir/Patient?_id=bob"),
    "read by a gateway started afterwards": lambda client, vault: _after_restart(
        vault, lambda fresh: fresh.get("/fhir/Patient/bob")
    ),
    "vread": lambda client, vault: client.get("/fhir/Patient/bob/_history/1"),
}


@pytest.mark.parametrize("reach", list(_REACH_BOB))
def test_delete_a_record(
    reach: str, written: TestClient, records: RecordStore, vault: Vault
) -> None:
    """The host deletes every trace of Bob: versions, current pointer, index tokens.

    Caught as an integrity failure (never a 404) wherever the record is reached by its
    location. Not caught: a search by identifier or a listing of all Patients simply
    no longer finds Bob (the tokens and the current pointer are gone, and latest-writes
    does not know record types); the threat model's "later" verifiable map is for that.
    """
    loc = _loc(records, "Patient/bob")
    with _host(vault) as db:
        for table in ("versions", "current"):
            db.execute(f"DELETE FROM {table} WHERE loc = ?", (loc,))
        _set_tokens(db, loc, [])
    _refused(_REACH_BOB[reach](written, vault), BOB)


def test_put_back_an_older_version_while_two_server_processes_run(vault: Vault) -> None:
    """The same attack on ``coffre serve`` with two worker processes, each following the
    log on its own: both refuse every way to Alice (they take turns), Bob is still
    served, and what the server logs quotes nothing of Alice."""
    running = RunningServer(vault, workers=2)
    try:
        with httpx.Client(base_url=running.base_url.removesuffix("/fhir")) as http:
            for resource in (ALICE_V1, BOB_V1, ALICE_V2):
                put_resource(http, resource)  # type: ignore[arg-type]
            assert all(http.get("/fhir/Patient/alice").status_code == 200 for _ in range(4))
            loc = vault.open().keys.location("Patient", "alice")
            with _host(vault) as db:
                db.execute("DELETE FROM versions WHERE loc = ? AND version = 2", (loc,))
                db.execute("UPDATE current SET version = 1 WHERE loc = ?", (loc,))
            conditional = {**FHIR_JSON, "If-None-Exist": f"identifier={SYSTEM}|A1"}
            for _ in range(4):
                _refused(http.get("/fhir/Patient/alice"), ALICE)
                _refused(http.get(f"/fhir/Patient?identifier={SYSTEM}|A1"), ALICE)
                _refused(http.post("/fhir/Patient", json=ALICE_V1, headers=conditional), ALICE)
            assert http.get("/fhir/Patient/bob").status_code == 200
    finally:
        running.stop()
    assert running.process.stdout is not None
    logged = running.process.stdout.read().decode()
    assert "integrity check" in logged
    assert ALICE not in logged and SYSTEM not in logged


@pytest.mark.parametrize("dropped", [1, 2])
def test_drop_an_older_version(
    dropped: int, written: TestClient, records: RecordStore, vault: Vault
) -> None:
    """The host drops a version of Alice that is not her latest: her reads are right, and
    the vread of that version is refused; her history, listing the versions left, would
    hide a write. Versions are numbered from 1 without a gap, so a page of one record's
    history that does not count down from the number of versions stored is refused."""
    put_resource(written, {**ALICE_V2, "gender": "female"})
    loc = _loc(records, "Patient/alice")
    with _host(vault) as db:
        db.execute("DELETE FROM versions WHERE loc = ? AND version = ?", (loc, dropped))
    assert written.get("/fhir/Patient/alice").status_code == 200
    _refused(written.get(f"/fhir/Patient/alice/_history/{dropped}"), ALICE)
    _refused(written.get("/fhir/Patient/alice/_history"), ALICE)
    _refused(written.get("/fhir/Patient/alice/_history?_count=1&_offset=1"), ALICE)


@pytest.mark.parametrize("moved", [3, 2])
def test_move_a_version_out_of_a_since_page(
    moved: int, written: TestClient, records: RecordStore, vault: Vault
) -> None:
    """The host gives a version of Alice an old time, so that a history ``_since`` the
    time of her version 2 leaves it out: her latest (the page would start at 2), or the
    page's oldest (it would end at 3). The page counts down from her latest version, and
    the version just below a short page is opened, its time bound to its body."""
    put_resource(written, {**ALICE_V2, "gender": "female"})
    since = written.get("/fhir/Patient/alice/_history/2").json()["meta"]["lastUpdated"]
    page = f"/fhir/Patient/alice/_history?_since={quote(since)}"
    versions = [e["resource"]["meta"]["versionId"] for e in written.get(page).json()["entry"]]
    assert versions == ["3", "2"]
    offset = written.get(f"{page}&_count=1&_offset=1").json()["entry"]
    assert [e["resource"]["meta"]["versionId"] for e in offset] == ["2"]
    with _host(vault) as db:
        db.execute(
            "UPDATE versions SET ts = 946684800000000 WHERE loc = ? AND version = ?",
            (_loc(records, "Patient/alice"), moved),
        )
    _refused(written.get(page), ALICE)


def test_relabel_a_record_with_another_type(
    written: TestClient, records: RecordStore, vault: Vault
) -> None:
    """The host gives Alice's versions the type token of Observations (``kind``, which
    the AEAD does not bind: the location binds the type). An Observation listing opens
    each candidate and keeps those that are Observations; a type's history, listing the
    versions of a type token, must refuse a version of another type, not hand a Patient
    out as an Observation (to a token that may read Observations, not Patients)."""
    loc = _loc(records, "Patient/alice")
    with _host(vault) as db:
        db.execute(
            "UPDATE versions SET kind = ? WHERE loc = ?", (records.keys.kind("Observation"), loc)
        )
    _refused(written.get("/fhir/Observation/_history"), ALICE)
    found = written.get("/fhir/Observation")
    assert found.status_code == 200, found.text
    assert {entry["resource"]["resourceType"] for entry in found.json()["entry"]} == {"Observation"}


# -- the log ------------------------------------------------------------------------------


def test_delete_a_leaf(written: TestClient, records: RecordStore, vault: Vault) -> None:
    """The host drops leaf 1 (Bob's creation) and renumbers the rest to hide the gap."""
    accepted = _accepted(written, records)
    _rewrite_leaves(vault, lambda leaves: leaves[:1] + leaves[2:])
    report = audit_log(written, records.ledger.verifier_key, accepted, full=True)
    assert _kinds(report) == ["missing leaves"]
    assert f"covers {accepted.size}" in report.violations[0].detail
    _refused_at_start(vault, VaultStateError, "rolled back or replaced")


def _log_failures(client: TestClient) -> float:
    """How many integrity failures of the log the gateway counted (its metrics)."""
    found = re.search(
        r'^coffre_integrity_failures_total\{check="log"\} (\S+)$', client.get("/metrics").text, re.M
    )
    return float(found[1]) if found else 0.0


def test_delete_a_leaf_leaving_a_gap(
    written: TestClient, records: RecordStore, vault: Vault
) -> None:
    """A gap stops the gateway at start even without its memory (the log cannot be read
    back). A running gateway counts and logs it as an integrity failure of the log, and
    serves the leaves before it, never one made up: the auditor finds leaf 1 missing from
    a log that signed 8, a violation (it got no verdict from a 500). No proof from the
    accepted checkpoint can be cut from the leaves either (a 500), which leaves that
    verdict as it is."""
    accepted = _accepted(written, records)
    write_organizations(written, 1)
    with _host(vault) as db:
        db.execute("DELETE FROM leaves WHERE idx = 1")
    before = _log_failures(written)
    report = audit_log(written, records.ledger.verifier_key, accepted, full=True)
    assert _kinds(report) == ["missing leaves"], report.violations
    assert "serves no leaf 1, though its checkpoint covers 8" in report.violations[0].detail
    (finding,) = report.findings
    assert "consistency with the checkpoint of size 7 accepted before is not checked" in finding
    assert "HTTP 500" in finding
    assert _log_failures(written) > before
    page = written.get("/ledger/leaves", params={"start": 0}).json()["leaves"]
    assert [base64.b64decode(leaf) for leaf in page] == records.storage.leaves(0, 1)
    _refused_at_start(vault, StorageError, "gap")
    vault.checkpoint_memory.unlink()
    _refused_at_start(vault, StorageError, "gap")


def test_drop_the_whole_log(written: TestClient, records: RecordStore, vault: Vault) -> None:
    """Records and no log, as a copy cut off before the log leaves them: a gateway without
    its memory opened it and signed a new log over records the old one covered (each read
    then failing its integrity check); with its memory it said nothing of such a copy."""
    with _host(vault) as db:
        for table in ("leaves", "tree_nodes", "checkpoints"):
            db.execute(f"DELETE FROM {table}")
    _refused_at_start(vault, LogDamagedError, "the storage holds records but no log")
    vault.checkpoint_memory.unlink()
    _refused_at_start(vault, LogDamagedError, "the storage holds records but no log")


def test_drop_the_checkpoints(written: TestClient, vault: Vault) -> None:
    """A log without checkpoints, as a copy cut off before it copied them leaves it: the
    refusal says that a copy may have stopped there, and that running it again finishes it."""
    with _host(vault) as db:
        db.execute("DELETE FROM checkpoints")
    _refused_at_start(vault, RolledBackError, "rolled back or replaced, or a copy into it")


def test_alter_a_leaf(written: TestClient, records: RecordStore, vault: Vault) -> None:
    """The host makes Alice's version-2 leaf commit to other sealed bytes."""
    accepted = _accepted(written, records)

    def alter(leaves: list[bytes]) -> list[bytes]:
        leaf = leaves[-1]
        assert Leaf.decode(leaf).version == 2
        return [*leaves[:-1], leaf[:42] + bytes(32) + leaf[74:]]

    _rewrite_leaves(vault, alter)
    report = audit_log(written, records.ledger.verifier_key, accepted, full=True)
    assert _kinds(report) == ["root mismatch"]
    _refused_at_start(vault, VaultStateError, "rolled back or replaced")
    with pytest.raises(LedgerError, match="leaf 6 was not written by this gateway"):
        _starts_without_memory(vault)


def test_reorder_two_leaves(written: TestClient, records: RecordStore, vault: Vault) -> None:
    """Each leaf keeps a valid gateway tag: only the tree's root gives the order away."""
    accepted = _accepted(written, records)
    _rewrite_leaves(vault, lambda leaves: [leaves[0], leaves[2], leaves[1], *leaves[3:]])
    report = audit_log(written, records.ledger.verifier_key, accepted, full=True)
    assert _kinds(report) == ["root mismatch"]
    assert audit_log(written, records.ledger.verifier_key, accepted).consistent, (
        "without --full the auditor checks the stored tree, which the host left alone"
    )
    _refused_at_start(vault, VaultStateError, "rolled back or replaced")


def test_duplicate_a_leaf(written: TestClient, records: RecordStore, vault: Vault) -> None:
    """A copy of leaf 1 inserted after it, the rest shifted: valid tags, wrong root."""
    accepted = _accepted(written, records)
    _rewrite_leaves(vault, lambda leaves: [*leaves[:2], leaves[1], *leaves[2:]])
    report = audit_log(written, records.ledger.verifier_key, accepted, full=True)
    assert _kinds(report) == ["root mismatch"]
    _refused_at_start(vault, VaultStateError, "rolled back or replaced")


def _replay_alice_s_creation(records: RecordStore, vault: Vault) -> None:
    """The host appends a copy of Alice's creation leaf after the last leaf (its tag is
    valid: the tag covers the leaf's fields, not its position) and puts back version 1."""
    loc = _loc(records, "Patient/alice")
    leaves = records.storage.leaves(0, records.storage.leaf_count())
    creation = next(
        data
        for data in leaves
        if Leaf.decode(data).loc == loc and Leaf.decode(data).kind == LeafKind.CREATE
    )
    with _host(vault) as db:
        db.execute("INSERT INTO leaves (idx, data) VALUES (?, ?)", (len(leaves), creation))
        db.execute("DELETE FROM versions WHERE loc = ? AND version = 2", (loc,))
        db.execute("UPDATE current SET version = 1 WHERE loc = ?", (loc,))


def test_duplicate_a_leaf_at_the_end(
    written: TestClient, records: RecordStore, vault: Vault
) -> None:
    """A replay of an old write leaf, to make a rollback look current.

    A leaf's tag binds its place in the log: the copy does not authenticate where it was
    put, so the next read answers 500 before any data leaves, and every later write
    fails alike ("leaf N was not written by this gateway").
    """
    _replay_alice_s_creation(records, vault)
    _refused(written.get("/fhir/Patient/alice"), ALICE)
    with (
        pytest.raises(LedgerError, match="not written by this gateway"),
        records.writer() as writer,
    ):
        writer.update("Patient", "carol", {"resourceType": "Patient", "id": "carol"})


def test_duplicate_a_leaf_at_the_end_is_not_believed(
    written: TestClient, records: RecordStore, vault: Vault
) -> None:
    _replay_alice_s_creation(records, vault)
    with pytest.raises((SealError, LedgerError)):
        records.read("Patient", "alice")


def test_truncate_the_log_and_extend_it_differently(
    records: RecordStore, vault: Vault, tmp_path: Path
) -> None:
    """A fork: the host keeps a copy of the storage, lets the real history go on (an
    auditor accepts its checkpoint), then puts the copy back and, once the sovereign side
    has lost its memory of the last checkpoint, lets other writes extend it."""
    key = records.ledger.verifier_key
    with TestClient(create_app(records), raise_server_exceptions=False) as real:
        for number in range(3):
            put_resource(real, {"resourceType": "Patient", "id": f"p{number}"})
        copy_storage(vault, tmp_path)
        for number in range(3, 6):
            put_resource(real, {"resourceType": "Patient", "id": f"p{number}", "gender": "male"})
        accepted = _accepted(real, records)
    assert accepted.size == 6 + 6  # and a leaf for each of the 6 patients' data keys
    records.storage.close()
    copy_storage(Vault.at(tmp_path), vault.folder)

    _refused_at_start(vault, VaultStateError, "rolled back or replaced")
    forked = _starts_without_memory(vault)
    try:
        with TestClient(create_app(forked), raise_server_exceptions=False) as fork:
            report = audit_log(fork, key, accepted)
            assert _kinds(report) == ["shrunk log"]
            for number in range(3, 8):  # another history, longer than the real one
                put_resource(
                    fork, {"resourceType": "Patient", "id": f"p{number}", "gender": "female"}
                )
            report = audit_log(fork, key, accepted, full=True)
            assert _kinds(report) == ["inconsistent"], report.violations
            assert "inconsistent with the checkpoint of size 12" in report.violations[0].detail
            assert "the 16 leaves recompute to the signed root" in report.held, (
                "the fork is a well-formed log: only consistency with what was accepted"
                " gives it away"
            )
    finally:
        forked.storage.close()


def test_put_an_older_copy_back_while_the_gateway_serves(
    records: RecordStore, vault: Vault, tmp_path: Path
) -> None:
    """The host puts back a copy of the storage made before the last writes, under a
    running gateway: its log is shorter than the part the gateway followed. Every request
    that reads the log says so (503), a search that would find nothing and the checkpoint
    alike: the older checkpoint is not published."""
    with TestClient(create_app(records), raise_server_exceptions=False) as live:
        put_resource(live, {"resourceType": "Patient", "id": "p0"})
        copy_storage(vault, tmp_path)
        put_resource(live, {"resourceType": "Patient", "id": "p1", "gender": "male"})
        copy_storage(Vault.at(tmp_path), vault.folder)
        for path in ("/fhir/Patient?gender=female", "/fhir/Patient/p0", "/ledger/checkpoint"):
            response = live.get(path)
            assert response.status_code == 503, (path, response.text)
            assert "rolled back" in response.text


# -- the stored tree ----------------------------------------------------------------------

GROWN = 40
"""Writes after the auditor's checkpoint: the tree then has stored nodes (every fourth
level, from 16 leaves up) that a proof from that checkpoint folds."""


@dataclass
class Scrambled:
    """The log after the host gave every stored node of its tree a random hash."""

    client: TestClient
    accepted: Checkpoint
    """What an auditor accepted before the attack (7 leaves)."""
    rows: dict[tuple[int, int], bytes]
    """The stored nodes as the gateway wrote them."""


def _tree_rows(vault: Vault) -> dict[tuple[int, int], bytes]:
    with _host(vault) as db:
        rows = db.execute("SELECT level, idx, hash FROM tree_nodes").fetchall()
    return {(level, idx): bytes(hashed) for level, idx, hashed in rows}


def _scramble_the_tree(vault: Vault) -> dict[tuple[int, int], bytes]:
    """``UPDATE tree_nodes SET hash = randomblob(32)``, on either backend; the rows before."""
    rows = _tree_rows(vault)
    assert rows, "the log is long enough to have stored nodes"
    with _host(vault) as db:
        db.executemany(
            "UPDATE tree_nodes SET hash = ? WHERE level = ? AND idx = ?",
            [(secrets.token_bytes(32), level, idx) for level, idx in rows],
        )
    return rows


@pytest.fixture
def scrambled(written: TestClient, records: RecordStore, vault: Vault) -> Scrambled:
    accepted = _accepted(written, records)
    write_organizations(written, GROWN)
    return Scrambled(written, accepted, _scramble_the_tree(vault))


def test_scramble_the_stored_tree(
    scrambled: Scrambled, records: RecordStore, vault: Vault, caplog: pytest.LogCaptureFixture
) -> None:
    """The proof is checked against the signed root before it leaves, the tree rebuilt from
    the leaves and its nodes rewritten: the auditor that accepted the old checkpoint finds
    the log consistent, as it is."""
    with caplog.at_level(logging.WARNING, "coffre.ledger"):
        report = audit_log(scrambled.client, records.ledger.verifier_key, scrambled.accepted)
    assert report.consistent, report.violations
    assert "consistent with the checkpoint of size 7 accepted before" in report.held
    assert _tree_rows(vault) == scrambled.rows, "the nodes the host altered are repaired"
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"{len(scrambled.rows)} of its nodes" in warning and "rewritten" in warning


def test_scramble_the_stored_tree_before_a_full_audit(
    scrambled: Scrambled, records: RecordStore
) -> None:
    """A full audit checks consistency on the leaves it fetched, whatever the proof."""
    report = audit_log(scrambled.client, records.ledger.verifier_key, scrambled.accepted, True)
    assert report.consistent, report.violations
    assert report.findings == [], "the server repaired its tree before serving the proof"
    assert (
        "consistent with the checkpoint of size 7 accepted before: its root recomputed from"
        " the leaves" in report.held
    )


def test_scramble_the_stored_tree_before_inclusion_proofs(
    scrambled: Scrambled, records: RecordStore
) -> None:
    signed = open_checkpoint(
        scrambled.client.get("/ledger/checkpoint").content, records.ledger.verifier_key
    )
    for index, size in ((3, signed.size), (20, signed.size), (5, 7), (30, 33)):
        answer = scrambled.client.get(
            "/ledger/proof/inclusion", params={"index": index, "size": size}
        )
        assert answer.status_code == 200, answer.text
        proof = [base64.b64decode(h) for h in answer.json()["proof"]]
        leaves = [leaf_hash(data) for data in records.storage.leaves(0, size)]
        verify_inclusion(leaves[index], index, size, proof, merkle_root(leaves))


def test_scramble_the_stored_tree_before_a_witness_round(
    written: TestClient, records: RecordStore, vault: Vault, tmp_path: Path
) -> None:
    """A witness that cosigned the log before the attack cosigns its next checkpoint: the
    proof sent to it is checked first, never one of a fork that is not there."""
    folder = WitnessFolder(tmp_path / "witness")
    folder.create("witness.example.org/w")
    app = witness_app(WitnessServer(folder, [records.ledger.verifier_key]))
    witnessing = Witnessing(
        records, [WitnessEndpoint("http://w", folder.key().verifier_key)], 1, vault.folder
    )

    def cosigned_size() -> int:
        async def round_() -> None:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as client:
                await witnessing.round(client)

        asyncio.run(asyncio.wait_for(round_(), 60))
        state = folder.load_state().get(records.ledger.origin)
        return 0 if state is None else state.size

    assert cosigned_size() == 7
    write_organizations(written, GROWN)
    _scramble_the_tree(vault)
    write_organizations(written, 1)
    assert cosigned_size() == 7 + GROWN + 1


def test_scramble_the_stored_tree_and_alter_a_leaf(
    scrambled: Scrambled, records: RecordStore, vault: Vault
) -> None:
    """Leaves that no longer give the signed root cannot rebuild the tree: no proof, a
    503 OperationOutcome, rather than one that would mislead; the nodes are left alone."""
    with _host(vault) as db:
        ((data,),) = db.execute("SELECT data FROM leaves WHERE idx = 20")
        db.execute("UPDATE leaves SET data = ? WHERE idx = 20", (bytes(data)[:-1] + b"\x00",))
    before = _tree_rows(vault)
    for path, params in (
        ("/ledger/proof/consistency", {"old": 7, "new": 7 + GROWN}),
        ("/ledger/proof/inclusion", {"index": 3, "size": 7 + GROWN}),
    ):
        answer = scrambled.client.get(path, params=params)
        assert answer.status_code == 503, answer.text
        outcome = answer.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert "no proof can be given" in outcome["issue"][0]["diagnostics"]
    assert _tree_rows(vault) == before
    report = audit_log(scrambled.client, records.ledger.verifier_key, scrambled.accepted, True)
    assert _kinds(report) == ["root mismatch"], "the proof refused leaves the leaves' verdict"
    (finding,) = report.findings
    assert "is not checked" in finding and "503" in finding


# -- tokens and keys ----------------------------------------------------------------------


def _tokens(db: HostDatabase, loc: bytes) -> list[bytes]:
    """A record's index tokens as the host holds them (in its token set, on SQLite)."""
    if not db.sqlite:
        rows = db.execute("SELECT token FROM tokens WHERE loc = ?", (loc,))
        return sorted(bytes(row[0]) for row in rows)
    row = db.execute("SELECT tokens FROM token_sets WHERE loc = ?", (loc,)).fetchone()
    joined = row[0] if row else b""
    return [joined[at : at + TOKEN_BYTES] for at in range(0, len(joined), TOKEN_BYTES)]


TERM_LETTERS = {byte: 0x100 + byte for byte in range(256)}
"""How SQLite's FTS5 index spells a token's bytes (see coffre.storage.sqlite)."""


def _index(db: HostDatabase, set_id: int, tokens: list[bytes], command: str = "") -> None:
    """Add (or with ``command="delete"``, remove) SQLite's FTS5 postings of a token set."""
    terms = " ".join(token.decode("latin-1").translate(TERM_LETTERS) for token in tokens)
    if command:
        db.execute(
            "INSERT INTO token_index (token_index, rowid, terms) VALUES (?, ?, ?)",
            (command, set_id, terms),
        )
    else:
        db.execute("INSERT INTO token_index (rowid, terms) VALUES (?, ?)", (set_id, terms))


def _set_id(loc: bytes) -> int:
    return int.from_bytes(loc[:8]) - (1 << 63)


def _set_tokens(db: HostDatabase, loc: bytes, tokens: list[bytes]) -> None:
    """Give a record these index tokens as a careful host would, the index kept in step
    (a search for one of them reaches the record)."""
    tokens = sorted(set(tokens))
    if not db.sqlite:
        db.execute("DELETE FROM tokens WHERE loc = ?", (loc,))
        db.executemany("INSERT INTO tokens (token, loc) VALUES (?, ?)", [(t, loc) for t in tokens])
        return
    _index(db, _set_id(loc), _tokens(db, loc), "delete")
    db.execute("DELETE FROM token_sets WHERE loc = ?", (loc,))
    if tokens:
        db.execute(
            "INSERT INTO token_sets (id, loc, tokens) VALUES (?, ?, ?)",
            (_set_id(loc), loc, b"".join(tokens)),
        )
        _index(db, _set_id(loc), tokens)


# attack -> (records whose read is refused, a search that reaches a tampered record as a
# false hit and is refused, or None)
TOKEN_ATTACKS = {
    "swap Alice's and Bob's tokens": (["Patient/alice", "Patient/bob"], "B1"),
    "drop Alice's tokens": (["Patient/alice"], None),
    "give Bob Alice's tokens": (["Patient/bob"], "A1"),
    "give Bob a token no search asks for": (["Patient/bob"], None),
}


@pytest.mark.parametrize("attack", TOKEN_ATTACKS)
def test_change_a_blind_index_token(
    attack: str, written: TestClient, records: RecordStore, vault: Vault
) -> None:
    """The host changes the tokens that make Alice and Bob findable.

    Each write's leaf commits to the digest of its version's tokens (latest-writes), so
    the next read of a record whose tokens changed fails its integrity check. A search
    checks the tokens of the candidates it turns away after decryption: a token added or
    moved to a record makes it a false hit of the searches for that token, which are then
    refused. A search that no longer reaches Alice cannot see her tokens are gone, and one
    that returns Bob anyway does not check his (what it answers is right): the next read of
    the record is where the gateway notices.
    """
    alice, bob = _loc(records, "Patient/alice"), _loc(records, "Patient/bob")
    tampered, refused_search = TOKEN_ATTACKS[attack]
    with _host(vault) as db:
        alices, bobs = _tokens(db, alice), _tokens(db, bob)
        if attack.startswith("swap"):
            _set_tokens(db, alice, bobs)
            _set_tokens(db, bob, alices)
        elif attack.startswith("drop"):
            _set_tokens(db, alice, [])
        elif attack == "give Bob Alice's tokens":
            _set_tokens(db, bob, bobs + alices)
        else:
            _set_tokens(db, bob, [*bobs, bytes(TOKEN_BYTES)])
    if refused_search is not None:
        _refused(written.get(f"/fhir/Patient?identifier={SYSTEM}|{refused_search}"), ALICE, BOB)
    if attack.endswith("no search asks for"):
        found = written.get(f"/fhir/Patient?identifier={SYSTEM}|B1").json()
        assert [entry["resource"]["id"] for entry in found["entry"]] == ["bob"]
    for reference in tampered:
        _refused(written.get(f"/fhir/{reference}"), ALICE, BOB)
    intact = {"Patient/alice", "Patient/bob"} - set(tampered)
    for reference in intact:
        assert written.get(f"/fhir/{reference}").status_code == 200


@pytest.mark.parametrize("change", ["add Alice's postings to Bob", "drop Alice's postings"])
def test_change_sqlites_token_index_alone(
    change: str, backend: str, written: TestClient, records: RecordStore, vault: Vault
) -> None:
    """On SQLite, searches look tokens up in an FTS5 index built from the token sets, which
    reads check against the log; the host edits the index alone. Not caught, and no answer
    is wrong: postings added make Bob a false hit that the search turns away after
    decryption (his token set, checked, is intact); postings dropped hide Alice from the
    searches for them (as dropping her tokens does) until her next write re-indexes her."""
    if backend != "sqlite":
        pytest.skip("PostgreSQL keeps each token once, in the table its searches read")
    alice, bob = _loc(records, "Patient/alice"), _loc(records, "Patient/bob")
    with _host(vault) as db:
        if change.startswith("add"):
            _index(db, _set_id(bob), _tokens(db, alice))
        else:
            _index(db, _set_id(alice), _tokens(db, alice), "delete")
    found = written.get(f"/fhir/Patient?identifier={SYSTEM}|A1")
    assert found.status_code == 200, found.text
    ids = [entry["resource"]["id"] for entry in found.json().get("entry", [])]
    assert ids == (["alice"] if change.startswith("add") else [])
    for reference in ("Patient/alice", "Patient/bob"):
        assert written.get(f"/fhir/{reference}").status_code == 200


@pytest.fixture
def checked_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A search that finds nothing checks the index whenever it runs: the attacks below
    land within the second that the check made at opening vouches for."""
    monkeypatch.setattr(indexcheck, "RECHECK_SECONDS", 0.0)


def _repair_index(vault: Vault) -> Result:
    return CliRunner().invoke(cli, ["repair-index", "--vault", str(vault.folder)])


def _found(client: TestClient, query: str) -> list[str]:
    found = client.get(f"/fhir/{query}")
    assert found.status_code == 200, found.text
    return sorted(entry["resource"]["id"] for entry in found.json().get("entry", []))


ALICES_OBSERVATIONS = "Observation?subject=Patient/alice"
WHOLE_INDEX_DAMAGE = {
    "zero its structure record": [
        "UPDATE token_index_data SET block = zeroblob(length(block)) WHERE id = 10"
    ],
    "garble its structure record": [
        "UPDATE token_index_data SET block = randomblob(length(block)) WHERE id = 10"
    ],
    "empty its tables": ["DELETE FROM token_index_data", "DELETE FROM token_index_idx"],
}


@pytest.mark.parametrize("damage", WHOLE_INDEX_DAMAGE)
def test_damage_sqlites_token_index_whole(
    damage: str, backend: str, written: TestClient, vault: Vault, checked_at_once: None
) -> None:
    """On SQLite, the host damages the FTS5 index of every record at once (zeroing its
    structure record is one 30-byte write): every search would find nothing, a patient's
    chart would look empty. A search that finds nothing first checks that records the log
    says carry tokens, picked at random, are found by them: it is refused (500,
    integrity), ``$everything`` too; reads still answer. A write is refused as the index's
    damage, not as a storage to try again shortly. ``coffre repair-index`` rebuilds the
    index from the token sets, and the running gateway answers again."""
    if backend != "sqlite":
        pytest.skip("PostgreSQL keeps each token once, in the table its searches read")
    with _host(vault) as db:
        for statement in WHOLE_INDEX_DAMAGE[damage]:
            db.execute(statement)
    for query in (f"Patient?identifier={SYSTEM}|A1", ALICES_OBSERVATIONS):
        _refused(written.get(f"/fhir/{query}"), ALICE, BOB)
    _refused(written.get("/fhir/Patient/alice/$everything"), ALICE, BOB)
    assert written.get("/fhir/Patient/alice").status_code == 200
    pulse = _observation("alice-pulse", "pulse")
    refused = written.put("/fhir/Observation/alice-pulse", json=pulse, headers=FHIR_JSON)
    _refused(refused, ALICE, BOB)
    assert "repair-index" in refused.json()["issue"][0]["diagnostics"]
    repaired = _repair_index(vault)
    assert repaired.exit_code == 0, repaired.output
    assert "rebuilt" in repaired.output
    assert _found(written, ALICES_OBSERVATIONS) == ["alice-height", "alice-weight"]
    put_resource(written, pulse)
    assert _found(written, ALICES_OBSERVATIONS) == ["alice-height", "alice-pulse", "alice-weight"]


def test_delete_every_index_token(
    backend: str, written: TestClient, vault: Vault, checked_at_once: None
) -> None:
    """The host deletes every record's index tokens (on SQLite the FTS5 postings with
    them, in step): every search would find nothing. Records the log says carry tokens,
    picked at random, no longer hold them: a search that finds nothing is refused (500,
    integrity), as a read of those records is. The index cannot be rebuilt from tokens
    that are gone: ``coffre repair-index`` says so."""
    with _host(vault) as db:
        if db.sqlite:
            db.execute("DELETE FROM token_sets")
            db.execute("INSERT INTO token_index (token_index) VALUES ('delete-all')")
        else:
            db.execute("DELETE FROM tokens")
    _refused(written.get(f"/fhir/{ALICES_OBSERVATIONS}"), ALICE, BOB)
    _refused(written.get("/fhir/Patient/alice"), ALICE, BOB)
    repaired = _repair_index(vault)
    assert repaired.exit_code == 1
    assert "restore the storage from a backup" in repaired.output


@pytest.mark.parametrize("replacement", ["another compartment's wrapped key", "random bytes"])
def test_replace_a_wrapped_data_key(
    replacement: str, written: TestClient, records: RecordStore, vault: Vault
) -> None:
    """The host replaces Alice's wrapped DEK. A gateway that holds the DEK in its cache
    keeps using the right one; the next gateway to unwrap it cannot open Alice's records
    (AEAD, or the unwrap itself fails), while Bob's still open."""
    alice_comp, bob_comp = (
        records.storage.latest(_loc(records, reference)).comp  # type: ignore[union-attr]
        for reference in ("Patient/alice", "Patient/bob")
    )
    with _host(vault) as db:
        (bob_wrapped,) = db.execute("SELECT wrapped FROM data_keys WHERE comp = ?", (bob_comp,))
        wrapped = bob_wrapped[0] if replacement.startswith("another") else secrets.token_bytes(40)
        db.execute("UPDATE data_keys SET wrapped = ? WHERE comp = ?", (wrapped, alice_comp))
    records.storage.close()
    reopened = vault.open()
    try:
        with pytest.raises(SealError):
            reopened.read("Patient", "alice")
        with pytest.raises(SealError):
            _open(reopened, "Observation/alice-weight", 1)
        assert reopened.read("Patient", "bob").resource()["name"] == [{"family": BOB}]
        with TestClient(create_app(reopened), raise_server_exceptions=False) as fresh:
            _refused(fresh.get("/fhir/Patient/alice"), ALICE)
    finally:
        reopened.storage.close()


# -- a read path found along the way (not a host attack) ----------------------------------


def test_delete_an_audit_event(written: TestClient, records: RecordStore, vault: Vault) -> None:
    """The host deletes the sealed AuditEvent of Alice's first write, to hide who made it.

    Every leaf commits to its event's hash, and the gateway counts the events its leaves
    commit to as it follows the log: the access history finds the storage short of one.
    """
    history = "/fhir/Patient/alice/$access-history"
    before = written.get(history)
    assert before.status_code == 200, before.text
    comp = records.keys.patient_compartment("alice")
    with _host(vault) as db:
        ((first,),) = db.execute("SELECT min(leaf) FROM audit_events WHERE comp = ?", (comp,))
        db.execute("DELETE FROM audit_events WHERE comp = ? AND leaf = ?", (comp, first))
    _refused(written.get(history), ALICE)


def test_delete_an_audit_event_and_repeat_another_to_keep_the_count(
    written: TestClient, records: RecordStore, vault: Vault
) -> None:
    """The host deletes the AuditEvent of Alice's first write and, to keep the count of
    events the gateway checks, files a copy of another of her events under its second
    leaf: a search that handed out both her observations has one event and two leaves,
    each committing to it, so the copy checks against the leaf it is filed under. Her
    access history holds the same sealed event twice: refused."""
    found = written.get("/fhir/Observation?subject=Patient/alice")
    assert len(found.json()["entry"]) == 2
    comp = records.keys.patient_compartment("alice")
    with _host(vault) as db:
        rows = db.execute(
            "SELECT leaf, digest, body FROM audit_events WHERE comp = ? ORDER BY leaf", (comp,)
        ).fetchall()
        leaves = [Leaf.decode(bytes(row[0])) for row in db.execute("SELECT data FROM leaves")]
        shared = {
            bytes(digest): [i for i, leaf in enumerate(leaves) if leaf.event_hash == digest]
            for _, digest, _ in rows
        }
        _, digest, body = next(row for row in rows if len(shared[bytes(row[1])]) > 1)
        db.execute("DELETE FROM audit_events WHERE comp = ? AND leaf = ?", (comp, rows[0][0]))
        db.execute(
            "INSERT INTO audit_events (leaf, digest, comp, body) VALUES (?, ?, ?, ?)",
            (shared[bytes(digest)][1], digest, comp, body),
        )
    _refused(written.get("/fhir/Patient/alice/$access-history"), ALICE)


def test_a_read_through_a_bundle_get_is_logged(written: TestClient, records: RecordStore) -> None:
    before = records.storage.leaf_count()
    response = written.post("/fhir", json=_transaction_get("Patient/bob"), headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    assert BOB in response.text  # handed out
    new = [Leaf.decode(data) for data in records.storage.leaves(before, before + 100)]
    loc = _loc(records, "Patient/bob")
    assert any(leaf.kind == LeafKind.READ and leaf.loc == loc for leaf in new), new
