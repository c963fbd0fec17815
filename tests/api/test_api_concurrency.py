"""Races a busy hospital runs into: concurrent HTTP clients against `coffre serve` with two
worker processes on one vault, which share the storage (a file lock on SQLite, an
advisory lock on PostgreSQL) and, within a process, one group commit.

Each client opens a new connection per request, so that the kernel spreads the requests
over both processes. What is asserted holds in every interleaving; many rounds make the
interleavings that used to break it likely.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from conftest import FHIR_JSON, RunningServer

from coffre.service import Vault

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}


@pytest.fixture
def two_workers(vault: Vault) -> Iterator[RunningServer]:
    running = RunningServer(vault, workers=2)
    yield running
    running.stop()


@asynccontextmanager
async def spread_client(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    """A client whose every request goes over a new connection (to either process)."""
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=server.base_url, limits=limits, timeout=60) as client:
        yield client


def _patient(patient_id: str, family: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": patient_id, "name": [{"family": family}]}


def _version(response: httpx.Response) -> int:
    return int(response.headers["ETag"].removeprefix('W/"').removesuffix('"'))


def _refused(responses: list[httpx.Response]) -> list[str]:
    """What went wrong on the server's side: a 5xx is never a fair answer to a race."""
    return [
        f"{r.request.method} {r.request.url.path} {r.status_code}: {r.text[:120]}"
        for r in responses
        if r.status_code >= 500
    ]


async def _created(client: httpx.AsyncClient, family: str) -> str:
    patient_id = uuid.uuid4().hex
    created = await client.put(
        f"/Patient/{patient_id}", json=_patient(patient_id, family), headers=FHIR_JSON
    )
    assert created.status_code == 201, created.text
    return patient_id


async def _export_forever(
    client: httpx.AsyncClient, until: float, seen: list[httpx.Response]
) -> None:
    """Kick off Patient exports and download them, again and again."""
    while time.monotonic() < until:
        kick_off = await client.get("/Patient/$export?_type=Patient", headers=ASYNC)
        seen.append(kick_off)
        status = kick_off.headers.get("Content-Location")
        while status is not None and time.monotonic() < until:
            polled = await client.get(status)
            seen.append(polled)
            if polled.status_code != 202:
                break
            await asyncio.sleep(0.1)
        else:
            continue
        if polled.status_code == 200:
            for output in polled.json()["output"]:
                seen.append(await client.get(output["url"]))


def test_a_read_after_an_acknowledged_write_sees_it_while_exports_run(
    two_workers: RunningServer,
) -> None:
    """A read that follows an acknowledged write, in either process, gives that version
    or a later one, and never a 500: an export reading the storage in another thread of
    the same process must not hold the reads of the request thread to an older state."""
    ids = [uuid.uuid4().hex for _ in range(600)]
    seen: list[httpx.Response] = []
    stale: list[str] = []

    async def write_then_read(client: httpx.AsyncClient, patient_id: str, until: float) -> None:
        round_number = 0
        while time.monotonic() < until:
            round_number += 1
            written = await client.put(
                f"/Patient/{patient_id}",
                json=_patient(patient_id, f"v{round_number}"),
                headers=FHIR_JSON,
            )
            read = await client.get(f"/Patient/{patient_id}")
            seen.extend((written, read))
            if (
                written.status_code == 200
                and read.status_code == 200
                and _version(read) < _version(written)
            ):
                stale.append(
                    f"acknowledged version {_version(written)}, then read {_version(read)}"
                )

    async def main() -> None:
        async with spread_client(two_workers) as client:
            for start in range(0, len(ids), 30):
                created = await asyncio.gather(
                    *(
                        client.put(f"/Patient/{i}", json=_patient(i, "v0"), headers=FHIR_JSON)
                        for i in ids[start : start + 30]
                    )
                )
                assert {r.status_code for r in created} == {201}
            until = time.monotonic() + 8
            await asyncio.gather(
                *(write_then_read(client, patient_id, until) for patient_id in ids[:12]),
                *(_export_forever(client, until, seen) for _ in range(3)),
            )

    asyncio.run(main())
    assert _refused(seen) == [] and stale == []


def test_a_record_written_without_pause_reads_in_both_processes(two_workers: RunningServer) -> None:
    """Reads, searches and history of a record that both processes keep updating: each
    answers a version at least as new as the last one acknowledged before it was sent,
    and never a 500 (a write landing between the storage's answer and the log's is no
    sign of tampering)."""
    seen: list[httpx.Response] = []
    stale: list[str] = []
    patient_id, value = uuid.uuid4().hex, uuid.uuid4().hex
    acknowledged = [1]

    def body(family: str) -> dict[str, Any]:
        return _patient(patient_id, family) | {
            "identifier": [{"system": "urn:hot", "value": value}]
        }

    async def main() -> None:
        async with spread_client(two_workers) as client:
            first = await client.put(f"/Patient/{patient_id}", json=body("v0"), headers=FHIR_JSON)
            assert first.status_code == 201
            until = time.monotonic() + 8

            async def write(writer: int) -> None:
                n = 0
                while time.monotonic() < until:
                    n += 1
                    written = await client.put(
                        f"/Patient/{patient_id}", json=body(f"w{writer}n{n}"), headers=FHIR_JSON
                    )
                    seen.append(written)
                    if written.status_code == 200:
                        acknowledged.append(_version(written))

            async def read() -> None:
                while time.monotonic() < until:
                    floor = max(acknowledged)
                    answers = await asyncio.gather(
                        client.get(f"/Patient/{patient_id}"),
                        client.get("/Patient", params={"identifier": f"urn:hot|{value}"}),
                        client.get(f"/Patient/{patient_id}/_history", params={"_count": "2"}),
                    )
                    seen.extend(answers)
                    read, found, _history = answers
                    if read.status_code == 200 and _version(read) < floor:
                        stale.append(f"read {_version(read)} after {floor} was acknowledged")
                    if found.status_code == 200 and found.json()["total"] != 1:
                        stale.append(f"search found {found.json()['total']}")

            await asyncio.gather(*(write(n) for n in range(6)), *(read() for _ in range(6)))

    asyncio.run(main())
    assert _refused(seen) == [] and stale == []


def test_a_patient_s_access_history_reads_while_their_record_is_being_read(
    two_workers: RunningServer,
) -> None:
    """Each read of a patient's record adds an AuditEvent to their compartment, in either
    process: their access history, read meanwhile, lists what the log had when it looked
    and never takes the newest events for tampering."""
    seen: list[httpx.Response] = []

    async def main() -> None:
        async with spread_client(two_workers) as client:
            patient_id = await _created(client, "watched")
            until = time.monotonic() + 6

            async def read_the_record() -> None:
                while time.monotonic() < until:
                    seen.append(await client.get(f"/Patient/{patient_id}"))

            async def read_the_access_history() -> None:
                while time.monotonic() < until:
                    answer = await client.get(f"/Patient/{patient_id}/$access-history")
                    seen.append(answer)
                    assert answer.status_code == 200, answer.text

            await asyncio.gather(
                *(read_the_record() for _ in range(6)),
                *(read_the_access_history() for _ in range(3)),
            )

    asyncio.run(main())
    assert _refused(seen) == []
