"""What a Bulk Data kick-off asks for, read from a GET's query or a POST's ``Parameters``
body (IG v2): the same parameters, the same meaning, whichever way they came."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from coffre.api.history import since
from coffre.exceptions import FhirError
from coffre.fhir.parameters import read_parameters
from coffre.fhir.references import parse_reference
from coffre.search.criteria import NOT_UTF8
from coffre.search.results import Pairs, listed, single
from coffre.service.type_filters import SHAPE

KNOWN = frozenset({"_outputFormat", "_type", "_since", "_typeFilter", "_elements"})
"""What both kinds of kick-off take (a POST's ``patient`` besides)."""
_PATIENT = "patient"
_VALUES = {
    "_outputFormat": "valueString",
    "_type": "valueString",
    "_since": "valueInstant",
    "_typeFilter": "valueString",
    "_elements": "valueString",
    _PATIENT: "valueReference",
}
_EXAMPLE = (
    '{"resourceType": "Parameters", "parameter": [{"name": "_type", "valueString":'
    ' "Observation"}, {"name": "patient", "valueReference": {"reference": "Patient/123"}}]}'
)


@dataclass(frozen=True, slots=True)
class KickOff:
    """A kick-off's parameters: ``type_filters`` each a ``Type?query`` as a search takes
    it; ``elements`` each ``element`` or ``Type.element``; ``patients`` the ids of
    ``patient`` (None: not given); ``unknown`` the names of the parameters Coffre's
    export does not take."""

    output_format: str | None
    types: list[str]
    since: int | None
    type_filters: list[str]
    elements: list[str]
    patients: list[str] | None
    unknown: list[str]


def from_query(pairs: Pairs, raw_query: str) -> KickOff:
    """A GET kick-off's parameters (``pairs``, decoded, and the query as sent)."""
    if any(name == _PATIENT for name, _ in pairs):
        message = (
            "patient is a parameter of a POST kick-off, in a Parameters body (valueReference),"
            " as the Bulk Data IG has it: patients' ids then stay out of URLs"
        )
        raise FhirError(400, "not-supported", message)
    return KickOff(
        output_format=_output_format(single(pairs, "_outputFormat")),
        types=listed(pairs, "_type"),
        since=since(pairs),
        type_filters=_query_type_filters(raw_query),
        elements=listed(pairs, "_elements"),
        patients=None,
        unknown=sorted({name for name, _ in pairs} - KNOWN),
    )


def _output_format(value: str | None) -> str | None:
    """``_outputFormat`` as the client meant it: a ``+`` it left unencoded in the query
    (``application/fhir+ndjson``, as the IG writes it) arrives as a space, which no media
    type holds."""
    return None if value is None else value.replace(" ", "+")


def _query_type_filters(raw_query: str) -> list[str]:
    """The queries of a GET's ``_typeFilter``s, each decoded once: split at the commas the
    query string holds as they are, before decoding, since a query's own commas (an OR of
    values) arrive encoded, ``%2C``."""
    queries = []
    for part in raw_query.split("&"):
        name, _, value = part.partition("=")
        if unquote_plus(name) == "_typeFilter":
            queries += [_decoded(query) for query in value.split(",")]
    return queries


def _decoded(query: str) -> str:
    try:
        decoded = unquote_plus(query, errors="strict")
    except UnicodeDecodeError:
        raise FhirError(400, "structure", f"a _typeFilter {NOT_UTF8}") from None
    if not decoded.strip():
        raise FhirError(400, "invalid", f"a _typeFilter is empty: {SHAPE}")
    return decoded


def from_parameters(body: Any) -> KickOff:
    """A POST kick-off's parameters, from its ``Parameters`` body: each ``_typeFilter``
    a valueString holding one query (its commas are its own), ``patient`` a
    valueReference to ``Patient/id``; 400 for a body that is not such Parameters."""
    taken, others = read_parameters(body, "a POST kick-off", _VALUES, _EXAMPLE)
    pairs = [(name, value) for name, value in taken if name != _PATIENT]
    return KickOff(
        output_format=single(pairs, "_outputFormat"),
        types=listed(pairs, "_type"),
        since=since(pairs),
        type_filters=[value for name, value in pairs if name == "_typeFilter"],
        elements=listed(pairs, "_elements"),
        patients=_patients([value for name, value in taken if name == _PATIENT]),
        unknown=others,
    )


def _patients(references: list[dict[str, Any]]) -> list[str] | None:
    """The ids of the ``patient`` parameters (``Patient/id`` references), None if none."""
    if not references:
        return None
    ids = []
    for reference in references:
        text = reference.get("reference")
        parsed = parse_reference(text) if isinstance(text, str) and "://" not in text else None
        if parsed is None or parsed[0] != "Patient":
            raise FhirError(400, "invalid", "a patient parameter is a valueReference to Patient/id")
        ids.append(parsed[1])
    return ids
