"""Migration benchmark: MB/s of sealed data that ``coffre migrate`` moves between two local
backends, SQLite to PostgreSQL and back.

1. A vault is made as an operator would: ``coffre synth`` patients imported into an SQLite
   vault (in-process, with the importer ``coffre import`` uses).
2. SQLite -> PostgreSQL, then PostgreSQL -> a new SQLite file, each with the copy machinery
   ``coffre migrate`` runs (coffre.storage.copy), in --batch rows per transaction, and
   each ending with its proof (reading the destination back, per-table digests, the log's
   root on both sides).

Metric: MB/s = the bytes the storage holds (every byte string and text of every row:
sealed bodies, tokens, leaves, tree nodes, checkpoints, wrapped keys) / wall time of the
whole migration, proof included. The time of the copy alone (until the last row is
written) is printed beside it, and the CPU seconds the migration took (this process, and
the throwaway PostgreSQL server's processes): on a machine shared with other work, MB per
CPU second says what an idle one would do better than the wall clock. Target: 50 MB/s.

PostgreSQL: --postgres URL (an empty database, or a schema through
``options=-csearch_path``), else a throwaway server of the tests' kind (Debian's binaries),
durable (fsync on), for the run. Only ever talks to 127.0.0.1 unless given another URL. Not
collected by pytest.

    .venv/bin/python bench/migrate.py [--patients 100] [--batch 50000] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _common import (
    Table,
    coffre_fingerprint,
    machine_description,
    self_cpu,
    synthea_files,
    tree_cpu,
    wait_for_idle,
    write_json,
)

from coffre.cli.importer import Importer
from coffre.cli.migrate import TreeRoot
from coffre.fhir.json import dumps
from coffre.service import Vault
from coffre.storage.copy import DEFAULT_BATCH, copy_tables, open_endpoint
from coffre.synth import generate_bundles, generate_shared_bundle

TARGET_MB_PER_S = 50.0
WHAT_MB_COUNTS = (
    "MB = 10^6 bytes of the data the storage holds: every byte string and text of every row"
    " (sealed bodies, index tokens, leaves, tree nodes, checkpoints, wrapped keys; integers"
    " and the databases' own overhead not counted)"
)


class Timer:
    """A copy's progress: when its last row was written, and how many bytes it wrote."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.copied_at = self.started
        self.data_bytes = 0

    def start(self, rows: int) -> None:
        pass

    def advance(self, rows: int, data_bytes: int) -> None:
        self.data_bytes += data_bytes
        self.copied_at = time.perf_counter()


def synth_files(folder: Path, patients: int) -> list[Path]:
    """``patients`` generated patients' bundles written to ``folder``, shared ones first."""
    bundles = folder / "synth"
    bundles.mkdir()
    (bundles / "shared.json").write_bytes(
        dumps(generate_shared_bundle(random.Random("coffre-synth:0:shared")))
    )
    for index, bundle in enumerate(generate_bundles(patients, 0), start=1):
        (bundles / f"patient-{index:07d}.json").write_bytes(dumps(bundle))
    return sorted(bundles.iterdir())


def make_vault(folder: Path, files: list[Path], what: str) -> Path:
    """An SQLite vault holding what ``files`` load; its storage file."""
    vault = Vault.at(folder / "vault")
    vault.create()
    records = vault.open()
    try:
        report = Importer(records).run(files)
    finally:
        records.storage.close()
    if report.failures:
        raise SystemExit(f"import failed: {report.failures[:3]}")
    print(f"vault: {what}, {report.resources:,} resources imported")
    return vault.storage_path


def migrate(source: str, destination: str, batch: int, server: int | None) -> dict[str, Any]:
    """One migration, timed; with the CPU seconds it took of this process and of the
    PostgreSQL server ``server`` (its postmaster's pid, when it is ours)."""
    server_before = tree_cpu(server) if server else {}
    cpu_before = self_cpu()
    timer = Timer()
    with (
        closing(open_endpoint(source)) as reader,
        closing(open_endpoint(destination, create=True)) as writer,
    ):
        report = copy_tables(reader, writer, batch=batch, progress=timer, leaf_fold=TreeRoot)
        ended = time.perf_counter()
        # Before the connections close: their server processes end with them.
        server_after = tree_cpu(server) if server else {}
        coffre_cpu = self_cpu() - cpu_before
    server_cpu = sum(seconds - server_before.get(pid, 0.0) for pid, seconds in server_after.items())
    cpu = coffre_cpu + server_cpu
    if report.mismatched:
        raise SystemExit(f"the copy differs from its source: {report.mismatched}")
    total, copying = ended - timer.started, timer.copied_at - timer.started
    return {
        "rows": sum(summary.rows for summary in report.source.tables.values()),
        "data_bytes": timer.data_bytes,
        "seconds": total,
        "copy_seconds": copying,
        "mb_per_s": timer.data_bytes / total / 1e6,
        "copy_mb_per_s": timer.data_bytes / copying / 1e6,
        "cpu_seconds": cpu,
        "coffre_cpu_seconds": coffre_cpu,
        "mb_per_cpu_s": timer.data_bytes / cpu / 1e6,
    }


