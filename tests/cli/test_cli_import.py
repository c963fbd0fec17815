"""``coffre import`` on the files an operator meets: what loads, what is reported, and how."""

from __future__ import annotations

import codecs
import gzip
import json
import os
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing, suppress
from pathlib import Path

import pytest
from cli.test_cli_commands import _run
from conftest import COMPOSITION, ROOT, shared_data_path

from coffre.exceptions import FhirError
from coffre.search.criteria import parse_criteria
from coffre.service import Vault
from coffre.service import ledger as ledger_module


def _vault(tmp_path: Path) -> Path:
    folder = tmp_path / "v"
    assert _run("init", str(folder))[0] == 0
    return folder


def _loaded(folder: Path, *ids: str) -> set[str]:
    """Which of these Patient ids the vault holds."""
    records = Vault.at(folder).open()
    found = set()
    try:
        for pid in ids:
            with suppress(FhirError):
                found.add(records.read("Patient", pid).id)
    finally:
        records.storage.close()
    return found


def test_a_bad_ndjson_line_is_reported_by_line_and_the_others_load(tmp_path: Path) -> None:
    vault = _vault(tmp_path)
    lines = [
        '{"resourceType":"Patient","id":"g1"}',
        "",
        "{not json",
        '{"resourceType":"Patient","id":"g2"}',
        '{"resourceType":"Patient","id":"g3","gender":"x"}',
        '{"resourceType":"Patient","id":"g4"}',  # no newline after the last line
    ]
    (tmp_path / "mixed.ndjson").write_text("\n".join(lines))
    code, output = _run("import", "--vault", str(vault), str(tmp_path / "mixed.ndjson"))
    assert code == 1
    assert "mixed.ndjson: line 3 is not valid JSON" in output
    assert "mixed.ndjson: line 5 is not a valid Patient: Patient.gender" in output
    assert "3 resources from 1 files" in output and "2 failures" in output
    assert _loaded(vault, "g1", "g2", "g3", "g4") == {"g1", "g2", "g4"}


def test_files_saved_with_a_byte_order_mark_load(tmp_path: Path) -> None:
    """Windows tools write UTF-8 with a BOM, and CRLF line endings."""
    vault = _vault(tmp_path)
    bom = b"\xef\xbb\xbf"
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "one.json").write_bytes(bom + b'{"resourceType":"Patient","id":"b1"}')
    (folder / "many.ndjson").write_bytes(
        bom + b'{"resourceType":"Patient","id":"b2"}\r\n{"resourceType":"Patient","id":"b3"}\r\n'
    )
    code, output = _run("import", "--vault", str(vault), str(folder))
    assert code == 0, output
    assert _loaded(vault, "b1", "b2", "b3") == {"b1", "b2", "b3"}


def test_a_path_that_does_not_exist_is_reported_and_the_others_load(tmp_path: Path) -> None:
    vault = _vault(tmp_path)
    (tmp_path / "good.json").write_text('{"resourceType":"Patient","id":"m1"}')
    missing = tmp_path / "typo.ndjson"
    code, output = _run("import", "--vault", str(vault), str(missing), str(tmp_path / "good.json"))
    assert code == 1
    assert "typo.ndjson: cannot be read: No such file or directory" in output
    assert "1 failures" in output
    assert _loaded(vault, "m1") == {"m1"}


def _counts(folder: Path) -> tuple[int, int]:
    """The storage's versions and the log's leaves."""
    records = Vault.at(folder).open()
    try:
        return records.storage.last_seq(), records.storage.leaf_count()
    finally:
        records.storage.close()


