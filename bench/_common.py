"""Shared by the benchmarks: a Coffre server in a subprocess, CPU accounting from /proc,
percentiles, the load generator's HTTP session and the side-by-side result table.

Only ever talks to 127.0.0.1; every wait is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# What a benchmark measures in its own process is this checkout's coffre, whichever the venv
# was installed from (a worktree's, for an A/B), as the servers it starts are told.
sys.path.insert(0, str(ROOT))
# The tests' helpers the benchmarks share (the throwaway PostgreSQL, /proc's sockets), after
# every other path, so that none of tests/ takes the place of a module of the benchmarks'.
sys.path.append(str(ROOT / "tests"))

from tcpsockets import listening_count  # noqa: E402

from coffre.service.vault import BENCHMARK_FILE  # noqa: E402

HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
NPROC = os.cpu_count() or 1
FHIR_JSON = "application/fhir+json"
MODES = ("sealed", "plaintext")

# Published by Health Samurai (8 vCPUs per server, snapshot of June 2026).
PUBLISHED_IMPORT = {"Aidbox": 2678, "HAPI": 2214, "Medplum": 764}  # resources/s
PUBLISHED_CRUD = {"Aidbox": 5212, "HAPI": 3058, "Medplum": 1420, "Microsoft": 440}  # requests/s


# -- /proc accounting ------------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[int, float] | None:
    """(ppid, utime+stime seconds) of a live process, from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            data = file.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = data[data.rindex(b")") + 2 :].split()
    # fields[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK


def process_tree(root: int) -> list[int]:
    """The process and all its live descendants."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = _proc_stat(int(name))
            if stat is not None:
                children.setdefault(stat[0], []).append(int(name))
    tree: list[int] = []
    todo = [root]
    while todo and len(tree) < 10_000:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def tree_cpu(root: int) -> dict[int, float]:
    """CPU seconds (user+system) used so far by each process of the tree."""
    result = {}
    for pid in process_tree(root):
        stat = _proc_stat(pid)
        if stat is not None:
            result[pid] = stat[1]
    return result


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine_jiffies() -> tuple[int, int, int]:
    """(busy, steal, total) jiffies of all CPUs, from the first line of /proc/stat.

    Busy is user+nice+system+irq+softirq; idle and iowait are idle; steal (time the
    hypervisor gave to other guests) is counted apart."""
    with open("/proc/stat") as file:
        values = [int(v) for v in file.readline().split()[1:]] + [0] * 10
    user, nice, system, idle, iowait, irq, softirq, steal = values[:8]
    busy = user + nice + system + irq + softirq  # guest time is already counted in user
    return busy, steal, busy + steal + idle + iowait


@dataclass
class CpuSnapshot:
    wall: float
    generator: float
    server: dict[int, float]
    machine: tuple[int, int, int]


@dataclass
class CpuUsage:
    wall: float
    generator: float  # CPU seconds of this process (the load generator)
    server: float  # CPU seconds of the server process tree
    machine_busy: float  # share of all cores busy (any process), 0..1
    steal: float  # share of all cores stolen by the hypervisor, 0..1

    def share(self, seconds: float) -> float:
        """CPU seconds as a share of the machine's capacity over the wall time."""
        return seconds / (self.wall * NPROC) if self.wall > 0 else 0.0

    @property
    def others(self) -> float:
        """CPU seconds of every other process (and the kernel) over the same time."""
        return max(0.0, self.machine_busy * self.wall * NPROC - self.generator - self.server)

    def as_dict(self) -> dict[str, float]:
        return {
            "wall_s": self.wall,
            "generator_cpu_s": self.generator,
            "server_cpu_s": self.server,
            "others_cpu_s": self.others,
            "generator_share": self.share(self.generator),
            "server_share": self.share(self.server),
            "others_share": self.share(self.others),
            "machine_busy": self.machine_busy,
            "steal": self.steal,
        }


def cpu_snapshot(server_pid: int) -> CpuSnapshot:
    return CpuSnapshot(time.monotonic(), self_cpu(), tree_cpu(server_pid), machine_jiffies())


