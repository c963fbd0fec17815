"""What an operations team meets when PostgreSQL goes away under a running `coffre serve`:
a restart, an outage, a connection lost at COMMIT. Each test runs a server of its own
(`own_postgres`), which it stops and starts, and a real `coffre serve` on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import FHIR_JSON, RunningServer
from pgserver import Cluster

from coffre.service import Vault

WAIT_SECONDS = 60
"""The longest any request of these tests waits for an answer."""


@pytest.fixture
def vault(own_postgres: Cluster, tmp_path: Path) -> Vault:
    created = Vault.at(tmp_path / "vault")
    created.create(own_postgres.new_storage_url())
    return created


@pytest.fixture
def server(vault: Vault) -> Iterator[RunningServer]:
    running = RunningServer(vault)
    yield running
    running.stop()


def _create(server: RunningServer, family: str) -> httpx.Response:
    patient = {"resourceType": "Patient", "name": [{"family": family}]}
    return httpx.post(
        f"{server.base_url}/Patient", json=patient, headers=FHIR_JSON, timeout=WAIT_SECONDS
    )


def _read(server: RunningServer, reference: str) -> httpx.Response:
    return httpx.get(f"{server.base_url}/{reference}", timeout=WAIT_SECONDS)


def _created(server: RunningServer, family: str) -> str:
    response = _create(server, family)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return f"Patient/{body['id']}"


def test_after_postgresql_restarts_the_first_requests_are_served(
    own_postgres: Cluster, server: RunningServer
) -> None:
    """The write connection, idle while the server restarted, is found dead before a
    transaction starts on it: neither the first read (which logs itself) nor the first
    write after the restart gets a 503."""
    patient = _created(server, "Tremblay")
    own_postgres.stop_server()
    own_postgres.start_server()
    read = _read(server, patient)
    assert read.status_code == 200, read.text
    assert _create(server, "Gagnon").status_code == 201