@contextlib.contextmanager
def postgres_url(given: str | None) -> Iterator[tuple[str, int | None]]:
    """The URL given, or an empty schema on a throwaway durable server of the tests'
    kind, and that server's postmaster pid."""
    if given:
        yield given, None
        return
    from pgserver import Cluster, binaries

    bin_dir = binaries()
    if bin_dir is None:
        raise SystemExit("PostgreSQL is not installed: give --postgres URL")
    cluster = Cluster(bin_dir, durable=True)  # as the other benchmarks' server: fsync on
    try:
        pid = int((cluster.data / "postmaster.pid").read_text().split()[0])
        yield cluster.new_storage_url(), pid
    finally:
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=100, help="coffre synth patients (100)")
    parser.add_argument(
        "--synthea",
        type=Path,
        default=None,
        help="a vault of the Synthea bundles in this folder (../shared/data/synthea) instead",
    )
    parser.add_argument(
        "--batch", type=int, default=DEFAULT_BATCH, help="rows per destination transaction"
    )
    parser.add_argument("--postgres", default=None, help="an empty PostgreSQL storage URL")
    parser.add_argument("--tmpdir", default=None, help="where the temporary vault goes")
    parser.add_argument(
        "--wait-idle", type=float, default=30.0, help="wait up to this many s for an idle machine"
    )
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args()
    machine = machine_description()
    print(f"migrate: {machine['nproc']} CPUs ({machine['cpu']}), Python {machine['python']}")
    print("command: " + " ".join([Path(sys.executable).name, *sys.argv]))
    print(f"coffre sources: sha256 {coffre_fingerprint()} (hash of coffre/**/*.py)")
    folder = Path(tempfile.mkdtemp(prefix="coffre-bench-migrate-", dir=args.tmpdir))
    results: dict[str, Any] = {}
    try:
        if args.synthea is None:
            what = f"{args.patients} patients"
            sqlite_file = make_vault(folder, synth_files(folder, args.patients), what)
        else:
            info, stages = synthea_files(args.synthea)
            what = f"Synthea ({args.synthea})"
            sqlite_file = make_vault(folder, info + [p for s in stages for p in s], what)
        with postgres_url(args.postgres) as (url, server):
            busy = wait_for_idle(args.wait_idle)
            results["sqlite_to_postgresql"] = migrate(str(sqlite_file), url, args.batch, server)
            results["sqlite_to_postgresql"]["busy_before"] = busy
            busy = wait_for_idle(args.wait_idle)
            results["postgresql_to_sqlite"] = migrate(
                url, str(folder / "back.sqlite"), args.batch, server
            )
            results["postgresql_to_sqlite"]["busy_before"] = busy
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    directions = {
        "SQLite -> PostgreSQL": "sqlite_to_postgresql",
        "PostgreSQL -> SQLite": "postgresql_to_sqlite",
    }
    table = Table(f"coffre migrate, {what}, batches of {args.batch} rows")
    for label, key, fmt, scale in (
        ("rows", "rows", "{:,.0f}", 1),
        ("data (MB)", "data_bytes", "{:,.1f}", 1e6),
        ("seconds, proof included", "seconds", "{:.1f}", 1),
        ("MB/s, proof included", "mb_per_s", "{:.1f}", 1),
        ("MB/s of the copy alone", "copy_mb_per_s", "{:.1f}", 1),
        ("CPU seconds (Coffre + PostgreSQL)", "cpu_seconds", "{:.1f}", 1),
        ("of which Coffre's", "coffre_cpu_seconds", "{:.1f}", 1),
        ("MB per CPU second", "mb_per_cpu_s", "{:.1f}", 1),
        ("cores busy before (other work)", "busy_before", "{:.0%}", 1),
    ):
        table.add(label, {name: results[run][key] / scale for name, run in directions.items()}, fmt)
    print(table.render(list(directions)))
    print(WHAT_MB_COUNTS)
    for label, key in directions.items():
        run = results[key]
        print(
            f"{label}: {run['mb_per_s']:.1f} MB/s with the proof"
            f" ({run['copy_mb_per_s']:.1f} MB/s for the copy alone),"
            f" {run['mb_per_cpu_s']:.1f} MB per CPU second"
        )
    runs = list(results.values())
    worst = min(run["mb_per_s"] for run in runs)
    verdict = "met" if worst >= TARGET_MB_PER_S else "not met"
    print(f"target {TARGET_MB_PER_S:.0f} MB/s, proof included, both ways: {verdict}")
    write_json(args.json, {"benchmark": "migrate", "args": vars(args), "results": results})


if __name__ == "__main__":
    main()