def test_a_second_import_of_resources_without_ids_changes_nothing(tmp_path: Path) -> None:
    vault = _vault(tmp_path)
    folder = tmp_path / "in"
    folder.mkdir()
    twin = '{"resourceType":"Observation","status":"final","code":{"text":"pulse"}}'
    (folder / "no-ids.ndjson").write_text(
        f'{{"resourceType":"Patient","name":[{{"family":"Sans-Id"}}]}}\n{twin}\n{twin}\n'
    )
    (folder / "one.json").write_text('{"resourceType":"Patient","gender":"female"}')
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "http://example.org/fhir/Patient/abs1",
                "resource": {"resourceType": "Patient", "gender": "male"},
                "request": {"method": "POST", "url": "Patient"},
            },
            {"resource": json.loads(twin), "request": {"method": "POST", "url": "Observation"}},
            {"resource": json.loads(twin), "request": {"method": "POST", "url": "Observation"}},
        ],
    }
    (folder / "bundle.json").write_text(json.dumps(bundle))
    code, output = _run("import", "--vault", str(vault), str(folder))
    # the twins of the bundle are those of the NDJSON file: two Observations, not four
    assert code == 0 and "7 resources from 3 files; 5 new versions written" in output, output
    assert _loaded(vault, "abs1") == {"abs1"}
    before = _counts(vault)
    code, output = _run("import", "--vault", str(vault), str(folder))
    assert code == 0 and "7 resources from 3 files; 0 new versions written" in output, output
    assert _counts(vault) == before


def test_a_record_deleted_since_the_first_import_stays_deleted(tmp_path: Path) -> None:
    """A re-run (after an interruption, say) leaves deleted what was deleted in between,
    whether the file names its id or the import derived one."""
    vault = _vault(tmp_path)
    source = tmp_path / "in.ndjson"
    source.write_text(
        '{"resourceType":"Patient","id":"ri-1"}\n{"resourceType":"Patient","gender":"other"}\n'
    )
    assert _run("import", "--vault", str(vault), str(source))[0] == 0
    records = Vault.at(vault).open()
    try:
        derived = records.find("Patient", parse_criteria("gender=other"))[0].id
        with records.writer() as writer:
            for patient_id in ("ri-1", derived):
                writer.delete("Patient", patient_id)
    finally:
        records.storage.close()
    code, output = _run("import", "--vault", str(vault), str(source))
    assert code == 0 and "2 resources from 1 files; 0 new versions written" in output, output
    assert _loaded(vault, "ri-1", derived) == set()


def _transaction(resource: dict[str, object]) -> str:
    entry = {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}
    return json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": [entry]})


def test_bundles_that_wait_for_each_other_load_whatever_their_order(tmp_path: Path) -> None:
    """a names b's organisation, b names c's: a and b both wait, and both load."""
    vault = _vault(tmp_path)
    folder = tmp_path / "in"
    folder.mkdir()
    system = "https://example.org/org"

    def organization(key: str) -> dict[str, object]:
        return {"resourceType": "Organization", "identifier": [{"system": system, "value": key}]}

    (folder / "a.json").write_text(
        _transaction(
            {
                "resourceType": "Patient",
                "id": "chained",
                "managingOrganization": {"reference": f"Organization?identifier={system}|b"},
            }
        )
    )
    (folder / "b.json").write_text(
        _transaction(
            organization("b") | {"partOf": {"reference": f"Organization?identifier={system}|c"}}
        )
    )
    (folder / "c.json").write_text(_transaction(organization("c")))
    code, output = _run("import", "--vault", str(vault), str(folder))
    assert code == 0, output
    assert "3 new versions written" in output
    assert _loaded(vault, "chained") == {"chained"}


def test_hidden_files_and_folders_of_a_folder_are_left_alone(tmp_path: Path) -> None:
    """macOS leaves ``._name.json`` files of binary metadata beside copied files."""
    vault = _vault(tmp_path)
    folder = tmp_path / "in"
    (folder / ".git").mkdir(parents=True)
    (folder / "p.json").write_text('{"resourceType":"Patient","id":"seen"}')
    (folder / "._p.json").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X")
    (folder / ".git" / "x.json").write_text('{"resourceType":"Patient","id":"unseen"}')
    code, output = _run("import", "--vault", str(vault), str(folder))
    assert code == 0 and "1 resources from 1 files" in output, output
    assert _loaded(vault, "seen", "unseen") == {"seen"}


