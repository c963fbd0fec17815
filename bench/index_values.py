"""What indexing costs on the write path: index_values() over Synthea patient bundles.

Parses each bundle with orjson (as Coffre does), then times index_values() on every entry,
best of --rounds, and prints microseconds per resource overall and per resource type.

    .venv/bin/python bench/index_values.py [--bundles 4] [--rounds 5]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import _common  # noqa: F401 - this checkout's coffre, not the venv's
import orjson

from coffre.search.extract import index_values

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "synthea"


def _resources(count: int) -> list[dict[str, Any]]:
    paths = sorted(DATA.glob("fhir-data-pipes-2021/*.json"))[:count]
    paths += sorted(DATA.glob("smart-2019/*.json"))[:count]
    found = []
    for path in paths:
        bundle = orjson.loads(path.read_bytes())
        found.extend(entry["resource"] for entry in bundle.get("entry", []) if "resource" in entry)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bundles", type=int, default=4, help="bundles of each Synthea folder")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    resources = _resources(args.bundles)
    for resource in resources:  # the first call per type builds its plan
        index_values(resource)
    per_type: dict[str, float] = defaultdict(lambda: float("inf"))
    best = float("inf")
    for _ in range(args.rounds):
        spent: dict[str, float] = defaultdict(float)
        start = time.perf_counter()
        for resource in resources:
            began = time.perf_counter()
            index_values(resource)
            spent[resource["resourceType"]] += time.perf_counter() - began
        best = min(best, time.perf_counter() - start)
        for kind, seconds in spent.items():
            per_type[kind] = min(per_type[kind], seconds)
    counts: dict[str, int] = defaultdict(int)
    for resource in resources:
        counts[resource["resourceType"]] += 1
    print(f"{len(resources)} resources: {best / len(resources) * 1e6:.1f} µs per resource")
    for kind in sorted(counts, key=lambda k: -counts[k]):
        print(f"  {kind:<28} {counts[kind]:>6}  {per_type[kind] / counts[kind] * 1e6:7.1f} µs")


if __name__ == "__main__":
    main()
