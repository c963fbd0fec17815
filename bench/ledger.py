"""Ledger benchmark: what Coffre's tamper-evident log (RFC 9162) costs, in four parts.

1. Appends: leaves/s through the real storage path. A fresh vault is opened in-process and
   leaves are appended as the write path appends them (``writer.record`` inside
   ``records.writer()``; the writer integrates, signs a checkpoint, commits and remembers
   it at the end of each transaction), for each batch size (--batches, leaves per
   transaction) and each kind of leaf (--kinds: ``read``, the access leaves every read
   appends; ``write``, CREATE leaves of new records, which also grow the verifiable map
   the checkpoint signs). The time of a transaction is split: BEGIN, the appends, integration,
   COMMIT, remembering the checkpoint. Also the pure in-memory figure
   (``CompactRange.append``) for scale.
2. Proofs: a log of --log-size leaves (default 1,000,000, at least 100,000 advised) is
   built in-process in big transactions; then the in-process cost of one proof computed
   from the stored nodes, and, over HTTP against ``coffre serve`` on that vault, the
   latency of /ledger/proof/inclusion and /ledger/proof/consistency for random indices
   and sizes up to the checkpoint's.
3. Audit: recomputing the root of the whole log in-process (reading, hashing the leaves,
   the tree; then as ``coffre audit --full`` does it, from entry bundles: splitting,
   hashing a tile at a time, checking that every leaf decodes), and the real
   ``coffre audit --full`` over HTTP on the same server (--audit-runs times, each after a
   quiet second, with what the rest of the machine did meanwhile; the CLI with a bytecode
   cache of its own, as an installed coffre has), then the split between fetching the
   bundles and checking them.
4. Reads: ``records.read`` (which checks the storage's latest version against the log)
   against ``storage.latest`` + ``records.open`` on the same records, in-process, in µs
   per read: the difference is the check's cost.

Only ever talks to 127.0.0.1; every wait is bounded in time. Not collected by pytest.

    .venv/bin/python bench/ledger.py [--log-size 1000000] [--workers 2] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import gc
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    HOST,
    NPROC,
    ROOT,
    CoffreServer,
    Table,
    client_session,
    cpu_snapshot,
    cpu_usage,
    latency_summary,
    machine_jiffies,
    network_errors,
    percentile,
    print_header,
    run_async,
    self_cpu,
    tree_cpu,
    wait_for_idle,
    write_json,
)

from coffre.cli.leaves import Connection, check_bundle
from coffre.ledger import (
    CompactRange,
    VerifierKey,
    consistency_proof,
    consistency_ranges,
    inclusion_proof,
    inclusion_ranges,
    leaf_hash,
    open_checkpoint,
    root_of,
    subtree_from_nodes,
    verify_consistency,
    verify_inclusion,
)
from coffre.ledger.leaf import SIZE as LEAF_SIZE
from coffre.ledger.leaf import Leaf, LeafKind, undecodable
from coffre.ledger.tiles import (
    TILE_WIDTH,
    bundle_roots,
    encode_bundle,
    entry_bundles,
    root_from_bundles,
    split_bundle,
)
from coffre.service import RecordStore, Vault
from coffre.service.ledger import STORED_EVERY, LatestWrites, stored_node

TARGET_APPENDS_PER_S = 50_000
TARGET_AUDIT_S = 5.0
TARGET_AUDIT_LEAVES = 1_000_000
POOL = 4096  # distinct locations and body hashes the synthetic leaves cycle through
NETWORK_ERRORS = network_errors()


# -- leaves ----------------------------------------------------------------------------------


class Leaves:
    """Synthetic leaves, built and recorded as the write path records them.

    ``read``: access leaves (kind READ), as every read, search and history page appends;
    they cycle through a pool of locations and do not touch the map of latest writes.
    ``write``: CREATE leaves, each for a new record (a fresh random location), so that
    each one also adds a key to the verifiable map the checkpoint signs.
    """

    def __init__(self, seed: int, kind: str = "read") -> None:
        self.rng = random.Random(seed)
        self.kind = kind
        self.locs = [self.rng.randbytes(32) for _ in range(POOL)]
        self.digests = [self.rng.randbytes(32) for _ in range(POOL)]
        self.n = 0

    def append(self, records: RecordStore, batch: int) -> tuple[float, float, float]:
        """One transaction of ``batch`` leaves: (seconds in BEGIN, seconds appending, whole
        transaction, from BEGIN to the remembered checkpoint)."""
        digests, n = self.digests, self.n
        if self.kind == "write":
            kind = LeafKind.CREATE
            locs = [self.rng.randbytes(32) for _ in range(batch)]
        else:
            kind = LeafKind.READ
            locs = [self.locs[i % POOL] for i in range(n, n + batch)]
        ts = time.time_ns() // 1000
        started = time.perf_counter()
        with records.writer() as writer:
            began = time.perf_counter()
            leaves = [Leaf(kind, loc, 1, digests[i % POOL], ts) for i, loc in enumerate(locs, n)]
            writer.record(leaves)
            appended = time.perf_counter()
        ended = time.perf_counter()
        self.n += batch
        return began - started, appended - began, ended - started


class Stopwatch:
    """Times the ledger's integrate and remember of one RecordStore, by wrapping them on the
    instance (nothing in coffre/ changes; any signature passes through)."""

    def __init__(self, records: RecordStore) -> None:
        self.integrate = 0.0
        self.remember = 0.0
        ledger = records.ledger
        integrate, remember = ledger.integrate, ledger.remember

        def timed_integrate(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return integrate(*args, **kwargs)
            finally:
                self.integrate += time.perf_counter() - started

        def timed_remember(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return remember(*args, **kwargs)
            finally:
                self.remember += time.perf_counter() - started

        ledger.integrate = timed_integrate  # type: ignore[method-assign]
        ledger.remember = timed_remember  # type: ignore[method-assign]


def fresh_vault(root: Path, name: str) -> tuple[Vault, RecordStore]:
    """A new vault, opened as ``coffre serve`` opens it: the garbage collector then leaves
    out of its full collections what the process built so far (``app_from_settings``)."""
    vault = Vault.at(root / name / "vault")
    vault.create()
    records = vault.open()
    gc.freeze()
    return vault, records


def own_cpu() -> float:
    """CPU seconds of this process and of its children that exited (coffre audit)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return self_cpu() + children.ru_utime + children.ru_stime