def cpu_usage(start: CpuSnapshot, end: CpuSnapshot) -> CpuUsage:
    # A process that exited between the snapshots is lost; servers keep their workers.
    server = sum(cpu - start.server.get(pid, 0.0) for pid, cpu in end.server.items())
    busy, steal, total = (e - s for e, s in zip(end.machine, start.machine, strict=True))
    return CpuUsage(
        wall=end.wall - start.wall,
        generator=end.generator - start.generator,
        server=server,
        machine_busy=busy / total if total else 0.0,
        steal=steal / total if total else 0.0,
    )


def wait_for_idle(max_wait: float, threshold: float = 0.15) -> float:
    """Wait (at most max_wait s) for one second in which under ``threshold`` of the cores are
    busy; return the last busy share seen, so that a caller can warn of a shared machine."""
    deadline = time.monotonic() + max_wait
    while True:
        first = machine_jiffies()
        time.sleep(1.0)
        last = machine_jiffies()
        total = last[2] - first[2]
        busy = (last[0] - first[0]) / total if total else 0.0
        if busy < threshold or time.monotonic() >= deadline:
            if busy >= threshold:
                print(
                    f"  warning: {busy:.0%} of the cores are busy with other processes;"
                    " figures will be lower than on an idle machine",
                    file=sys.stderr,
                )
            return busy


# -- statistics ------------------------------------------------------------------------------


def percentile(ordered: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile (0..100) of an already sorted sequence; nan if empty."""
    if not ordered:
        return float("nan")
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


Runs = dict[str, list[dict[str, Any]]]
"""Each mode's runs, one a round (a benchmark's --rounds), every other round in reverse order."""


def change(value: float, reference: float) -> float:
    """value against reference, in % of reference."""
    return (value - reference) / reference * 100 if reference else float("nan")


def paired_changes(
    results: Runs, mode: str, reference: str, compared: dict[str, Callable[[Any], float]]
) -> dict[str, list[float]]:
    """Per round (the two runs of a round are close in time), mode against reference in %,
    for each figure ``compared`` reads from a run."""
    pairs = list(zip(results[mode], results[reference], strict=True))
    return {
        label: [change(getter(a), getter(b)) for a, b in pairs]
        for label, getter in compared.items()
    }


def describe_changes(costs: dict[str, list[float]]) -> str:
    """The median change of each figure, then each round's when there are several."""
    parts = []
    for label, values in costs.items():
        text = f"{label} {statistics.median(values):+.1f}%"
        if len(values) > 1:
            text += " (" + " / ".join(f"{v:+.0f}" for v in values) + ")"
        parts.append(text)
    return ", ".join(parts)


def latency_summary(latencies: Iterable[float]) -> dict[str, float]:
    """p50/p95/p99/max in milliseconds of latencies given in seconds."""
    ordered = sorted(latencies)
    return {
        "count": len(ordered),
        "p50_ms": percentile(ordered, 50) * 1000,
        "p95_ms": percentile(ordered, 95) * 1000,
        "p99_ms": percentile(ordered, 99) * 1000,
        "max_ms": (ordered[-1] * 1000) if ordered else float("nan"),
    }


