"""Booking benchmark: a crowd books a vaccination campaign's seats, and none is booked twice.

Each mode serves a fresh vault, sealed or plaintext (COFFRE_BENCH_PLAINTEXT=1), into which
a campaign of `coffre synth-campaign` is POSTed: --sites centres, open --days days from
tomorrow, --seats vaccinators each, a free Slot a seat every five minutes from 8:00 to 20:00.
With it, --patients patients, each with a record (as $book asks of whoever books). Then
--clients clients each loop: `GET Appointment/$find` at a random centre, from now to the
campaign's end, for the crowd's next patient (in turn: one books again once every one has
had their turn), then `POST Appointment/$book` of the first time offered. A 409 (every seat
of that time taken meanwhile) is the crowd's lot, counted apart from the bookings. --warmup
s, then --duration s are measured.

The campaign is meant not to run out: the figures are those of a crowd that finds free
times. A $find that offers nothing is counted, and warned of as a campaign too small for
the run (more --seats or --days). A server process searches a centre's day of seats once
every few seconds (each search opens every free Slot of that day) and reads again each seat
it offers: more seats make the searches dearer, not the $find between them
(docs/booking.md).

At the end every Appointment and every busy Slot is read back: no Slot may be held by two
Appointments, each Appointment holds one busy Slot, and there is one for each booking
answered 201. The check is printed, and its failure fails the benchmark (exit status 1).

    .venv/bin/python bench/booking.py [--clients 50] [--duration 30] [--workers 2]
        [--sites 11] [--days 1] [--seats 5] [--offers 20] [--patients 5000]
        [--storage sqlite|postgresql|postgresql://USER@HOST/DB]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    FHIR_JSON,
    ROOT,
    CoffreServer,
    Table,
    add_common_options,
    add_machine_rows,
    add_server_options,
    client_session,
    cpu_usage,
    diagnostics_of,
    latency_summary,
    measured_window,
    mode_server,
    network_errors,
    parse_modes,
    print_header,
    run_async,
    search_all,
    storages,
    wait_for_idle,
    write_json,
)
from read import post_bundles

from coffre.synth.campaign import TURNS_A_DAY, VENUES

MAX_DIAGNOSTICS = 5
MAX_WINDOW_DAYS = 29
"""$find looks 31 days ahead at most: from now (the day before the campaign opens) to the
end of the day after its last."""
PAGE = 1000  # the most a search page holds
CROWD_BUNDLE = 500  # patients a batch Bundle of the crowd
NETWORK_ERRORS = network_errors()
FIND, BOOK = "$find", "$book"
EXPECTED = {FIND: (200,), BOOK: (201, 409)}


# -- the campaign ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Campaign:
    files: list[Path]
    sites: list[str]  # the centres' Location ids
    end: str  # where each $find's window ends: its last evening in Quebec is UTC's next day
    slots: int
    patients: int


def crowd_bundles(patients: int, folder: Path) -> list[Path]:
    """The crowd's patients, as batch Bundles of PUTs at ``Patient/crowd-N``."""
    files = []
    for first in range(0, patients, CROWD_BUNDLE):
        entries = [
            {
                "resource": {"resourceType": "Patient", "id": f"crowd-{n}", "gender": "unknown"},
                "request": {"method": "PUT", "url": f"Patient/crowd-{n}"},
            }
            for n in range(first, min(first + CROWD_BUNDLE, patients))
        ]
        path = folder / f"crowd-{first:07d}.json"
        path.write_bytes(
            orjson.dumps({"resourceType": "Bundle", "type": "batch", "entry": entries})
        )
        files.append(path)
    return files


def synthesise(args: argparse.Namespace, folder: Path) -> Campaign:
    """`coffre synth-campaign`, opening tomorrow, and the crowd's patients."""
    opens = date.today() + timedelta(days=1)
    shape = ("--sites", str(args.sites), "--days", str(args.days), "--seats", str(args.seats))
    command = [sys.executable, "-m", "coffre", "synth-campaign", *shape, "--opens", str(opens)]
    subprocess.run(
        [*command, "--out", str(folder)],
        check=True,
        capture_output=True,
        timeout=600,
        cwd=ROOT,
    )
    return Campaign(
        [*sorted(folder.glob("*.json")), *crowd_bundles(args.patients, folder)],
        [venue.key for venue in VENUES[: args.sites]],
        str(opens + timedelta(days=args.days + 1)),
        args.sites * args.days * args.seats * TURNS_A_DAY,
        args.patients,
    )