class Noise:
    """Per part of the benchmark: how busy the machine was, with what, and the steal.

    ``others`` is the machine's busy time minus this process's CPU and the server's: other
    sessions' work (and the kernel's), which makes the figures of that part lower."""

    def __init__(self) -> None:
        self.parts: dict[str, dict[str, float]] = {}
        self.server_pid: int | None = None

    def add_server_cpu(self, name: str, seconds: float) -> None:
        """Move CPU that was counted as others' (a server started within the part) to the
        server's column."""
        part = self.parts[name]
        share = seconds / max(part["wall_s"] * NPROC, 1e-9)
        part["server"] += share
        part["others"] = max(0.0, part["others"] - share)

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        pid = self.server_pid
        wall0, cpu0, jiffies0 = time.monotonic(), own_cpu(), machine_jiffies()
        server0 = sum(tree_cpu(pid).values()) if pid else 0.0
        try:
            yield
        finally:
            wall = time.monotonic() - wall0
            busy, steal, total = (e - s for e, s in zip(machine_jiffies(), jiffies0, strict=True))
            own = own_cpu() - cpu0
            server = (sum(tree_cpu(pid).values()) - server0) if pid else 0.0
            capacity = max(wall * NPROC, 1e-9)
            busy_share = busy / total if total else 0.0
            self.parts[name] = {
                "wall_s": wall,
                "busy": busy_share,
                "own": own / capacity,
                "server": server / capacity,
                "others": max(0.0, busy_share - (own + server) / capacity),
                "steal": steal / total if total else 0.0,
            }


# -- 1. appends ------------------------------------------------------------------------------


def append_run(args: argparse.Namespace, root: Path, kind: str, batch: int) -> dict[str, Any]:
    _, records = fresh_vault(root, f"append-{kind}-{batch}")
    leaves = Leaves(seed=batch, kind=kind)
    leaves.append(records, min(batch, 100))  # the first checkpoint
    watch = Stopwatch(records)
    begin = appending = inside = 0.0
    txn_seconds: list[float] = []
    count = 0
    cpu0, deadline = self_cpu(), time.monotonic() + args.append_seconds
    while count < 3 or (time.monotonic() < deadline and count < args.max_transactions):
        b, a, whole = leaves.append(records, batch)
        txn_seconds.append(whole)
        begin, appending, inside, count = begin + b, appending + a, inside + whole, count + 1
    cpu = self_cpu() - cpu0
    total = count * batch
    commit = inside - begin - appending - watch.integrate - watch.remember
    records.storage.close()
    return {
        "kind": kind,
        "batch": batch,
        "transactions": count,
        "leaves": total,
        "seconds": inside,
        "leaves_per_s": total / inside,
        "cpu_s": cpu,
        "txn_ms": latency_summary(txn_seconds),
        # µs per transaction for each phase, then µs per leaf
        "phase_us_per_txn": {
            "begin": begin / count * 1e6,
            "append": appending / count * 1e6,
            "integrate": watch.integrate / count * 1e6,
            "commit": commit / count * 1e6,
            "remember": watch.remember / count * 1e6,
        },
        "phase_us_per_leaf": {
            "append": appending / total * 1e6,
            "integrate": watch.integrate / total * 1e6,
        },
    }


