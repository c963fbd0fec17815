"""A vault holding every Synthea bundle of ../shared/data/synthea, imported once per test
run: the import takes a minute and a half, and the conformance, export and migration tests
each need one. Whichever test process asks first imports it, under a lock the others wait
on; each caller then gets a copy of its own, which it may write to."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import pytest
from conftest import shared_data_path

from coffre import config
from coffre.cli.importer import Importer, ImportReport
from coffre.cli.sources import files_under
from coffre.service import Vault

SYNTHEA_FOLDERS = ("fhir-data-pipes-2021", "smart-2019")
INFORMATION_BUNDLES = ("hospitalInformation", "practitionerInformation")
_REPORT = "import-report.json"


def synthea_files() -> list[Path]:
    """The bundles in the order they are imported: organisations and practitioners first
    (the README's advice), then the patients, each group in ``files_under`` order."""
    files = files_under([shared_data_path("synthea", name) for name in SYNTHEA_FOLDERS])
    information = [path for path in files if path.name.startswith(INFORMATION_BUNDLES)]
    return information + [path for path in files if path not in information]


def synthea_vault_copy(
    tmp_path_factory: pytest.TempPathFactory, folder: Path
) -> tuple[Vault, ImportReport]:
    """A copy at ``folder`` of the run's Synthea vault (SQLite, keyring file), and the
    report of its import."""
    files = synthea_files()  # skips, with the reason, where ../shared/data is absent
    with _run_wide(tmp_path_factory, "synthea") as shared:
        if not (shared / _REPORT).exists():
            _import(files, shared)
    shutil.copytree(shared / "vault", folder)
    report = json.loads((shared / _REPORT).read_text())
    return Vault.at(folder), ImportReport(**report)


def _import(files: list[Path], shared: Path) -> None:
    vault = Vault.at(shared / "vault")
    if vault.folder.exists():  # an import that failed earlier in the run
        shutil.rmtree(vault.folder)
    vault.create()
    with pytest.MonkeyPatch.context() as patch:  # no disk sync per bundle: a test's vault
        patch.setenv(config.SQLITE_SYNCHRONOUS.env, "OFF")
        records = vault.open()
    try:
        report = Importer(records).run(files)
    finally:
        records.storage.close()
    assert report.failures == [], "\n".join(report.failures[:20])
    (shared / _REPORT).write_text(json.dumps(asdict(report)))


@contextmanager
def _run_wide(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Path]:
    """A folder shared by the test processes of this run (pytest-xdist's workers have each a
    base folder in one of the run), held under an exclusive lock meanwhile."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    shared = base / name
    shared.mkdir(exist_ok=True)
    with (base / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield shared
