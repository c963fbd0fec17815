"""Conformance on real data: every Synthea bundle of ../shared/data/synthea, imported.

One vault holds both folders (37,455 entries, 37,291 distinct resources; imported once per
test run and copied for this module, ``tests/synthea_vault.py``): ``fhir-data-pipes-2021``
(conditional references, ``ifNoneExist`` batches) and ``smart-2019`` (self-contained
``urn:uuid:`` transactions that repeat Organizations and Practitioners across bundles, with
different content under the same id).

What every resource should read back as is computed here from the input files alone, by
the rule an import follows, never by asking Coffre:

- a resource keeps the id its file gives it (the importer keeps source ids), and each
  ``urn:uuid:X`` reference becomes ``<Type of the entry whose fullUrl is urn:uuid:X>/<its id>``;
- a conditional reference ``Type?identifier=system|value`` becomes ``Type/<id>`` of the
  resource written earlier with that identifier;
- an import never overwrites: the FIRST occurrence of a ``Type/id`` in load order wins
  (each later one with other content reported as a conflict), and a POST whose
  ``ifNoneExist`` identifier is already there writes nothing;
- load order: the files in the order given to the importer (here the information bundles
  of both folders first, then the patient bundles, each group in ``files_under`` order),
  except that a bundle with a conditional reference that does not resolve yet waits until
  every other file is in (the importer defers it), and then loads in its original order.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sqlite3
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from synthea_vault import synthea_files, synthea_vault_copy

from coffre.cli.importer import Importer, ImportReport
from coffre.fhir._definitions_r4 import RESOURCE_TYPES
from coffre.service import RecordStore, Vault

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]

SERVER_META = ("versionId", "lastUpdated")

Key = tuple[str, str]


# -- the vault ----------------------------------------------------------------------------


@dataclass
class SyntheaVault:
    vault: Vault
    records: RecordStore
    files: list[Path]
    report: ImportReport


@pytest.fixture(scope="module")
def synthea(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyntheaVault]:
    vault, report = synthea_vault_copy(tmp_path_factory, tmp_path_factory.mktemp("synthea") / "v")
    records = vault.open()
    yield SyntheaVault(vault, records, synthea_files(), report)
    records.storage.close()


# -- what should be there, from the input alone ------------------------------------------


@dataclass
class Expected:
    """Each Type/id as it should read back, from the input alone."""

    resources: dict[Key, dict[str, Any]] = field(default_factory=dict)
    entries: int = 0
    repeats: dict[Key, list[dict[str, Any]]] = field(default_factory=dict)  # later, not written
    deferred: list[str] = field(default_factory=list)


def _references(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str):
            yield node
        for value in node.values():
            yield from _references(value)
    elif isinstance(node, list):
        for value in node:
            yield from _references(value)


def _identifier_query(resource_type: str, query: str) -> tuple[str, str, str]:
    """``identifier=system|value`` → (type, system, value)."""
    (name, token), *rest = parse_qsl(query, keep_blank_values=True)
    assert name == "identifier" and not rest, query
    system, _, value = token.partition("|")
    return resource_type, system, value


def _conditional(reference: str) -> tuple[str, str, str] | None:
    resource_type, mark, query = reference.partition("?")
    return _identifier_query(resource_type, query) if mark else None


def _expected(files: list[Path]) -> Expected:
    expected = Expected()
    known: dict[tuple[str, str, str], str] = {}  # (type, system, value) → id

    def resolves(bundle: dict[str, Any]) -> bool:
        conditionals = (_conditional(ref["reference"]) for ref in _references(bundle))
        return all(c in known for c in conditionals if c is not None)

    def load(bundle: dict[str, Any]) -> None:
        targets = {
            entry["fullUrl"]: f"{entry['resource']['resourceType']}/{entry['resource']['id']}"
            for entry in bundle["entry"]
            if "fullUrl" in entry
        }
        for entry in bundle["entry"]:
            resource = entry["resource"]
            key = (resource["resourceType"], resource["id"])
            expected.entries += 1
            condition = entry["request"].get("ifNoneExist")
            if key in expected.resources or (
                condition and _identifier_query(key[0], condition) in known
            ):
                expected.repeats.setdefault(key, []).append(resource)
                continue
            for reference in _references(resource):
                value = reference["reference"]
                if value.startswith("urn:uuid:"):
                    reference["reference"] = targets[value]
                elif (conditional := _conditional(value)) is not None:
                    reference["reference"] = f"{conditional[0]}/{known[conditional]}"
            expected.resources[key] = resource
            for identifier in resource.get("identifier", []):
                if "value" in identifier:
                    system = identifier.get("system", "")
                    known.setdefault((key[0], system, identifier["value"]), key[1])

    waiting = []
    for path in files:
        bundle = json.loads(path.read_bytes())
        if resolves(bundle):
            load(bundle)
        else:
            waiting.append(bundle)
            expected.deferred.append(path.name)
    for bundle in waiting:
        assert resolves(bundle), "a conditional reference matches nothing in the input"
        load(bundle)
    return expected


@pytest.fixture(scope="module")
def expected(synthea: SyntheaVault) -> Expected:
    return _expected(synthea.files)


def _without_server_meta(resource: dict[str, Any]) -> dict[str, Any]:
    trimmed = {k: v for k, v in resource.items() if k != "meta"}
    meta = {k: v for k, v in resource.get("meta", {}).items() if k not in SERVER_META}
    if meta:
        trimmed["meta"] = meta
    return trimmed


def _difference(want: Any, got: Any, path: str) -> str | None:
    """Where two JSON values first differ, in words."""
    if isinstance(want, dict) and isinstance(got, dict):
        for key in sorted(want.keys() | got.keys()):
            if key not in got:
                return f"{path}.{key} is missing"
            if key not in want:
                return f"{path}.{key} was added: {got[key]!r:.200}"
            found = _difference(want[key], got[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(want, list) and isinstance(got, list):
        if len(want) != len(got):
            return f"{path} has {len(got)} items, not {len(want)}"
        for i, (a, b) in enumerate(zip(want, got, strict=True)):
            found = _difference(a, b, f"{path}[{i}]")
            if found:
                return found
        return None
    if want != got or type(want) is not type(got):
        return f"{path} is {got!r:.200}, not {want!r:.200}"
    return None


# -- (a) every resource reads back as it went in -----------------------------------------


def test_the_import_writes_one_version_per_distinct_resource(
    synthea: SyntheaVault, expected: Expected
) -> None:
    # each: 201 created, 200 already there, or kept as stored with other content (a conflict)
    assert expected.entries == synthea.report.resources + len(synthea.report.conflicts)
    assert synthea.report.versions_written == len(expected.resources)
    # The information bundles went first, so no patient bundle had to wait.
    assert expected.deferred == []


def test_every_resource_reads_back_as_it_went_in(synthea: SyntheaVault, expected: Expected) -> None:
    mismatches = []
    for (resource_type, resource_id), want in expected.resources.items():
        stored = synthea.records.read(resource_type, resource_id)
        got = stored.resource()
        assert got["meta"]["versionId"] == "1" == str(stored.version)
        difference = _difference(_without_server_meta(want), _without_server_meta(got), "")
        if difference:
            mismatches.append(f"{resource_type}/{resource_id}{difference}")
    assert len(expected.resources) > 37_000
    assert not mismatches, f"{len(mismatches)} resources differ:\n" + "\n".join(mismatches[:20])


def test_a_repeated_id_keeps_its_first_content(synthea: SyntheaVault, expected: Expected) -> None:
    """smart-2019 repeats Organizations and Practitioners with other content: the first stays."""
    overwritten = []
    differing = 0
    for key, later in expected.repeats.items():
        got = _without_server_meta(synthea.records.read(*key).resource())
        for occurrence in later:
            if occurrence != expected.resources[key]:
                differing += 1
                if got == occurrence:
                    overwritten.append(key)
    assert differing > 90
    assert overwritten == []
    assert len(synthea.report.conflicts) == differing  # each said, none taken silently


# -- (b) a second import writes nothing --------------------------------------------------


def test_a_second_import_of_the_same_files_writes_no_version(synthea: SyntheaVault) -> None:
    last_seq = synthea.records.storage.last_seq()
    report = Importer(synthea.records).run(synthea.files)
    assert report.failures == [], "\n".join(report.failures[:20])
    assert report.versions_written == 0
    assert report.resources == synthea.report.resources
    assert report.conflicts == synthea.report.conflicts
    assert synthea.records.storage.last_seq() == last_seq


# -- (c) nothing readable in the storage file --------------------------------------------

MIN_NEEDLE = 6  # bytes; shorter ones would turn up by chance in 100 MB of ciphertext


@dataclass(frozen=True)
class Needle:
    what: str
    encoding: str


def _base64_core(raw: bytes, shift: int) -> bytes:
    """The base64 characters that depend on ``raw`` alone, when it starts ``shift`` bytes
    into a 3-byte group of a longer base64 text."""
    encoded = base64.b64encode(b"\0" * shift + raw)
    return encoded[-(-8 * shift // 6) : 8 * (shift + len(raw)) // 6]


def _encodings(text: str) -> Iterator[tuple[str, bytes]]:
    raw = text.encode()
    yield "UTF-8", raw
    yield "UTF-16-LE", text.encode("utf-16-le")
    yield "hex", raw.hex().encode()
    yield "HEX", raw.hex().upper().encode()
    for shift in range(3):
        yield f"base64 (at offset {shift} of a group)", _base64_core(raw, shift)


def _forms(text: str) -> list[str]:
    """A text long enough to be telling is looked for as it is; a shorter one as the JSON
    string it would be in a resource (``"Goal"``), and if still short, with the character
    that must come before a string in compact JSON (``:"Orn"``, ``["Ian"``)."""
    if len(text.encode()) >= MIN_NEEDLE:
        return [text]
    quoted = json.dumps(text, ensure_ascii=False)
    if len(quoted.encode()) >= MIN_NEEDLE:
        return [quoted]
    forms = [before + quoted for before in "{[,:"]
    if len(quoted.encode()) + 1 >= MIN_NEEDLE:
        return forms
    return [form + after for form in forms for after in ",]}:"]


def _needles(texts: dict[str, str]) -> dict[bytes, Needle]:
    """Each text, in each of its forms, in every encoding."""
    needles: dict[bytes, Needle] = {}
    for text, what in texts.items():
        for form in _forms(text):
            shown = repr(text) if form == text else f"{text!r} (as {form!r})"
            for encoding, needle in _encodings(form):
                if len(needle) >= MIN_NEEDLE:
                    needles.setdefault(needle, Needle(f"{what} {shown}", encoding))
    return needles


class NeedleScan:
    """Finds a great many needles in a large haystack, in pure Python, in one pass or two.

    Every needle's bytes come from a small alphabet (text, or UTF-16 code units of text),
    and sealed data is random: one regex (C speed) cuts the haystack into the few runs of
    that alphabet that are long enough, and only inside a run is each position looked up,
    by its first bytes. A UTF-16 needle beyond U+00FF (none in Synthea) is searched alone.
    """

    def __init__(self, needles: dict[bytes, Needle]) -> None:
        self.by_prefix: dict[bytes, list[bytes]] = defaultdict(list)
        self.one_by_one: list[bytes] = []
        plain: list[bytes] = []
        utf16: list[bytes] = []
        for needle, about in needles.items():
            if about.encoding != "UTF-16-LE":
                plain.append(needle)
            elif any(needle[1::2]):
                self.one_by_one.append(needle)
                continue
            else:
                utf16.append(needle)
            self.by_prefix[needle[:MIN_NEEDLE]].append(needle)
        # (regex, step): a run of at least MIN_NEEDLE bytes; unrolled, which sre runs faster.
        self.runs: list[tuple[re.Pattern[bytes], int]] = []
        if plain:
            byte = _class_of(set(b"".join(plain)))
            self.runs.append((re.compile(byte * MIN_NEEDLE + byte + b"*"), 1))
        if utf16:
            unit = _class_of(set(b"".join(needle[0::2] for needle in utf16))) + b"\\x00"
            pattern = unit * (MIN_NEEDLE // 2) + b"(?:" + unit + b")*"
            self.runs.append((re.compile(pattern), 2))

    def find(self, haystack: bytes) -> dict[bytes, int]:
        """Each needle found, with the offset of its first occurrence."""
        found: dict[bytes, int] = {}
        for runs, step in self.runs:
            for run in runs.finditer(haystack):
                text, start = run.group(), run.start()
                for i in range(0, len(text) - MIN_NEEDLE + 1, step):
                    for needle in self.by_prefix.get(text[i : i + MIN_NEEDLE], ()):
                        if text.startswith(needle, i):
                            found.setdefault(needle, start + i)
        for needle in self.one_by_one:
            if (offset := haystack.find(needle)) >= 0:
                found.setdefault(needle, offset)
        return found


def _class_of(values: set[int]) -> bytes:
    assert 0 not in values
    return b"[" + b"".join(re.escape(bytes([value])) for value in sorted(values)) + b"]"


def _codes(concept: Any) -> Iterator[str]:
    for coding in (concept or {}).get("coding", []):
        if isinstance(coding.get("code"), str):
            yield coding["code"]


def _sensitive_texts(expected: Expected) -> dict[str, str]:
    """What must never be readable: patients' names, identifiers, birth dates, contact
    details; clinical codes; every resource id; every resource type name."""
    texts: dict[str, str] = {}
    for (resource_type, _), resource in expected.resources.items():
        if resource_type == "Patient":
            for name in resource.get("name", []):
                if "family" in name:
                    texts.setdefault(name["family"], "a patient's family name")
                for given in name.get("given", []):
                    texts.setdefault(given, "a patient's given name")
            for identifier in resource.get("identifier", []):
                texts.setdefault(identifier["value"], "a patient identifier")  # SSN, MRN, ...
            if "birthDate" in resource:
                texts.setdefault(resource["birthDate"], "a patient's birth date")
            for telecom in resource.get("telecom", []):
                texts.setdefault(telecom["value"], "a patient's phone number")
            for address in resource.get("address", []):
                for line in address.get("line", []):
                    texts.setdefault(line, "a patient's address")
        elif resource_type in ("Condition", "Observation"):
            for code in _codes(resource.get("code")):
                if len(code) >= 5:
                    texts.setdefault(code, f"a code of {resource_type}")
    for resource_type, resource_id in expected.resources:
        texts.setdefault(resource_id, f"the id of {resource_type}")
        texts.setdefault(resource_type, "the resource type")
    return texts


def test_the_needle_scan_finds_what_it_looks_for() -> None:
    """The scanner's own check: planted needles are found, in every encoding, at any offset."""
    texts = {"Montañez": "a name", "1987-06-15": "a date", "Goal": "a type", "Orn": "a name"}
    texts |= {"Li": "a name", "8302-2": "a code", "Łódź": "a city beyond U+00FF"}
    needles = _needles(texts)
    scan = NeedleScan(needles)
    for needle in needles:
        for offset in (0, 1, 2, 1001):
            haystack = os.urandom(offset) + b"\xff" + needle + b"\xfe" + os.urandom(50)
            assert needle in scan.find(haystack), (needle, needles[needle])
    for text, what in texts.items():  # in a JSON resource: as text, or within base64 or hex
        resource = json.dumps({"v": [text]}, ensure_ascii=False, separators=(",", ":"))
        for prefix in ("", "x", "xy"):
            raw = (prefix + resource).encode()
            for haystack in (raw, base64.b64encode(raw), raw.hex().encode()):
                found = scan.find(b"\0" + haystack + b"\0")
                assert any(needles[n].what.startswith(f"{what} {text!r}") for n in found), text
            found = scan.find(b"\0" + (prefix + resource).encode("utf-16-le") + b"\0")
            assert found, text
    assert scan.find(os.urandom(1 << 16)) == {}


def _storage_bytes(vault: Vault) -> list[tuple[str, bytes]]:
    connection = sqlite3.connect(vault.storage_path)
    try:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        connection.close()
    files = [vault.storage_path]
    files += [Path(f"{vault.storage_path}{suffix}") for suffix in ("-wal", "-journal")]
    return [(path.name, path.read_bytes()) for path in files if path.exists()]


def test_the_storage_file_holds_nothing_readable(synthea: SyntheaVault, expected: Expected) -> None:
    texts = _sensitive_texts(expected)
    assert sum(what == "a patient's family name" for what in texts.values()) >= 100
    needles = _needles(texts)
    scan = NeedleScan(needles)
    leaks = []
    stored = _storage_bytes(synthea.vault)
    assert len(stored[0][1]) > 10_000_000  # the main file, with every sealed version
    for name, content in stored:
        for needle, offset in sorted(scan.find(content).items(), key=lambda item: item[1]):
            about = needles[needle]
            leaks.append(
                f"{about.what}, in {about.encoding}, at offset {offset} of {name}: {needle!r}"
            )
    assert not leaks, f"{len(leaks)} readable values in the storage:\n" + "\n".join(leaks[:30])


def test_the_storage_schema_names_no_resource_type(synthea: SyntheaVault) -> None:
    connection = sqlite3.connect(f"file:{synthea.vault.storage_path}?mode=ro", uri=True)
    try:
        rows = connection.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
    finally:
        connection.close()
    schema = "\n".join(" ".join(str(value) for value in row) for row in rows)
    words = {word.lower() for word in re.findall(r"[A-Za-z]+", schema)}
    for resource_type in RESOURCE_TYPES:
        assert resource_type not in schema, resource_type
        assert resource_type.lower() not in words, resource_type


def test_the_index_tables_hold_only_opaque_tokens(
    synthea: SyntheaVault, expected: Expected
) -> None:
    """Search values never reach the host as text: not as written, not normalised as search
    compares them (lower case), not as the index keys the gateway hashes (``x|Smith``)."""
    texts = _sensitive_texts(expected)
    searched = dict(texts)
    for text, what in texts.items():
        searched.setdefault(text.lower(), f"{what}, normalised")
        searched.setdefault(f"x|{text}", f"{what}, as an index key")
    needles = _needles(searched)
    connection = sqlite3.connect(f"file:{synthea.vault.storage_path}?mode=ro", uri=True)
    try:
        sets = connection.execute("SELECT tokens, loc FROM token_sets").fetchall()
        index = connection.execute("SELECT block FROM token_index_data").fetchall()
    finally:
        connection.close()
    rows = [(joined[at : at + 10], loc) for joined, loc in sets for at in range(0, len(joined), 10)]
    assert len(rows) > 100_000
    assert {len(joined) % 10 for joined, _ in sets} == {0}  # a domain, 2 bytes of value
    scan = NeedleScan(needles)
    found = scan.find(b"\0".join(token + loc for token, loc in rows))
    found |= scan.find(b"\0".join(block for (block,) in index))
    assert not found, [needles[needle].what for needle in found][:30]
