"""Import benchmark, after Health Samurai's: Synthea bundles POSTed to the FHIR base.

1. The information bundles of fhir-data-pipes-2021 (hospitalInformation*, then
   practitionerInformation*: batches of conditional creates) are POSTed one by one.
2. Every Synthea patient bundle of both folders (transactions; fhir-data-pipes-2021 ones
   use conditional references to step 1's organisations and practitioners, smart-2019
   ones are self-contained with urn:uuid references) is POSTed as it is by --clients
   concurrent clients, --repeat times over (POST creates new copies each round).

Metric: resources/s = entries of the bundles answered 2xx / wall time of step 2.
It runs twice, on a sealed vault and on a plaintext one (COFFRE_BENCH_PLAINTEXT=1), each
with a fresh vault and server, and prints both side by side. --rounds R runs the modes R
times, every other round in reverse order, and prints medians: what sealing costs is the
median of the rounds' pairs (a single pair on this machine swings by ±10%).

    .venv/bin/python bench/import.py [--clients 20] [--repeat 1] [--workers 2] [--rounds 1]
        [--storage sqlite|postgresql|postgresql://USER@HOST/DB]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    FHIR_JSON,
    PUBLISHED_IMPORT,
    ROOT,
    Profiler,
    Runs,
    Table,
    add_common_options,
    add_rounds_option,
    add_server_options,
    alternated,
    client_session,
    cpu_snapshot,
    cpu_usage,
    describe_changes,
    diagnostics_of,
    latency_summary,
    mode_server,
    network_errors,
    paired_changes,
    parse_modes,
    print_header,
    rounds_note,
    run_async,
    storages,
    synthea_files,
    wait_for_idle,
    write_json,
)

MAX_DIAGNOSTICS = 5
TARGET_RESOURCES_PER_S = 5000
TARGET_SEALING_COST = 10.0
NETWORK_ERRORS = network_errors()
COMPARED = {
    "resources/s": lambda r: r["resources_per_s"],
    "server CPU per resource": lambda r: r["server_cpu_per_1000_s"],
}


@dataclass(frozen=True)
class BundleFile:
    name: str
    body: bytes
    entries: int


@dataclass
class Dataset:
    info: list[BundleFile]
    stages: list[list[BundleFile]]  # patient bundles, one list per folder, loaded in this order

    @property
    def patients(self) -> list[BundleFile]:
        return [bundle for stage in self.stages for bundle in stage]

    @property
    def patient_entries(self) -> int:
        return sum(b.entries for b in self.patients)


def load(data: Path) -> Dataset:
    info, stages = synthea_files(data / "synthea")
    return Dataset([_read(p) for p in info], [[_read(p) for p in stage] for stage in stages])


def _read(path: Path) -> BundleFile:
    body = path.read_bytes()
    bundle = orjson.loads(body)
    return BundleFile(f"{path.parent.name}/{path.name}", body, len(bundle.get("entry", [])))


@dataclass
class PhaseResult:
    bundles_ok: int = 0
    bundles_failed: int = 0
    entries_ok: int = 0
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    wall: float = 0.0
    not_started: int = 0

    def record_failure(self, name: str, status: int, text: str) -> None:
        self.bundles_failed += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if len(self.failures) < MAX_DIAGNOSTICS:
            self.failures.append(f"{name}: HTTP {status}: {text}")


async def post(session: Any, url: str, body: bytes) -> tuple[int, bytes, float]:
    started = time.perf_counter()
    async with session.post(url, data=body, headers={"Content-Type": FHIR_JSON}) as response:
        content = await response.read()
        return response.status, content, time.perf_counter() - started


async def information_phase(session: Any, url: str, dataset: Dataset) -> tuple[PhaseResult, int]:
    """POST the batches one after the other; count their entries answered 2xx."""
    result = PhaseResult()
    entry_failures = 0
    started = time.perf_counter()
    for bundle in dataset.info:
        try:
            status, content, latency = await post(session, url, bundle.body)
        except NETWORK_ERRORS as error:
            result.record_failure(bundle.name, 0, repr(error))
            continue
        result.latencies.append(latency)
        if not 200 <= status < 300:
            result.record_failure(bundle.name, status, diagnostics_of(content))
            continue
        result.bundles_ok += 1
        for entry in orjson.loads(content).get("entry", []):
            if str(entry.get("response", {}).get("status", "")).startswith("2"):
                result.entries_ok += 1
            else:
                entry_failures += 1
                if len(result.failures) < MAX_DIAGNOSTICS:
                    result.failures.append(
                        f"{bundle.name}: entry {entry.get('response', {}).get('status')}: "
                        + diagnostics_of(orjson.dumps(entry.get("response", {}).get("outcome", {})))
                    )
    result.wall = time.perf_counter() - started
    return result, entry_failures


async def patient_phase(
    session: Any, url: str, stages: list[list[BundleFile]], clients: int, max_seconds: float
) -> PhaseResult:
    """--clients coroutines take bundles from a stage's list until it is empty or time is up;
    a stage starts once the one before has been answered in full."""
    result = PhaseResult()
    deadline = time.monotonic() + max_seconds

    async def client(jobs: list[BundleFile], cursor: list[int]) -> None:
        while cursor[0] < len(jobs) and time.monotonic() < deadline:
            bundle = jobs[cursor[0]]
            cursor[0] += 1
            try:
                status, content, latency = await post(session, url, bundle.body)
            except NETWORK_ERRORS as error:
                result.record_failure(bundle.name, 0, repr(error))
                continue
            result.latencies.append(latency)
            if 200 <= status < 300:
                result.bundles_ok += 1
                result.entries_ok += bundle.entries
                result.statuses[status] = result.statuses.get(status, 0) + 1
            else:
                result.record_failure(bundle.name, status, diagnostics_of(content))

    started = time.perf_counter()
    for jobs in stages:
        cursor = [0]
        await asyncio.gather(*(client(jobs, cursor) for _ in range(clients)))
        result.not_started += len(jobs) - cursor[0]
    result.wall = time.perf_counter() - started
    return result


def run_mode(
    mode: str, args: argparse.Namespace, dataset: Dataset, profile: bool, storage_url: str | None
) -> dict[str, Any]:
    busy_before = wait_for_idle(args.wait_idle)
    server = mode_server(args, mode, storage_url)
    with server:
        url = server.base_url + "/"
        stages = [stage * args.repeat for stage in dataset.stages]

        async def main() -> dict[str, Any]:
            async with client_session(args.clients, args.timeout) as session:
                info, info_entry_failures = await information_phase(session, url, dataset)
                print(
                    f"  [{mode}] information bundles: {info.entries_ok} entries ok,"
                    f" {info_entry_failures} entries failed, in {info.wall:.1f} s"
                )
                profiler = None
                if profile:
                    profiler = Profiler(
                        args.py_spy,
                        server.pid,
                        args.max_seconds + 60,
                        args.py_spy_rate,
                        args.py_spy_idle,
                    )
                before = cpu_snapshot(server.pid)
                patients = await patient_phase(session, url, stages, args.clients, args.max_seconds)
                after = cpu_snapshot(server.pid)
                if profiler:
                    profiler.stop()
                return {
                    "info": info,
                    "info_entry_failures": info_entry_failures,
                    "patients": patients,
                    "cpu": cpu_usage(before, after),
                }

        outcome = run_async(main(), args.loop)
        storage = server.storage_bytes()
    patients: PhaseResult = outcome["patients"]
    info: PhaseResult = outcome["info"]
    cpu = outcome["cpu"]
    return {
        "mode": mode,
        "resources_per_s": patients.entries_ok / patients.wall if patients.wall else 0.0,
        "bundles_per_s": patients.bundles_ok / patients.wall if patients.wall else 0.0,
        "entries_ok": patients.entries_ok,
        "bundles_ok": patients.bundles_ok,
        "bundles_failed": patients.bundles_failed,
        "bundles_not_started": patients.not_started,
        "statuses": patients.statuses,
        "wall_s": patients.wall,
        "latency": latency_summary(patients.latencies),
        "failures": patients.failures,
        "info_entries_ok": info.entries_ok,
        "info_entry_failures": outcome["info_entry_failures"],
        "info_bundles_failed": info.bundles_failed,
        "info_failures": info.failures,
        "info_wall_s": info.wall,
        "cpu": cpu.as_dict(),
        "server_cpu_per_1000_s": cpu.server / max(patients.entries_ok, 1) * 1000,
        "storage_bytes": storage,
        "machine_busy_before": busy_before,
    }


def report(results: Runs, modes: list[str], args: argparse.Namespace) -> dict[str, Any]:
    def col(getter: Any) -> dict[str, Any]:
        return {mode: statistics.median(getter(run) for run in results[mode]) for mode in modes}

    table = Table(
        f"Import of the Synthea patient bundles x {args.repeat}"
        f" ({args.clients} clients, server --workers {args.workers}{rounds_note(args.rounds)})"
    )
    table.add("resources/s", col(lambda r: r["resources_per_s"]), better="higher")
    table.add("bundles/s", col(lambda r: r["bundles_per_s"]), "{:,.1f}", better="higher")
    table.add("resources imported", col(lambda r: r["entries_ok"]))
    table.add("bundles ok", col(lambda r: r["bundles_ok"]))
    table.add("bundles failed (non-2xx)", col(lambda r: r["bundles_failed"]))
    table.add("bundles not sent (time limit)", col(lambda r: r["bundles_not_started"]))
    table.add(
        "wall time of the patient phase (s)", col(lambda r: r["wall_s"]), "{:,.1f}", better="lower"
    )
    for p in ("p50", "p95", "p99", "max"):
        table.add(
            f"bundle latency {p} (ms)", col(lambda r, p=p: r["latency"][f"{p}_ms"]), better="lower"
        )
    table.add("server CPU (s)", col(lambda r: r["cpu"]["server_cpu_s"]), "{:,.1f}", better="lower")
    table.add(
        "server CPU per 1000 resources (s)",
        col(lambda r: r["server_cpu_per_1000_s"]),
        "{:,.3f}",
        better="lower",
    )
    table.add("generator CPU (s)", col(lambda r: r["cpu"]["generator_cpu_s"]), "{:,.2f}")
    table.add(
        "generator share of the machine",
        col(lambda r: r["cpu"]["generator_share"] * 100),
        "{:.1f}%",
    )
    table.add(
        "server share of the machine", col(lambda r: r["cpu"]["server_share"] * 100), "{:.1f}%"
    )
    table.add("other processes' share", col(lambda r: r["cpu"]["others_share"] * 100), "{:.1f}%")
    table.add(
        "machine busy (all processes)", col(lambda r: r["cpu"]["machine_busy"] * 100), "{:.1f}%"
    )
    table.add("stolen by the hypervisor", col(lambda r: r["cpu"]["steal"] * 100), "{:.1f}%")
    table.add("information entries ok", col(lambda r: r["info_entries_ok"]))
    table.add("information phase (s)", col(lambda r: r["info_wall_s"]), "{:,.1f}")
    table.add(
        "storage.sqlite + WAL on disk (MB)", col(lambda r: r["storage_bytes"] / 1e6), "{:,.1f}"
    )
    print()
    print(table.render(modes))
    for mode in modes:
        failures = [
            line for run in results[mode] for line in run["info_failures"] + run["failures"]
        ]
        if failures:
            print(f"\nfirst failures ({mode}):")
            for line in failures[:MAX_DIAGNOSTICS]:
                print("  " + line)
    print(
        "\nPublished (Health Samurai, 8 vCPUs per server, June 2026), resources/s: "
        + ", ".join(f"{k} {v:,}" for k, v in PUBLISHED_IMPORT.items())
    )
    if "sealed" not in results:
        return {}
    sealed = statistics.median(run["resources_per_s"] for run in results["sealed"])
    verdict = "met" if sealed >= TARGET_RESOURCES_PER_S else "NOT met"
    print(
        f"Target: {TARGET_RESOURCES_PER_S:,} resources/s sealed on this machine: {verdict} ({sealed:,.0f})"
    )
    if "plaintext" not in results:
        return {}
    changes = paired_changes(results, "sealed", "plaintext", COMPARED)
    print(f"Sealing (sealed against plaintext): {describe_changes(changes)}")
    cost = -statistics.median(changes["resources/s"])
    verdict = "met" if cost < TARGET_SEALING_COST else "NOT met"
    print(
        f"Target: sealing costs under {TARGET_SEALING_COST:.0f}% of throughput: {verdict}"
        f" ({cost:+.1f}%{', the median of the rounds' if args.rounds > 1 else ''})"
    )
    return {"sealing": changes}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=ROOT.parent / "shared" / "data",
        help="folder holding synthea/ (default ../shared/data beside the project)",
    )
    parser.add_argument("--clients", type=int, default=20, help="concurrent clients (default 20)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="post the patient set N times (default 1)"
    )
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="per-request timeout in s (default 300)"
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=600.0,
        help="no new bundle is sent after this many seconds of the patient phase (default 600)",
    )
    add_rounds_option(parser)
    add_common_options(parser)
    add_server_options(parser)
    args = parser.parse_args()
    if min(args.clients, args.repeat, args.workers, args.rounds) < 1:
        parser.error("--clients, --repeat, --workers and --rounds must be at least 1")
    modes = parse_modes(args.modes)
    dataset = load(args.data)
    print_header("bench/import.py", args)
    print(
        f"data: {len(dataset.info)} information bundles"
        f" ({sum(b.entries for b in dataset.info):,} entries), {len(dataset.patients)} patient bundles"
        f" ({dataset.patient_entries:,} entries) x {args.repeat}"
    )
    results: Runs = {mode: [] for mode in modes}
    with storages(args.storage) as new_storage:
        for n, mode in alternated(modes, args.rounds):
            print(f"round {n}: {mode} ...", flush=True)
            profile = bool(args.py_spy) and not any(results.values())
            run = run_mode(mode, args, dataset, profile, new_storage())
            results[mode].append(run)
            print(
                f"  {run['resources_per_s']:,.0f} resources/s, server CPU per 1000"
                f" {run['server_cpu_per_1000_s']:.3f} s",
                flush=True,
            )
    comparisons = report(results, modes, args)
    write_json(
        args.json,
        {"benchmark": "import", "args": vars(args), "results": results, "comparisons": comparisons},
    )


if __name__ == "__main__":
    main()
