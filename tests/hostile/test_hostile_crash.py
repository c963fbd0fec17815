"""Crashes: ``coffre serve`` killed with SIGKILL under load, twenty times, on one vault.

Each round starts a real server on the same vault (two uvicorn worker processes sharing
the file, as deployed, on even rounds; one process on odd rounds), has several client
threads POST generated patient transaction Bundles, and kills the whole process tree at
a random moment (seeded). Then, with the server down, the vault is checked as the
sovereign side sees it:

- it opens: the gateway's start checks hold (its memory of the last checkpoint it
  signed, every leaf's tag, no gap, the map root);
- the newest checkpoint covers every leaf and signs their root: integration runs in the
  same transaction as the writes, so a crash never leaves leaves unsigned;
- write leaves and stored versions match one to one (no version without its leaf, no
  leaf without its version), every version written since the last round opens, and each
  current one passes the read path's log check: nothing is half-written;
- every entry of every Bundle answered 2xx before the kill reads back.

The next round's server is the restart: it must start on what the crash left, serve
back over HTTP the acknowledged Bundles (their first and last entries), and show an
auditor (``audit_log``, ``--full`` after the last round) a log consistent with the
checkpoint it accepted before the crash.

The two tests after it replay, deterministically, races that two server processes on
one vault run into under load (found while writing the crash test).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import FHIR_JSON, RunningServer

from coffre.cli.audit import audit_log
from coffre.ledger import Checkpoint, VerifierKey, leaf_hash, open_checkpoint, root_of
from coffre.ledger.leaf import WRITES, Leaf
from coffre.service import Vault
from coffre.storage import HistoryQuery
from coffre.synth import generate_bundles, generate_shared_bundle

ROUNDS = 20
CLIENTS = 4
KILL_AFTER = (0.05, 1.2)
"""Seconds after the load starts: the kill lands anywhere from the first bundles on."""
SEED = "coffre-hostile-crash"
BUNDLE_SEED = 4


def _workers(round_number: int) -> int:
    return 2 if round_number % 2 == 0 else 1


# -- the process tree ---------------------------------------------------------------------


def _parents() -> dict[int, int]:
    """Every live process's parent, from /proc."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # gone meanwhile
            continue
        fields = text[text.rindex(")") + 2 :].split()
        parents[int(stat.parent.name)] = int(fields[1])
    return parents


