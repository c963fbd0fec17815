"""Documentation that cannot rot: every setting is documented, the README keeps its promises."""

from __future__ import annotations

from pathlib import Path

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