# -- the crowd ---------------------------------------------------------------------------------


@dataclass
class Record:
    """Every answered request: (operation, end time, latency, HTTP status)."""

    samples: list[tuple[str, float, float, int]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    network_errors: Counter[str] = field(default_factory=Counter)
    empty_finds: int = 0
    turns: Iterator[int] = field(default_factory=itertools.count)

    def fail(self, text: str) -> None:
        if len(self.failures) < MAX_DIAGNOSTICS:
            self.failures.append(text)

    def count(self, operation: str, status: int) -> int:
        return sum(1 for s in self.samples if s[0] == operation and s[3] == status)


async def call(
    session: Any, record: Record, operation: str, url: str, body: bytes | None = None
) -> bytes | None:
    """One request; its answer when it is one of those expected, else None."""
    started = time.monotonic()
    method = "GET" if body is None else "POST"
    headers = None if body is None else {"Content-Type": FHIR_JSON}
    try:
        async with session.request(method, url, data=body, headers=headers) as response:
            content: bytes = await response.read()
            status = response.status
    except NETWORK_ERRORS as error:
        record.network_errors[operation] += 1
        record.fail(f"{operation}: {error!r}")
        return None
    ended = time.monotonic()
    record.samples.append((operation, ended, ended - started, status))
    if status not in EXPECTED[operation]:
        record.fail(f"{operation}: HTTP {status}: {diagnostics_of(content)}")
        return None
    return content


async def booking(
    session: Any, base: str, campaign: Campaign, rng: random.Random, record: Record, count: int
) -> bool:
    """The next patient's $find at a random centre, then $book of the first time offered;
    whether it booked."""
    patient = f"Patient/crowd-{next(record.turns) % campaign.patients}"
    site = rng.choice(campaign.sites)
    query = f"location=Location/{site}&end={campaign.end}&patient={patient}&_count={count}"
    found = await call(session, record, FIND, f"{base}/Appointment/$find?{query}")
    if found is None:
        return False
    offers = orjson.loads(found).get("entry", [])
    if not offers:
        record.empty_finds += 1
        return False
    offer = orjson.dumps(offers[0]["resource"])
    return await call(session, record, BOOK, f"{base}/Appointment/$book", offer) is not None


async def client(
    session: Any,
    base: str,
    campaign: Campaign,
    rng: random.Random,
    record: Record,
    count: int,
    stop_at: float,
) -> None:
    while time.monotonic() < stop_at:
        await booking(session, base, campaign, rng, record, count)


def seat_problems(
    appointments: list[dict[str, Any]], busy: list[dict[str, Any]], booked: int, unanswered: int
) -> list[str]:
    """What breaks the rule in what the server holds: a Slot held twice, an Appointment
    holding other than one busy Slot, or other than one Appointment a booking (``unanswered``:
    the $book requests cut short, which may have booked)."""
    problems = []
    holders = Counter(
        slot.get("reference") for appointment in appointments for slot in appointment["slot"]
    )
    twice = sorted(str(slot) for slot, holding in holders.items() if holding > 1)
    if twice:
        problems.append(f"{len(twice)} Slots held by two Appointments or more: {twice[:3]}")
    odd = [a["id"] for a in appointments if len(a["slot"]) != 1 or a["status"] != "booked"]
    if odd:
        problems.append(f"{len(odd)} Appointments not booked on one Slot: {odd[:3]}")
    busy_slots = {f"Slot/{slot['id']}" for slot in busy}
    if busy_slots != set(holders):
        problems.append(
            f"{len(set(holders) - busy_slots)} Slots held are not busy, and"
            f" {len(busy_slots - set(holders))} busy Slots are held by no Appointment"
        )
    if not booked <= len(appointments) <= booked + unanswered:
        problems.append(f"{len(appointments)} Appointments for {booked} bookings answered 201")
    return problems


async def check(session: Any, base: str, record: Record) -> dict[str, Any]:
    appointments = await search_all(session, f"{base}/Appointment?_count={PAGE}")
    busy = await search_all(session, f"{base}/Slot?status=busy&_count={PAGE}")
    booked = record.count(BOOK, 201)
    problems = seat_problems(appointments, busy, booked, record.network_errors[BOOK])
    return {"appointments": len(appointments), "busy_slots": len(busy), "problems": problems}


async def load(
    args: argparse.Namespace, server: CoffreServer, campaign: Campaign, profile: bool
) -> dict[str, Any]:
    record = Record()
    base = server.base_url
    async with client_session(args.clients, args.timeout) as session:
        # One booking first, alone: the campaign must offer a time, and $book book it.
        if not await booking(session, base, campaign, random.Random(args.seed), record, 1):
            raise SystemExit(
                "the check booking failed, nothing was timed:\n  "
                + "\n  ".join(record.failures or ["$find offered no time"])
            )
        window_start_at = time.monotonic() + args.warmup
        window_end_at = window_start_at + args.duration
        tasks = [
            asyncio.create_task(
                client(
                    session,
                    base,
                    campaign,
                    random.Random(f"{args.seed}:{n}"),
                    record,
                    args.offers,
                    window_end_at,
                )
            )
            for n in range(args.clients)
        ]
        await asyncio.sleep(max(0.0, window_start_at - time.monotonic()))
        before, after = await measured_window(args, server, window_end_at, profile)
        # Requests in flight at the end finish (each bounded by --timeout); none starts.
        await asyncio.wait(tasks, timeout=args.timeout + 5)
        checked = await check(session, base, record)
    return {"record": record, "before": before, "after": after, "check": checked}


def run_mode(
    mode: str,
    args: argparse.Namespace,
    campaign: Campaign,
    profile: bool,
    storage_url: str | None,
) -> dict[str, Any]:
    busy_before = wait_for_idle(args.wait_idle)
    server = mode_server(args, mode, storage_url)
    with server:
        started = time.monotonic()
        loaded = run_async(
            post_bundles(server.base_url, campaign.files, args.load_clients, args.timeout),
            args.loop,
        )
        load_seconds = time.monotonic() - started
        print(f"  campaign loaded: {len(loaded):,} resources in {load_seconds:.1f} s", flush=True)
        outcome = run_async(load(args, server, campaign, profile), args.loop)
    record: Record = outcome["record"]
    cpu = cpu_usage(outcome["before"], outcome["after"])
    window = [s for s in record.samples if outcome["before"].wall <= s[1] <= outcome["after"].wall]
    statuses = Counter(f"{s[0]} {s[3]}" for s in window)
    bookings = statuses[f"{BOOK} 201"]
    return {
        "mode": mode,
        "campaign_load_seconds": load_seconds,
        "bookings_per_s": bookings / cpu.wall,
        "finds_per_s": statuses[f"{FIND} 200"] / cpu.wall,
        "find": latency_summary(s[2] for s in window if s[0] == FIND),
        "book": latency_summary(s[2] for s in window if s[0] == BOOK),
        "statuses": dict(statuses),
        "unexpected": sum(1 for s in window if s[3] not in EXPECTED[s[0]]),
        "network_errors": dict(record.network_errors),
        "empty_finds": record.empty_finds,
        "server_cpu_per_booking_ms": cpu.server / max(bookings, 1) * 1000,
        "failures": record.failures,
        "check": outcome["check"],
        "cpu": cpu.as_dict(),
        "machine_busy_before": busy_before,
    }


# -- the report ------------------------------------------------------------------------------


def report(results: dict[str, dict[str, Any]], modes: list[str], args: argparse.Namespace) -> None:
    def col(getter: Any) -> dict[str, Any]:
        return {mode: getter(results[mode]) for mode in modes}

    table = Table(
        f"Booking: {args.clients} clients, $find then $book, {args.duration:.0f} s measured after"
        f" {args.warmup:.0f} s of warm-up, server --workers {args.workers}; {args.sites} centres,"
        f" {args.days} days, {args.seats} seats"
    )
    table.add("bookings/s (201)", col(lambda r: r["bookings_per_s"]), "{:,.1f}", better="higher")
    table.add("$find/s", col(lambda r: r["finds_per_s"]), "{:,.1f}", better="higher")
    for operation, key in ((FIND, "find"), (BOOK, "book")):
        for p in ("p50", "p99"):
            table.add(
                f"{operation} {p} (ms)",
                col(lambda r, key=key, p=p: r[key][f"{p}_ms"]),
                "{:,.1f}",
                better="lower",
            )
    table.add("$book 201", col(lambda r: r["statuses"].get(f"{BOOK} 201", 0)))
    table.add("$book 409", col(lambda r: r["statuses"].get(f"{BOOK} 409", 0)))
    table.add("$find offering nothing", col(lambda r: r["empty_finds"]))
    table.add("other answers", col(lambda r: r["unexpected"]))
    table.add("network errors", col(lambda r: sum(r["network_errors"].values())))
    table.add("server CPU (s)", col(lambda r: r["cpu"]["server_cpu_s"]), "{:,.1f}", better="lower")
    table.add(
        "server CPU per booking (ms)",
        col(lambda r: r["server_cpu_per_booking_ms"]),
        "{:,.1f}",
        better="lower",
    )
    table.add("generator CPU (s)", col(lambda r: r["cpu"]["generator_cpu_s"]), "{:,.1f}")
    add_machine_rows(table, col)
    table.add("campaign load (s)", col(lambda r: r["campaign_load_seconds"]), "{:,.1f}")
    print()
    print(table.render(modes))
    for mode in modes:
        run = results[mode]
        if run["failures"]:
            print(f"\nfirst failures ({mode}):")
            for line in run["failures"]:
                print("  " + line)
        if run["empty_finds"]:
            print(
                f"\nwarning ({mode}): {run['empty_finds']} $find offered nothing: the campaign ran"
                " out at some centre; give it more --seats or --days"
            )
    print()
    for mode in modes:
        checked = results[mode]["check"]
        verdict = "; ".join(checked["problems"]) or "no Slot held twice, one Appointment a booking"
        print(
            f"check ({mode}): {checked['appointments']:,} Appointments, {checked['busy_slots']:,}"
            f" busy Slots: {'FAILED: ' if checked['problems'] else ''}{verdict}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (default 50)")
    parser.add_argument("--duration", type=float, default=30.0, help="measured s (default 30)")
    parser.add_argument(
        "--warmup", type=float, default=5.0, help="seconds of load before measuring (default 5)"
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="per-request timeout in s (default 60)"
    )
    parser.add_argument(
        "--sites", type=int, default=len(VENUES), help=f"centres (default {len(VENUES)}, all)"
    )
    parser.add_argument("--days", type=int, default=1, help="days from tomorrow (default 1)")
    parser.add_argument("--seats", type=int, default=5, help="seats a centre (default 5)")
    parser.add_argument(
        "--offers", type=int, default=20, help="the _count of each $find (default 20)"
    )
    parser.add_argument(
        "--patients", type=int, default=5000, help="patients of the crowd (default 5000)"
    )
    parser.add_argument(
        "--load-clients", type=int, default=4, help="clients POSTing the campaign (default 4)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the centres chosen")
    add_common_options(parser)
    add_server_options(parser)
    args = parser.parse_args()
    counts = (args.clients, args.workers, args.days, args.seats, args.offers, args.patients)
    if min(*counts, args.load_clients) < 1:
        parser.error(
            "--clients, --workers, --days, --seats, --offers, --patients, --load-clients:"
            " at least 1"
        )
    if not 1 <= args.sites <= len(VENUES) or args.days > MAX_WINDOW_DAYS:
        parser.error(f"--sites from 1 to {len(VENUES)}, --days {MAX_WINDOW_DAYS} at most")
    if args.duration <= 0 or args.warmup < 0:
        parser.error("--duration must be positive and --warmup not negative")
    modes = parse_modes(args.modes)
    print_header("bench/booking.py", args)
    folder = Path(tempfile.mkdtemp(prefix="coffre-bench-booking-", dir=args.tmpdir))
    try:
        campaign = synthesise(args, folder)
        print(
            f"campaign: {campaign.slots:,} Slots and {campaign.patients:,} patients"
            f" in {len(campaign.files)} Bundles",
            flush=True,
        )
        results = {}
        with storages(args.storage) as new_storage:
            for n, mode in enumerate(modes):
                print(f"running {mode} ...", flush=True)
                profile = bool(args.py_spy) and n == 0
                results[mode] = run_mode(mode, args, campaign, profile, new_storage())
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    report(results, modes, args)
    write_json(args.json, {"benchmark": "booking", "args": vars(args), "results": results})
    if any(result["check"]["problems"] for result in results.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
