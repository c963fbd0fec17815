"""What ``coffre import`` reads: bundles, NDJSON files, single resources, folders.

Each source becomes Bundles ready to run. A resource keeps the id its file gives it
(``resource.id``, or else the ``urn:uuid:`` of its fullUrl), so that importing the same
files twice changes nothing: the second run finds every resource already there, unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coffre.exceptions import FhirError
from coffre.fhir import json

NDJSON_CHUNK = 500


@dataclass(frozen=True, slots=True)
class Batch:
    """A Bundle to run, and where it came from, for messages."""

    origin: str
    bundle: dict[str, Any]

    @property
    def size(self) -> int:
        return len(self.bundle.get("entry", []))


def files_under(paths: list[Path]) -> list[Path]:
    """The files named, and those in the folders named, recursively, in a stable order."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                sorted(
                    p for p in path.rglob("*") if p.is_file() and p.suffix in (".json", ".ndjson")
                )
            )
        else:
            found.append(path)
    return found


def _source_id(entry: dict[str, Any]) -> str | None:
    resource = entry.get("resource") or {}
    if isinstance(resource.get("id"), str):
        return str(resource["id"])
    full_url = entry.get("fullUrl") or ""
    return full_url.removeprefix("urn:uuid:") if full_url.startswith("urn:uuid:") else None


def with_source_ids(bundle: dict[str, Any]) -> dict[str, Any]:
    """Give each POSTed resource without an id the uuid of its fullUrl."""
    for entry in bundle.get("entry", []):
        resource = entry.get("resource")
        if isinstance(resource, dict) and "id" not in resource:
            source_id = _source_id(entry)
            if source_id:
                resource["id"] = source_id
    return bundle


def _as_entry(resource: Any) -> dict[str, Any]:
    resource_type = resource.get("resourceType") if isinstance(resource, dict) else None
    return {"resource": resource, "request": {"method": "POST", "url": str(resource_type or "")}}


def _batch_of(resources: list[Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "batch", "entry": [_as_entry(r) for r in resources]}


def _ndjson(path: Path) -> Iterator[Batch]:
    chunk: list[Any] = []
    first_line = 1
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            chunk.append(json.loads(line, f"line {number}", json.MAX_DEPTH))
            if len(chunk) == NDJSON_CHUNK:
                yield Batch(f"{path}, lines {first_line}-{number}", _batch_of(chunk))
                chunk, first_line = [], number + 1
    if chunk:
        yield Batch(f"{path}, lines {first_line}-{number}", _batch_of(chunk))


def batches(path: Path) -> Iterator[Batch]:
    """The Bundles one file holds; FhirError when it cannot be read as FHIR JSON."""
    if path.suffix == ".ndjson":
        yield from _ndjson(path)
        return
    content = json.loads(path.read_bytes(), str(path), json.MAX_DEPTH)
    if (
        isinstance(content, dict)
        and content.get("resourceType") == "Bundle"
        and content.get("type") in ("transaction", "batch")
    ):
        yield Batch(str(path), with_source_ids(content))
    elif isinstance(content, dict) and "resourceType" in content:
        yield Batch(str(path), _batch_of([content]))
    else:
        raise FhirError(
            400,
            "structure",
            f"{path} holds neither a FHIR resource nor a transaction or batch Bundle",
        )