def test_a_folder_with_nothing_to_import_is_reported(tmp_path: Path) -> None:
    """A wrong folder, or one whose only files are a symlink loop, is no silent success:
    the links of the loop are named."""
    vault = _vault(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    looping = tmp_path / "looping"
    looping.mkdir()
    (looping / "a.json").symlink_to("b.json")
    (looping / "b.json").symlink_to("a.json")
    (looping / "self").symlink_to(looping)
    (tmp_path / "good.json").write_text('{"resourceType":"Patient","id":"e1"}')
    code, output = _run(
        "import", "--vault", str(vault), str(empty), str(looping), str(tmp_path / "good.json")
    )
    assert code == 1, output
    assert f"{empty}: no .json or .ndjson file in it" in output
    for name in ("a.json", "b.json"):
        assert f"{looping / name}: cannot be read: Too many levels of symbolic links" in output
    assert "3 failures" in output
    assert _loaded(vault, "e1") == {"e1"}


def _import_in_a_process(
    vault: Path, *paths: Path, prefix: tuple[str, ...] = ()
) -> tuple[int, str]:
    """The command in a process of its own (started through ``prefix``), so that a read
    that blocks fails the test instead of hanging the suite; its exit status and output."""
    command = [sys.executable, "-m", "coffre", "import", "--vault", str(vault)]
    done = subprocess.run(
        [*prefix, *command, *map(str, paths)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    return done.returncode, done.stdout


def test_a_fifo_is_refused_by_name_without_waiting_for_a_writer(tmp_path: Path) -> None:
    """A named pipe has no end: read, it blocks until some process writes to it."""
    vault = _vault(tmp_path)
    folder = tmp_path / "in"
    folder.mkdir()
    os.mkfifo(folder / "pipe.ndjson")
    os.mkfifo(tmp_path / "named.json")
    (folder / "good.json").write_text('{"resourceType":"Patient","id":"f1"}')
    code, output = _import_in_a_process(vault, tmp_path / "named.json", folder)
    assert code == 1, output
    assert f"{tmp_path / 'named.json'}: not a regular file (a named pipe)" in output
    assert f"{folder / 'pipe.ndjson'}: not a regular file (a named pipe)" in output
    assert "1 resources from 3 files" in output and "2 failures" in output
    assert _loaded(vault, "f1") == {"f1"}


def test_gzip_compressed_files_load(tmp_path: Path) -> None:
    """Bulk Data exports and many tools write ``.ndjson.gz``."""
    vault = _vault(tmp_path)
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "Patient.ndjson.gz").write_bytes(
        gzip.compress(
            b'{"resourceType":"Patient","id":"z1"}\n{"resourceType":"Patient","id":"z2"}\n'
        )
    )
    (tmp_path / "one.json.gz").write_bytes(gzip.compress(b'{"resourceType":"Patient","id":"z3"}'))
    lines = "".join(f'{{"resourceType":"Patient","id":"z4-{n}"}}\n' for n in range(2000))
    (folder / "cut.ndjson.gz").write_bytes(gzip.compress(lines.encode())[:-100])  # a copy cut short
    code, output = _run("import", "--vault", str(vault), str(folder), str(tmp_path / "one.json.gz"))
    assert code == 1, output
    assert f"{folder / 'cut.ndjson.gz'}: the compressed data ends before its end" in output
    assert "1 failures" in output
    # what comes before the cut loads
    assert _loaded(vault, "z1", "z2", "z3", "z4-0", "z4-999") == {
        "z1",
        "z2",
        "z3",
        "z4-0",
        "z4-999",
    }


def test_a_folder_holding_the_vault_imports_its_files_and_leaves_the_vault_alone(
    tmp_path: Path,
) -> None:
    """``coffre init data/vault`` then ``coffre import data``: the keyring is a .json file
    of secret keys, never a FHIR file to read."""
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "p.json").write_text('{"resourceType":"Patient","id":"inside"}')
    vault = folder / "vault"
    assert _run("init", str(vault))[0] == 0
    code, output = _run("import", "--vault", str(vault), str(folder))
    assert code == 0, output
    assert "keyring" not in output and "1 resources from 1 files" in output
    assert _loaded(vault, "inside") == {"inside"}


UNPRIVILEGED = ("setpriv", "--bounding-set", "-dac_override,-dac_read_search")
"""Root reads files whatever their mode (CAP_DAC_OVERRIDE): a process started through
this (util-linux, in Debian's base system) cannot, as an operator's account cannot."""


def _unprivileged() -> tuple[str, ...]:
    """What starts a process that file modes keep out, or a skip (a failure under CI)."""
    if os.geteuid() != 0:
        return ()
    try:
        subprocess.run([*UNPRIVILEGED, "true"], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as error:
        message = f"root reads every file, and setpriv cannot drop that right: {error}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return UNPRIVILEGED


def test_a_file_or_folder_that_cannot_be_read_is_reported_and_the_others_load(
    tmp_path: Path,
) -> None:
    vault = _vault(tmp_path)
    folder = tmp_path / "in"
    (folder / "locked").mkdir(parents=True)
    (folder / "locked" / "x.json").write_text('{"resourceType":"Patient","id":"hidden"}')
    (folder / "p.json").write_text('{"resourceType":"Patient","id":"r1"}')
    (tmp_path / "secret.json").write_text('{"resourceType":"Patient","id":"r2"}')
    (tmp_path / "good.json").write_text('{"resourceType":"Patient","id":"r3"}')
    prefix = _unprivileged()
    for locked in (folder / "locked", tmp_path / "secret.json"):
        locked.chmod(0)
    try:
        code, output = _import_in_a_process(
            vault, tmp_path / "secret.json", folder, tmp_path / "good.json", prefix=prefix
        )
    finally:
        (folder / "locked").chmod(0o700)
    assert code == 1, output
    assert f"{tmp_path / 'secret.json'}: cannot be read: Permission denied" in output
    assert f"{folder / 'locked'}: cannot be read: Permission denied" in output
    assert "2 failures" in output
    assert _loaded(vault, "r1", "r2", "r3") == {"r1", "r3"}


def test_an_ndjson_line_that_is_no_resource_is_reported_by_its_line_alone(tmp_path: Path) -> None:
    """The Bundle the lines are loaded in is the importer's own: its entries are no
    business of whoever wrote the file."""
    vault = _vault(tmp_path)
    lines = ["[1]", '"Patient"', "null", "{}", '{"resourceType":5}', '{"resourceType":"Patient"}']
    lines += ['{"resourceType":"Patient","id":"l7","gender":"x"}']
    (tmp_path / "odd.ndjson").write_text("\n".join(lines) + "\n")
    code, output = _run("import", "--vault", str(vault), str(tmp_path / "odd.ndjson"))
    assert code == 1, output
    for number, what in enumerate(
        ("a JSON array", "a JSON string", "null", "an object without a resourceType"), start=1
    ):
        assert f"odd.ndjson: line {number} is not a FHIR resource ({what})" in output, output
    assert (
        "odd.ndjson: line 5 is not a FHIR resource (its resourceType is not a resource type:"
        " a JSON number)" in output
    ), output
    assert "odd.ndjson: line 7 is not a valid Patient: Patient.gender" in output, output
    assert "entry[" not in output and "request url" not in output, output
    assert "1 resources from 1 files" in output and "6 failures" in output, output


def test_utf16_files_with_a_byte_order_mark_load(tmp_path: Path) -> None:
    """What Windows PowerShell 5 writes with ``>`` or ``Out-File``: UTF-16 with its BOM."""
    vault = _vault(tmp_path)
    one = '{"resourceType":"Patient","id":"w1","name":[{"family":"Hébert"}]}'
    many = '{"resourceType":"Patient","id":"w2"}\r\n{"resourceType":"Patient","id":"w3"}\r\n'
    (tmp_path / "one.json").write_bytes(one.encode("utf-16"))  # the machine's order, and BOM
    (tmp_path / "many.ndjson").write_bytes(codecs.BOM_UTF16_BE + many.encode("utf-16-be"))
    code, output = _run(
        "import", "--vault", str(vault), str(tmp_path / "one.json"), str(tmp_path / "many.ndjson")
    )
    assert code == 0, output
    assert "3 resources from 2 files" in output
    assert _loaded(vault, "w1", "w2", "w3") == {"w1", "w2", "w3"}
    records = Vault.at(vault).open()
    try:
        assert json.loads(records.read("Patient", "w1").body)["name"] == [{"family": "Hébert"}]
    finally:
        records.storage.close()


def _bundle(kind: str, *entries: dict[str, object]) -> str:
    return json.dumps({"resourceType": "Bundle", "type": kind, "entry": list(entries)})


def test_a_searchset_or_collection_loads_its_resources_and_a_history_is_refused(
    tmp_path: Path,
) -> None:
    """A search saved from another server, or a collection, holds resources to load; a
    document is one record, kept whole; a history holds past versions and deletions."""
    vault = _vault(tmp_path)
    other = "https://other.example/fhir"
    (tmp_path / "search.json").write_text(
        _bundle(
            "searchset",
            {
                "fullUrl": f"{other}/Patient/s1",
                "resource": {"resourceType": "Patient", "id": "s1"},
                "search": {"mode": "match"},
            },
            {
                "resource": {"resourceType": "OperationOutcome", "issue": []},
                "search": {"mode": "outcome"},
            },
            {
                "fullUrl": f"{other}/Patient/s2",
                "resource": {"resourceType": "Patient", "id": "s2", "gender": "x"},
                "search": {"mode": "match"},
            },
        )
    )
    uuid = "urn:uuid:8f5e3b1e-2a4c-4d6e-9f00-0a1b2c3d4e5f"
    (tmp_path / "collection.json").write_text(
        _bundle(
            "collection",
            {"fullUrl": uuid, "resource": {"resourceType": "Patient"}},
            {
                "resource": {
                    "resourceType": "Observation",
                    "id": "c-obs",
                    "status": "final",
                    "code": {"text": "pulse"},
                    "subject": {"reference": uuid},
                }
            },
        )
    )
    (tmp_path / "history.json").write_text(
        _bundle("history", {"resource": {"resourceType": "Patient", "id": "h1"}})
    )
    (tmp_path / "document.json").write_text(
        json.dumps(
            {
                "resourceType": "Bundle",
                "id": "doc1",
                "type": "document",
                "identifier": {"system": "urn:ietf:rfc:3986", "value": "urn:uuid:0c3151bd"},
                "entry": [{"fullUrl": "urn:uuid:0c3151bd-1", "resource": COMPOSITION}],
            }
        )
    )
    names = ("search.json", "collection.json", "history.json", "document.json")
    code, output = _run("import", "--vault", str(vault), *(str(tmp_path / n) for n in names))
    assert code == 1, output
    assert "search.json: entry[2] is not a valid Patient: Patient.gender" in output
    assert "history.json: a history Bundle holds past versions and deletions" in output
    assert "4 resources from 4 files" in output and "2 failures" in output, output
    assert _loaded(vault, "s1", "s2", "8f5e3b1e-2a4c-4d6e-9f00-0a1b2c3d4e5f") == {
        "s1",
        "8f5e3b1e-2a4c-4d6e-9f00-0a1b2c3d4e5f",
    }
    records = Vault.at(vault).open()
    try:
        observation = json.loads(records.read("Observation", "c-obs").body)
        assert observation["subject"] == {
            "reference": "Patient/8f5e3b1e-2a4c-4d6e-9f00-0a1b2c3d4e5f"
        }
        assert records.read("Bundle", "doc1").id == "doc1"  # a document is kept whole
        found = records.storage.last_seq()
    finally:
        records.storage.close()
    code, output = _run("import", "--vault", str(vault), *(str(tmp_path / n) for n in names))
    assert "0 new versions written" in output and _counts(vault)[0] == found


def test_a_document_whose_entries_name_each_other_is_stored_whole(tmp_path: Path) -> None:
    """A FHIR document's Composition names its patient by the fullUrl of another of its
    entries: a reference inside the document, for whoever reads it, not for the import."""
    vault = _vault(tmp_path)
    father = shared_data_path("fhir-examples", "Bundle-father.json")
    code, output = _run("import", "--vault", str(vault), str(father))
    assert code == 0, output
    records = Vault.at(vault).open()
    try:
        stored = json.loads(records.read("Bundle", "father").body)
    finally:
        records.storage.close()
    assert stored["entry"] == json.loads(father.read_bytes())["entry"]


def test_a_single_resource_that_is_not_valid_is_reported_by_its_file_alone(
    tmp_path: Path,
) -> None:
    """It has no entries: the Bundle it is loaded in is the importer's own."""
    vault = _vault(tmp_path)
    (tmp_path / "one.json").write_text('{"resourceType":"Patient","id":"v1","gender":"x"}')
    code, output = _run("import", "--vault", str(vault), str(tmp_path / "one.json"))
    assert code == 1, output
    assert f"{tmp_path / 'one.json'} is not a valid Patient: Patient.gender" in output, output
    assert "entry[" not in output


def test_a_file_named_twice_is_read_once(tmp_path: Path) -> None:
    """``coffre import data/*.json data``, or a file and a link to it: one file."""
    vault = _vault(tmp_path)
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "p.json").write_text('{"resourceType":"Patient","id":"t1","gender":"x"}')
    (tmp_path / "link.json").symlink_to(folder / "p.json")
    code, output = _run(
        "import",
        "--vault",
        str(vault),
        str(folder / "p.json"),
        str(folder),
        str(tmp_path / "link.json"),
        str(folder / ".." / "data" / "p.json"),
    )
    assert code == 1, output
    assert "0 resources from 1 files" in output and "1 failures" in output, output
    (tmp_path / "a.json").symlink_to("b.json")
    (tmp_path / "b.json").symlink_to("a.json")
    code, output = _run("import", "--vault", str(vault), str(tmp_path / "a.json"))
    assert code == 1 and "a.json: cannot be read: Too many levels of symbolic links" in output


def test_a_file_that_is_no_resource_is_reported_once_by_name_and_says_what_it_is(
    tmp_path: Path,
) -> None:
    vault = _vault(tmp_path)
    contents = {"empty.json": "", "null.json": "null", "list.json": "[]", "number.json": "42"}
    contents["object.json"] = '{"id":"x"}'
    for name, content in contents.items():
        (tmp_path / name).write_text(content)
    code, output = _run("import", "--vault", str(vault), *(str(tmp_path / n) for n in contents))
    assert code == 1, output
    assert f"{tmp_path / 'empty.json'}: the file is not valid JSON: " in output, output
    for name, what in (
        ("null.json", "null"),
        ("list.json", "a JSON array"),
        ("number.json", "a JSON number"),
        ("object.json", "an object without a resourceType"),
    ):
        assert f"{tmp_path / name}: the file is not a FHIR resource ({what})" in output, output
    assert output.count(str(tmp_path)) == len(contents)


def test_ctrl_c_says_what_was_kept_and_a_rerun_finishes(tmp_path: Path) -> None:
    """An operator who interrupts a long import is told that whole Bundles were kept and
    that the same command finishes it, instead of a bare prompt."""
    vault = _vault(tmp_path)
    folder = tmp_path / "bundles"
    assert _run("synth", "40", "--out", str(folder), "--seed", "3")[0] == 0
    command = [sys.executable, "-m", "coffre", "import", "--vault", str(vault), str(folder)]
    importing = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    storage = vault / "storage.sqlite"
    written = 0
    while importing.poll() is None and written == 0:
        with suppress(sqlite3.Error), closing(sqlite3.connect(storage)) as db:
            written = db.execute("SELECT count(*) FROM versions").fetchone()[0]
    assert importing.poll() is None, "the import ended before it could be interrupted"
    importing.send_signal(signal.SIGINT)
    output, _ = importing.communicate(timeout=120)
    assert importing.returncode == 130, output
    assert "interrupted" in output and "run the same command again" in output, output
    kept = int(output.split("interrupted: ")[1].split()[0])
    assert kept >= written > 0
    assert "Traceback" not in output
    code, output = _run("import", "--vault", str(vault), str(folder))
    assert code == 0, output
    assert "0 failures" in output


def test_equal_resources_of_one_ndjson_file_stay_apart_across_its_chunks(tmp_path: Path) -> None:
    """A file is read 500 lines a Bundle, and equal resources were kept apart only within
    one: 1,000 equal readings without ids were stored as 500."""
    vault = _vault(tmp_path)
    twin = '{"resourceType":"Observation","status":"final","code":{"text":"pouls"}}'
    (tmp_path / "twins.ndjson").write_text(f"{twin}\n" * 1001)
    code, output = _run("import", "--vault", str(vault), str(tmp_path / "twins.ndjson"))
    assert code == 0 and "1001 resources from 1 files; 1001 new versions written" in output
    code, output = _run("import", "--vault", str(vault), str(tmp_path / "twins.ndjson"))
    assert code == 0 and "0 new versions written" in output, output


def test_a_bundle_s_deletes_are_successes(tmp_path: Path) -> None:
    """A DELETE's 204 was reported as a failure, and the import exited 1."""
    vault = _vault(tmp_path)
    (tmp_path / "p.json").write_text('{"resourceType":"Patient","id":"nd1"}')
    assert _run("import", "--vault", str(vault), str(tmp_path / "p.json"))[0] == 0
    entries = [
        {"request": {"method": "DELETE", "url": "Patient/nd1"}},
        {"request": {"method": "DELETE", "url": "Patient?identifier=none|x"}},
    ]
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": entries}
    (tmp_path / "delete.json").write_text(json.dumps(bundle))
    code, output = _run("import", "--vault", str(vault), str(tmp_path / "delete.json"))
    assert code == 0 and "1 new versions written; 0 failures" in output, output


def test_a_vault_that_fails_stops_the_import_without_blaming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checkpoint memory, beside the keyring, could not be written: the import said
    the file it was loading could not be read, and went on with the next."""
    vault = _vault(tmp_path)
    (tmp_path / "p.json").write_text('{"resourceType":"Patient","id":"p1"}')

    def unwritable(path: Path, text: str, sync: bool = True) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(ledger_module, "replace_file", unwritable)  # the memory's write
    code, output = _run("import", "--vault", str(vault), str(tmp_path / "p.json"))
    said = " ".join(output.split())
    assert code == 1 and "the vault failed, and the import stopped" in said, output
    assert "Permission denied" in said and "cannot be read" not in said


def _post(resource_type: str) -> dict[str, str]:
    return {"method": "POST", "url": resource_type}


def test_a_resource_stored_with_other_content_at_its_id_is_reported_and_kept(
    tmp_path: Path,
) -> None:
    """Hospital B's Patient/1 (Bob) was dropped without a word where hospital A's Patient/1
    (Alice) was stored, "0 failures", and B's Observation of him was attached to her
    unannounced."""
    vault = _vault(tmp_path)
    alice = {"resourceType": "Patient", "id": "1", "name": [{"family": "Alice"}]}
    bob = {"resourceType": "Patient", "id": "1", "name": [{"family": "Bob"}]}
    (tmp_path / "a.ndjson").write_text(json.dumps(alice) + "\n")
    code, output = _run("import", "--vault", str(vault), str(tmp_path / "a.ndjson"))
    assert code == 0, output
    urn = "urn:uuid:0b0b0b0b-0000-4000-8000-000000000001"
    observation = {"resourceType": "Observation", "id": "b-obs", "status": "final"}
    observation |= {"code": {"text": "pulse"}, "subject": {"reference": urn}}
    (tmp_path / "b.json").write_text(
        _bundle(
            "transaction",
            {"fullUrl": urn, "resource": bob, "request": _post("Patient")},
            {"resource": observation, "request": _post("Observation")},
        )
    )
    # two lines of one file at one id, and a line equal to what is stored
    twice = [alice, {"resourceType": "Patient", "id": "2"}, bob | {"id": "2"}]
    (tmp_path / "c.ndjson").write_text("".join(json.dumps(r) + "\n" for r in twice))
    names = ("a.ndjson", "b.json", "c.ndjson")
    for _ in range(2):  # the second run says the same, and writes nothing
        code, output = _run("import", "--vault", str(vault), *(str(tmp_path / n) for n in names))
        said = " ".join(output.split())
        assert code == 1, output
        assert (
            f"conflict: {tmp_path / 'b.json'}: entry[0]: Patient/1 is already stored"
            " with other content: kept as it is, not overwritten" in said
        ), output
        assert (
            f"conflict: {tmp_path / 'c.ndjson'}: line 3: Patient/2 is already stored with"
            " other content: kept as it is, not overwritten" in said
        ), output
        assert "a.ndjson" not in said and "line 1" not in said, output
        assert "0 failures; 2 conflicts with what is stored" in said, output
    records = Vault.at(vault).open()
    try:
        assert json.loads(records.read("Patient", "1").body)["name"] == alice["name"]
        assert json.loads(records.read("Patient", "2").body).get("name") is None
        # the rest of B's transaction loads, linked to the stored Patient/1, as the
        # conflict warns
        assert records.read("Observation", "b-obs").id == "b-obs"
    finally:
        records.storage.close()


def test_a_resource_type_that_names_no_type_fails_its_line_or_entry_alone(
    tmp_path: Path,
) -> None:
    """A line whose resourceType was null, "" or " Patient" sank its whole chunk of 500
    lines, with a message about a request.url its file never held."""
    vault = _vault(tmp_path)
    kinds = [None, "", " Patient", 5, "Patinet"]
    lines = [{"resourceType": kind, "id": f"k{n}"} for n, kind in enumerate(kinds, start=1)]
    lines.append({"resourceType": "Patient", "id": "k6"})
    (tmp_path / "kinds.ndjson").write_text("".join(json.dumps(line) + "\n" for line in lines))
    entries = [{"resource": line} for line in lines] + [{"resource": "x"}, {"fullUrl": "urn:x"}]
    entries[-3]["resource"] = {"resourceType": "Patient", "id": "k7"}
    (tmp_path / "kinds.json").write_text(_bundle("collection", *entries))
    code, output = _run(
        "import",
        "--vault",
        str(vault),
        str(tmp_path / "kinds.ndjson"),
        str(tmp_path / "kinds.json"),
    )
    said = " ".join(output.split())
    assert code == 1, output
    shown = ("null", "''", "' Patient'", "a JSON number", "'Patinet'")
    for number, what in enumerate(shown, start=1):
        why = f"is not a FHIR resource (its resourceType is not a resource type: {what})"
        assert f"kinds.ndjson: line {number} {why}" in said, output
        assert f"kinds.json: entry[{number - 1}].resource {why}" in said, output
    assert "kinds.json: entry[6].resource is not a FHIR resource (a JSON string)" in said, output
    assert "kinds.json: entry[7].resource is not a FHIR resource (null)" in said, output
    assert "request" not in said, output
    assert "2 resources from 2 files" in said and "12 failures" in said, output
    assert _loaded(vault, "k1", "k5", "k6", "k7") == {"k6", "k7"}


def test_every_failure_is_listed(tmp_path: Path) -> None:
    """Only the first 20 were: an operator could not learn which lines failed after them."""
    vault = _vault(tmp_path)
    (tmp_path / "bad.ndjson").write_text("{not json\n" * 25)
    code, output = _run("import", "--vault", str(vault), str(tmp_path / "bad.ndjson"))
    assert code == 1, output
    for number in range(1, 26):
        assert f"bad.ndjson: line {number} is not valid JSON" in output, output
    assert "more failures" not in output and "25 failures" in output, output


def test_a_folder_s_files_load_whatever_the_case_of_their_names_and_broken_links_are_named(
    tmp_path: Path,
) -> None:
    """``.JSON`` and ``.NDJSON`` files, and links that lead nowhere or loop, were skipped
    without a word."""
    vault = _vault(tmp_path)
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "A.JSON").write_text('{"resourceType":"Patient","id":"u1"}')
    (folder / "B.NDJSON").write_text(
        '{"resourceType":"Patient","id":"u2"}\n{"resourceType":"Patient","id":"u3"}\n'
    )
    (folder / "C.Ndjson.GZ").write_bytes(gzip.compress(b'{"resourceType":"Patient","id":"u4"}'))
    (folder / "gone.json").symlink_to("nowhere.json")
    (folder / "x.ndjson").symlink_to("y.ndjson")
    (folder / "y.ndjson").symlink_to("x.ndjson")
    code, output = _run("import", "--vault", str(vault), str(folder))
    assert code == 1, output
    assert f"{folder / 'gone.json'}: cannot be read: No such file or directory" in output
    for name in ("x.ndjson", "y.ndjson"):
        assert f"{folder / name}: cannot be read: Too many levels of symbolic links" in output
    assert "4 resources from 6 files" in output and "3 failures" in output, output
    assert _loaded(vault, "u1", "u2", "u3", "u4") == {"u1", "u2", "u3", "u4"}
