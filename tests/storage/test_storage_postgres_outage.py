"""What an operations team meets when PostgreSQL goes away under a running `coffre serve`:
a restart, an outage, a connection lost at COMMIT. Each test runs a server of its own
(`own_postgres`), which it stops and starts, and a real `coffre serve` on it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from conftest import FHIR_JSON, RunningServer
from pgserver import Cluster
from typer.testing import CliRunner

from coffre.cli.main import app
from coffre.exceptions import StorageError
from coffre.service import Vault
from coffre.service.vault import STORAGE_URL_FILE
from coffre.storage.postgres import (
    POOL_WAIT_SECONDS,
    POOL_WAIT_WHILE_AWAY_SECONDS,
    PostgresStorage,
)

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


def _audit_holds(server: RunningServer, vault: Vault, tmp_path: Path) -> None:
    """`coffre audit --full` accepts the log the server serves (and the server's own
    follower did, to serve the reads before)."""
    runner = CliRunner()
    key = runner.invoke(app, ["ledger-key", "--vault", str(vault.folder)]).output.strip()
    root, state = server.base_url.removesuffix("/fhir"), tmp_path / "auditor.state"
    audit = runner.invoke(app, ["audit", root, "--key", key, "--state", str(state), "--full"])
    assert audit.exit_code == 0 and "CONSISTENT" in audit.output, audit.output


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


OUTAGE_ANSWER_SECONDS = 15
"""A request during an outage is answered within this: it gets a 503, it does not hang
(nor hold up the requests behind it)."""


def _unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"].isdigit()
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "unavailable" in outcome["issue"][0]["diagnostics"]


def test_during_an_outage_requests_get_a_503_and_afterwards_nothing_acknowledged_is_lost(
    own_postgres: Cluster, server: RunningServer, vault: Vault, tmp_path: Path
) -> None:
    acknowledged = [_created(server, family) for family in ("Tremblay", "Gagnon")]
    own_postgres.stop_server()
    with httpx.Client(base_url=server.base_url, timeout=OUTAGE_ANSWER_SECONDS) as client:
        _unavailable(client.get(acknowledged[0]))
        patient = {"resourceType": "Patient", "name": [{"family": "Roy"}]}
        _unavailable(client.post("/Patient", json=patient, headers=FHIR_JSON))
        _unavailable(client.get("/Patient?name=trem"))
        assert client.get("/metadata").status_code == 200
        probes = server.base_url.removesuffix("/fhir") + "/health"
        assert client.get(f"{probes}/live").status_code == 200
        _unavailable(client.get(f"{probes}/ready"))
    own_postgres.start_server()
    _ready_again(probes)
    for reference in acknowledged:
        assert _read(server, reference).status_code == 200
    acknowledged.append(_created(server, "Roy"))
    search = httpx.get(f"{server.base_url}/Patient", timeout=WAIT_SECONDS).json()
    assert {f"Patient/{entry['resource']['id']}" for entry in search["entry"]} == set(acknowledged)
    _audit_holds(server, vault, tmp_path)


def _ready_again(probes: str) -> None:
    """Poll readiness as an orchestrator does, until the process serves again (the pool
    reconnects in the background, within about a second of the database's return)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while httpx.get(f"{probes}/ready", timeout=WAIT_SECONDS).status_code != 200:
        assert time.monotonic() < deadline, "the server did not serve again"
        time.sleep(0.2)


def _commits_wait_for_a_standby(own_postgres: Cluster) -> None:
    """Make every COMMIT wait for a synchronous standby that does not exist, so that a
    connection can be ended while its COMMIT is in flight. Set across a restart: on a
    reload the sessions would take it up only once the checkpointer passed it on."""
    with psycopg.connect(own_postgres.url(), autocommit=True) as admin:
        admin.execute("ALTER SYSTEM SET synchronous_standby_names = 'nobody'")
    own_postgres.stop_server()
    own_postgres.start_server()


def _end_the_commit_in_flight(admin: psycopg.Connection[Any]) -> None:
    """End the session whose COMMIT waits for the standby (committed locally), then let
    commits go through again (the sessions that waited too are released)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        ended = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE wait_event = 'SyncRep'"
        ).fetchall()
        if ended:
            break
        time.sleep(0.05)
    admin.execute("ALTER SYSTEM RESET synchronous_standby_names")
    admin.execute("SELECT pg_reload_conf()")
    assert ended, "no COMMIT waited for the standby"


def test_a_connection_lost_at_commit_is_said_to_have_maybe_saved_and_the_log_holds(
    own_postgres: Cluster, server: RunningServer, vault: Vault, tmp_path: Path
) -> None:
    """The ambiguous commit: the database committed, the answer never came. The client is
    told that the write may have been saved (a create repeated would make a second one),
    and the vault goes on from what the database holds: reads verify, the log audits."""
    before = _created(server, "Tremblay")
    _commits_wait_for_a_standby(own_postgres)
    with (
        psycopg.connect(own_postgres.url(), autocommit=True) as admin,
        ThreadPoolExecutor(max_workers=1) as pool,
    ):
        answer = pool.submit(_create, server, "Gagnon")
        _end_the_commit_in_flight(admin)
        response = answer.result(timeout=WAIT_SECONDS)
    _unavailable(response)
    assert "may have been saved" in response.json()["issue"][0]["diagnostics"]
    assert _read(server, before).status_code == 200
    found = httpx.get(f"{server.base_url}/Patient?family=gagnon", timeout=WAIT_SECONDS).json()
    assert found["total"] == 1  # this time the database had committed it
    _created(server, "Roy")
    _audit_holds(server, vault, tmp_path)


@pytest.fixture
def mute_server() -> Iterator[int]:
    """A port where a server takes connections and never says a word (a hung database, a
    proxy with nothing behind it): what libpq waits on longest."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


def _serve_start(vault: Vault, url: str, env: dict[str, str] | None = None) -> str:
    """Start `coffre serve` on ``vault`` with its storage at ``url``: what it printed as it
    refused to (exit status 1)."""
    (vault.folder / STORAGE_URL_FILE).write_text(url)
    done = subprocess.run(
        [sys.executable, "-m", "coffre", "serve", "--vault", str(vault.folder), "--port", "1"],
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 1, done.stderr
    return done.stderr


def test_serve_gives_up_on_a_database_that_never_answers(
    own_postgres: Cluster, vault: Vault, mute_server: int
) -> None:
    """Without a connect timeout of its own, libpq (through psycopg) waits 130 s."""
    url = (vault.folder / STORAGE_URL_FILE).read_text()
    stderr = _serve_start(vault, url.replace(f":{own_postgres.port}/", f":{mute_server}/"))
    assert "cannot connect to the PostgreSQL storage" in stderr
    assert "timeout" in stderr and "Traceback" not in stderr


def test_a_wrong_password_stops_serve_with_a_message_that_does_not_quote_it(
    own_postgres: Cluster, vault: Vault
) -> None:
    password = "Wr0ng-P4ssw0rd"
    with psycopg.connect(own_postgres.url(), autocommit=True) as admin:
        admin.execute("CREATE ROLE coffre LOGIN PASSWORD 'the-right-one'")
        hba = own_postgres.data / "pg_hba.conf"
        hba.write_text(f"hostssl all coffre 127.0.0.1/32 scram-sha-256\n{hba.read_text()}")
        admin.execute("SELECT pg_reload_conf()")
    url = (vault.folder / STORAGE_URL_FILE).read_text().replace("postgres@", "coffre@")
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:  # until the server has read its new pg_hba.conf
        try:
            psycopg.connect(url, password=password).close()
        except psycopg.OperationalError:
            break
        time.sleep(0.05)
    stderr = _serve_start(vault, url, {"PGPASSWORD": password})
    assert 'password authentication failed for user "coffre"' in " ".join(stderr.split())
    assert password not in stderr and "Traceback" not in stderr


def _set_for_new_sessions(own_postgres: Cluster, setting: str, value: str | None) -> None:
    """Change a setting for the sessions to come, and end Coffre's (which reconnects):
    a session takes up a reload only between commands, and not in the one it is in."""
    with psycopg.connect(own_postgres.url(), autocommit=True) as admin:
        change = f"SET {setting} = '{value}'" if value else f"RESET {setting}"
        admin.execute(f"ALTER SYSTEM {change}")
        admin.execute("SELECT pg_reload_conf()")
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            with psycopg.connect(own_postgres.url(), autocommit=True) as fresh:
                shown = fresh.execute(f"SHOW {setting}").fetchone()
            if shown and shown[0] == (value or "off"):
                break
            time.sleep(0.05)
        admin.execute(
            "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity"
            " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )


READ_ONLY = "default_transaction_read_only"


def test_a_read_only_database_refuses_reads_and_writes_and_loses_nothing(
    own_postgres: Cluster, server: RunningServer, vault: Vault, tmp_path: Path
) -> None:
    """Reads are logged before they are served: on a database that takes no writes (a
    standby, default_transaction_read_only) a read is refused too, never served unlogged,
    and an update is never acknowledged unsaved."""
    patient = _created(server, "Tremblay")
    _set_for_new_sessions(own_postgres, READ_ONLY, "on")
    _unavailable(_read(server, patient))
    probes = server.base_url.removesuffix("/fhir") + "/health"
    _unavailable(httpx.get(f"{probes}/ready", timeout=WAIT_SECONDS))  # off the balancer
    update = {"resourceType": "Patient", "id": patient.split("/")[1], "gender": "female"}
    put = httpx.put(f"{server.base_url}/{patient}", json=update, headers=FHIR_JSON, timeout=30)
    _unavailable(put)
    _set_for_new_sessions(own_postgres, READ_ONLY, None)
    assert _read(server, patient).json()["meta"]["versionId"] == "1"
    assert httpx.get(f"{probes}/ready", timeout=WAIT_SECONDS).status_code == 200
    _audit_holds(server, vault, tmp_path)


def test_reads_while_the_database_is_away_wait_for_a_connection_once(
    own_postgres: Cluster, vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reads run on the event loop: each waiting the pool's full time for a database that
    is away held up the process's every other request, its liveness probe among them.
    Once a read found no connection, the next ones fail at once, until one finds one."""
    storage = vault.open_storage()
    assert isinstance(storage, PostgresStorage)
    waits: list[float] = []
    connection = storage._pool.connection

    def noting_the_wait(timeout: float) -> Any:
        waits.append(timeout)
        return connection(timeout=timeout)

    monkeypatch.setattr(storage._pool, "connection", noting_the_wait)
    try:
        own_postgres.stop_server()
        with pytest.raises(StorageError):
            storage.leaf_count()  # the full wait (after its pooled connection proved dead)
        assert waits[-1] == POOL_WAIT_SECONDS
        waits.clear()
        for _ in range(2):
            with pytest.raises(StorageError):
                storage.leaf_count()
        assert waits == 2 * [POOL_WAIT_WHILE_AWAY_SECONDS]
        own_postgres.start_server()
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:  # the pool reconnects in the background
            with suppress(StorageError):
                storage.leaf_count()
                break
            time.sleep(0.1)
        storage.leaf_count()
    finally:
        storage.close()
    assert waits[-1] == POOL_WAIT_SECONDS  # a connection found again: the full wait again
