"""What a transaction Bundle costs before and under the write lock, in process.

The import's throughput is held by the write lock, which the server processes take in
turn (docs/performance.md), and it swings by ±10% from run to run on this machine: too
much to see a change of a few percent in what runs under the lock. This runs Synthea's
patient Bundles as the API does, in one thread, with no server and no contention:
``BundleProcessor.prepare`` (checks, ids drawn, tokens computed ahead), then
``execute`` in a storage transaction of ``--per-commit`` Bundles, each a request of its
own (as the group commit runs them), and
prints the CPU time of each part per resource (``time.thread_time``; PostgreSQL's own
CPU is not counted). The same tree gives the same figures within about 2%.

    .venv/bin/python bench/bundle_cost.py [--bundles 40] [--per-commit 5] [--rounds 3]
        [--storage sqlite|postgresql|postgresql://USER@HOST/DB]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from _common import ROOT, storages, synthea_files

from coffre.api.search import search_page
from coffre.cli.importer import Importer
from coffre.service import RecordStore, Vault
from coffre.service.audit import OPERATOR
from coffre.service.bundles import BundleProcessor

BASE = "urn:coffre:bench"


def _processor(records: RecordStore) -> BundleProcessor:
    return BundleProcessor(
        records,
        BASE,
        returning=None,
        search=lambda writer, kind, pairs: search_page(records, BASE, kind, pairs, writer=writer),
    )


def _round(
    new_storage: Callable[[], str | None],
    information: list[Path],
    patients: list[dict[str, Any]],
    per_commit: int,
) -> tuple[float, float, int]:
    """Seconds of CPU preparing and under the lock, and the resources, on a new vault
    holding the information Bundles (imported as ``coffre import`` does)."""
    with tempfile.TemporaryDirectory(prefix="coffre-bundle-cost-") as folder:
        vault = Vault.at(Path(folder) / "vault")
        vault.create(new_storage() or "")
        records = vault.open()
        try:
            failures = Importer(records).run(information).failures
            if failures:
                raise SystemExit(f"the information Bundles did not load: {failures[:3]}")
            preparing = locked = 0.0
            for start in range(0, len(patients), per_commit):
                group = copy.deepcopy(patients[start : start + per_commit])
                began = time.thread_time()
                prepared = []
                for bundle in group:
                    processor = _processor(records)
                    prepared.append((processor, processor.prepare(bundle)))
                ready = time.thread_time()
                with records.writer() as writer:
                    for processor, checked in prepared:
                        with writer.request(OPERATOR):  # as the group commit runs each
                            processor.execute(checked, writer)
                preparing += ready - began
                locked += time.thread_time() - ready
        finally:
            records.storage.close()
    return preparing, locked, sum(len(bundle.get("entry", [])) for bundle in patients)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundles", type=int, default=40, help="patient Bundles (default 40)")
    parser.add_argument("--per-commit", type=int, default=5, help="Bundles a transaction")
    parser.add_argument("--rounds", type=int, default=3, help="each on a new vault; medians")
    parser.add_argument("--storage", default="sqlite")
    parser.add_argument("--synthea", type=Path, default=ROOT.parent / "shared/data/synthea")
    args = parser.parse_args()
    information, stages = synthea_files(args.synthea)
    patients = [orjson.loads(path.read_bytes()) for path in stages[0][: args.bundles]]
    prepare_costs, locked_costs = [], []
    with storages(args.storage) as new_storage:
        for number in range(1, args.rounds + 1):
            preparing, locked, resources = _round(
                new_storage, information, patients, args.per_commit
            )
            prepare_costs.append(preparing / resources * 1e6)
            locked_costs.append(locked / resources * 1e6)
            print(
                f"round {number}: {resources} resources, prepared {prepare_costs[-1]:.0f} µs"
                f" and under the lock {locked_costs[-1]:.0f} µs of CPU a resource",
                flush=True,
            )
    print(
        f"median of {args.rounds} ({args.storage}): prepared"
        f" {statistics.median(prepare_costs):.0f} µs, under the lock"
        f" {statistics.median(locked_costs):.0f} µs of CPU a resource"
    )


if __name__ == "__main__":
    main()
