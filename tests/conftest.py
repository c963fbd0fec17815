"""Fixtures shared by every test area: vaults, an in-process client, a running server,
and the third-party FHIR data in ../shared/data."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc.jwk import RSAKey
from pgserver import free_port
from starlette.testclient import TestClient
from tcpsockets import TCP_LISTEN, listening_count, tcp_sockets
from testca import ServerFiles

from coffre import config
from coffre.api import create_app
from coffre.custody.choose import KEYRING
from coffre.research.projects import Project
from coffre.service import RecordStore, Vault

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("COFFRE_SHARED_DATA", ROOT.parent / "shared" / "data"))
FHIR_JSON = {"Content-Type": "application/fhir+json"}
READY_SECONDS = 120
pytest_plugins = (
    "softhsm",  # SoftHSM2 tokens: the pkcs11_token fixture
    "pg",  # the storages every vault test runs on: the backend and storage_url fixtures
)


def shared_data_path(*parts: str) -> Path:
    """A path in ../shared/data; the test skips where it is absent, and fails under CI=true."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        message = f"the third-party FHIR data is not at {path} (set COFFRE_SHARED_DATA)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(autouse=True)
def _close_the_vaults_a_test_opens(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every record store a test opens is closed once it ends: a PostgreSQL one holds a
    pool of connections and its threads, which would otherwise wait for the collector."""
    opened: list[RecordStore] = []
    open_vault = Vault.open

    def open_and_remember(vault: Vault, **options: bool) -> RecordStore:
        records = open_vault(vault, **options)
        opened.append(records)
        return records

    monkeypatch.setattr(Vault, "open", open_and_remember)
    yield
    for records in opened:
        records.storage.close()


@cache
def id_token_pem() -> bytes:
    """An RSA key for a test's authority to sign ID tokens with, made once per test
    process: a fifth of a second each."""
    return RSAKey.generate_key(2048, private=True).as_pem(private=True)


ORGANIZATION = {"resourceType": "Organization", "name": "CLSC de Limoilou"}
# A Composition with its mandatory elements only (a document Bundle's first entry).
COMPOSITION = {
    "resourceType": "Composition",
    "status": "final",
    "type": {"text": "note"},
    "date": "2024-01-01",
    "author": [{"display": "Dr X"}],
    "title": "Note",
}


def write_organizations(client: TestClient | httpx.Client, count: int, path: str = "/fhir") -> None:
    """``count`` creates, one commit (one leaf, one checkpoint) each: organisations, in
    their type's shared compartment (a patient's first record adds a leaf for their data
    key). ``path``: the FHIR base's path on the client's base URL."""
    for _ in range(count):
        response = client.post(f"{path}/Organization", json=ORGANIZATION, headers=FHIR_JSON)
        assert response.status_code == 201, response.text


def put_resource(client: TestClient, resource: dict[str, Any]) -> None:
    """Create or update ``resource`` at its own id, and insist that it was accepted."""
    url = f"/fhir/{resource['resourceType']}/{resource['id']}"
    response = client.put(url, json=resource, headers=FHIR_JSON)
    assert response.status_code in (200, 201), response.text


RESEARCH_PROJECT = Project(
    "diabete-2026",
    "CNIL DR-2026-042",
    "Complications of type 2 diabetes",
    ("Observation", "Patient"),
    date(2015, 1, 1),
    date(2025, 12, 31),
    ("alice",),
    date(2027, 6, 30),
)
"""A project of the research population's data: its patients and their HbA1c."""
RESEARCH_GENDERS = {"female": 14, "male": 11, "other": 3}
"""The research population: a cell under 10 (other) and one just over (male)."""


def research_population(records: RecordStore) -> None:
    """28 patients p1 to p28 of ``RESEARCH_GENDERS``, born a year apart from 1951, each
    with an HbA1c of March 2020: what research counts are tested on."""
    with records.writer() as writer:
        number = 0
        for gender, how_many in RESEARCH_GENDERS.items():
            for _ in range(how_many):
                number += 1
                patient_id = f"p{number}"
                patient = {
                    "resourceType": "Patient",
                    "id": patient_id,
                    "gender": gender,
                    "birthDate": f"{1950 + number}-05-01",
                }
                writer.update("Patient", patient_id, patient)
                writer.create(
                    {
                        "resourceType": "Observation",
                        "status": "final",
                        "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
                        "subject": {"reference": f"Patient/{patient_id}"},
                        "effectiveDateTime": "2020-03-17",
                        "valueQuantity": {"value": 7.2},
                    }
                )