def bench_appends(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    runs: dict[str, Any] = {}
    for kind in args.kinds:
        for batch in args.batches:
            print(f"  appends, {kind} leaves, {batch} per transaction ...", flush=True)
            runs[f"{kind}/{batch}"] = append_run(args, root, kind, batch)
    # The same growth in memory only: hashes into a CompactRange, no storage, no signature.
    n = args.memory_leaves
    rng = random.Random(1)
    data = [rng.randbytes(LEAF_SIZE) for _ in range(n)]
    started = time.perf_counter()
    hashes = [leaf_hash(d) for d in data]
    hashing = time.perf_counter() - started
    tree = CompactRange()
    started = time.perf_counter()
    for h in hashes:
        tree.append(h)
    appending = time.perf_counter() - started
    runs["memory"] = {
        "leaves": n,
        "compact_append_per_s": n / appending,
        "hash_and_append_per_s": n / (appending + hashing),
    }
    return runs


# -- 2. the big log, opening it, proofs ------------------------------------------------------


def build_log(args: argparse.Namespace, root: Path) -> tuple[Vault, dict[str, Any]]:
    vault, records = fresh_vault(root, "log")
    leaves = Leaves(seed=0)
    deadline = time.monotonic() + args.build_seconds
    cpu0, started = self_cpu(), time.perf_counter()
    last_report = started
    while leaves.n < args.log_size and time.monotonic() < deadline:
        leaves.append(records, min(args.build_batch, args.log_size - leaves.n))
        if time.perf_counter() - last_report > 10:
            last_report = time.perf_counter()
            print(f"    {leaves.n:,} leaves", flush=True)
    wall = time.perf_counter() - started
    if leaves.n < args.log_size:
        print(
            f"  warning: the log reached only {leaves.n:,} of {args.log_size:,} leaves"
            f" within --build-seconds {args.build_seconds:.0f}",
            file=sys.stderr,
        )
    size = records.storage.leaf_count()
    records.storage.close()
    return vault, {
        "leaves": size,
        "batch": args.build_batch,
        "seconds": wall,
        "leaves_per_s": size / wall,
        "cpu_s": self_cpu() - cpu0,
    }


def open_cost(vault: Vault) -> tuple[RecordStore, dict[str, float]]:
    """What a server process pays to open the vault: Vault.open(), then again its one log
    walk (the rollback check, which follows the log into a fresh record of the latest
    writes), and a catch-up of the whole log alone, timed apart."""
    started = time.perf_counter()
    records = vault.open()
    whole = time.perf_counter() - started
    started = time.perf_counter()
    records.ledger.check_not_rolled_back(records.storage, LatestWrites(records.keys))
    rollback = time.perf_counter() - started
    latest = LatestWrites(records.keys)
    started = time.perf_counter()
    latest.catch_up(records.storage)
    catch_up = time.perf_counter() - started
    size = records.storage.leaf_count()
    return records, {
        "open_s": whole,
        "rollback_check_s": rollback,
        "catch_up_s": catch_up,
        "catch_up_us_per_leaf": catch_up / max(size, 1) * 1e6,
    }


def node_source(records: RecordStore) -> tuple[Callable[[int, int], bytes], list[int]]:
    """The stored-node look-up the API uses, and a counter of its calls."""
    calls = [0]
    stored = stored_node(records.storage)

    def node(level: int, index: int) -> bytes:
        calls[0] += 1
        return stored(level, index)

    return node, calls


def proof_queries(signed: int, count: int, seed: int) -> dict[str, list[tuple[int, int]]]:
    """Random (index, size) and (old, new) pairs, every size at most the signed one."""
    rng = random.Random(seed)
    inclusion, consistency = [], []
    for _ in range(count):
        size = rng.randint(1, signed)
        inclusion.append((rng.randrange(size), size))
        new = rng.randint(1, signed)
        consistency.append((rng.randint(1, new), new))
    return {"inclusion": inclusion, "consistency": consistency}


def check_proofs(records: RecordStore, samples: int, seed: int, every: int) -> int:
    """Verify proofs against signed roots: inclusion at the signed size, consistency from
    every earlier checkpoint (one per build transaction). Returns how many were checked."""
    storage, key = records.storage, records.ledger.verifier_key
    checkpoint = records.ledger.latest(storage)
    assert checkpoint is not None
    node, _ = node_source(records)
    subtree = subtree_from_nodes(node)
    rng = random.Random(seed)
    checked = 0
    for _ in range(samples):
        index = rng.randrange(checkpoint.size)
        proof = inclusion_proof(index, checkpoint.size, subtree)
        data = storage.leaves(index, index + 1)[0]
        verify_inclusion(leaf_hash(data), index, checkpoint.size, proof, checkpoint.root)
        checked += 1
    old_sizes = [
        s
        for s in range(1, checkpoint.size)
        if s % every == 0 and storage.checkpoint_at(s) is not None
    ]
    for old in old_sizes[:samples]:
        note = storage.checkpoint_at(old)
        assert note is not None
        earlier = open_checkpoint(note, key)
        proof = consistency_proof(old, checkpoint.size, subtree)
        verify_consistency(old, checkpoint.size, proof, earlier.root, checkpoint.root)
        checked += 1
    return checked


def proofs_in_process(records: RecordStore, queries: dict[str, list[tuple[int, int]]]) -> Any:
    """µs to compute one proof from the stored nodes, as the API's handler does (without the
    checkpoint read, timed apart: the handler reads and verifies it on every request)."""
    node, calls = node_source(records)
    subtree = subtree_from_nodes(node)
    result: dict[str, Any] = {}
    for kind, prove in (("inclusion", inclusion_proof), ("consistency", consistency_proof)):
        times, lookups, hashes = [], 0, 0
        calls[0] = 0
        for a, b in queries[kind]:
            started = time.perf_counter()
            proof = prove(a, b, subtree)
            times.append(time.perf_counter() - started)
            hashes += len(proof)
        lookups = calls[0]
        ordered = sorted(times)
        result[kind] = {
            "count": len(times),
            "p50_us": percentile(ordered, 50) * 1e6,
            "p99_us": percentile(ordered, 99) * 1e6,
            "mean_us": sum(times) / len(times) * 1e6,
            "node_lookups_per_proof": lookups / len(times),
            "hashes_per_proof": hashes / len(times),
        }
    times = []
    for _ in range(min(1000, len(queries["inclusion"]))):
        started = time.perf_counter()
        records.ledger.latest(records.storage)
        times.append(time.perf_counter() - started)
    ordered = sorted(times)
    result["checkpoint_read_and_verify"] = {
        "p50_us": percentile(ordered, 50) * 1e6,
        "p99_us": percentile(ordered, 99) * 1e6,
    }
    index = 12345 % max(records.storage.leaf_count(), 1)
    started = time.perf_counter()
    for _ in range(1000):
        records.storage.nodes(STORED_EVERY, index >> STORED_EVERY, (index >> STORED_EVERY) + 1)
    result["node_select_us"] = (time.perf_counter() - started) / 1000 * 1e6
    return result


class VaultServer(CoffreServer):
    """``coffre serve`` on the vault the benchmark built (``CoffreServer`` makes a fresh one)."""

    def __init__(self, vault: Vault, *, workers: int, ready_timeout: float) -> None:
        super().__init__(workers=workers, plaintext=False, keep=True, ready_timeout=ready_timeout)
        self.vault = vault
        self.ready_seconds = float("nan")

    @property
    def root_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def _vault(self) -> Path:
        self.folder = self.vault.folder.parent
        return self.vault.folder

    def start(self) -> VaultServer:
        started = time.monotonic()
        super().start()
        # The first worker answers; the others may still be walking the log. Wait for the
        # server's processes to go quiet (bounded by the same timeout).
        deadline = started + self.ready_timeout
        quiet = 0
        before = sum(tree_cpu(self.pid).values())
        while quiet < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
            now = sum(tree_cpu(self.pid).values())
            quiet = quiet + 1 if now - before < 0.05 else 0
            before = now
        self.ready_seconds = time.monotonic() - started
        return self


async def http_proofs(
    base: str, paths: Sequence[str], clients: int, timeout: float, max_seconds: float
) -> dict[str, Any]:
    latencies: list[float] = []
    failures: list[str] = []
    errors = 0
    queue = iter(paths)
    deadline = time.monotonic() + max_seconds
    async with client_session(clients, timeout) as session:

        async def one(path: str) -> None:
            nonlocal errors
            started = time.perf_counter()
            try:
                async with session.get(base + path) as response:
                    body = await response.read()
                    status = response.status
            except NETWORK_ERRORS as error:
                errors += 1
                if len(failures) < 5:
                    failures.append(f"{path}: {error!r}")
                return
            latencies.append(time.perf_counter() - started)
            if status != 200:
                errors += 1
                if len(failures) < 5:
                    failures.append(f"{path}: HTTP {status} {body[:200]!r}")

        for path in paths[: min(50, len(paths))]:  # warm-up, not counted
            await one(path)
        latencies.clear()

        async def client() -> None:
            for path in queue:
                if time.monotonic() >= deadline:
                    return
                await one(path)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        wall = time.perf_counter() - started
    return {
        **latency_summary(latencies),
        "requests_per_s": len(latencies) / wall,
        "errors": errors,
        "failures": failures,
    }


def bench_proofs_http(
    args: argparse.Namespace,
    server: VaultServer,
    queries: dict[str, list[tuple[int, int]]],
    key: VerifierKey,
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for kind, template in (
        ("inclusion", "/ledger/proof/inclusion?index={}&size={}"),
        ("consistency", "/ledger/proof/consistency?old={}&new={}"),
    ):
        paths = [template.format(a, b) for a, b in queries[kind]]
        before = cpu_snapshot(server.pid)
        outcome = run_async(
            http_proofs(server.root_url, paths, args.proof_clients, 30.0, args.proof_seconds),
            args.loop,
        )
        cpu = cpu_usage(before, cpu_snapshot(server.pid))
        outcome["server_cpu_ms_per_request"] = cpu.server / max(outcome["count"], 1) * 1000
        outcome["generator_cpu_ms_per_request"] = cpu.generator / max(outcome["count"], 1) * 1000
        result[kind] = outcome
    # A handful of answers checked against the signed root, so that the timing is of proofs.
    import httpx

    with httpx.Client(base_url=server.root_url, timeout=30.0) as client:
        note = client.get("/ledger/checkpoint").text
        checkpoint = open_checkpoint(note, key)
        rng = random.Random(7)
        for _ in range(20):
            index = rng.randrange(checkpoint.size)
            answer = client.get(
                "/ledger/proof/inclusion", params={"index": index, "size": checkpoint.size}
            ).json()
            page = client.get("/ledger/leaves", params={"start": index, "count": 1}).json()
            data = base64.b64decode(page["leaves"][0])
            proof = [base64.b64decode(h) for h in answer["proof"]]
            verify_inclusion(leaf_hash(data), index, checkpoint.size, proof, checkpoint.root)
            assert len(proof) == len(inclusion_ranges(index, checkpoint.size))
        old = rng.randint(1, checkpoint.size)
        answer = client.get(
            "/ledger/proof/consistency", params={"old": old, "new": checkpoint.size}
        ).json()
        assert len(answer["proof"]) == len(consistency_ranges(old, checkpoint.size))
    result["verified_over_http"] = 20
    return result


# -- 3. the audit ----------------------------------------------------------------------------


def audit_in_process(records: RecordStore) -> dict[str, Any]:
    """Recompute the root of the whole log as an auditor would, from the stored leaves."""
    storage = records.storage
    checkpoint = records.ledger.latest(storage)
    assert checkpoint is not None
    n = checkpoint.size
    started = time.perf_counter()
    leaves = storage.leaves(0, n)
    reading = time.perf_counter() - started
    cpu0 = self_cpu()
    started = time.perf_counter()
    hashes = [leaf_hash(data) for data in leaves]
    hashing = time.perf_counter() - started
    started = time.perf_counter()
    root = root_of(hashes)
    tree = time.perf_counter() - started
    recompute_cpu = self_cpu() - cpu0
    if root != checkpoint.root:
        raise SystemExit("the recomputed root differs from the signed one: nothing is valid")
    del hashes
    # What coffre audit --full does with each entry bundle (coffre.cli.leaves.check_bundle),
    # step by step, in one process: the server's encoding timed apart.
    started = time.perf_counter()
    bundles = [encode_bundle(leaves[i : i + TILE_WIDTH]) for i in range(0, n, TILE_WIDTH)]
    encoding = time.perf_counter() - started
    del leaves
    splitting = folding = checking = decoding = 0.0
    roots = []
    for bundle in bundles:
        t0 = time.perf_counter()
        entries = split_bundle(bundle)
        t1 = time.perf_counter()
        roots.append(bundle_roots(entries))
        t2 = time.perf_counter()
        if undecodable(entries):
            raise SystemExit("a leaf of the log does not decode")
        t3 = time.perf_counter()
        collections.deque(map(Leaf.decode, entries), maxlen=0)  # for comparison
        t4 = time.perf_counter()
        splitting, folding = splitting + t1 - t0, folding + t2 - t1
        checking, decoding = checking + t3 - t2, decoding + t4 - t3
    if root_from_bundles(n, roots) != checkpoint.root:
        raise SystemExit("the root from the entry bundles differs from the signed one")
    return {
        "leaves": n,
        "read_sqlite_s": reading,
        "leaf_hashing_s": hashing,
        "root_of_s": tree,
        "recompute_s": hashing + tree,
        "recompute_cpu_s": recompute_cpu,
        "bundle_encoding_s": encoding,
        "auditor_split_s": splitting,
        "auditor_hash_and_fold_s": folding,
        "auditor_check_s": checking,
        "auditor_processing_s": splitting + folding + checking,
        "leaf_decode_each_s": decoding,
    }


def cli_environment(root: Path) -> dict[str, str]:
    """The environment of ``coffre`` runs: none of the caller's COFFRE_* settings, and a
    bytecode cache of its own (under ``root``), as an installed coffre has one. Without
    it (PYTHONDONTWRITEBYTECODE), every start compiles the 5 MB generated FHIR schema
    module again: seconds of CPU that say nothing of the audit."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COFFRE_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
    return env


def audit_http(
    args: argparse.Namespace, server: VaultServer, key: str, root: Path
) -> dict[str, Any]:
    """The real ``coffre audit --full``, --audit-runs times, then the same bundles fetched
    and checked in this process, one after the other, fetching and checking timed apart."""
    env = cli_environment(root)
    result: dict[str, Any] = {}
    help_command = [sys.executable, "-m", "coffre", "--help"]
    options: dict[str, Any] = {"capture_output": True, "cwd": ROOT, "timeout": 120, "check": True}
    # No bytecode cache at all: an empty one, never written to.
    uncached = {**env, "PYTHONPYCACHEPREFIX": str(root / "empty"), "PYTHONDONTWRITEBYTECODE": "1"}
    for name, environment in (("cli_start_uncached_s", uncached), ("cli_start_s", env)):
        subprocess.run(help_command, env=environment, **options)  # fills the bytecode cache
        started = time.perf_counter()
        subprocess.run(help_command, env=environment, **options)
        result[name] = time.perf_counter() - started
    result["runs"] = []
    for _ in range(args.audit_runs):
        wait_for_idle(args.wait_idle)
        run = audit_cli_run(args, server, key, root, env)
        result["runs"].append(run)
        if "cli_timed_out" in run:
            break
    # The same bundles, in this process, over the pool's client, one after the other.
    connection = Connection(server.root_url, 30.0)
    checkpoint = open_checkpoint(connection.get("/ledger/checkpoint")[1], VerifierKey.parse(key))
    fetching = checking = 0.0
    deadline = time.monotonic() + args.audit_timeout
    tiles = entry_bundles(checkpoint.size)
    checks = []
    for tile in tiles:
        if time.monotonic() > deadline:
            break
        t0 = time.perf_counter()
        _, data = connection.get(f"/ledger/{tile.path()}")
        t1 = time.perf_counter()
        checks.append(check_bundle(data, tile))
        checking += time.perf_counter() - t1
        fetching += t1 - t0
    connection.close()
    if len(checks) == len(tiles):
        roots = [check.roots for check in checks]
        assert root_from_bundles(checkpoint.size, roots) == checkpoint.root
    result.update(
        {
            "split_bundles": len(checks),
            "split_fetch_s": fetching,
            "split_processing_s": checking,
            "split_fetch_ms_per_bundle": fetching / max(len(checks), 1) * 1000,
        }
    )
    return result


def audit_cli_run(
    args: argparse.Namespace, server: VaultServer, key: str, root: Path, env: dict[str, str]
) -> dict[str, Any]:
    """One ``coffre audit --full`` from a fresh state: its wall time, its CPU and the
    server's, and what the rest of the machine did meanwhile."""
    state = root / "auditor.checkpoint"
    state.unlink(missing_ok=True)
    command = [sys.executable, "-m", "coffre", "audit", server.root_url, "--key", key]
    command += ["--state", str(state), "--full"]
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    before = cpu_snapshot(server.pid)
    started = time.perf_counter()
    try:
        run = subprocess.run(
            command, env=env, capture_output=True, timeout=args.audit_timeout, cwd=ROOT
        )
    except subprocess.TimeoutExpired:
        return {"cli_timed_out": True, "cli_s": float("nan")}
    wall = time.perf_counter() - started
    cpu = cpu_usage(before, cpu_snapshot(server.pid))
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cli_cpu = (children1.ru_utime + children1.ru_stime) - (children0.ru_utime + children0.ru_stime)
    if run.returncode != 0 or b"CONSISTENT" not in run.stdout:
        print(f"  coffre audit --full failed:\n{run.stdout.decode(errors='replace')}")
        print(run.stderr.decode(errors="replace")[-2000:])
    return {
        "cli_s": wall,
        "cli_cpu_s": cli_cpu,
        "server_cpu_s": cpu.server,
        # Busy CPU that was neither the audit nor the server: other sessions' work.
        "others_share": max(0.0, cpu.others - cli_cpu) / (cpu.wall * NPROC),
        "machine_busy": cpu.machine_busy,
        "cli_exit": run.returncode,
        "cli_output": run.stdout.decode(errors="replace").strip().splitlines()[-3:],
    }


# -- 4. reads --------------------------------------------------------------------------------


def patient(i: int) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:bench:ledger", "value": f"p{i}"}],
        "name": [{"family": f"Martin{i % 97}", "given": ["Jeanne", "Marie"]}],
        "gender": "female" if i % 2 else "male",
        "birthDate": f"{1940 + i % 70}-0{1 + i % 9}-1{i % 10}",
        "telecom": [{"system": "phone", "value": "+33 4 00 00 00 00"}],
        "address": [{"city": "Lyon", "postalCode": "69003", "country": "FR"}],
    }


def bench_reads(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    _, records = fresh_vault(root, "reads")
    ids: list[str] = []
    for start in range(0, args.records, 500):
        with records.writer() as writer:
            for i in range(start, min(start + 500, args.records)):
                ids.append(writer.create(patient(i)).stored.id)
    storage, keys = records.storage, records.keys

    def checked(resource_id: str) -> bytes:
        return records.read("Patient", resource_id).body

    def raw(resource_id: str) -> bytes:
        sealed = storage.latest(keys.location("Patient", resource_id))
        assert sealed is not None
        return records.open("Patient", resource_id, sealed).body

    for resource_id in ids:
        if checked(resource_id) != raw(resource_id):
            raise SystemExit("records.read and the raw read disagree")
    timings: dict[str, list[float]] = {"checked": [], "raw": []}
    clock = time.perf_counter_ns
    rng = random.Random(3)
    for round_ in range(args.read_rounds):
        rng.shuffle(ids)
        first, second = ("checked", "raw") if round_ % 2 == 0 else ("raw", "checked")
        functions = {"checked": checked, "raw": raw}
        for resource_id in ids:
            for name in (first, second):
                function = functions[name]
                t0 = clock()
                function(resource_id)
                timings[name].append((clock() - t0) / 1000)
    latest = records.latest_writes
    t0 = clock()
    for _ in range(10_000):
        latest.catch_up(storage)
    catch_up_noop = (clock() - t0) / 1000 / 10_000
    result: dict[str, Any] = {"records": len(ids), "reads_each": len(timings["raw"])}
    for name, values in timings.items():
        ordered = sorted(values)
        result[name] = {
            "mean_us": sum(values) / len(values),
            "p50_us": percentile(ordered, 50),
            "p99_us": percentile(ordered, 99),
        }
    result["check_us"] = result["checked"]["mean_us"] - result["raw"]["mean_us"]
    result["catch_up_no_new_leaf_us"] = catch_up_noop
    records.storage.close()
    return result


# -- the report ------------------------------------------------------------------------------


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    cols = ["measured", "target"]

    def row(label: str, value: Any, target: Any = None, fmt: str = "{:,.0f}") -> None:
        table.add(label, {"measured": value, "target": target}, fmt)

    table = Table("Ledger: appends, proofs, audit, reads (in-process unless 'HTTP')")
    appends = results.get("appends", {})
    for kind in args.kinds:
        for batch in args.batches:
            run = appends.get(f"{kind}/{batch}")
            if run:
                row(
                    f"append {kind} leaves, {batch:,}/transaction (leaves/s)",
                    run["leaves_per_s"],
                    TARGET_APPENDS_PER_S,
                )
    if "memory" in appends:
        row("CompactRange.append, in memory (leaves/s)", appends["memory"]["compact_append_per_s"])
        row(
            "leaf_hash + CompactRange.append (leaves/s)", appends["memory"]["hash_and_append_per_s"]
        )
    build = results.get("build")
    if build:
        row(
            f"building the log, {build['batch']:,} leaves/transaction (leaves/s)",
            build["leaves_per_s"],
        )
        row("log size (leaves)", build["leaves"])
    opening = results.get("open")
    if opening:
        row("Vault.open() on that log (s)", opening["open_s"], fmt="{:,.2f}")
        row("  rollback check: read + re-hash all (s)", opening["rollback_check_s"], fmt="{:,.2f}")
        row("  LatestWrites.catch_up from 0 (s)", opening["catch_up_s"], fmt="{:,.2f}")
        row("  catch_up per leaf (µs)", opening["catch_up_us_per_leaf"], fmt="{:,.2f}")
    proofs = results.get("proofs_in_process")
    if proofs:
        for kind in ("inclusion", "consistency"):
            p = proofs[kind]
            row(f"{kind} proof from stored nodes p50 (µs)", p["p50_us"], fmt="{:,.1f}")
            row(f"{kind} proof from stored nodes p99 (µs)", p["p99_us"], fmt="{:,.1f}")
            row(f"  node look-ups per {kind} proof", p["node_lookups_per_proof"], fmt="{:,.1f}")
        row("  one stored-node SELECT (µs)", proofs["node_select_us"], fmt="{:,.1f}")
        row(
            "checkpoint read + signature check p50 (µs)",
            proofs["checkpoint_read_and_verify"]["p50_us"],
            fmt="{:,.1f}",
        )
    server = results.get("server")
    if server:
        row(
            f"HTTP server ready on the log, {args.workers} workers (s)",
            server["ready_s"],
            fmt="{:,.1f}",
        )
    http = results.get("proofs_http")
    if http:
        for kind in ("inclusion", "consistency"):
            h = http[kind]
            row(f"HTTP {kind} proof p50 (ms)", h["p50_ms"], fmt="{:,.2f}")
            row(f"HTTP {kind} proof p99 (ms)", h["p99_ms"], fmt="{:,.2f}")
            row(f"HTTP {kind} proofs/s ({args.proof_clients} client(s))", h["requests_per_s"])
            row(
                f"  server CPU per {kind} request (ms)",
                h["server_cpu_ms_per_request"],
                fmt="{:,.2f}",
            )
    audit = results.get("audit_in_process")
    if audit:
        n = audit["leaves"]
        row(f"audit: read {n:,} leaves from SQLite (s)", audit["read_sqlite_s"], fmt="{:,.2f}")
        row("audit: hash the leaves (s)", audit["leaf_hashing_s"], fmt="{:,.2f}")
        row("audit: root_of, the tree (s)", audit["root_of_s"], fmt="{:,.2f}")
        row(
            f"audit: recompute the root of {n:,} leaves (s)",
            audit["recompute_s"],
            TARGET_AUDIT_S,
            fmt="{:,.2f}",
        )
        row(
            "audit: encode the entry bundles, server side (s)",
            audit["bundle_encoding_s"],
            fmt="{:,.2f}",
        )
        row(
            "audit as coffre audit does it, one process: split + hash + check (s)",
            audit["auditor_processing_s"],
            TARGET_AUDIT_S,
            fmt="{:,.2f}",
        )
        row("  split the bundles (s)", audit["auditor_split_s"], fmt="{:,.2f}")
        row(
            "  hash the leaves, fold the tiles (s)", audit["auditor_hash_and_fold_s"], fmt="{:,.2f}"
        )
        row(
            "  check that every leaf decodes (undecodable) (s)",
            audit["auditor_check_s"],
            fmt="{:,.2f}",
        )
        row(
            "  Leaf.decode of each instead, for comparison (s)",
            audit["leaf_decode_each_s"],
            fmt="{:,.2f}",
        )
    ah = results.get("audit_http")
    if ah:
        for number, run in enumerate(ah["runs"], 1):
            row(
                f"HTTP coffre audit --full, end to end, run {number} (s)",
                run["cli_s"],
                TARGET_AUDIT_S,
                fmt="{:,.1f}",
            )
            if "cli_cpu_s" in run:
                row("  coffre audit CPU, all its processes (s)", run["cli_cpu_s"], fmt="{:,.1f}")
                row("  server CPU during the audit (s)", run["server_cpu_s"], fmt="{:,.1f}")
                row("  other processes, share of the cores", run["others_share"], fmt="{:.0%}")
        row("  CLI start-up alone (coffre --help) (s)", ah["cli_start_s"], fmt="{:,.2f}")
        row("  the same without a bytecode cache (s)", ah["cli_start_uncached_s"], fmt="{:,.2f}")
        if "split_fetch_s" in ah:
            row(
                f"  split: fetch {ah['split_bundles']:,} entry bundles, one by one (s)",
                ah["split_fetch_s"],
                fmt="{:,.1f}",
            )
            row("  split: fetch per bundle (ms)", ah["split_fetch_ms_per_bundle"], fmt="{:,.2f}")
            row("  split: check them, one process (s)", ah["split_processing_s"], fmt="{:,.1f}")
    reads = results.get("reads")
    if reads:
        row(
            "records.read, with the log check (µs/read)", reads["checked"]["mean_us"], fmt="{:,.1f}"
        )
        row("storage.latest + records.open (µs/read)", reads["raw"]["mean_us"], fmt="{:,.1f}")
        row("  the check's cost (µs/read)", reads["check_us"], fmt="{:,.1f}")
        row("  catch_up with no new leaf (µs)", reads["catch_up_no_new_leaf_us"], fmt="{:,.1f}")
    cpu = results["cpu"]
    row("wall time of the benchmark (s)", cpu["wall_s"], fmt="{:,.0f}")
    row("CPU: this process (s)", cpu["benchmark_s"], fmt="{:,.1f}")
    row("CPU: coffre serve, all processes (s)", cpu["server_s"], fmt="{:,.1f}")
    row("CPU: coffre audit and other children (s)", cpu["children_s"], fmt="{:,.1f}")
    print()
    print(table.render(cols))

    runs = [appends[f"{k}/{b}"] for k in args.kinds for b in args.batches if f"{k}/{b}" in appends]
    if runs:
        print("\nWhere an append transaction's time goes (µs per transaction; µs per leaf):")
        print(
            f"  {'kind':<5} {'leaves/txn':>10} {'txn p50 ms':>10} {'txn p99 ms':>10} {'BEGIN':>8}"
            f" {'appends':>9} {'integrate':>10} {'COMMIT':>8} {'remember':>9}"
            f" {'append/leaf':>12} {'integr./leaf':>12}"
        )
        for run in runs:
            ph, pl = run["phase_us_per_txn"], run["phase_us_per_leaf"]
            print(
                f"  {run['kind']:<5} {run['batch']:>10,} {run['txn_ms']['p50_ms']:>10,.2f}"
                f" {run['txn_ms']['p99_ms']:>10,.2f}"
                f" {ph['begin']:>8,.0f} {ph['append']:>9,.0f} {ph['integrate']:>10,.0f}"
                f" {ph['commit']:>8,.0f} {ph['remember']:>9,.0f}"
                f" {pl['append']:>12,.1f} {pl['integrate']:>12,.1f}"
            )
    noise = results.get("noise", {})
    if noise:
        print(
            "\nThe machine during each part (% of all cores; 'others' is every other process,"
            " steal is the hypervisor's):"
        )
        print(
            f"  {'part':<24} {'wall s':>7} {'busy':>6} {'bench':>6} {'server':>7}"
            f" {'others':>7} {'steal':>6}"
        )
        for name, p in noise.items():
            print(
                f"  {name:<24} {p['wall_s']:>7,.1f} {p['busy']:>6.0%} {p['own']:>6.0%}"
                f" {p['server']:>7.0%} {p['others']:>7.0%} {p['steal']:>6.0%}"
            )
    print()
    verdicts = []
    for kind in args.kinds:
        rates = [r["leaves_per_s"] for r in runs if r["kind"] == kind]
        if rates:
            best = max(rates)
            verdicts.append(
                f"Target {TARGET_APPENDS_PER_S:,} leaves/s through storage ({kind} leaves):"
                f" {'met' if best >= TARGET_APPENDS_PER_S else 'NOT met'} (best {best:,.0f})"
            )
    if audit:
        size = audit["leaves"]
        verdicts.append(
            f"Target under {TARGET_AUDIT_S:.0f} s to recompute {size:,} leaves in-process:"
            f" {'met' if audit['recompute_s'] < TARGET_AUDIT_S else 'NOT met'}"
            f" ({audit['recompute_s']:.2f} s)"
        )
    if ah and all("cli_timed_out" not in run for run in ah["runs"]):
        runs_s = ", ".join(
            f"{run['cli_s']:.1f} s with {run['others_share']:.0%} of the cores busy elsewhere"
            for run in ah["runs"]
        )
        met = sum(run["cli_s"] < TARGET_AUDIT_S for run in ah["runs"])
        verdicts.append(
            f"Target under {TARGET_AUDIT_S:.0f} s for coffre audit --full over HTTP: met in"
            f" {met} of {len(ah['runs'])} runs ({runs_s})"
        )
    elif ah:
        verdicts.append(f"coffre audit --full did not finish within {args.audit_timeout:.0f} s")
    for line in verdicts:
        print(line)
    for kind in ("inclusion", "consistency"):
        if http and http[kind]["failures"]:
            print(f"first failures ({kind}): " + "; ".join(http[kind]["failures"]))
    print("HTTP reads with access logging: see bench/crud.py (read requests/s and p50/p99 there).")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--batches",
        default="1,100,1000,10000",
        help="leaves per transaction for the append runs (default 1,100,1000,10000)",
    )
    parser.add_argument(
        "--kinds",
        default="read,write",
        help="leaf kinds for the append runs: read (access leaves), write (CREATE of a new"
        " record, which also updates the verifiable map); default both",
    )
    parser.add_argument(
        "--append-seconds", type=float, default=5.0, help="seconds per batch size (default 5)"
    )
    parser.add_argument(
        "--max-transactions", type=int, default=100_000, help="at most this many per batch size"
    )
    parser.add_argument(
        "--memory-leaves", type=int, default=1_000_000, help="leaves for the in-memory figure"
    )
    parser.add_argument(
        "--log-size",
        type=int,
        default=TARGET_AUDIT_LEAVES,
        help="leaves of the log for the proofs and the audit (default 1,000,000)",
    )
    parser.add_argument(
        "--build-batch", type=int, default=100_000, help="leaves per transaction when building"
    )
    parser.add_argument(
        "--build-seconds", type=float, default=600.0, help="stop building after this (default 600)"
    )
    parser.add_argument(
        "--proofs", type=int, default=2000, help="HTTP requests of each proof kind (default 2000)"
    )
    parser.add_argument(
        "--proof-clients", type=int, default=1, help="concurrent HTTP clients (default 1)"
    )
    parser.add_argument(
        "--proof-seconds", type=float, default=60.0, help="at most this long per proof kind"
    )
    parser.add_argument(
        "--skip-http-audit", action="store_true", help="do not run coffre audit --full over HTTP"
    )
    parser.add_argument(
        "--audit-timeout", type=float, default=600.0, help="bound on coffre audit (default 600 s)"
    )
    parser.add_argument(
        "--audit-runs", type=int, default=2, help="runs of coffre audit --full (default 2)"
    )
    parser.add_argument("--records", type=int, default=2000, help="records for the read comparison")
    parser.add_argument("--read-rounds", type=int, default=10, help="reads of each record")
    parser.add_argument("--workers", type=int, default=2, help="coffre serve --workers (default 2)")
    parser.add_argument(
        "--ready-timeout", type=float, default=600.0, help="bound on the server's start (s)"
    )
    parser.add_argument(
        "--sqlite-synchronous",
        choices=("FULL", "NORMAL", "OFF"),
        default=None,
        help="set COFFRE_SQLITE_SYNCHRONOUS (default: Coffre's own, FULL)",
    )
    parser.add_argument("--tmpdir", default=None, help="where the temporary vaults go")
    parser.add_argument("--keep-vault", action="store_true", help="do not delete the vaults")
    parser.add_argument(
        "--loop", choices=("uvloop", "asyncio"), default="uvloop", help="client event loop"
    )
    parser.add_argument(
        "--wait-idle", type=float, default=30.0, help="wait up to this for an idle machine"
    )
    parser.add_argument(
        "--skip", default="", help="comma-separated parts to skip: appends,proofs,audit,reads"
    )
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args()
    try:
        args.batches = [int(b) for b in args.batches.split(",") if b.strip()]
    except ValueError:
        parser.error("--batches is a comma-separated list of whole numbers")
    if any(b < 1 for b in args.batches) or args.log_size < 2 or args.proofs < 1:
        parser.error("batches and --proofs at least 1, --log-size at least 2")
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if not set(args.kinds) <= {"read", "write"}:
        parser.error("--kinds is a subset of read,write")
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    # Nothing of the caller's COFFRE_* settings leaks into the in-process vaults.
    for name in [k for k in os.environ if k.startswith("COFFRE_")]:
        del os.environ[name]
    if args.sqlite_synchronous:
        os.environ["COFFRE_SQLITE_SYNCHRONOUS"] = args.sqlite_synchronous
    print_header("bench/ledger.py", args)
    wait_for_idle(args.wait_idle)
    root = Path(tempfile.mkdtemp(prefix="coffre-ledger-", dir=args.tmpdir))
    results: dict[str, Any] = {}
    wall0, cpu0 = time.perf_counter(), self_cpu()
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cpu = 0.0
    noise = Noise()
    try:
        if "appends" not in skip:
            print("1. appends ...", flush=True)
            with noise.part("appends"):
                results["appends"] = bench_appends(args, root)
        if not {"proofs", "audit"} <= skip:
            print(f"2. building a log of {args.log_size:,} leaves ...", flush=True)
            with noise.part("build the log"):
                vault, results["build"] = build_log(args, root)
            with noise.part("open the log in-process"):
                records, results["open"] = open_cost(vault)
            key = records.ledger.verifier_key
            if "proofs" not in skip:
                print("   proofs in-process ...", flush=True)
                signed = results["build"]["leaves"]
                queries = proof_queries(signed, args.proofs, seed=11)
                with noise.part("proofs in-process"):
                    results["proofs_checked"] = check_proofs(
                        records, 20, seed=5, every=args.build_batch
                    )
                    results["proofs_in_process"] = proofs_in_process(records, queries)
            if "audit" not in skip:
                print("3. audit in-process ...", flush=True)
                with noise.part("audit in-process"):
                    results["audit_in_process"] = audit_in_process(records)
            records.storage.close()
            print(f"   starting coffre serve --workers {args.workers} on the log ...", flush=True)
            server = VaultServer(vault, workers=args.workers, ready_timeout=args.ready_timeout)
            with noise.part("server start"):
                server.start()
            try:
                noise.server_pid = server.pid
                start_cpu = sum(tree_cpu(server.pid).values())
                noise.add_server_cpu("server start", start_cpu)
                results["server"] = {"ready_s": server.ready_seconds, "start_cpu_s": start_cpu}
                if "proofs" not in skip:
                    print("   proofs over HTTP ...", flush=True)
                    with noise.part("proofs over HTTP"):
                        results["proofs_http"] = bench_proofs_http(args, server, queries, key)
                if "audit" not in skip and not args.skip_http_audit:
                    print("   coffre audit --full over HTTP ...", flush=True)
                    with noise.part("audit over HTTP"):
                        results["audit_http"] = audit_http(args, server, str(key), root)
                server_cpu = sum(tree_cpu(server.pid).values())
            finally:
                noise.server_pid = None
                server.stop()
        if "reads" not in skip:
            print("4. reads ...", flush=True)
            with noise.part("reads"):
                results["reads"] = bench_reads(args, root)
    finally:
        if args.keep_vault:
            print(f"vaults kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    children = (children1.ru_utime + children1.ru_stime) - (children0.ru_utime + children0.ru_stime)
    results["cpu"] = {
        "wall_s": time.perf_counter() - wall0,
        "benchmark_s": self_cpu() - cpu0,
        # Read just before the server stopped (its exit adds little).
        "server_s": server_cpu,
        # Every child that exited: coffre audit, coffre --help, and the stopped server.
        "children_s": max(0.0, children - server_cpu),
    }
    results["noise"] = noise.parts
    report(results, args)
    write_json(args.json, {"benchmark": "ledger", "args": vars(args), "results": results})


if __name__ == "__main__":
    main()
