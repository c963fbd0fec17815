"""Small builders for the FHIR shapes every generated resource repeats."""

from __future__ import annotations

import random
import uuid
from typing import Any, Literal, NamedTuple

Resource = dict[str, Any]
Region = Literal["FR", "QC"]

UCUM = "http://unitsofmeasure.org"


class Code(NamedTuple):
    """A code of a code system, with the display the system gives it."""

    system: str
    code: str
    display: str


def coding(code: Code) -> dict[str, str]:
    return {"system": code.system, "code": code.code, "display": code.display}


def concept(code: Code, text: str | None = None) -> dict[str, Any]:
    """A CodeableConcept of one coding; ``text`` is what a clinician reads, in French."""
    value: dict[str, Any] = {"coding": [coding(code)]}
    if text is not None:
        value["text"] = text
    return value


def quantity(value: float, unit: str, ucum: str) -> dict[str, Any]:
    """A Quantity coded in UCUM; ``unit`` is the human-readable form."""
    return {"value": value, "unit": unit, "system": UCUM, "code": ucum}


def reference(url: str) -> dict[str, str]:
    return {"reference": url}


def conditional_reference(resource_type: str, system: str, value: str) -> str:
    """A reference the server resolves at transaction time by identifier."""
    return f"{resource_type}?identifier={system}|{value}"


def address(region: Region, use: str, city: str, postal_code: str, *lines: str) -> Resource:
    """A postal address in France or Quebec."""
    value: Resource = {"use": use, "type": "physical"}
    if lines:
        value["line"] = list(lines)
    value |= {"city": city, "postalCode": postal_code}
    if region == "QC":
        value["state"] = "QC"
    value["country"] = "FR" if region == "FR" else "CA"
    return value


class Transaction:
    """The entries of a transaction Bundle, each POSTed under a ``urn:uuid:`` fullUrl.

    The UUIDs come from the generator's random source, so one seed gives one bundle.
    """

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self.entries: list[dict[str, Any]] = []

    def add(self, resource: Resource, if_none_exist: str | None = None) -> str:
        """Append a resource; return the fullUrl that other entries reference it by."""
        full_url = f"urn:uuid:{uuid.UUID(int=self._rng.getrandbits(128), version=4)}"
        request = {"method": "POST", "url": resource["resourceType"]}
        if if_none_exist is not None:
            request["ifNoneExist"] = if_none_exist
        self.entries.append({"fullUrl": full_url, "resource": resource, "request": request})
        return full_url

    def bundle(self) -> Resource:
        return {"resourceType": "Bundle", "type": "transaction", "entry": self.entries}
