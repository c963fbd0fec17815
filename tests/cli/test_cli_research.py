"""`coffre research ...`: projects added, listed and ended; an extract made from the CLI."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
from conftest import research_population
from typer.testing import CliRunner

from coffre.cli.main import app
from coffre.ledger.leaf import Leaf
from coffre.research.extract import EXTRACT_TYPE
from coffre.research.folder import ResearchFolder
from coffre.service import Vault

runner = CliRunner()
PROJECT = [
    "research",
    "add",
    "diabete-2026",
    "--authorisation",
    "CNIL DR-2026-042",
    "--purpose",
    "Complications of type 2 diabetes",
    "--type",
    "Patient",
    "--type",
    "Observation",
    "--from",
    "2015-01-01",
    "--to",
    "2025-12-31",
    "--member",
    "alice",
    "--expires",
    "2099-06-30",
]


def _run(folder: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, [*args, "--vault", str(folder)])
    return result.exit_code, result.output


def _researcher(folder: Path, tmp_path: Path, name: str, role: str = "researcher") -> None:
    password = tmp_path / "password"
    password.write_text("correct horse battery")
    code, output = _run(
        folder,
        "users",
        "add",
        name,
        "--role",
        role,
        "--fhir-user",
        "Practitioner/p-" + name,
        "--password-file",
        str(password),
    )
    assert code == 0, output


def test_a_project_is_added_listed_and_ended(tmp_path: Path) -> None:
    folder = tmp_path / "vault"
    folder.mkdir()
    code, output = _run(folder, *PROJECT)
    assert code == 1 and "alice is no researcher" in output
    _researcher(folder, tmp_path, "alice", role="clinician")
    assert _run(folder, *PROJECT)[0] == 1
    _researcher(folder, tmp_path, "bruno")
    members = [a if a != "alice" else "bruno" for a in PROJECT]
    code, output = _run(folder, *members)
    assert code == 0 and "project diabete-2026 added, open until 2099-06-30" in output
    code, output = _run(folder, "research", "list")
    assert output.split("\t") == [
        "diabete-2026",
        "open",
        "CNIL DR-2026-042",
        "Observation,Patient",
        "2015-01-01..2025-12-31",
        "expires 2099-06-30",
        "bruno",
        "columns all",
        "cohort everyone",
        "no privacy budget\n",
    ]
    assert _run(folder, *members)[1].count("exists already") == 1
    assert _run(folder, "research", "end", "diabete-2026")[0] == 0
    assert "\tended 20" in _run(folder, "research", "list")[1]
    code, output = _run(folder, "research", "end", "diabete-2026")
    assert code == 1 and "ended already" in output
    code, output = _run(folder, "research", "end", "nothing")
    assert code == 1 and "no project 'nothing'" in output


def test_a_project_that_is_not_whole_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "vault"
    folder.mkdir()
    wrong = [a if a != "Observation" else "AuditEvent" for a in PROJECT]
    code, output = _run(folder, *wrong)
    assert code == 1 and "not AuditEvent" in output
    assert not (folder / "keyring.research.json").exists()


def test_a_project_names_its_columns_and_cohort(tmp_path: Path) -> None:
    folder = tmp_path / "vault"
    folder.mkdir()
    _researcher(folder, tmp_path, "alice")
    columns = ["--column", "person.year_of_birth", "--column", "measurement.code"]
    code, output = _run(folder, *PROJECT, *columns[:2])
    assert code == 1 and "name the columns of measurement too" in output
    code, output = _run(folder, *PROJECT, *columns, "--column", "person.name")
    assert code == 1 and "no column person.name; theirs are measurement.person_id" in output
    code, output = _run(folder, *PROJECT, "--cohort-code", "44054006")
    assert code == 1 and "SYSTEM|CODE" in output
    assert not (folder / "keyring.research.json").exists()
    cohort = ["--cohort-code", "http://snomed.info/sct|44054006", "--born-from", "1950"]
    since = ["--cohort-codes-from", "2000-01-01"]
    code, output = _run(folder, *PROJECT, *columns, *cohort, *since, "--born-to", "1970")
    assert code == 0, output
    listed = _run(folder, "research", "list")[1].rstrip("\n").split("\t")
    assert listed[-3:] == [
        "columns measurement.code,person.year_of_birth",
        "cohort codes http://snomed.info/sct|44054006 since 2000-01-01; born 1950..1970",
        "no privacy budget",
    ]


def test_an_extract_from_the_command_line(vault: Vault, tmp_path: Path) -> None:
    records = vault.open()
    with records.writer() as writer:
        writer.update(
            "Patient", "ana", {"resourceType": "Patient", "id": "ana", "gender": "female"}
        )
    records.storage.close()
    _researcher(vault.folder, tmp_path, "alice")
    assert _run(vault.folder, *PROJECT)[0] == 0
    out = tmp_path / "extract"
    code, output = _run(vault.folder, "research", "extract", "diabete-2026", "--out", str(out))
    assert code == 0, output
    assert "1 persons, 1 rows in 2 tables" in output and "leaf" in output
    assert pq.read_table(out / "person.parquet").column("gender").to_pylist() == ["female"]
    code, output = _run(vault.folder, "research", "extract", "diabete-2026", "--out", str(out))
    assert code == 1 and "is not empty" in output
    code, output = _run(vault.folder, "research", "extract", "other", "--out", str(out))
    assert code == 1 and "no project 'other'" in output
    args = ("research", "count", "diabete-2026", "person", "--extract", str(out))
    code, output = _run(vault.folder, *args, "--by", "gender", "--where", "gender=female")
    assert code == 0, output
    assert output == "gender\tpersons\nfemale\t<10\ntotal\t<10\n"
    code, output = _run(vault.folder, *args, "--by", "gender", "--where", "gender")
    assert code == 1 and "a filter is COLUMN=VALUE" in output
    code, output = _run(vault.folder, *args, "--by", "person_id")
    assert code == 1 and "person has no column 'person_id'" in output


def test_private_counts_spend_the_budget_the_operator_sets(vault: Vault, tmp_path: Path) -> None:
    records = vault.open()
    with records.writer() as writer:
        for number in range(12):
            patient = {"resourceType": "Patient", "id": f"p{number}", "gender": "female"}
            writer.update("Patient", f"p{number}", patient)
    records.storage.close()
    _researcher(vault.folder, tmp_path, "alice")
    assert _run(vault.folder, *PROJECT, "--budget", "1.5")[0] == 0
    out = tmp_path / "extract"
    assert _run(vault.folder, "research", "extract", "diabete-2026", "--out", str(out))[0] == 0
    args = ("research", "count", "diabete-2026", "person", "--extract", str(out))
    code, output = _run(vault.folder, *args, "--max-cells", "2")
    assert code == 1 and "--delta and --max-cells go with --epsilon" in output
    code, output = _run(vault.folder, *args, "--epsilon", "1", "--by", "gender")
    assert code == 0, output
    assert output.startswith("gender\tpersons\n")  # 12 persons: under the threshold
    assert "differentially private counts: ε 1, δ 1E-8" in output
    assert "ε 1 spent of 1.5, 0.5 left" in output
    code, output = _run(vault.folder, *args, "--epsilon", "0.6")
    assert code == 1 and "exceeds the project's privacy budget" in output
    assert "ε 1 spent of 1.5" in _run(vault.folder, "research", "list")[1]
    code, output = _run(vault.folder, "research", "budget", "diabete-2026", "0.5")
    assert code == 1 and "its budget may not be less" in output
    code, output = _run(vault.folder, "research", "budget", "diabete-2026", "2", "--delta", "1e-5")
    assert code == 0 and "may spend ε 2 and δ 0.00001 in all" in output
    assert "ε 1 spent of 2, 1 left; δ 1E-8 of 0.00001" in _run(vault.folder, "research", "list")[1]
    code, output = _run(vault.folder, *args, "--epsilon", "many")
    assert code == 2 and "'many' is no number" in output


def test_the_command_line_loads_neither_duckdb_nor_pyarrow_nor_opendp() -> None:
    """Every server process loads it: they would weigh some 108 MB more each."""
    modules = "{'duckdb', 'pyarrow', 'opendp'}"
    script = f"import sys, coffre.cli.main; print(sorted({modules} & set(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert loaded.stdout.strip() == "[]", loaded.stderr


def test_an_extract_is_kept_in_the_research_folder_and_counted_from_there(
    vault: Vault, tmp_path: Path
) -> None:
    records = vault.open()
    research_population(records)
    records.storage.close()
    _researcher(vault.folder, tmp_path, "alice")
    assert _run(vault.folder, *PROJECT)[0] == 0
    args = ("research", "count", "diabete-2026", "person", "--by", "gender")
    code, output = _run(vault.folder, *args)
    assert code == 1 and "no extract of project diabete-2026 is kept" in output
    for _ in range(2):
        code, output = _run(vault.folder, "research", "extract", "diabete-2026")
        assert code == 0, output
    folder = ResearchFolder(vault.keyring)
    first, latest = folder.kept("diabete-2026")
    assert f"written to {latest.folder}" in output.replace("\n", "")
    assert stat.S_IMODE(folder.extracts.stat().st_mode) == 0o700
    assert stat.S_IMODE(latest.folder.stat().st_mode) == 0o700
    code, output = _run(vault.folder, *args)
    assert code == 0, output
    assert output == "gender\tpersons\nfemale\t14\nmale\t<10\nother\t<10\ntotal\t28\n"
    assert first.extract_id != latest.extract_id
    records = vault.open()
    size = records.storage.leaf_count()
    last = Leaf.decode(records.storage.leaves(size - 1, size)[0])
    records.storage.close()
    assert last.loc == records.keys.location(EXTRACT_TYPE, latest.extract_id)


def test_a_projects_log_lists_its_extracts_and_counts_with_their_filters(
    vault: Vault, tmp_path: Path
) -> None:
    """What an auditor reads to find differencing: each count with its filters, from the
    AuditEvents of the gateway's compartment, another project's left out."""
    records = vault.open()
    research_population(records)
    records.storage.close()
    _researcher(vault.folder, tmp_path, "alice")
    assert _run(vault.folder, *PROJECT)[0] == 0
    other = [*PROJECT[:2], "grippe-2027", *PROJECT[3:]]
    assert _run(vault.folder, *other)[0] == 0
    for project in ("diabete-2026", "grippe-2027"):
        assert _run(vault.folder, "research", "extract", project)[0] == 0
    count = ("research", "count", "diabete-2026", "person", "--by", "gender")
    assert _run(vault.folder, *count, "--where", "year_of_birth=1950", "--operator", "Marc")[0] == 0
    code, output = _run(vault.folder, "research", "log", "diabete-2026")
    assert code == 0, output
    lines = [line.split("\t") for line in output.splitlines()]
    assert [who for _, who, _ in lines] == ["Marc (coffre research count)", lines[1][1]]
    assert lines[0][2] == "research count of person by gender where year_of_birth=1950"
    assert "extract" in lines[1][2] and "grippe" not in output
    code, output = _run(vault.folder, "research", "log", "nothing-2030")
    assert code == 1
    # A filter's value, the asker's own text, names no other project and makes no line.
    forged = "gender=x for research project grippe-2027 (z\n2026\tMallory\tnothing"
    assert _run(vault.folder, *count, "--where", forged)[0] == 0
    assert len(_run(vault.folder, "research", "log", "grippe-2027")[1].splitlines()) == 1
    latest = _run(vault.folder, "research", "log", "diabete-2026")[1].splitlines()[0]
    assert latest.endswith("(z\\n2026\\tMallory\\tnothing") and latest.count("\t") == 2
