"""Read benchmark: GET /Type/id on random resources of a loaded vault, with and without the
check of each read against the tamper-evident log, and with and without sealing.

1. `coffre synth --patients` generates patients (about 120 resources each); their
   transaction bundles are POSTed to a fresh sealed vault, and to a fresh plaintext one
   (COFFRE_BENCH_PLAINTEXT=1) if a plaintext mode runs. The ids to read come from the
   transaction responses.
2. Each mode then serves a copy of its loaded vault with a fresh server:
   - sealed: production (bodies sealed, every read checked against the log);
   - sealed-unverified: COFFRE_BENCH_UNVERIFIED_READS=1 (reads skip the check of version,
     ciphertext hash and index tokens against the log);
   - plaintext-unverified: both switches;
   - sealed-authorised: sealed, with COFFRE_AUTH=required; a backend client registered
     for the run gets a system/*.rs token (client_credentials, private_key_jwt) and every
     read carries it, so each one passes the token check and the scope decision.
   Every read is logged in all modes (a leaf and a sealed AuditEvent, durable before the
   answer). --clients clients each GET random ids for --warmup s, then --duration s are
   measured.

Printed: reads/s, latency percentiles, server CPU per read, the load generator's CPU, errors,
what the check costs (sealed against sealed-unverified; issue 4's target: within 20%) and
what sealing costs (sealed-unverified against plaintext-unverified), what authorisation costs
(sealed-authorised against sealed; issue 5's target: under 10%). On a shared machine,
--rounds R runs the modes R times, every other round in reverse order, and prints medians;
the comparisons pair the runs of each round.

    .venv/bin/python bench/read.py [--patients 300] [--clients 50] [--duration 30] [--rounds 1]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    FHIR_JSON,
    ROOT,
    CoffreServer,
    Runs,
    Table,
    add_common_options,
    add_rounds_option,
    alternated,
    client_session,
    cpu_usage,
    describe_changes,
    diagnostics_of,
    measured_window,
    network_errors,
    paired_changes,
    parse_modes,
    percentile,
    print_header,
    rounds_note,
    run_async,
    wait_for_idle,
    write_json,
)

TARGET_VERIFICATION_COST = 20.0  # % of the unverified read throughput (issue 4)
TARGET_AUTHORISATION_COST = 10.0  # % of the read throughput without tokens (issue 5)
BENCH_CLIENT = "bench-reader"
READY_SECONDS = 600.0  # a server starting on a machine others keep busy
MAX_DIAGNOSTICS = 5
CHECK_READS = 50  # reads checked one by one (type, id) before anything is timed
NETWORK_ERRORS = network_errors()

UNVERIFIED = {"COFFRE_BENCH_UNVERIFIED_READS": "1"}
AUTHORISED = {"COFFRE_AUTH": "required"}
# mode -> (plaintext vault, extra server environment)
MODES: dict[str, tuple[bool, dict[str, str]]] = {
    "sealed": (False, {}),
    "sealed-unverified": (False, UNVERIFIED),
    "plaintext-unverified": (True, UNVERIFIED),
    "sealed-authorised": (False, AUTHORISED),
}


# -- the data --------------------------------------------------------------------------------


def synthesise(patients: int, seed: int, folder: Path) -> list[Path]:
    """`coffre synth`; shared.json (organisations, physicians) first, then the patients."""
    command = [sys.executable, "-m", "coffre", "synth", str(patients)]
    subprocess.run(
        [*command, "--out", str(folder), "--seed", str(seed)],
        check=True,
        capture_output=True,
        timeout=1800,
        cwd=ROOT,
    )
    return [folder / "shared.json", *sorted(folder.glob("patient-*.json"))]


@dataclass
class Loaded:
    vault: Path  # the vault folder, to copy for each run
    references: list[str]  # "Type/id" of every resource created
    seconds: float
    storage_bytes: int


async def post_bundles(base: str, bundles: list[Path], clients: int, timeout: float) -> list[str]:
    """POST the first bundle, then the others from `clients` coroutines; the "Type/id" of
    every entry created. Any failure stops the benchmark: nothing is timed on partial data."""
    references: list[str] = []
    headers = {"Content-Type": FHIR_JSON, "Prefer": "return=minimal"}

    async def post(session: Any, path: Path) -> None:
        async with session.post(base, data=path.read_bytes(), headers=headers) as response:
            content = await response.read()
            if response.status != 200:
                raise SystemExit(
                    f"loading {path.name}: HTTP {response.status}: {diagnostics_of(content)}"
                )
        for entry in orjson.loads(content).get("entry", []):
            status = str(entry["response"]["status"])
            if not status.startswith(("200", "201")):
                raise SystemExit(f"loading {path.name}: an entry answered {status}")
            # "Type/id/_history/N"
            references.append(entry["response"]["location"].rsplit("/", 2)[0])

    async def worker(session: Any, queue: list[Path]) -> None:
        while queue:
            await post(session, queue.pop())

    async with client_session(clients, timeout) as session:
        await post(session, bundles[0])
        queue = list(reversed(bundles[1:]))
        await asyncio.gather(*(worker(session, queue) for _ in range(clients)))
    return sorted(set(references))


def load_vault(plaintext: bool, bundles: list[Path], args: argparse.Namespace) -> Loaded:
    server = CoffreServer(
        workers=args.workers,
        plaintext=plaintext,
        tmp_root=args.tmpdir,
        synchronous=args.sqlite_synchronous,
        keep=True,  # the loaded vault is the source of the runs; removed by main()
        ready_timeout=READY_SECONDS,
    )
    with server:
        started = time.monotonic()
        references = run_async(
            post_bundles(server.base_url, bundles, args.load_clients, args.timeout), args.loop
        )
        seconds = time.monotonic() - started
    assert server.folder is not None
    return Loaded(server.folder / "vault", references, seconds, server.storage_bytes())


# -- the load --------------------------------------------------------------------------------


@dataclass
class Record:
    """Every request: (end time, latency, HTTP status or 0 for a network error)."""

    samples: list[tuple[float, float, int]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def fail(self, text: str) -> None:
        if len(self.failures) < MAX_DIAGNOSTICS:
            self.failures.append(text)


async def get(session: Any, url: str, record: Record) -> bytes:
    started = time.monotonic()
    try:
        async with session.get(url) as response:
            content: bytes = await response.read()
            status = response.status
    except NETWORK_ERRORS as error:
        content, status = b"", 0
        record.fail(f"GET {url}: {error!r}")
    ended = time.monotonic()
    record.samples.append((ended, ended - started, status))
    if status not in (0, 200):
        record.fail(f"GET {url}: HTTP {status}: {diagnostics_of(content)}")
    return content if status == 200 else b""


def register_backend(vault: Path) -> Any:
    """Register a backend client allowed system/*.rs in the vault's access registry (as
    `coffre clients add-backend` does); its private key, to sign client assertions."""
    from joserfc.jwk import ECKey

    from coffre.api.auth.registry import access_file, backend_client, load, save, with_client
    from coffre.service.vault import KEYRING_FILE

    key = ECKey.generate_key("P-384", private=True)
    public = orjson.dumps({**key.as_dict(private=False), "kid": key.thumbprint()}).decode()
    path = access_file(vault / KEYRING_FILE)
    save(path, with_client(load(path), backend_client(BENCH_CLIENT, public, "system/*.rs")))
    return key


async def system_token(session: Any, origin: str, key: Any) -> str:
    """A SMART Backend Services token: client_credentials with a signed client assertion."""
    import secrets

    from joserfc import jwt

    token_url = f"{origin}/auth/token"
    claims = {
        "iss": BENCH_CLIENT,
        "sub": BENCH_CLIENT,
        "aud": token_url,
        "exp": int(time.time()) + 240,
        "jti": secrets.token_hex(16),
    }
    header = {"alg": "ES384", "kid": key.thumbprint(), "typ": "JWT"}
    form = {
        "grant_type": "client_credentials",
        "scope": "system/*.rs",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": jwt.encode(header, claims, key, algorithms=["ES384"]),
    }
    async with session.post(token_url, data=form) as response:
        content = await response.read()
        if response.status != 200:
            raise SystemExit(f"no token for the benchmark: HTTP {response.status}: {content!r}")
    token: str = orjson.loads(content)["access_token"]
    return token


async def check(session: Any, base: str, references: list[str], rng: random.Random) -> None:
    """A few reads, one at a time, must answer the resource asked for."""
    record = Record()
    for reference in rng.sample(references, min(CHECK_READS, len(references))):
        content = await get(session, f"{base}/{reference}", record)
        resource = orjson.loads(content) if content else {}
        if f"{resource.get('resourceType')}/{resource.get('id')}" != reference:
            record.fail(f"GET {reference}: answered {resource.get('resourceType')!r}")
            raise SystemExit(
                "the check reads failed, nothing was timed:\n  " + "\n  ".join(record.failures)
            )


async def reader(
    session: Any, urls: list[str], rng: random.Random, record: Record, stop_at: float
) -> None:
    """GET random ids until stop_at; each request is bounded by the session's timeout."""
    while time.monotonic() < stop_at:
        await get(session, urls[rng.randrange(len(urls))], record)


async def load(
    args: argparse.Namespace,
    server: CoffreServer,
    references: list[str],
    profile: bool,
    key: Any = None,
) -> dict[str, Any]:
    """``key``: the benchmark's backend client key, when reads must carry a token."""
    record = Record()
    rng = random.Random(args.seed)
    urls = [f"{server.base_url}/{reference}" for reference in references]
    async with client_session(args.clients, args.timeout) as session:
        if key is not None:
            origin = server.base_url.removesuffix("/fhir")
            token = await system_token(session, origin, key)
            session.headers["Authorization"] = f"Bearer {token}"
        await check(session, server.base_url, references, rng)
        window_start_at = time.monotonic() + args.warmup
        window_end_at = window_start_at + args.duration
        tasks = [
            asyncio.create_task(
                reader(session, urls, random.Random(f"{args.seed}:{n}"), record, window_end_at)
            )
            for n in range(args.clients)
        ]
        await asyncio.sleep(max(0.0, window_start_at - time.monotonic()))
        before, after = await measured_window(args, server, window_end_at, profile)
        # Requests in flight at the end finish (each bounded by --timeout); none starts.
        await asyncio.wait(tasks, timeout=args.timeout + 5)
    return {"record": record, "before": before, "after": after}


def run_mode(mode: str, args: argparse.Namespace, loaded: Loaded, profile: bool) -> dict[str, Any]:
    plaintext, env = MODES[mode]
    busy_before = wait_for_idle(args.wait_idle)
    server = CoffreServer(
        workers=args.workers,
        plaintext=plaintext,
        tmp_root=args.tmpdir,
        synchronous=args.sqlite_synchronous,
        keep=args.keep_vault,
        source=loaded.vault,
        env=env,
        ready_timeout=READY_SECONDS,
    )
    with server:
        assert server.folder is not None
        key = register_backend(server.folder / "vault") if env is AUTHORISED else None
        outcome = run_async(load(args, server, loaded.references, profile, key), args.loop)
    record: Record = outcome["record"]
    cpu = cpu_usage(outcome["before"], outcome["after"])
    start, end = outcome["before"].wall, outcome["after"].wall
    window = [s for s in record.samples if start <= s[0] <= end]
    latencies = sorted(s[1] for s in window if s[2] == 200)
    reads = len(window)
    return {
        "mode": mode,
        "reads": reads,
        "reads_per_s": len(latencies) / cpu.wall,
        "errors": reads - len(latencies),
        "network_errors": sum(1 for s in window if s[2] == 0),
        "statuses": dict(Counter(str(s[2]) for s in window)),
        "latency_ms": {f"p{p}": percentile(latencies, p) * 1000 for p in (50, 90, 99)}
        | {"max": (latencies[-1] * 1000) if latencies else float("nan")},
        "server_cpu_per_read_ms": cpu.server / max(reads, 1) * 1000,
        "generator_core_share": cpu.generator / cpu.wall if cpu.wall else 0.0,
        "generator_cpu_per_read_ms": cpu.generator / max(reads, 1) * 1000,
        "failures": record.failures,
        "cpu": cpu.as_dict(),
        "machine_busy_before": busy_before,
    }


# -- the report ------------------------------------------------------------------------------


COMPARED = {
    "reads/s": lambda r: r["reads_per_s"],
    "server CPU per read": lambda r: r["server_cpu_per_read_ms"],
    "p50": lambda r: r["latency_ms"]["p50"],
    "p99": lambda r: r["latency_ms"]["p99"],
}


def report(results: Runs, modes: list[str], args: argparse.Namespace) -> dict[str, Any]:
    def col(getter: Any, combine: Any = statistics.median) -> dict[str, Any]:
        return {mode: combine([getter(run) for run in results[mode]]) for mode in modes}

    table = Table(
        f"Reads: {args.clients} clients, GET /Type/id on random ids, {args.duration:.0f} s"
        f" measured after {args.warmup:.0f} s of warm-up, server --workers {args.workers}"
        + rounds_note(args.rounds)
    )
    table.add("reads/s", col(lambda r: r["reads_per_s"]))
    for p in ("p50", "p90", "p99", "max"):
        table.add(f"latency {p} (ms)", col(lambda r, p=p: r["latency_ms"][p]), "{:,.1f}")
    table.add("errors (non-200 answers), all rounds", col(lambda r: r["errors"], sum))
    table.add("  of which network errors", col(lambda r: r["network_errors"], sum))
    table.add("server CPU per read (ms)", col(lambda r: r["server_cpu_per_read_ms"]), "{:,.3f}")
    table.add(
        "server share of the machine", col(lambda r: r["cpu"]["server_share"] * 100), "{:.1f}%"
    )
    table.add(
        "generator CPU (% of one core)", col(lambda r: r["generator_core_share"] * 100), "{:.1f}%"
    )
    table.add(
        "generator CPU per read (ms)", col(lambda r: r["generator_cpu_per_read_ms"]), "{:,.3f}"
    )
    table.add("other processes' share", col(lambda r: r["cpu"]["others_share"] * 100), "{:.1f}%")
    table.add(
        "machine busy (all processes)", col(lambda r: r["cpu"]["machine_busy"] * 100), "{:.1f}%"
    )
    table.add("stolen by the hypervisor", col(lambda r: r["cpu"]["steal"] * 100), "{:.1f}%")
    table.add(
        "machine busy just before the run", col(lambda r: r["machine_busy_before"] * 100), "{:.0f}%"
    )
    print()
    print(table.render(modes))
    for mode in modes:
        failures = [line for run in results[mode] for line in run["failures"]]
        if failures:
            print(f"\nfirst failures ({mode}):")
            for line in failures[:MAX_DIAGNOSTICS]:
                print("  " + line)
    comparisons = {}
    print()
    if "sealed" in results and "sealed-unverified" in results:
        costs = comparisons["verification"] = paired_changes(
            results, "sealed", "sealed-unverified", COMPARED
        )
        throughput = statistics.median(costs["reads/s"])
        met = -throughput <= TARGET_VERIFICATION_COST
        print(f"Verification (sealed against sealed-unverified): {describe_changes(costs)}")
        print(
            f"Target (issue 4): verified reads within {TARGET_VERIFICATION_COST:.0f}% of the"
            f" unverified throughput: {'met' if met else 'NOT met'} (reads/s {throughput:+.1f}%)"
        )
    if "sealed-unverified" in results and "plaintext-unverified" in results:
        costs = comparisons["sealing"] = paired_changes(
            results, "sealed-unverified", "plaintext-unverified", COMPARED
        )
        print(
            f"Sealing (sealed-unverified against plaintext-unverified): {describe_changes(costs)}"
        )
    if "sealed-authorised" in results and "sealed" in results:
        costs = comparisons["authorisation"] = paired_changes(
            results, "sealed-authorised", "sealed", COMPARED
        )
        throughput = statistics.median(costs["reads/s"])
        met = -throughput <= TARGET_AUTHORISATION_COST
        print(f"Authorisation (sealed-authorised against sealed): {describe_changes(costs)}")
        print(
            f"Target (issue 5): the authorisation check adds under"
            f" {TARGET_AUTHORISATION_COST:.0f}% to reads: {'met' if met else 'NOT met'}"
            f" (reads/s {throughput:+.1f}%)"
        )
    return comparisons


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        conflict_handler="resolve",  # --modes below replaces the common one
    )
    parser.add_argument(
        "--patients", type=int, default=300, help="generated patients to load (default 300)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the patients and the reads")
    parser.add_argument(
        "--load-clients", type=int, default=4, help="clients POSTing the bundles (default 4)"
    )
    parser.add_argument("--clients", type=int, default=50, help="concurrent readers (default 50)")
    parser.add_argument(
        "--duration", type=float, default=30.0, help="measured seconds per mode (default 30)"
    )
    parser.add_argument(
        "--warmup", type=float, default=5.0, help="seconds of load before measuring (default 5)"
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="per-request timeout in s (default 60)"
    )
    add_rounds_option(parser)
    add_common_options(parser)
    parser.add_argument(
        "--modes",
        default=",".join(MODES),
        help=f"comma-separated subset of {','.join(MODES)}, run in this order (default all)",
    )
    args = parser.parse_args()
    if min(args.patients, args.load_clients, args.clients, args.workers, args.rounds) < 1:
        parser.error("--patients, --load-clients, --clients, --workers, --rounds: at least 1")
    if args.duration <= 0 or args.warmup < 0:
        parser.error("--duration must be positive and --warmup not negative")
    modes = parse_modes(args.modes, MODES)
    print_header("bench/read.py", args)
    folder = Path(tempfile.mkdtemp(prefix="coffre-bench-read-", dir=args.tmpdir))
    vaults: dict[bool, Loaded] = {}
    try:
        print(f"generating {args.patients} patients ...", flush=True)
        bundles = synthesise(args.patients, args.seed, folder / "synth")
        for plaintext in sorted({MODES[mode][0] for mode in modes}):
            kind = "plaintext" if plaintext else "sealed"
            print(f"loading them into a {kind} vault ...", flush=True)
            loaded = vaults[plaintext] = load_vault(plaintext, bundles, args)
            types = Counter(reference.split("/")[0] for reference in loaded.references)
            print(
                f"  {len(loaded.references):,} resources in {loaded.seconds:.1f} s"
                f" ({len(loaded.references) / loaded.seconds:,.0f}/s),"
                f" storage {loaded.storage_bytes / 1e6:,.1f} MB; "
                + ", ".join(f"{t} {n:,}" for t, n in types.most_common())
            )
        results: Runs = {mode: [] for mode in modes}
        for n, mode in alternated(modes, args.rounds):
            print(f"round {n}: {mode} ...", flush=True)
            first = not any(results.values())
            run = run_mode(mode, args, vaults[MODES[mode][0]], bool(args.py_spy) and first)
            results[mode].append(run)
            print(
                f"  {run['reads_per_s']:,.0f} reads/s, server CPU per read"
                f" {run['server_cpu_per_read_ms']:.3f} ms, other processes"
                f" {run['cpu']['others_share']:.0%} of the machine",
                flush=True,
            )
        comparisons = report(results, modes, args)
    finally:
        for loaded in vaults.values():
            if not args.keep_vault:
                shutil.rmtree(loaded.vault.parent, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)
    write_json(
        args.json,
        {
            "benchmark": "read",
            "args": vars(args),
            "loaded": {
                "plaintext" if plaintext else "sealed": {
                    "resources": len(loaded.references),
                    "seconds": loaded.seconds,
                    "storage_bytes": loaded.storage_bytes,
                }
                for plaintext, loaded in vaults.items()
            },
            "results": results,
            "comparisons": comparisons,
        },
    )


if __name__ == "__main__":
    main()
