"""What ``coffre import`` reads: bundles, NDJSON files, single resources, folders.

Each source becomes Bundles ready to run. A created resource keeps the id its file gives
it (``resource.id``, or else the one its fullUrl names), or else gets one derived from its
content (``with_source_ids``), so that importing the same files twice changes nothing: the
second run finds every resource already there, unchanged.
"""

from __future__ import annotations

import codecs
import gzip
import io
import os
import stat
import zlib
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from coffre.exceptions import FhirError, bounded
from coffre.fhir import json
from coffre.fhir._definitions_r4 import RESOURCE_TYPES
from coffre.fhir.references import parse_reference, rewrite_references

NDJSON_CHUNK = 500
BOM = b"\xef\xbb\xbf"
"""The UTF-8 byte order mark some editors write at the start of a file: not part of the JSON."""
GZIP_MAGIC = b"\x1f\x8b"
"""How a gzip stream begins (``.ndjson.gz`` of Bulk Data exports): read decompressed."""
UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
"""How UTF-16 text begins when its BOM says so (Windows PowerShell 5 writes it): read as
the UTF-8 it stands for."""
BROKEN_STREAM = (EOFError, zlib.error, gzip.BadGzipFile, UnicodeDecodeError)


@dataclass(frozen=True, slots=True)
class Batch:
    """A Bundle to run, and where it came from, for messages: the file, and where each
    entry is in it when the Bundle is the importer's own (``line 42`` of an NDJSON file,
    ``entry[3]`` of a searchset, nothing for a resource alone in its file)."""

    origin: str
    bundle: dict[str, Any]
    places: tuple[str, ...] | None = None
    """None: the Bundle is the file's own, its entries named as they are."""

    @property
    def size(self) -> int:
        return len(self.bundle.get("entry", []))

    @property
    def label(self) -> str:
        """Where the whole Bundle is: its file, or its lines there."""
        if not self.places:
            return self.origin
        first, last = self.places[0], self.places[-1]
        where = first if first == last else f"{first} to {last}"
        return f"{self.origin}: {where}" if where else self.origin

    def failure(self, index: int, diagnostics: str) -> str:
        """What went wrong with the entry ``index`` (as the BundleProcessor says, which
        names it ``entry[index]``), and where it is in its file."""
        ours = f"entry[{index}]"
        if self.places is None:
            named = diagnostics.startswith(ours)
            return f"{self.origin}: {diagnostics if named else f'{ours}: {diagnostics}'}"
        rest = next(
            (
                diagnostics.removeprefix(prefix)
                for prefix in (f"{ours}.resource", ours)
                if diagnostics.startswith(prefix)
            ),
            f": {diagnostics}",
        )
        place = self.places[index]
        return f"{self.origin}{f': {place}' if place else ''}{rest}"


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A line of an NDJSON file, or an entry of a searchset or collection, that holds no
    resource (not JSON, an array, a resourceType that is no type): reported, and the
    others still load."""

    origin: str
    diagnostics: str


_SPECIAL_FILES = (
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a folder"),
)


def _format(path: Path) -> str:
    """``.json`` or ``.ndjson``, by the name in any case (``.JSON``), ``.gz`` left aside."""
    return Path(path.name.lower().removesuffix(".gz")).suffix


def _regular(path: Path) -> io.BufferedReader:
    """The file, open for reading; a FhirError if it is no regular file. Opened without
    blocking, as a named pipe waits for a writer and a device such as /dev/zero never ends."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _SPECIAL_FILES if test(mode)), "a special file")
            raise FhirError(400, "not-supported", f"not a regular file ({kind}): not imported")
        os.set_blocking(fd, True)
        return io.BufferedReader(io.FileIO(fd, "rb"))
    except BaseException:
        os.close(fd)
        raise


@contextmanager
def _reading(path: Path) -> Iterator[BinaryIO]:
    """The file's bytes as UTF-8, decompressed if it is gzip (whatever its name), from
    UTF-16 if its byte order mark says so."""
    with _regular(path) as file:
        start = file.peek(len(GZIP_MAGIC))[: len(GZIP_MAGIC)]
        if start == GZIP_MAGIC:
            with gzip.GzipFile(fileobj=file) as unpacked:
                yield cast(BinaryIO, unpacked)
        elif start in UTF16_BOMS:
            yield cast(BinaryIO, codecs.EncodedFile(file, "utf-8", "utf-16"))
        else:
            yield file


def _broken(error: Exception) -> str:
    if isinstance(error, EOFError):
        return "the compressed data ends before its end (a copy cut short?)"
    if isinstance(error, UnicodeDecodeError):
        return f"the text is not valid UTF-16, as its byte order mark says ({error.reason})"
    return f"the compressed data is damaged ({error})"


