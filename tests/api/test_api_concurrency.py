"""Races a busy hospital runs into: concurrent HTTP clients against `coffre serve` with two
worker processes on one vault, which share the storage (a file lock on SQLite, an
advisory lock on PostgreSQL) and, within a process, one group commit.

Each client opens a new connection per request, so that the kernel spreads the requests
over both processes. What is asserted holds in every interleaving; many rounds make the
interleavings that used to break it likely.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
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


def _identified(system: str, value: str, family: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": system, "value": value}],
        "name": [{"family": family}],
    }


async def _history_versions(client: httpx.AsyncClient, reference: str) -> list[int]:
    history = (await client.get(f"/{reference}/_history")).json()
    return [
        int(entry["response"]["etag"].removeprefix('W/"').removesuffix('"'))
        for entry in history["entry"]
    ]


async def _if_match_race(client: httpx.AsyncClient, seen: list[httpx.Response]) -> None:
    """Clients update the same version at once: one wins, the others are told 412."""
    patient_id = await _created(client, "v1")
    racing = await asyncio.gather(
        *(
            client.put(
                f"/Patient/{patient_id}",
                json=_patient(patient_id, f"racer{n}"),
                headers={**FHIR_JSON, "If-Match": 'W/"1"'},
            )
            for n in range(5)
        )
    )
    seen.extend(racing)
    assert sorted(r.status_code for r in racing) == [200, 412, 412, 412, 412]
    assert await _history_versions(client, f"Patient/{patient_id}") == [2, 1]


async def _conditional_create_race(client: httpx.AsyncClient, seen: list[httpx.Response]) -> None:
    """If-None-Exist raced: one creates, the others are given what it created."""
    value = uuid.uuid4().hex
    body = _identified("urn:race", value, "first")
    racing = await asyncio.gather(
        *(
            client.post(
                "/Patient",
                json=body,
                headers={**FHIR_JSON, "If-None-Exist": f"identifier=urn:race|{value}"},
            )
            for _ in range(5)
        )
    )
    seen.extend(racing)
    assert sorted(r.status_code for r in racing) == [200, 200, 200, 200, 201]
    assert len({r.json()["id"] for r in racing}) == 1
    found = (await client.get("/Patient", params={"identifier": f"urn:race|{value}"})).json()
    assert found["total"] == 1


async def _conditional_update_race(client: httpx.AsyncClient, seen: list[httpx.Response]) -> None:
    """Conditional updates of a record nobody has yet: one creates it, the others update
    it; then conditional updates of the version they all read: one wins."""
    value = uuid.uuid4().hex
    url = f"/Patient?identifier=urn:race|{value}"
    racing = await asyncio.gather(
        *(
            client.put(url, json=_identified("urn:race", value, f"racer{n}"), headers=FHIR_JSON)
            for n in range(4)
        )
    )
    seen.extend(racing)
    assert sorted(r.status_code for r in racing) == [200, 200, 200, 201]
    (patient_id,) = {r.json()["id"] for r in racing}
    versions = await _history_versions(client, f"Patient/{patient_id}")
    assert versions == list(range(len(versions), 0, -1))
    latest = f'W/"{versions[0]}"'
    racing = await asyncio.gather(
        *(
            client.put(
                url,
                json={**_identified("urn:race", value, f"again{n}"), "id": patient_id},
                headers={**FHIR_JSON, "If-Match": latest},
            )
            for n in range(4)
        )
    )
    seen.extend(racing)
    assert sorted(r.status_code for r in racing) == [200, 412, 412, 412]


async def _conditional_delete_race(client: httpx.AsyncClient, seen: list[httpx.Response]) -> None:
    """Conditional deletes raced: the record is deleted once."""
    value = uuid.uuid4().hex
    created = await client.post(
        "/Patient", json=_identified("urn:race", value, "doomed"), headers=FHIR_JSON
    )
    assert created.status_code == 201
    racing = await asyncio.gather(
        *(client.delete("/Patient", params={"identifier": f"urn:race|{value}"}) for _ in range(4))
    )
    seen.extend(racing)
    assert {r.status_code for r in racing} == {200}
    assert sorted(r.json()["issue"][0]["diagnostics"] for r in racing) == [
        "0 Patient deleted",
        "0 Patient deleted",
        "0 Patient deleted",
        "1 Patient deleted",
    ]
    assert await _history_versions(client, f"Patient/{created.json()['id']}") == [2, 1]


async def _delete_update_race(client: httpx.AsyncClient, seen: list[httpx.Response]) -> None:
    """A delete and an update of the version both read: one of them wins."""
    patient_id = await _created(client, "v1")
    stale = {"If-Match": 'W/"1"'}
    deleted, updated = await asyncio.gather(
        client.delete(f"/Patient/{patient_id}", headers=stale),
        client.put(
            f"/Patient/{patient_id}",
            json=_patient(patient_id, "v2"),
            headers={**FHIR_JSON, **stale},
        ),
    )
    seen.extend((deleted, updated))
    assert sorted((deleted.status_code, updated.status_code)) in ([204, 412], [200, 412])
    read = await client.get(f"/Patient/{patient_id}")
    assert read.status_code == (410 if deleted.status_code == 204 else 200)
    assert await _history_versions(client, f"Patient/{patient_id}") == [2, 1]


def test_writes_racing_for_the_same_record_have_one_winner(two_workers: RunningServer) -> None:
    """Across both processes and within a group commit alike: never two winners, never a
    500, and the history shows exactly the writes that were acknowledged."""
    seen: list[httpx.Response] = []

    async def main() -> None:
        async with spread_client(two_workers) as client:
            for _ in range(6):
                await asyncio.gather(
                    _if_match_race(client, seen),
                    _conditional_create_race(client, seen),
                    _conditional_update_race(client, seen),
                    _conditional_delete_race(client, seen),
                    _delete_update_race(client, seen),
                )

    asyncio.run(main())
    assert _refused(seen) == []


JSON_PATCH = {"Content-Type": "application/json-patch+json"}


async def _patch_race(client: httpx.AsyncClient, seen: list[httpx.Response]) -> None:
    """Patches of the same record at once, each adding a name: every one lands on
    the version the one before wrote, none lost; with If-Match on the version they all
    read, one wins and the others are told 412."""
    patient_id = await _created(client, "v1")
    url = f"/Patient/{patient_id}"
    added = await asyncio.gather(
        *(
            client.patch(
                url,
                content=json.dumps(
                    [{"op": "add", "path": "/name/-", "value": {"family": f"g{n}"}}]
                ),
                headers=JSON_PATCH,
            )
            for n in range(6)
        )
    )
    seen.extend(added)
    assert [r.status_code for r in added] == [200] * 6
    names = (await client.get(url)).json()["name"]
    assert sorted(name["family"] for name in names) == [*(f"g{n}" for n in range(6)), "v1"]
    assert await _history_versions(client, f"Patient/{patient_id}") == list(range(7, 0, -1))
    racing = await asyncio.gather(
        *(
            client.patch(
                url,
                content=json.dumps([{"op": "replace", "path": "/name/0/family", "value": f"r{n}"}]),
                headers={**JSON_PATCH, "If-Match": 'W/"7"'},
            )
            for n in range(4)
        )
    )
    seen.extend(racing)
    assert sorted(r.status_code for r in racing) == [200, 412, 412, 412]


def test_patches_racing_for_the_same_record_lose_no_update(two_workers: RunningServer) -> None:
    seen: list[httpx.Response] = []

    async def main() -> None:
        async with spread_client(two_workers) as client:
            for _ in range(3):
                await asyncio.gather(*(_patch_race(client, seen) for _ in range(2)))

    asyncio.run(main())
    assert _refused(seen) == []


def _transaction(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


def _put_entry(patient_id: str, family: str, if_match: str | None = None) -> dict[str, Any]:
    request = {"method": "PUT", "url": f"Patient/{patient_id}"}
    if if_match is not None:
        request["ifMatch"] = if_match
    return {"resource": _patient(patient_id, family), "request": request}


def test_transactions_touching_the_same_records_are_all_or_nothing_in_one_order(
    two_workers: RunningServer,
) -> None:
    """Transactions that update the same two records land whole, one after the other: both
    records show them in the same order. Of those that update the version they read, one
    lands; the others land nothing."""
    seen: list[httpx.Response] = []

    async def main() -> None:
        async with spread_client(two_workers) as client:
            for round_number in range(5):
                first, second = await _created(client, "v1"), await _created(client, "v1")
                tags = [f"t{round_number}x{n}" for n in range(6)]
                racing = await asyncio.gather(
                    *(
                        client.post(
                            "/",
                            json=_transaction(_put_entry(first, tag), _put_entry(second, tag)),
                            headers=FHIR_JSON,
                        )
                        for tag in tags
                    )
                )
                seen.extend(racing)
                assert {r.status_code for r in racing} == {200}
                orders = []
                for patient_id in (first, second):
                    history = (await client.get(f"/Patient/{patient_id}/_history")).json()
                    orders.append(
                        [e["resource"]["name"][0]["family"] for e in reversed(history["entry"])]
                    )
                assert orders[0] == orders[1] and sorted(orders[0][1:]) == sorted(tags)

                stale = 'W/"1"'
                third, fourth = await _created(client, "v1"), await _created(client, "v1")
                racing = await asyncio.gather(
                    *(
                        client.post(
                            "/",
                            json=_transaction(
                                _put_entry(third, tag, stale), _put_entry(fourth, tag, stale)
                            ),
                            headers=FHIR_JSON,
                        )
                        for tag in tags
                    )
                )
                seen.extend(racing)
                assert sorted(r.status_code for r in racing) == [200] + [412] * 5
                winner = tags[[r.status_code for r in racing].index(200)]
                for patient_id in (third, fourth):
                    read = (await client.get(f"/Patient/{patient_id}")).json()
                    assert (read["meta"]["versionId"], read["name"][0]["family"]) == ("2", winner)

    asyncio.run(main())
    assert _refused(seen) == []


def test_a_write_failing_in_a_group_commit_fails_alone(two_workers: RunningServer) -> None:
    """Writes that pass validation but fail under the write lock (a stale If-Match, a
    transaction's stale entry) get their own 412 and leave nothing, while the writes
    committed with them in the same batch all land."""
    seen: list[httpx.Response] = []

    async def main() -> None:
        async with spread_client(two_workers) as client:
            for _ in range(6):
                stale_target = await _created(client, "v1")
                await client.put(
                    f"/Patient/{stale_target}", json=_patient(stale_target, "v2"), headers=FHIR_JSON
                )
                fresh = [uuid.uuid4().hex for _ in range(8)]
                absent = [uuid.uuid4().hex for _ in range(3)]
                stale = {**FHIR_JSON, "If-Match": 'W/"1"'}
                creates = [
                    client.put(f"/Patient/{i}", json=_patient(i, "new"), headers=FHIR_JSON)
                    for i in fresh
                ]
                conflicts = [
                    client.put(
                        f"/Patient/{stale_target}",
                        json=_patient(stale_target, "lost"),
                        headers=stale,
                    )
                    for _ in range(3)
                ]
                transactions = [
                    client.post(
                        "/",
                        json=_transaction(
                            _put_entry(patient_id, "never"),
                            _put_entry(stale_target, "lost", 'W/"1"'),
                        ),
                        headers=FHIR_JSON,
                    )
                    for patient_id in absent
                ]
                answers = await asyncio.gather(*creates, *conflicts, *transactions)
                seen.extend(answers)
                assert [r.status_code for r in answers] == [201] * 8 + [412] * 6
                reads = await asyncio.gather(*(client.get(f"/Patient/{i}") for i in fresh + absent))
                assert [r.status_code for r in reads] == [200] * 8 + [404] * 3
                assert await _history_versions(client, f"Patient/{stale_target}") == [2, 1]

    asyncio.run(main())
    assert _refused(seen) == []


def _send_and_hang_up(server: RunningServer, path: str, body: bytes, sent: int) -> None:
    """Send a PUT whose first ``sent`` bytes of body reach the server, then reset the
    connection without reading the answer."""
    head = (
        f"PUT /fhir{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/fhir+json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        connection.sendall(head + body[:sent])
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def test_a_write_whose_client_hangs_up_lands_whole_or_not_at_all(
    two_workers: RunningServer,
) -> None:
    """A client that resets its connection during its write, its body sent whole or in
    part: the write lands whole or not at all, and the record takes later writes."""
    seen: list[httpx.Response] = []

    async def main() -> None:
        async with spread_client(two_workers) as client:
            for round_number in range(12):
                patient_id = await _created(client, "v1")
                body = json.dumps(_patient(patient_id, "hung-up")).encode()
                sent = len(body) if round_number % 2 else len(body) // 2
                await asyncio.to_thread(
                    _send_and_hang_up, two_workers, f"/Patient/{patient_id}", body, sent
                )
                after = await client.put(
                    f"/Patient/{patient_id}", json=_patient(patient_id, "after"), headers=FHIR_JSON
                )
                seen.append(after)
                history = (await client.get(f"/Patient/{patient_id}/_history")).json()
                families = [e["resource"]["name"][0]["family"] for e in reversed(history["entry"])]
                # The hung-up write, if it landed, came before the next one or after it.
                assert families in (
                    ["v1", "after"],
                    ["v1", "hung-up", "after"],
                    ["v1", "after", "hung-up"],
                )
                if sent < len(body):
                    assert "hung-up" not in families

    asyncio.run(main())
    assert _refused(seen) == []


async def _pages(
    client: httpx.AsyncClient, url: str, params: dict[str, str]
) -> tuple[int, list[dict[str, Any]]]:
    """The total of a search or history's first page, and the entries of every page."""
    page = (await client.get(url, params=params)).json()
    total, entries = page["total"], list(page.get("entry", []))
    while following := [link["url"] for link in page["link"] if link["relation"] == "next"]:
        page = (await client.get(following[0])).json()
        entries += page.get("entry", [])
    return total, entries


def test_history_and_search_pages_hold_still_while_writes_land(two_workers: RunningServer) -> None:
    """Paging through a record's history, or a search, while both processes write: every
    version of the first page's moment once, every match of it once, nothing else."""
    seen: list[httpx.Response] = []
    family = uuid.uuid4().hex

    async def main() -> None:
        async with spread_client(two_workers) as client:
            busy = await _created(client, family)
            for n in range(8):
                changed = _patient(busy, family) | {"gender": ["male", "female"][n % 2]}
                await client.put(f"/Patient/{busy}", json=changed, headers=FHIR_JSON)
                await _created(client, family)
            until = time.monotonic() + 6

            async def write() -> None:
                n = 0
                while time.monotonic() < until:
                    n += 1
                    changed = _patient(busy, family) | {"gender": ["male", "female"][n % 2]}
                    seen.append(
                        await client.put(f"/Patient/{busy}", json=changed, headers=FHIR_JSON)
                    )
                    await _created(client, family)

            async def page() -> None:
                while time.monotonic() < until:
                    total, entries = await _pages(
                        client, f"/Patient/{busy}/_history", {"_count": "3"}
                    )
                    versions = [
                        int(e["response"]["etag"].removeprefix('W/"').removesuffix('"'))
                        for e in entries
                    ]
                    assert versions == list(range(total, 0, -1))
                    params = {"family": family, "_count": "4", "_total": "accurate"}
                    total, entries = await _pages(client, "/Patient", params)
                    ids = [e["resource"]["id"] for e in entries]
                    assert len(ids) == len(set(ids)) == total

            await asyncio.gather(*(write() for _ in range(3)), *(page() for _ in range(3)))

    asyncio.run(main())
    assert _refused(seen) == []


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


def test_a_client_hanging_up_mid_upload_is_no_server_error(two_workers: RunningServer) -> None:
    """Flaky networks drop uploads: the server reads no body, writes nothing, and logs
    no error or traceback for it, which operators would take for a fault of Coffre."""
    body = json.dumps(_patient("dropped", "hung-up")).encode()
    for _ in range(4):
        _send_and_hang_up(two_workers, "/Patient/dropped", body, len(body) // 2)
    assert httpx.get(f"{two_workers.base_url}/Patient/dropped").status_code == 404
    two_workers.stop()
    assert two_workers.process.stdout is not None
    logged = two_workers.process.stdout.read().decode()
    assert "Traceback" not in logged and "ClientDisconnect" not in logged, logged
