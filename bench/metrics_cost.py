"""What measuring costs a request: ``/health/live``, the cheapest request there is (a read's
disk sync, or the capability statement's making, would drown a difference of
microseconds), driven through the application in process over ASGI, with and without the
metrics layer (coffre/api/metrics.py), in alternating rounds; and what a group commit's
figures cost, called alone. With
``--multiprocess`` the figures go to a folder's files, as with several server processes
(prometheus-client reads its mode on import, hence the flag read before any import).

    .venv/bin/python bench/metrics_cost.py [--requests 20000] [--rounds 7] [--multiprocess]
"""

from __future__ import annotations

import os
import sys
import tempfile

if "--multiprocess" in sys.argv:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="coffre-bench-metrics-")

import argparse
import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

from _common import ROOT
from starlette.applications import Starlette

from coffre.api import create_app
from coffre.api.metrics import CommitMetrics, MeasureRequests
from coffre.service import RecordStore, Vault


def _scope(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"bench"), (b"accept", b"application/fhir+json")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
    }


async def _per_request(app: Starlette, path: str, count: int) -> float:
    """Seconds of CPU a request of ``path`` takes through ``app``, on average over
    ``count`` (CPU time: on a machine busy with other work, the wall clock varies more
    than the difference sought)."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    started = time.thread_time()
    for _ in range(count):
        await app(_scope(path), receive, send)
    return (time.thread_time() - started) / count


def _apps(records: RecordStore) -> tuple[Starlette, Starlette]:
    """The application as served, and the same without its metrics layer."""
    measured, bare = create_app(records), create_app(records)
    bare.user_middleware = [m for m in bare.user_middleware if m.cls is not MeasureRequests]
    return measured, bare


def _compare(records: RecordStore, path: str, count: int, rounds: int) -> None:
    measured, bare = _apps(records)
    timings: dict[str, list[float]] = {"with": [], "without": []}

    async def run() -> None:
        for round_ in range(rounds):  # every other round in reverse order
            order = [("with", measured), ("without", bare)][:: 1 if round_ % 2 else -1]
            for name, app in order:
                timings[name].append(await _per_request(app, path, count))

    asyncio.run(run())
    with_, without = (statistics.median(timings[name]) * 1e6 for name in ("with", "without"))
    print(
        f"{path:<15} with {with_:8.1f} µs  without {without:8.1f} µs of CPU"
        f"  the metrics: {with_ - without:+6.1f} µs a request (medians of {rounds} rounds)"
    )


def _commit_figures(count: int) -> None:
    figures = CommitMetrics()
    started = time.thread_time()
    for _ in range(count):
        figures.committed([0.0004], 0.002)
        figures.followed(1_000_000, 1_800_000_000_000_000)
    each = (time.thread_time() - started) / count * 1e6
    print(f"a commit's figures (one request): {each:.1f} µs of CPU, the write lock let go")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--multiprocess", action="store_true")
    args = parser.parse_args()
    mode = "multiprocess (files)" if args.multiprocess else "one process (memory)"
    print(f"prometheus-client in {mode}; {ROOT}")
    with tempfile.TemporaryDirectory(prefix="coffre-bench-metrics-vault-") as folder:
        vault = Vault.at(Path(folder) / "vault")
        vault.create("")
        records = vault.open()
        _compare(records, "/health/live", args.requests, args.rounds)
        records.storage.close()
    _commit_figures(args.requests)


if __name__ == "__main__":
    main()