# -- the server ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class CoffreServer:
    """A fresh vault (``coffre init``), or a copy of the vault folder ``source``, served by
    ``coffre serve`` on a free loopback port; ``env``: more variables for the server."""

    def __init__(
        self,
        *,
        workers: int,
        plaintext: bool,
        tmp_root: str | None = None,
        synchronous: str | None = None,
        keep: bool = False,
        ready_timeout: float = 120.0,
        source: Path | None = None,
        env: dict[str, str] | None = None,
        storage_url: str | None = None,
    ) -> None:
        self.workers = workers
        self.plaintext = plaintext
        self.tmp_root = tmp_root
        self.synchronous = synchronous
        self.keep = keep
        self.ready_timeout = ready_timeout
        self.source = source
        self.extra_env = env or {}
        self.storage_url = storage_url
        self.folder: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._log: Any = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/fhir"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def _env(self) -> dict[str, str]:
        # Nothing of the caller's COFFRE_* settings leaks in: the benchmark sets what it needs.
        env = {k: v for k, v in os.environ.items() if not k.startswith("COFFRE_")}
        # The code served is this checkout's, whatever coffre the venv was installed from.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), env.get("PYTHONPATH"))))
        if self.plaintext:
            env["COFFRE_BENCH_PLAINTEXT"] = "1"
        if self.synchronous:
            env["COFFRE_SQLITE_SYNCHRONOUS"] = self.synchronous
        env.update(self.extra_env)
        return env

    def _vault(self) -> Path:
        """A fresh vault, or a copy of ``source``, in a new temporary folder (``self.folder``)."""
        self.folder = Path(tempfile.mkdtemp(prefix="coffre-bench-", dir=self.tmp_root))
        vault = self.folder / "vault"
        if self.source is not None:
            shutil.copytree(self.source, vault)
            return vault
        storage = ["--storage", self.storage_url] if self.storage_url else []
        init = subprocess.run(
            [sys.executable, "-m", "coffre", "init", str(vault), *storage],
            env=self._env(),
            capture_output=True,
            timeout=60,
            cwd=ROOT,
        )
        if init.returncode != 0:
            raise RuntimeError(f"coffre init failed: {init.stderr.decode(errors='replace')}")
        if not self.plaintext:  # init marked a plaintext one itself
            (vault / BENCHMARK_FILE).write_text("sealed\n")
        return vault

    def start(self) -> CoffreServer:
        vault = self._vault()
        assert self.folder is not None
        self.port = free_port()
        self._log = open(self.folder / "server.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "coffre",
                "serve",
                "--vault",
                str(vault),
                "--host",
                HOST,
                "--port",
                str(self.port),
                "--workers",
                str(self.workers),
            ],
            env=self._env(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def log_tail(self, lines: int = 20) -> str:
        if self.folder is None or not (self.folder / "server.log").exists():
            return ""
        text = (self.folder / "server.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.ready_timeout
        url = f"{self.base_url}/metadata"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"coffre serve exited early:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        else:
            raise RuntimeError(f"coffre serve did not answer within {self.ready_timeout:.0f} s")
        # The first worker answered; the clients connect once every worker listens (each
        # on a socket of its own: one not listening yet gets none of the connections).
        while (listening := listening_count(process_tree(self.pid), self.port)) < self.workers:
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"only {listening} of {self.workers} worker processes listen"
                    f" after {self.ready_timeout:.0f} s"
                )
            time.sleep(0.1)

    def storage_bytes(self) -> int:
        if self.storage_url:
            return _schema_bytes(self.storage_url)
        if self.folder is None:
            return 0
        return sum(
            p.stat().st_size for p in (self.folder / "vault").glob("storage.sqlite*") if p.is_file()
        )

    def stop(self) -> None:
        """SIGINT (uvicorn's graceful stop) to the server, then SIGKILL, by pid, to any
        process of its tree still alive after a bounded wait."""
        if self.process is not None:
            tree = process_tree(self.process.pid)
            if self.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self.process.send_signal(signal.SIGINT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=20)
            for pid in reversed(tree):
                if _alive(pid):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5)
            self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.folder is not None and not self.keep:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> CoffreServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def mode_server(args: argparse.Namespace, mode: str, storage_url: str | None) -> CoffreServer:
    """The server of a run of ``mode`` (sealed or plaintext) on a fresh vault, as the
    common options and the server options (``add_server_options``) ask."""
    return CoffreServer(
        workers=args.workers,
        plaintext=mode == "plaintext",
        tmp_root=args.tmpdir,
        synchronous=args.sqlite_synchronous,
        keep=args.keep_vault,
        storage_url=storage_url,
        ready_timeout=args.ready_timeout,
    )


def _schema_bytes(url: str) -> int:
    """What a PostgreSQL storage's tables take on disk, with their indexes and TOAST."""
    import psycopg

    with psycopg.connect(url) as db:
        row = db.execute(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = current_schema() AND c.relkind = 'r'"
        ).fetchone()
    return int(row[0]) if row else 0


@contextlib.contextmanager
def storages(choice: str) -> Iterator[Callable[[], str | None]]:
    """A maker of a new, empty storage for each run: None (an SQLite file in the vault
    folder), or the URL of a schema of its own on a PostgreSQL server: a throwaway one
    started here over TLS the way the tests start theirs (``postgresql``, durable: every
    commit flushed), or the server ``choice`` names (each schema dropped at the end)."""
    if choice == "sqlite":
        yield lambda: None
        return
    import psycopg
    from pgserver import Cluster, binaries, with_schema

    if choice == "postgresql":
        bin_dir = binaries()
        if bin_dir is None:
            raise SystemExit("PostgreSQL is not installed: give --storage postgresql://...")
        cluster = Cluster(bin_dir, durable=True)
        try:
            yield cluster.new_storage_url
        finally:
            cluster.stop()
        return
    if not choice.startswith("postgresql://"):
        raise SystemExit(f"--storage {choice!r}: sqlite, postgresql or a postgresql:// URL")
    made: list[str] = []
    with psycopg.connect(choice, autocommit=True) as admin:

        def new_schema() -> str:
            schema = f"coffre_bench_{os.getpid()}_{len(made)}"
            admin.execute(f"CREATE SCHEMA {schema}")
            made.append(schema)
            return with_schema(choice, schema)

        try:
            yield new_schema
        finally:
            for schema in made:
                admin.execute(f"DROP SCHEMA {schema} CASCADE")


