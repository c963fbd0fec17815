"""Documentation that cannot rot: every setting is documented, the README keeps its promises."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from conftest import FHIR_JSON, RunningServer

from coffre import config
from coffre.config import SETTINGS

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_is_documented() -> None:
    operations = (ROOT / "docs" / "operations.md").read_text()
    missing = [setting.env for setting in SETTINGS if f"`{setting.env}`" not in operations]
    assert not missing, f"document these settings in docs/operations.md: {missing}"


def test_the_readme_opens_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```")[1]
    assert "make demo" in first_block and "make test" in first_block


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_docs_linked_from_the_readme_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in ("architecture", "threat-model", "leakage", "performance", "operations"):
        assert f"docs/{name}.md" in readme
        assert (ROOT / "docs" / f"{name}.md").exists(), name


def _tour_commands() -> list[str]:
    """The shell commands of the README's short tour, one per logical line (a command
    runs on over lines ending in a backslash and over a quoted body's line breaks)."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## A short tour", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    commands: list[str] = []
    pending = ""
    for line in block.splitlines():
        if not pending and line.startswith("#"):
            continue  # a comment, whose apostrophes open no quoted body
        pending += line + "\n"
        if pending.rstrip().endswith("\\") or pending.count("'") % 2:
            continue
        command = pending.strip()
        pending = ""
        if command:
            commands.append(command)
    return commands


def _load_the_demo_campaign(server: RunningServer, folder: Path) -> None:
    """The campaign `make demo` loads, generated as the Makefile says, sent to the server."""
    options = re.search(r"coffre synth-campaign (.*) --out", (ROOT / "Makefile").read_text())
    assert options, "make demo loads no campaign"
    command = [sys.executable, "-m", "coffre", "synth-campaign", *options.group(1).split()]
    subprocess.run([*command, "--out", str(folder)], check=True, capture_output=True, cwd=ROOT)
    for path in sorted(folder.iterdir()):
        # No timing assertion: a centre's day is some 430 resources, seconds on a busy machine.
        response = httpx.post(
            server.base_url, content=path.read_bytes(), headers=FHIR_JSON, timeout=120
        )
        assert response.status_code == 200, response.text


def test_the_readme_tour_runs_as_written(server: RunningServer, tmp_path: Path) -> None:
    """Each command of the tour succeeds against a fresh server with the demo's campaign
    (curl fails on an HTTP error), with the id the tour's create gives in place of
    ``<id>``, and its searches of patients find her. The token lines
    need the demo's registered client and are for `make demo` alone."""
    _load_the_demo_campaign(server, tmp_path / "campaign")
    port = urlsplit(server.base_url).port
    patient_id = None
    ran = 0
    for command in _tour_commands():
        if "demo_access.py" in command or "$TOKEN" in command:
            continue
        # ``| head`` shortens what a reader sees, and breaks its pipe when it has enough.
        command = re.sub(r"\s*\|\s*head -\d+$", "", command)
        command = command.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
        if "<id>" in command or "<pid>" in command:
            assert patient_id, f"the tour uses <id> before it creates a patient: {command}"
            # <pid>, a generated patient with a history, is her too on a fresh server.
            command = command.replace("<id>", patient_id).replace("<pid>", patient_id)
        wrapped = 'curl() { command curl --fail-with-body "$@"; }; ' + command
        done = subprocess.run(
            ["bash", "-o", "pipefail", "-c", wrapped], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        created = re.search(r"^location: \S+/Patient/([^/\s]+)/", done.stdout, re.I | re.M)
        if "-X POST" in command and created:
            patient_id = created.group(1)
        if "/fhir/Patient?" in command:  # each search of the tour finds her
            assert patient_id and patient_id in done.stdout, command
        ran += 1
    assert patient_id is not None and ran >= 12


def test_every_setting_is_in_the_registry() -> None:
    """COFFRE_DATA_KEY_CACHE was defined beside the others but left out of SETTINGS, so
    that the check of every setting before a command passed it by."""
    defined = [value for value in vars(config).values() if isinstance(value, config.Setting)]
    assert [s.env for s in defined if s not in SETTINGS] == []
