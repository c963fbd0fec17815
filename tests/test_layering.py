"""Imports flow one way: a lower layer never imports a higher one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "coffre"
# Each package, and the packages of ours it may import (besides exceptions, config and files).
ALLOWED = {
    "fhir": set(),
    "seal": set(),
    "custody": {"seal"},
    "ledger": {"seal"},
    "storage": set(),
    "search": {"fhir"},
    "synth": {"fhir"},
    "booking": {"fhir", "search"},
    "service": {"fhir", "seal", "custody", "storage", "search", "ledger", "booking"},
    "research": {"fhir", "search", "service", "seal", "ledger", "storage"},
    "api": {"fhir", "service", "search", "storage", "ledger", "booking", "research"},
    "cli": {"fhir", "service", "api", "synth", "storage", "ledger", "research"},
}
BASE = {"exceptions", "config", "files", ""}


def _imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = (
            [node.module or ""]
            if isinstance(node, ast.ImportFrom)
            else [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else []
        )
        for name in names:
            if name == "coffre" or name.startswith("coffre."):
                found.add(name.split(".")[1] if "." in name else "")
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_flow_one_way(package: str) -> None:
    for path in (PACKAGE / package).rglob("*.py"):
        if path.name == "_schema_r4.py":  # generated, imports nothing of ours
            continue
        wrong = _imported_packages(path) - ALLOWED[package] - BASE - {package}
        assert not wrong, f"{path.relative_to(PACKAGE)} imports {sorted(wrong)}"


def test_only_seal_touches_the_dangerous_layer() -> None:
    for path in PACKAGE.rglob("*.py"):
        if "cryptography" in path.read_text() and path.parent.name != "seal":
            pytest.fail(f"{path.relative_to(PACKAGE)} uses cryptography outside coffre/seal")