def add_server_options(parser: argparse.ArgumentParser) -> None:
    """Options of the benchmarks that start their servers through ``storages``."""
    parser.add_argument(
        "--storage",
        default="sqlite",
        help="sqlite (default); postgresql: a throwaway local PostgreSQL server over TLS,"
        " durable, started as the tests start theirs; or postgresql://USER@HOST/DB: a server"
        " of yours, each run in a new schema dropped afterwards",
    )
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=120.0,
        help="how long the server may take to answer its first request (default 120 s)",
    )


def _alive(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            state = file.read().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    return state != b"Z"


# -- the load generator ----------------------------------------------------------------------


def network_errors() -> tuple[type[BaseException], ...]:
    """What a request may raise short of an HTTP answer."""
    import aiohttp

    return (aiohttp.ClientError, TimeoutError, OSError)


def client_session(concurrency: int, timeout: float) -> Any:
    """One aiohttp session whose connection pool is as large as the concurrency."""
    import aiohttp

    # uvicorn closes a connection idle for 5 s; the client lets go of it first, or a request
    # may go out on a connection the server is closing ("Can not write request body").
    connector = aiohttp.TCPConnector(
        limit=concurrency, limit_per_host=concurrency, ttl_dns_cache=None, keepalive_timeout=2.0
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout),
        headers={"Accept": FHIR_JSON},
    )


def run_async(main: Coroutine[Any, Any, Any], loop: str = "uvloop") -> Any:
    """Run a coroutine on uvloop (lighter for the generator) when it is there."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if loop == "uvloop":
        try:
            import uvloop

            factory = uvloop.new_event_loop
        except ImportError:
            factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def diagnostics_of(body: bytes, limit: int = 300) -> str:
    """The first OperationOutcome diagnostics of a response body, or its start."""
    try:
        outcome = json.loads(body)
        issues = outcome.get("issue", []) if isinstance(outcome, dict) else []
        text = "; ".join(str(i.get("diagnostics") or i.get("code")) for i in issues[:3])
        if not text and isinstance(outcome, dict) and outcome.get("resourceType") == "Bundle":
            for entry in outcome.get("entry", []):
                response = entry.get("response", {})
                if not str(response.get("status", "")).startswith("2"):
                    text = f"{response.get('status')}: " + diagnostics_of(
                        json.dumps(response.get("outcome", {})).encode(), limit
                    )
                    break
        return (text or body.decode(errors="replace"))[:limit]
    except (ValueError, AttributeError):
        return body[:limit].decode(errors="replace")


# -- options and reporting ---------------------------------------------------------------------


def add_rounds_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the modes this many times, alternating their order; medians (default 1)",
    )


def alternated(modes: list[str], rounds: int) -> Iterator[tuple[int, str]]:
    """(round, mode) in the order to run them: every other round in reverse order, so
    that a drift in the machine's pace hits every mode alike."""
    for n in range(1, rounds + 1):
        for mode in modes if n % 2 else modes[::-1]:
            yield n, mode


def rounds_note(rounds: int) -> str:
    """What a table's title says of its rounds."""
    return f", median of {rounds} rounds" if rounds > 1 else ""