def _importable(path: Path, leave_out: frozenset[Path]) -> bool:
    """Whether a folder's entry is for ``coffre import``: a file of FHIR JSON by its name,
    not hidden, not in ``leave_out``; a named pipe or device so named, and a link that
    leads nowhere or loops, is listed, to be refused by name."""
    return (
        _format(path) in (".json", ".ndjson")
        and not path.name.startswith(".")
        and not path.is_dir()
        and leave_out.isdisjoint((resolved := Path(os.path.realpath(path)), *resolved.parents))
    )


def _walk(folder: Path, leave_out: frozenset[Path]) -> list[Path]:
    """The files to import under ``folder``, and its subfolders that cannot be read (the
    import reports them by name); hidden ones (``.git``, macOS's ``._name.json``) left
    out; links to folders are not followed."""
    found: list[Path] = []

    def unreadable(error: OSError) -> None:
        found.append(Path(error.filename))

    for root, folders, names in os.walk(folder, onerror=unreadable):
        folders[:] = [name for name in folders if not name.startswith(".")]
        found.extend(p for name in names if _importable(p := Path(root, name), leave_out))
    return sorted(found)


def files_under(paths: list[Path], leave_out: Collection[Path] = ()) -> list[Path]:
    """The files named, and those in the folders named, recursively, in a stable order;
    in a folder, hidden files and folders are skipped, and so are ``leave_out`` and what
    is under it (the vault's folder and keyring). A file named twice, or through a link,
    is listed once, where it first appears."""
    left_out = frozenset(path.resolve() for path in leave_out)
    found: dict[Path, Path] = {}
    for path in paths:
        for file in _walk(path, left_out) if path.is_dir() else [path]:
            found.setdefault(Path(os.path.realpath(file)), file)  # a link loop too
    return list(found.values())


def empty_folders(paths: list[Path], leave_out: Collection[Path] = ()) -> list[Path]:
    """The folders named that hold no file ``files_under`` would import."""
    return [path for path in paths if path.is_dir() and not files_under([path], leave_out)]


DerivedId = Callable[[bytes, int], str]
"""The id of a created resource its file names in no way: from its canonical JSON, and
how many resources of its file had the same before it (so that equal ones stay apart)."""


def _source_id(entry: dict[str, Any]) -> str | None:
    """The id the file gives: ``resource.id``, the uuid of a ``urn:uuid:`` fullUrl, or the
    id at the end of an absolute fullUrl (``http://example.org/fhir/Patient/123``)."""
    resource = entry["resource"]
    if isinstance(resource.get("id"), str):
        return str(resource["id"])
    full_url = entry.get("fullUrl")
    if not isinstance(full_url, str):
        return None
    if full_url.startswith("urn:uuid:"):
        return full_url.removeprefix("urn:uuid:")
    named = parse_reference(full_url)
    return named[1] if named and named[0] == resource.get("resourceType") else None


def with_source_ids(
    bundle: dict[str, Any], derived: DerivedId, seen: Counter[bytes]
) -> dict[str, Any]:
    """Give each POSTed resource without an id the one its fullUrl names, or else the one
    ``derived`` from its content: importing the same files again finds it there. ``seen``
    counts the equal ones met before, in the same file's earlier Bundles too (an NDJSON
    file's chunks), so that each stays apart."""
    entries = bundle.get("entry")
    for entry in entries if isinstance(entries, list) else []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        request = entry.get("request") if isinstance(entry, dict) else None
        posted = isinstance(request, dict) and request.get("method") == "POST"
        if posted and isinstance(resource, dict) and "id" not in resource:
            source_id = _source_id(entry)
            if source_id is None:
                content = json.canonical(resource)
                seen[content] += 1
                source_id = derived(content, seen[content])
            resource["id"] = source_id
    return bundle


def _as_entry(resource: dict[str, Any]) -> dict[str, Any]:
    return {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}


def _batch_of(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "batch", "entry": [_as_entry(r) for r in resources]}


_JSON_KINDS = {
    dict: "a JSON object",
    list: "a JSON array",
    str: "a JSON string",
    bool: "a JSON boolean",
    type(None): "null",
}


def _json_kind(value: Any) -> str:
    return _JSON_KINDS.get(type(value), "a JSON number")


def _not_a_resource(value: Any) -> str | None:
    """What a JSON value is, if it cannot be a resource: an object whose resourceType
    names an R4 resource type (checked here, as the Bundle it is loaded in is the
    importer's own: a ``null`` or ``" Patient"`` would fail it whole)."""
    if not isinstance(value, dict):
        return _json_kind(value)
    if "resourceType" not in value:
        return "an object without a resourceType"
    kind = value["resourceType"]
    if isinstance(kind, str) and kind in RESOURCE_TYPES:
        return None
    shown = bounded(repr(kind)) if isinstance(kind, str) else _json_kind(kind)
    return f"its resourceType is not a resource type: {shown}"


