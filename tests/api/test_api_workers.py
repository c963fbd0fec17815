"""A server of two processes: a scrape, whichever process answers it, gives the figures of
both; the folder they write them in starts empty; a process that dies is told to the
metrics, its counts kept and its moment's figures dropped."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from conftest import FHIR_JSON, RunningServer
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from test_api_metrics import Samples, samples_of, value

from coffre.cli.main import WORKER_START_SECONDS
from coffre.service import Vault

READS = 20
PROCESS_GONE_SECONDS = WORKER_START_SECONDS / 4
"""A process that dies is replaced at the supervisor's next round, every half second, or
as soon as it dies when the supervisor was waiting for its answer to a health check: in
seconds, well before such a check's timeout (WORKER_START_SECONDS)."""


def _stale_counter(folder: Path) -> None:
    """What a run before this one left: a thousand reads counted by process 1."""
    stale = MmapedDict(str(folder / "counter_1.db"))
    labels = ["interaction", "code"], ["read", "200"]
    key = mmap_key("coffre_http_requests", "coffre_http_requests_total", *labels, "")
    stale.write_value(key, 1000.0, 0.0)
    stale.close()


def _scrape(server: RunningServer) -> Samples:
    """A scrape on a connection of its own, which either process may answer."""
    response = httpx.get(server.base_url.removesuffix("/fhir") + "/metrics")
    assert response.status_code == 200, response.text
    return samples_of(response.text)


def _reads(server: RunningServer) -> float:
    return value(_scrape(server), "coffre_http_requests_total", interaction="read", code="200")


def _read_often(server: RunningServer) -> None:
    """Reads, each on a new connection: the kernel shares them out between the processes
    by a hash of their addresses, so that both processes serve some (all to one process:
    a chance of one in half a million)."""
    patient = {"resourceType": "Patient", "name": [{"family": "Côté"}]}
    created = httpx.post(f"{server.base_url}/Patient", json=patient, headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    url = f"{server.base_url}/Patient/{created.json()['id']}"
    for _ in range(READS):
        assert httpx.get(url).status_code == 200


def _wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + PROCESS_GONE_SECONDS
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert condition()


def test_every_scrape_gives_the_figures_of_both_processes_gone_or_not(
    vault: Vault, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "metrics"
    folder.mkdir()
    _stale_counter(folder)
    monkeypatch.setenv("COFFRE_METRICS_DIR", str(folder))
    server = RunningServer(vault, workers=2)
    try:
        assert _reads(server) == 0  # the earlier run's thousand are gone
        _read_often(server)
        assert [_reads(server) for _ in range(6)] == [READS] * 6
        victim = server.workers()[0]
        moment = folder / f"gauge_livesum_{victim}.db"  # its booking requests waiting, served
        assert moment.exists()
        os.kill(victim, signal.SIGKILL)
        _wait_until(lambda: not moment.exists())
        assert [_reads(server) for _ in range(6)] == [READS] * 6  # its reads still counted
    finally:
        server.stop()


def test_a_process_killed_while_its_health_check_waits_is_replaced_at_once(
    vault: Vault,
) -> None:
    """A process that cannot answer the supervisor's health check (stopped here; in
    production, one busy or swapping) and then dies (OOM, a crash) is replaced at once, not
    after the check's timeout: the server does not serve with one process fewer meanwhile."""
    server = RunningServer(vault, workers=2)
    try:
        victim, other = server.workers()
        os.kill(victim, signal.SIGSTOP)
        time.sleep(2)  # the supervisor pings every half second: one check is on its way
        os.kill(victim, signal.SIGKILL)
        _wait_until(lambda: len(server.workers()) == 2 and victim not in server.workers())
        (replacement,) = set(server.workers()) - {other}
        _wait_until(lambda: bool(server.listening(replacement)))
        _read_often(server)
    finally:
        server.stop()


def _gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (a zombie waiting to be reaped has)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="asks Linux to end them")
def test_the_processes_of_a_supervisor_killed_stop_and_free_the_port(vault: Vault) -> None:
    """``kill -9`` of the supervisor, which then cannot stop its processes: they stop by
    themselves rather than serve on, supervised by nobody."""
    server = RunningServer(vault, workers=2)
    workers = server.workers()
    try:
        server.process.kill()
        server.process.wait()
        _wait_until(lambda: all(map(_gone, workers)))
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.base_url}/metadata")
    finally:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