def add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, default=2, help="coffre serve --workers (default 2)")
    parser.add_argument(
        "--modes",
        default="sealed,plaintext",
        help="comma-separated subset of sealed,plaintext to run (default both)",
    )
    parser.add_argument(
        "--sqlite-synchronous",
        choices=("FULL", "NORMAL", "OFF"),
        default=None,
        help="set COFFRE_SQLITE_SYNCHRONOUS for the server (default: the server's own, FULL)",
    )
    parser.add_argument("--tmpdir", default=None, help="where the temporary vaults go")
    parser.add_argument("--keep-vault", action="store_true", help="do not delete the vaults")
    parser.add_argument(
        "--loop", choices=("uvloop", "asyncio"), default="uvloop", help="generator event loop"
    )
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=30.0,
        help="before each mode, wait up to this many s for the machine to be idle (default 30)",
    )
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument(
        "--py-spy",
        default=None,
        metavar="PREFIX",
        help="profile the server with py-spy during the measured phase of the first mode;"
        " writes PREFIX.txt (collapsed stacks; summarise with bench/profile_top.py)",
    )
    parser.add_argument("--py-spy-rate", type=int, default=100, help="py-spy samples/s")
    parser.add_argument(
        "--py-spy-idle",
        action="store_true",
        help="include idle samples (waits: the event loop's, SQLite's lock and fsync waits)",
    )


def parse_modes(text: str, known: Iterable[str] = MODES) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    known = list(known)
    for mode in modes:
        if mode not in known:
            raise SystemExit(f"unknown mode {mode!r}: choose among {', '.join(known)}")
    return modes


async def measured_window(
    args: argparse.Namespace, server: CoffreServer, end_at: float, profile: bool
) -> tuple[CpuSnapshot, CpuSnapshot]:
    """From now (the window's start) to ``end_at``: the server's CPU at both edges, and a
    py-spy profile of the window when asked for."""
    profiler = (
        Profiler(args.py_spy, server.pid, args.duration + 60, args.py_spy_rate, args.py_spy_idle)
        if profile
        else None
    )
    before = cpu_snapshot(server.pid)
    await asyncio.sleep(max(0.0, end_at - time.monotonic()))
    after = cpu_snapshot(server.pid)
    if profiler:
        profiler.stop()
    return before, after


class Profiler:
    """py-spy record on the server's process tree, from now until stop() (or max_seconds)."""

    def __init__(
        self, prefix: str, pid: int, max_seconds: float, rate: int, idle: bool = False
    ) -> None:
        self.prefix = prefix
        self.proc: subprocess.Popen[bytes] | None = None
        exe = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which(
            "py-spy"
        )
        if exe is None:
            print(
                "py-spy is not installed (.venv/bin/pip install py-spy): no profile",
                file=sys.stderr,
            )
            return
        command = [
            exe,
            "record",
            "--pid",
            str(pid),
            "--subprocesses",
            "--rate",
            str(rate),
            "-d",
            str(max(1, int(max_seconds))),
            "--format",
            "raw",
            "-o",
            f"{prefix}.txt",
            "--nonblocking",
            *(["--idle"] if idle else []),
        ]
        with open(f"{prefix}.log", "wb") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    def stop(self, timeout: float = 30) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # py-spy writes what it has and exits
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        print(
            f"py-spy profile written to {self.prefix}.txt (collapsed stacks; see bench/profile_top.py)"
        )


@dataclass
class Row:
    label: str
    values: dict[str, float | None]
    fmt: str = "{:,.0f}"
    better: str | None = None  # "higher" or "lower": how the sealing cost is computed


@dataclass
class Table:
    title: str
    rows: list[Row] = field(default_factory=list)

    def add(
        self, label: str, values: dict[str, Any], fmt: str = "{:,.0f}", better: str | None = None
    ) -> None:
        self.rows.append(Row(label, values, fmt, better))

    def render(self, modes: Sequence[str]) -> str:
        both = "sealed" in modes and "plaintext" in modes
        head = ["", *modes] + (["sealing cost"] if both else [])
        lines = [head]
        for row in self.rows:
            cells = [row.label]
            for mode in modes:
                value = row.values.get(mode)
                cells.append("-" if value is None else row.fmt.format(value))
            if both:
                cells.append(_cost(row))
            lines.append(cells)
        widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
        out = [self.title, "=" * len(self.title)]
        for n, line in enumerate(lines):
            out.append(
                "  ".join(
                    cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
                    for i, cell in enumerate(line)
                )
            )
            if n == 0:
                out.append("  ".join("-" * w for w in widths))
        return "\n".join(out)