def _descendants(root: int) -> list[int]:
    parents = _parents()
    found, frontier = [], [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def _dead(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return text[text.rindex(")") + 2] in "ZX"  # a zombie holds no file, lock or socket


def _kill_tree(process: subprocess.Popen[bytes]) -> int:
    """SIGKILL ``coffre serve`` and every process under it (uvicorn's workers, their
    helpers), by pid, the supervisor first so that it cannot replace a worker; return
    how many processes were killed."""
    tree = _descendants(process.pid)
    process.kill()
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait(timeout=10)
    deadline = time.monotonic() + 10
    while not all(_dead(pid) for pid in tree):
        assert time.monotonic() < deadline, f"processes {tree} survived SIGKILL"
        time.sleep(0.01)
    if process.stdout is not None:
        process.stdout.close()
    return 1 + len(tree)


# -- the load -----------------------------------------------------------------------------


class BundleSource:
    """Generated patient Bundles, serialised, handed to client threads one at a time."""

    def __init__(self, seed: int) -> None:
        self._bundles: Iterator[dict[str, Any]] = generate_bundles(1_000_000, seed=seed)
        self._lock = threading.Lock()

    def next(self) -> bytes:
        with self._lock:
            return json.dumps(next(self._bundles)).encode()


@dataclass
class Round:
    number: int
    kill_after: float
    acknowledged: list[dict[str, Any]] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    killed: int = 0

    @property
    def locations(self) -> list[str]:
        """Every entry of every acknowledged Bundle: ``Type/id/_history/version``."""
        return [
            entry["response"]["location"]
            for response in self.acknowledged
            for entry in response["entry"]
        ]

    @property
    def sample(self) -> list[str]:
        """The first and last entries of each acknowledged Bundle, read back over HTTP
        (each such read is an access leaf, a commit: all of them would take minutes)."""
        return [
            response["entry"][index]["response"]["location"]
            for response in self.acknowledged
            for index in (0, -1)
        ]


def _load_then_kill(server: RunningServer, source: BundleSource, crash: Round) -> None:
    lock, stop = threading.Lock(), threading.Event()

    def client() -> None:
        with httpx.Client(base_url=server.base_url, timeout=60) as http:
            while not stop.is_set():
                payload = source.next()
                try:
                    response = http.post("/", content=payload, headers=FHIR_JSON)
                    answer = response.json() if response.status_code == 200 else None
                except (httpx.HTTPError, ValueError):  # the server died under the request
                    return
                with lock:
                    if answer is not None:
                        crash.acknowledged.append(answer)
                    else:
                        crash.unexpected.append(f"{response.status_code}: {response.text[:300]}")

    threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    time.sleep(crash.kill_after)
    crash.killed = _kill_tree(server.process)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive(), "a client thread hangs on a dead server"


# -- the checks ---------------------------------------------------------------------------


def _read_back(server: RunningServer, locations: list[str]) -> None:
    """Acknowledged entries, over HTTP from the restarted server (a checked read).

    One at a time: concurrent reads on two worker processes run into the races that the
    two xfail tests at the end replay, which are not what this test is about."""

    def read(http: httpx.Client, location: str) -> str | None:
        resource_type, resource_id, _, version = location.split("/")
        response = http.get(f"/{location}")
        if response.status_code != 200:
            return f"{location}: {response.status_code} {response.text[:200]}"
        resource = response.json()
        if (resource["resourceType"], resource["id"]) != (resource_type, resource_id):
            return f"{location}: answered {resource['resourceType']}/{resource['id']}"
        if resource["meta"]["versionId"] != version:
            return f"{location}: answered version {resource['meta']['versionId']}"
        return None

    with httpx.Client(base_url=server.base_url, timeout=60) as http:
        failures = [failure for failure in map(lambda loc: read(http, loc), locations) if failure]
    assert not failures, failures[:5]


def _audit(
    server: RunningServer, key: VerifierKey, accepted: Checkpoint | None, full: bool
) -> Checkpoint:
    """The auditor, over HTTP: the log after the crash extends what it accepted before
    (``full`` also refetches every leaf, which the checks at rest already hash)."""
    with httpx.Client(base_url=server.base_url.removesuffix("/fhir"), timeout=60) as http:
        report = audit_log(http, key, accepted, full=full)
    assert report.consistent and report.checkpoint is not None, report.violations
    return report.checkpoint


@dataclass
class AtRest:
    """How far the checks of the vault at rest went: versions and leaves seen."""

    versions: int = 0
    leaves: int = 0


def _check_at_rest(vault: Vault, crash: Round, seen: AtRest) -> VerifierKey:
    records = vault.open()  # the gateway's start checks: no VaultStateError, LedgerError
    try:
        storage = records.storage
        count = storage.leaf_count()
        leaves = storage.leaves(0, count)
        checkpoint = records.ledger.latest(storage)
        assert checkpoint is not None and checkpoint.size == count, (checkpoint, count)
        assert root_of([leaf_hash(data) for data in leaves]) == checkpoint.root
        remembered = open_checkpoint(
            vault.checkpoint_memory.read_text(), records.ledger.verifier_key
        )
        assert remembered.size <= checkpoint.size
        assert storage.checkpoint_at(remembered.size) is not None

        # What the crashed round added: its write leaves and its versions, one to one.
        total = storage.count_history(HistoryQuery())
        assert count >= seen.leaves and total >= seen.versions
        new = HistoryQuery(limit=total - seen.versions)
        logged = Counter(
            (leaf.loc, leaf.version, leaf.body_hash)
            for leaf in map(Leaf.decode, leaves[seen.leaves :])
            if leaf.kind in WRITES
        )
        stored = Counter(
            (sealed.loc, sealed.version, hashlib.sha256(sealed.body).digest())
            for sealed in storage.history(new)
        )
        assert logged == stored, "write leaves and stored versions differ"
        for version in records.history(new):  # each opens, or SealError
            current = storage.latest(version.loc)
            if not version.deleted and current is not None and current.version == version.version:
                records.read(version.resource_type, version.id)  # the read path's log check
        for location in crash.locations:
            resource_type, resource_id, _, number = location.split("/")
            assert records.vread(resource_type, resource_id, number).id == resource_id
        seen.versions, seen.leaves = total, count
        return records.ledger.verifier_key
    finally:
        records.storage.close()


@pytest.mark.slow
def test_kill_9_under_load_loses_no_acknowledged_write(
    vault: Vault, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Where bytecode writing is off, each server process would compile the 5 MB schema
    # module again: cache it under tmp_path (only the server processes read these).
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    monkeypatch.setenv("PYTHONPYCACHEPREFIX", str(tmp_path / "pycache"))
    rng = random.Random(SEED)
    source = BundleSource(BUNDLE_SEED)
    seen, accepted, key = AtRest(), None, None
    started = time.monotonic()

    server = RunningServer(vault, workers=_workers(0))
    try:
        shared = generate_shared_bundle(random.Random(f"{SEED}:shared"))
        response = httpx.post(f"{server.base_url}/", json=shared, headers=FHIR_JSON, timeout=60)
        assert response.status_code == 200, response.text
    except BaseException:
        _kill_tree(server.process)
        raise

    rounds: list[Round] = []
    for number in range(ROUNDS + 1):
        if number:  # the restart, on what the crash left
            server = RunningServer(vault, workers=_workers(number))
        crash = Round(number, rng.uniform(*KILL_AFTER))
        try:
            if rounds:
                _read_back(server, rounds[-1].sample)
            if key is not None:
                accepted = _audit(server, key, accepted, full=number == ROUNDS)
            if number == ROUNDS:
                break
            _load_then_kill(server, source, crash)
        finally:
            if server.process.poll() is None:
                _kill_tree(server.process)
        assert not crash.unexpected, crash.unexpected[:3]
        key = _check_at_rest(vault, crash, seen)
        rounds.append(crash)

    acknowledged = [len(crash.acknowledged) for crash in rounds]
    print(
        f"{ROUNDS} kills in {time.monotonic() - started:.1f} s: {sum(acknowledged)} bundles"
        f" acknowledged {acknowledged}, {seen.versions} versions, {seen.leaves} leaves,"
        f" up to {max(crash.killed for crash in rounds)} processes killed at once"
    )
    assert sum(acknowledged) > 0, "no bundle was acknowledged before a kill: nothing was tested"


# -- races of two server processes on one vault -------------------------------------------


def _patient(resource_id: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": resource_id}


def test_two_processes_remembering_a_checkpoint_at_once(
    vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The interleaving, replayed: the first process has written its temporary file when
    the second commits, writes the same file and renames it; then the first renames."""
    first, second = vault.open(), vault.open()
    rename = os.replace
    interleaved = []

    def replace(source: str, target: Any) -> None:
        if not interleaved and target == vault.checkpoint_memory:
            interleaved.append(source)
            with second.writer() as writer:
                writer.update("Patient", "second", _patient("second"))
        rename(source, target)

    try:
        with monkeypatch.context() as patch:  # not undo(): it would drop the custody's settings
            patch.setattr(os, "replace", replace)
            with first.writer() as writer:
                writer.update("Patient", "first", _patient("first"))
        assert interleaved, "the race was not replayed"
        assert first.read("Patient", "first").version == 1
        vault.open().storage.close()  # the memory left behind is a checkpoint of this log
    finally:
        first.storage.close()
        second.storage.close()


def test_a_read_in_progress_does_not_fail_the_next_write(vault: Vault) -> None:
    """The event loop is in the middle of a read on the read connection when the commit
    thread integrates, just after another process committed."""
    first, second = vault.open(), vault.open()
    try:
        for resource_id in ("a", "b"):
            with first.writer() as writer:
                writer.update("Patient", resource_id, _patient(resource_id))
        reading = iter(first.storage.current_of_kind(first.keys.kind("Patient")))
        next(reading)  # a statement in progress on the read connection
        with second.writer() as writer:  # the other process
            writer.update("Patient", "c", _patient("c"))
        with first.writer() as writer:
            writer.update("Patient", "d", _patient("d"))
        reading.close()  # the read ends; the next one sees the commits
        assert first.read("Patient", "d").version == 1
    finally:
        first.storage.close()
        second.storage.close()