def _ndjson(path: Path) -> Iterator[Batch | Unreadable]:
    chunk: list[Any] = []
    lines: list[str] = []
    with _reading(path) as file:
        try:
            for number, line in enumerate(file, start=1):
                line = line.removeprefix(BOM) if number == 1 else line
                if not line.strip():
                    continue
                try:
                    resource = json.loads(line, f"line {number}", json.MAX_DEPTH)
                except FhirError as error:
                    yield Unreadable(str(path), error.diagnostics)
                    continue
                if (what := _not_a_resource(resource)) is not None:
                    yield Unreadable(str(path), f"line {number} is not a FHIR resource ({what})")
                    continue
                chunk.append(resource)
                lines.append(f"line {number}")
                if len(chunk) == NDJSON_CHUNK:
                    yield Batch(str(path), _batch_of(chunk), tuple(lines))
                    chunk, lines = [], []
        except BROKEN_STREAM as error:  # what came before loads
            yield Unreadable(str(path), _broken(error))
    if chunk:
        yield Batch(str(path), _batch_of(chunk), tuple(lines))


_REFUSED_BUNDLES = {
    "history": "a history Bundle holds past versions and deletions, not what to load:"
    " import the current resources (a searchset, NDJSON, a Bulk Data export)",
    "transaction-response": "a transaction-response Bundle holds the outcome of a"
    " transaction, not resources to load: import the transaction itself",
    "batch-response": "a batch-response Bundle holds the outcome of a batch, not resources"
    " to load: import the batch itself",
}


def _unpacked(path: Path, bundle: dict[str, Any]) -> Iterator[Batch | Unreadable]:
    """A searchset's or collection's resources, as a batch of creates (a searchset's
    ``outcome`` entries left out), and each entry that holds no resource, which fails
    alone; a reference to another entry's fullUrl names its resource, which keeps its id."""
    entries = bundle.get("entry")
    kept: list[tuple[int, dict[str, Any]]] = []
    for index, entry in enumerate(entries if isinstance(entries, list) else []):
        entry = entry if isinstance(entry, dict) else {}
        search = entry.get("search")
        if isinstance(search, dict) and search.get("mode") == "outcome":
            continue
        if (what := _not_a_resource(entry.get("resource"))) is not None:
            yield Unreadable(str(path), f"entry[{index}].resource is not a FHIR resource ({what})")
        else:
            kept.append((index, entry))
    targets: dict[str, str] = {}
    for _, entry in kept:
        resource = entry["resource"]
        if isinstance(entry.get("fullUrl"), str):
            source_id = _source_id(entry)
            if source_id is not None:
                targets[entry["fullUrl"]] = f"{resource['resourceType']}/{source_id}"
    batch = _batch_of([entry["resource"] for _, entry in kept])
    for (_, entry), created in zip(kept, batch["entry"], strict=True):
        rewrite_references(created["resource"], targets.get)
        if isinstance(entry.get("fullUrl"), str):
            created["fullUrl"] = entry["fullUrl"]
    yield Batch(str(path), batch, tuple(f"entry[{index}]" for index, _ in kept))


def batches(path: Path) -> Iterator[Batch | Unreadable]:
    """The Bundles one file holds, and the lines of an NDJSON file that are not JSON;
    FhirError when a JSON file cannot be read as FHIR JSON.

    A transaction or batch runs as it is; a searchset's or a collection's resources load
    one by one; a document or a message is one record, stored whole, as is any other
    resource; a history or a response Bundle is refused."""
    if _format(path) == ".ndjson":
        yield from _ndjson(path)
        return
    with _reading(path) as file:
        try:
            body = file.read()
        except BROKEN_STREAM as error:
            raise FhirError(400, "structure", _broken(error)) from None
    content = json.loads(body.removeprefix(BOM), "the file", json.MAX_DEPTH)
    if (what := _not_a_resource(content)) is not None:
        raise FhirError(400, "structure", f"the file is not a FHIR resource ({what})")
    kind = content.get("type")
    if content["resourceType"] != "Bundle":
        yield Batch(str(path), _batch_of([content]), ("",))
    elif kind in ("transaction", "batch"):
        yield Batch(str(path), content)
    elif kind in ("searchset", "collection"):
        yield from _unpacked(path, content)
    elif kind in _REFUSED_BUNDLES:
        raise FhirError(400, "not-supported", _REFUSED_BUNDLES[kind])
    else:
        yield Batch(str(path), _batch_of([content]), ("",))
