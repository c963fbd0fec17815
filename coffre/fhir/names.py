"""A person's name as people write it, from a FHIR resource's HumanName list."""

from __future__ import annotations

from typing import Any


def human_name(resource: dict[str, Any]) -> str:
    """The first name of ``resource`` that says anything: its text, else prefix, given
    names and family name in that order; "" when it has none."""
    for name in resource.get("name", []):
        if not isinstance(name, dict):
            continue
        if name.get("text"):
            return str(name["text"])
        parts = [*name.get("prefix", []), *name.get("given", []), name.get("family", "")]
        if any(parts):
            return " ".join(str(part) for part in parts if part)
    return ""
