"""Bundles as Coffre writes them."""

from __future__ import annotations

from typing import Any


def fhir_bundle(kind: str, entries: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    """A Bundle of ``kind`` with ``fields`` (total, link) then its entries: none at all
    when it has none, since FHIR's JSON has no empty arrays (a client validating the
    answer would refuse ``"entry": []``)."""
    made = {"resourceType": "Bundle", "type": kind, **fields}
    if entries:
        made["entry"] = entries
    return made