def add_machine_rows(table: Table, col: Callable[[Callable[[Any], float]], dict[str, Any]]) -> None:
    """Who used the machine in the measured window, from a run's ``cpu`` (``CpuUsage.as_dict``):
    the load generator, the server, every other process, and the hypervisor."""
    for label, key in (
        ("generator share of the machine", "generator_share"),
        ("server share of the machine", "server_share"),
        ("other processes' share", "others_share"),
        ("machine busy (all processes)", "machine_busy"),
        ("stolen by the hypervisor", "steal"),
    ):
        table.add(label, col(lambda r, key=key: r["cpu"][key] * 100), "{:.1f}%")


def _cost(row: Row) -> str:
    """Sealing cost in %: throughput lost, or extra latency/CPU; positive = sealing is worse."""
    sealed, plain = row.values.get("sealed"), row.values.get("plaintext")
    if row.better is None or sealed is None or plain is None or plain == 0:
        return ""
    if row.better == "higher":
        cost = (plain - sealed) / plain * 100
    else:
        cost = (sealed - plain) / plain * 100
    return f"{cost:+.1f}%"


def machine_description() -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as file:
        for line in file:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": str(NPROC),
        "cpu": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def print_header(name: str, args: argparse.Namespace) -> None:
    machine = machine_description()
    print(
        f"{name}: {machine['nproc']} CPUs ({machine['cpu']}), Python {machine['python']},"
        f" server workers={args.workers}, generator loop={args.loop},"
        f" storage={getattr(args, 'storage', 'sqlite').split('?')[0]}"
    )
    print("command: " + " ".join([Path(sys.executable).name, *sys.argv]))
    print(f"coffre sources: sha256 {coffre_fingerprint()} (hash of coffre/**/*.py)")


def coffre_fingerprint() -> str:
    """SHA-256 of the coffre/ sources measured (the tree may change between runs)."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "coffre").rglob("*.py")):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


SYNTHEA_INFO_PREFIXES = ("hospitalInformation", "practitionerInformation")
SYNTHEA_INFO_FOLDER = "fhir-data-pipes-2021"


def synthea_files(synthea: Path) -> tuple[list[Path], list[list[Path]]]:
    """The Synthea bundles in the order they load: the information bundles (organisations,
    then practitioners), then each folder's patient bundles, fhir-data-pipes-2021 first:
    its conditional references must meet one organisation each, and smart-2019's
    self-contained bundles create organisations again under the same identifiers (21 of
    them), after which such a reference rightly gets a 412."""
    if not synthea.is_dir():
        raise SystemExit(
            f"no Synthea data at {synthea} (the benchmarks read it from ../shared/data"
            " beside the project unless told another folder)"
        )
    info_folder = synthea / SYNTHEA_INFO_FOLDER
    info = [
        path
        for prefix in SYNTHEA_INFO_PREFIXES
        for path in sorted(info_folder.glob(f"{prefix}*.json"))
    ]
    folders = sorted(
        (p for p in synthea.iterdir() if p.is_dir()), key=lambda p: p.name != SYNTHEA_INFO_FOLDER
    )
    stages = [
        stage
        for folder in folders
        if (
            stage := [
                path
                for path in sorted(folder.glob("*.json"))
                if not path.name.startswith(SYNTHEA_INFO_PREFIXES)
            ]
        )
    ]
    if not info or not stages:
        raise SystemExit(
            f"found {len(info)} information bundles and {len(stages)} folders of patient"
            f" bundles in {synthea}"
        )
    return info, stages


def write_json(path: str | None, payload: dict[str, Any]) -> None:
    if path:
        payload = {
            "machine": machine_description(),
            "argv": sys.argv,
            "coffre_sha256": coffre_fingerprint(),
            **payload,
        }
        Path(path).write_text(json.dumps(payload, indent=2, default=str))
        print(f"results written to {path}")


async def search_all(session: Any, url: str) -> list[dict[str, Any]]:
    """Every resource a search finds, following its pages (an aiohttp session)."""
    resources: list[dict[str, Any]] = []
    next_url: str | None = url
    while next_url is not None:
        async with session.get(next_url) as response:
            content = await response.read()
            if response.status != 200:
                raise SystemExit(f"reading {url}: HTTP {response.status}: {content!r}")
        bundle = json.loads(content)
        resources.extend(entry["resource"] for entry in bundle.get("entry", []))
        links = {link["relation"]: link["url"] for link in bundle.get("link", [])}
        next_url = links.get("next")
    return resources