@pytest.fixture
def vault(
    request: pytest.FixtureRequest, tmp_path: Path, paired_custody: str, storage_url: str
) -> Vault:
    """A new vault with the custody paired with its storage; ``indirect`` parametrisation
    with "keyring" or "pkcs11" chooses the custody instead."""
    if getattr(request, "param", paired_custody) == "pkcs11":
        request.getfixturevalue("pkcs11_token")
    created = Vault.at(tmp_path / "vault")
    created.create(storage_url)
    return created


@contextmanager
def keyring_custody() -> Iterator[None]:
    """Within the block, vaults keep their keys in a keyring file whatever the test's pair:
    for a second vault beside the test's, as a PKCS#11 token holds one vault's keys only."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(config.CUSTODY.env, KEYRING)
        yield


def share_keys(vault: Vault, folder: Path) -> None:
    """Let a vault at ``folder`` (a copy of ``vault``'s storage) sign and decrypt with
    ``vault``'s keys: a copy of its keyring file; under PKCS#11 custody nothing to copy, the
    settings choose the same token."""
    if config.CUSTODY.value() == KEYRING:
        shutil.copy2(vault.keyring, folder / vault.keyring.name)


@pytest.fixture
def records(vault: Vault) -> Iterator[RecordStore]:
    store = vault.open()
    yield store
    store.storage.close()


@pytest.fixture
def client(records: RecordStore) -> Iterator[TestClient]:
    with TestClient(create_app(records), raise_server_exceptions=False) as test_client:
        yield test_client


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # exited since listed
        return b""


class RunningServer:
    """``coffre serve`` in a subprocess, on a free loopback port; over HTTPS with ``tls``'s
    certificate and key, checked by ``verify`` (a context trusting its authority)."""

    def __init__(
        self,
        vault: Vault,
        workers: int = 1,
        tls: ServerFiles | None = None,
        verify: ssl.SSLContext | None = None,
    ) -> None:
        self.vault = vault
        self.port = free_port()
        self.base_url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}/fhir"
        self.verify = verify or True
        command = [
            sys.executable,
            "-m",
            "coffre",
            "serve",
            "--vault",
            str(vault.folder),
            "--port",
            str(self.port),
            "--workers",
            str(workers),
            *(("--tls-cert", str(tls.cert), "--tls-key", str(tls.key)) if tls else ()),
        ]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._wait_ready(workers)

    def _wait_ready(self, workers: int) -> None:
        """Until the server answers and every one of its ``workers`` processes listens: it
        answers once the first one does, and one not listening yet gets none of the new
        connections. Start-up imports the 5 MB generated schema module: seconds on an idle
        machine, much longer when the tests share the cores with other work."""
        deadline = time.monotonic() + READY_SECONDS
        answered = False
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                output = self.process.stdout.read().decode() if self.process.stdout else ""
                raise RuntimeError(f"coffre serve exited: {output}")
            try:
                url = f"{self.base_url}/metadata"
                answered = answered or httpx.get(url, timeout=1, verify=self.verify).is_success
            except httpx.HTTPError:
                pass
            if answered and (workers == 1 or listening_count(self.workers(), self.port) == workers):
                return
            time.sleep(0.1)
        raise RuntimeError(f"coffre serve was not ready within {READY_SECONDS} s")

    def workers(self) -> list[int]:
        """The worker processes of a server of several (multiprocessing's resource tracker
        left out)."""
        parent = self.process.pid
        children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        return [int(child) for child in children if b"spawn_main" in _cmdline(int(child))]

    def listening(self, pid: int) -> set[int]:
        """The sockets process ``pid`` listens on at the server's port."""
        return tcp_sockets(pid, self.port).get(TCP_LISTEN, set())

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def server(vault: Vault) -> Iterator[RunningServer]:
    running = RunningServer(vault)
    yield running
    running.stop()
