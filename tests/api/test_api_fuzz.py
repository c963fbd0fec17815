"""Hostile requests over the whole HTTP surface, generated: whatever a client sends, Coffre
answers without a 500, with an OperationOutcome under /fhir and /research (an HTML page
under /portal), and a refused write changes nothing in the log.

Each family runs a few examples in the suite; ``COFFRE_FUZZ_EXAMPLES`` raises the count
of every family for a longer hunt (``COFFRE_FUZZ_EXAMPLES=5000 pytest
tests/api/test_api_fuzz.py -k sqlite --hypothesis-seed=1``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import httpx
import pytest
from conftest import RESEARCH_PROJECT, id_token_pem, research_population
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from joserfc.jwk import ECKey
from starlette.testclient import TestClient

from coffre.api import create_app
from coffre.api.auth import Authority, AuthSettings
from coffre.api.auth.onetime import OneTime
from coffre.api.auth.registry import (
    Registry,
    RegistryFile,
    app_client,
    new_user,
    save,
    with_user,
)
from coffre.research.extract import extract
from coffre.research.folder import ResearchFolder
from coffre.research.projects import save as save_projects
from coffre.search.parameters import parameters_for
from coffre.service import RecordStore
from coffre.synth.generator import generate_patient_bundle
from coffre.synth.shared import generate_shared_bundle

EXAMPLES = int(os.environ.get("COFFRE_FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def examples(count: int) -> settings:
    """``count`` examples in the suite, ``COFFRE_FUZZ_EXAMPLES`` in a hunt."""
    return settings(FUZZ, max_examples=EXAMPLES or count)


PATIENT = "p-fuzz"
MARKER = "Zqxjv"
"""In every text a generated body carries: no log line may repeat it."""
PASSWORD = "un mot de passe assez long"
REDIRECT = "https://portal.example/callback"

# -- what the generated requests are made of ------------------------------------------------

TYPES = [
    "Patient",
    "Observation",
    "Condition",
    "Bundle",
    "Binary",
    "Appointment",
    "Slot",
    "Schedule",
    "Group",
    "AuditEvent",
    "Consent",
    "Parameters",
    "OperationOutcome",
    "Organization",
    "Patientx",
    "patient",
]
HOSTILE_SEGMENTS = [
    "",
    ".",
    "..",
    "%2e%2e",
    "%2F",
    "%00",
    "%ff",
    "%",
    "%zz",
    "a" * 64,
    "a" * 65,
    "a" * 5000,
    "é",
    "%C3%A9",
    "\u202e",
    "💉",
    "$everything",
    "$export",
    "_history",
    "_search",
    "metadata",
    "1",
    "0",
    "-1",
    "99999999999999999999999",
    "\u0661",  # an Arabic-Indic one: a digit to isdigit(), not to a URL
    PATIENT,
    "obs-1",
    "a b",
    "a+b",
    "a;b",
    "a?b",
    "a#b",
    "*",
]
segments = st.one_of(
    st.sampled_from(HOSTILE_SEGMENTS),
    st.text(max_size=12).map(lambda text: quote(text, safe="")),
    st.from_regex(r"[A-Za-z0-9\-.]{1,70}", fullmatch=True),
)
types = st.one_of(st.sampled_from(TYPES), segments)

RESULT_PARAMETERS = [
    "_count",
    "_offset",
    "_sort",
    "_include",
    "_revinclude",
    "_has",
    "_elements",
    "_summary",
    "_total",
    "_format",
    "_since",
    "_at",
    "_id",
    "_lastUpdated",
    "_snapshot",
    "_type",
    "_list",
    "_contained",
    "_containedType",
    "_filter",
    "_query",
    "_text",
    "_content",
    "_tag",
    "_profile",
    "_security",
    "_source",
    "_outputFormat",
    "_include:iterate",
    "_revinclude:iterate",
]
MODIFIERS = [
    "",
    ":exact",
    ":contains",
    ":missing",
    ":not",
    ":text",
    ":above",
    ":below",
    ":in",
    ":not-in",
    ":of-type",
    ":identifier",
    ":Patient",
    ":Patientx",
    ":",
    ":iterate",
]
PREFIXES = ["", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap", "xx", "e"]
GARBAGE_VALUES = [
    "",
    "|",
    "||",
    "a|",
    "|a",
    "a|b|c",
    "$",
    "\\",
    "\\,",
    ",",
    ",,",
    "*",
    "NaN",
    "nan",
    "Infinity",
    "-inf",
    "1e999",
    "-0",
    "0x10",
    "9" * 40,
    "-" + "9" * 40,
    "1.",
    ".5",
    "1e-999",
    "5.4|http://unitsofmeasure.org|mg",
    "5.4||mg",
    "2020",
    "2020-13-45",
    "2020-02-30",
    "2020-01-01T25:00:00Z",
    "2020-01-01T00:00:00+99:00",
    "0000-01-01",
    "9999-12-31T23:59:59.9999999999Z",
    "Patient/",
    "Patient/1",
    "http://x/fhir/Patient/1",
    "Patient/1/_history/x",
    "urn:uuid:",
    "true",
    "false",
    "null",
    "Patient:subject",
    "Observation:subject:Patient",
    "Patient:link:Patient",
    "*:*",
    "Observation:patient:code",
    "name,-birthdate,_id,-_lastUpdated",
    "-",
    "count",
    "accurate",
    "estimate",
    "id,meta,name",
    "é",
    "💉",
    "\x00",
    "\u202e",
    "a" * 3000,
    "ge2020,le1999",
    "1" * 4,
]
values = st.one_of(
    st.sampled_from(GARBAGE_VALUES),
    st.tuples(st.sampled_from(PREFIXES), st.sampled_from(GARBAGE_VALUES)).map("".join),
    st.text(max_size=20),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
SEARCH_NAMES = sorted(
    {code for kind in ("Patient", "Observation", "Appointment") for code in parameters_for(kind)}
)
CHAINS = [
    "subject.name",
    "subject:Patient.birthdate",
    "patient.organization.name",
    "subject:Patientx.name",
    "subject.",
    ".name",
    "subject..name",
    "general-practitioner:Practitioner.name",
    "_has:Observation:subject:code",
    "_has:Observation:patient:_has:AuditEvent:entity:type",
    "_has:Observationx:subject:code",
    "_has:Observation",
    "_has:::",
    "code-value-quantity",
    "component-code-value-quantity",
]
names = st.one_of(
    st.tuples(st.sampled_from(SEARCH_NAMES), st.sampled_from(MODIFIERS)).map("".join),
    st.sampled_from(RESULT_PARAMETERS),
    st.sampled_from(CHAINS),
    st.text(max_size=10),
)


def _encoded(pair: tuple[str, str], raw: bool) -> str:
    name, value = pair
    if raw:  # as a careless client writes it: only what would break the URL escaped
        return quote(name, safe=":.|$,*-_/") + "=" + quote(value, safe=":.|$,*-_/+")
    return quote(name, safe="") + "=" + quote(value, safe="")


queries = st.tuples(
    st.lists(st.tuples(names, values), max_size=5),
    st.booleans(),
).map(lambda spec: "&".join(_encoded(pair, spec[1]) for pair in spec[0]))

NUMBERS = ["0", "1", "7.2", "7.20", "-0", "1e2", "1E-2", "0.000001", "1e999999", "1e-999999"]
NUMBERS += ["9" * 30, "-" + "9" * 30, "1e1000000", ".5", "5.", "+5", "1_000", "\u0663", "\u00b2"]
DATES = ["2020", "2020-03", "2020-03-17", "2020-03-17T10:00:00Z", "2020-03-17T10:00"]
DATES += ["2020-03-17T10:00:00.123456789+05:00", "0001-01-01", "9999-12-31T23:59:59Z"]
DATES += ["2020-03-17T10:00:00-14:00", "2020-03-17T10:00:00+14:01", "20200317", "2020-3-7"]
TYPED_VALUES: dict[str, list[str]] = {
    "token": ["http://loinc.org|4548-4", "4548-4", "|4548-4", "http://loinc.org|", "female"],
    "string": ["Mar", "martin", "é", MARKER, "a b", "ø"],
    "reference": ["Patient/" + PATIENT, PATIENT, "Organization/1", "Patient/", "Patient/a/b"],
    "uri": ["http://x", "urn:oid:1.2", ""],
    "composite": ["http://loinc.org|4548-4$gt5", "4548-4$7.2", "$", "a$b$c", "4548-4$x"],
}
TYPED_VALUES["reference"] += ["http://testserver/fhir/Patient/" + PATIENT, "urn:uuid:x", "#a"]
TYPED_VALUES["token"] += ["a|b|c", "http://x|a|b", "\\|x", "true"]


@st.composite
def typed_values(draw: st.DrawFn, kind: str) -> str:
    """A value of a search parameter's type, with a prefix, or any garbage (rarely)."""
    if draw(st.integers(0, 6)) == 0:
        return draw(values)
    if kind in ("number", "quantity", "date"):
        prefix = draw(st.sampled_from(PREFIXES))
        bare = draw(st.sampled_from(DATES if kind == "date" else NUMBERS))
        unit = draw(st.sampled_from(["", "|http://unitsofmeasure.org|%", "||mg", "|x|"]))
        return prefix + bare + (unit if kind == "quantity" else "")
    return draw(st.sampled_from(TYPED_VALUES.get(kind, [""])))


RESULT_VALUES: dict[str, list[str]] = {
    "_count": ["0", "1", "2", "50", "1001", "-1", "1.5", "", "99999999999"],
    "_offset": ["0", "1", "10", "-1", "99999999999", "x"],
    "_sort": ["-date", "date,_id", "_lastUpdated", "-_lastUpdated", "birthdate", "name", "x"],
    "_include": ["Observation:subject", "Observation:subject:Patient", "*", "Observation:x"],
    "_revinclude": ["Observation:subject", "Provenance:target", "AuditEvent:entity", "x:y"],
    "_elements": ["id,name", "subject", "x", "meta.tag", ",", "name,name"],
    "_summary": ["true", "false", "text", "data", "count", "x"],
    "_total": ["none", "estimate", "accurate", "x"],
    "_lastUpdated": DATES,
    "_since": DATES,
    "_id": [PATIENT, "obs-1", "", "a,b"],
    "_format": ["json", "application/fhir+json", "xml"],
    "_type": ["Patient,Observation", "Observation", "x", ""],
}
HAS = ["_has:Observation:subject:code", "_has:Observation:patient:_id", "_has:Observation:x:y"]


@st.composite
def search_pairs(draw: st.DrawFn, resource_type: str) -> list[tuple[str, str]]:
    """Criteria of the type's own search parameters, and result parameters, with
    modifiers, chains and (rarely) garbage."""
    params = parameters_for(resource_type)
    pairs = []
    for _ in range(draw(st.integers(0, 4))):
        choice = draw(st.integers(0, 9))
        if choice < 5 and params:
            code = draw(st.sampled_from(sorted(params)))
            modifier = draw(st.sampled_from(MODIFIERS)) if choice == 0 else ""
            value = draw(typed_values(params[code].type))
            if draw(st.integers(0, 5)) == 0:
                value += "," + draw(typed_values(params[code].type))
            pairs.append((code + modifier, value))
        elif choice < 8:
            name = draw(st.sampled_from(sorted(RESULT_VALUES)))
            pairs.append((name, draw(st.sampled_from(RESULT_VALUES[name]) | values)))
        elif choice == 8:
            chain = draw(st.sampled_from(CHAINS + HAS))
            pairs.append((chain, draw(typed_values("token") | typed_values("string"))))
        else:
            pairs.append((draw(names), draw(values)))
    return pairs


def _joined(pairs: list[tuple[str, str]], raw: bool = False) -> str:
    return "&".join(_encoded(pair, raw) for pair in pairs)


def pairs_of(
    names: list[str], given: list[str], most: int
) -> st.SearchStrategy[list[tuple[str, str]]]:
    """Up to ``most`` parameters, each a name of ``names`` with a value of ``given``, or
    (now and then) any name or value."""
    pair = st.tuples(st.sampled_from(names) | st.text(max_size=5), st.sampled_from(given) | values)
    return st.lists(pair, max_size=most)


HEADER_NAMES = [
    "If-Match",
    "If-None-Match",
    "If-None-Exist",
    "If-Modified-Since",
    "Prefer",
    "Accept",
    "Content-Type",
    "Content-Length",
    "Content-Encoding",
    "Authorization",
    "Accept-Charset",
    "X-Forwarded-For",
    "Origin",
    "Cookie",
]
HEADER_VALUES = [
    "",
    "*",
    'W/"1"',
    'W/"0"',
    'W/"999999999999999999999"',
    'W/"-1"',
    'W/""',
    '"1"',
    "W/1",
    'W/"1", W/"2"',
    "identifier=a|b",
    "identifier=",
    "name=x&_count=1",
    "Patient?name=x",
    "_id=" + PATIENT,
    "xx=1",
    "Mon, 32 Jan 2020 00:00:00 GMT",
    "Tue, 01 Jan 2030 00:00:00 GMT",
    "Thu, 01 Jan 1970 00:00:00 GMT",
    "0",
    "-1",
    "99999999999999999999",
    "9" * 5000,
    "\u00b2",
    "return=representation",
    "return=OperationOutcome",
    "return=minimal",
    "respond-async",
    "handling=strict",
    "handling=lenient, return=representation",
    "application/fhir+json",
    "application/fhir+json; fhirVersion=3.0",
    "application/fhir+json; charset=latin-1",
    "application/fhir+xml",
    "application/json;q=0",
    "application/fhir+json;q=nan",
    "text/html",
    "*/*;q=0",
    "application/x-www-form-urlencoded",
    "application/x-www-form-urlencoded; charset=utf-16",
    "multipart/form-data; boundary=x",
    "gzip",
    "Bearer ",
    "Bearer x.y.z",
    "Bearer eyJhbGciOiJub25lIn0.e30.",
    "Basic Zm9vOmJhcg==",
    "null",
    "coffre_session=x; coffre_lang=zz",
    "http://evil.example",
]
header_values = st.one_of(
    st.sampled_from(HEADER_VALUES),
    st.binary(max_size=30).map(
        lambda raw: bytes(b for b in raw if b >= 0x20 and b != 0x7F).decode("latin-1")
    ),
)
headers = st.one_of(
    st.just({}),
    st.just({}),
    st.dictionaries(st.sampled_from(HEADER_NAMES), header_values, min_size=1, max_size=3),
)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=10).map(lambda text: MARKER + text),
    st.sampled_from(["", "2020-02-30", "urn:uuid:x", "Patient/" + PATIENT, "#", "x" * 70]),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["a", "value", "reference", "id", "url"]), inner, max_size=3
        )
    ),
    max_leaves=8,
)
FIELDS = [
    "id",
    "meta",
    "text",
    "contained",
    "extension",
    "modifierExtension",
    "identifier",
    "name",
    "gender",
    "birthDate",
    "subject",
    "patient",
    "status",
    "code",
    "valueQuantity",
    "effectiveDateTime",
    "link",
    "managingOrganization",
    "generalPractitioner",
    "telecom",
    "data",
    "contentType",
    "participant",
    "slot",
    "start",
    "end",
    "member",
    "entry",
    "type",
    "x",
]
RESOURCE_TEMPLATES: list[dict[str, Any]] = [
    {"resourceType": "Patient", "name": [{"family": MARKER}]},
    {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": MARKER},
        "subject": {"reference": "Patient/" + PATIENT},
        "valueQuantity": {"value": 7.2},
    },
    {"resourceType": "Binary", "contentType": "text/plain", "data": "WnF4anY="},
    {
        "resourceType": "Group",
        "type": "person",
        "actual": True,
        "member": [{"entity": {"reference": "Patient/" + PATIENT}}],
    },
    {"resourceType": "Organization", "name": MARKER},
]


def _synthetic() -> tuple[dict[str, Any], dict[str, Any]]:
    """The organisations and physicians of the synthetic data, and one patient's history,
    whose ``urn:uuid:`` references to the patient name ``PATIENT`` once alone."""
    shared = generate_shared_bundle(random.Random(0))
    history = generate_patient_bundle(random.Random(1), now=datetime(2026, 12, 7, tzinfo=UTC))
    return shared, history


SHARED_BUNDLE, HISTORY_BUNDLE = _synthetic()
_PATIENT_URL = HISTORY_BUNDLE["entry"][0]["fullUrl"]
SEED_RESOURCES: list[dict[str, Any]] = [
    *RESOURCE_TEMPLATES,
    *(
        json.loads(json.dumps(entry["resource"]).replace(_PATIENT_URL, "Patient/" + PATIENT))
        for entry in HISTORY_BUNDLE["entry"][:12]
    ),
]
HOSTILE_SCALARS = [
    "",
    " ",
    MARKER + "\u0000",
    MARKER + "\u202e",
    "2020-02-30",
    "2020-01-01T25:00:00Z",
    "urn:uuid:00000000-0000-4000-8000-000000000001",
    "#",
    "Patient/" + PATIENT,
    "Patient?identifier=nothing|matches",
    "x" * 2000,
    1e308,
    -0.0,
    2**31,
    2**64,
    -(2**63) - 1,
    0.1,
    True,
    None,
    [],
    {},
    [None],
    {"extension": []},
]
hostile_values = st.sampled_from(HOSTILE_SCALARS) | json_values


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in a JSON value, the value itself first."""
    yield path
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, inner in items:
        yield from _paths(inner, (*path, key))


def _changed(value: Any, how: str, other: Any) -> Any:
    if how == "replace":
        return other
    if how == "reference":
        return {"reference": other}
    if how == "wrap":
        return [value]
    if how == "unwrap":
        return value[0] if isinstance(value, list) and value else value
    if how == "text":
        return json.dumps(value)
    return [value, value] if how == "twice" else other


def _mutated(document: Any, path: tuple[Any, ...], how: str, other: Any) -> Any:
    """``document`` with the value at ``path`` changed (``delete``: taken out)."""
    if not path:
        return _changed(document, how, other)
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if how == "delete":
        del parent[last]
    else:
        parent[last] = _changed(parent[last], how, other)
    return document


MUTATIONS = [
    "replace",
    "replace",
    "delete",
    "delete",
    "reference",
    "wrap",
    "unwrap",
    "text",
    "twice",
]


@st.composite
def mutations_of(draw: st.DrawFn, seed: Any, most: int = 3) -> Any:
    """``seed`` with up to ``most`` of its values replaced, taken out or reshaped."""
    document = seed
    for _ in range(draw(st.integers(0, most))):
        document = _copied(document)  # no part of it shared twice
        path = draw(st.sampled_from(list(_paths(document))))
        how = draw(st.sampled_from(MUTATIONS))
        other = draw(hostile_values | references)
        document = _mutated(document, path, how, other)
    return _copied(document)


def _copied(document: Any) -> Any:
    return json.loads(json.dumps(document))


@st.composite
def resources(draw: st.DrawFn) -> Any:
    """A valid resource, with some of its elements replaced by values of any shape."""
    return draw(mutations_of(draw(st.sampled_from(SEED_RESOURCES))))


REFERENCES = [
    "urn:uuid:00000000-0000-4000-8000-000000000001",
    "urn:uuid:00000000-0000-4000-8000-000000000002",
    "urn:uuid:not-a-uuid",
    "urn:uuid:",
    "urn:oid:1.2",
    "Patient?identifier=nothing|matches",
    "Patient?gender=male",
    "Patient?",
    "Patient?xx=1",
    "Patient?_id=" + PATIENT,
    "Patient/" + PATIENT,
    "Patient/missing",
    "#",
    "",
    "Patientx/1",
    "Organization?identifier=https://coffre.example/org|fr-hcl",
    "Practitioner?identifier=https://coffre.example/practitioner|FR-MED-0005",
    "Organization?identifier=https://coffre.example/org|",
    "Organization?_id=1",
    "Organization",
    "Organization/1",
    "Organization/1/_history/1",
    "http://testserver/fhir/Organization/1",
]
references = st.sampled_from(REFERENCES) | json_scalars


def _reference(draw: st.DrawFn) -> Any:
    return draw(references)


@st.composite
def bundle_entries(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 5)) == 0:
        return draw(json_values)
    resource = draw(resources())
    if isinstance(resource, dict) and draw(st.booleans()):
        resource["subject"] = {"reference": _reference(draw)}
    entry: dict[str, Any] = {
        "fullUrl": _reference(draw),
        "resource": resource,
        "request": {
            "method": draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "x"])),
            "url": draw(
                st.sampled_from(
                    [
                        "Patient",
                        "Patient/" + PATIENT,
                        "Patient?identifier=a|b",
                        "Patient?gender=male",
                        "Observation?subject=urn:uuid:00000000-0000-4000-8000-000000000001",
                        "Patient/$everything",
                        "Patient/_history",
                        "/fhir/Patient",
                        "http://evil.example/fhir/Patient",
                        "",
                        "..",
                        "Patient/" + "a" * 70,
                        "metadata",
                        "Patient/" + PATIENT + "/_history/1",
                    ]
                )
                | segments
            ),
        },
    }
    for name in ("ifNoneExist", "ifMatch", "ifNoneMatch", "ifModifiedSince"):
        if draw(st.integers(0, 4)) == 0:
            entry["request"][name] = draw(st.sampled_from(HEADER_VALUES) | json_scalars)
    for name in draw(st.lists(st.sampled_from(["fullUrl", "resource", "request"]), max_size=1)):
        entry[name] = draw(json_values)
    return entry


EXTRA_ENTRIES: list[dict[str, Any]] = [
    {
        "fullUrl": "http://testserver/fhir/Patient/" + PATIENT,
        "resource": {"resourceType": "Patient", "id": PATIENT, "gender": "female"},
        "request": {"method": "PUT", "url": "Patient/" + PATIENT},
    },
    {"request": {"method": "DELETE", "url": "Observation/obs-1"}},
    {"request": {"method": "DELETE", "url": "Observation?code=http://loinc.org|4548-4"}},
    {"request": {"method": "GET", "url": "Observation?subject=Patient/" + PATIENT}},
    {"request": {"method": "GET", "url": "Patient/" + PATIENT + "/_history"}},
    {
        "resource": {"resourceType": "Organization", "name": MARKER},
        "request": {"method": "PUT", "url": "Organization?identifier=https://coffre.example/org|x"},
    },
    {
        "resource": {"resourceType": "Organization", "id": "1", "name": MARKER},
        "request": {"method": "PUT", "url": "Organization/1", "ifMatch": 'W/"1"'},
    },
    *SHARED_BUNDLE["entry"][:3],
]


@st.composite
def bundles(draw: st.DrawFn) -> Any:
    """A slice of a synthetic patient's transaction (the patient first, most often), and
    other interactions, mutated."""
    history = HISTORY_BUNDLE["entry"]
    chosen = draw(st.lists(st.sampled_from(history[1:]), max_size=5))
    first = [history[0]] if draw(st.integers(0, 4)) else []
    extra = draw(st.lists(st.sampled_from(EXTRA_ENTRIES), max_size=2))
    kind = draw(st.sampled_from(["transaction"] * 4 + ["batch"] * 3 + ["document", "collection"]))
    bundle = {"resourceType": "Bundle", "type": kind, "entry": [*first, *chosen, *extra]}
    if draw(st.integers(0, 9)) == 0:
        bundle["entry"].append(draw(bundle_entries()))
    return draw(mutations_of(bundle))


def _nested(depth: int) -> dict[str, Any]:
    value: Any = MARKER
    for _ in range(depth):
        value = {"extension": [{"url": "urn:x", "valueString": value}]}
    return {"resourceType": "Patient", **value}


def _as_body(value: Any, form: str) -> bytes:
    text = json.dumps(value, allow_nan=True)
    raw = text.encode()
    if form == "bom":
        return b"\xef\xbb\xbf" + raw
    if form == "latin-1":
        return text.replace(MARKER, MARKER + "é").encode("latin-1", "replace")
    if form == "surrogate":
        return raw.replace(MARKER.encode(), MARKER.encode() + b"\\ud800", 1)
    if form == "truncated":
        return raw[: len(raw) // 2]
    if form == "duplicate-keys":
        return raw.replace(b"{", b'{"resourceType": "Bundle", ', 1)
    if form == "huge-number":
        return raw.replace(b"7.2", b"1e999").replace(b'"WnF4anY="', b"-" + b"9" * 400)
    return raw


bodies = st.one_of(
    st.tuples(
        st.one_of(resources(), resources(), bundles(), json_values),
        st.sampled_from(
            ["plain"] * 6
            + ["bom", "latin-1", "surrogate", "truncated", "duplicate-keys"]
            + ["huge-number"]
        ),
    ).map(lambda spec: _as_body(*spec)),
    st.integers(min_value=100, max_value=140).map(
        lambda depth: json.dumps(_nested(depth)).encode()
    ),
    st.binary(max_size=60),
    st.sampled_from([b"NaN", b"[NaN]", b'{"resourceType": "Patient", "x": NaN}', b"\x00", b""]),
)

# -- what every answer is held to -----------------------------------------------------------


@dataclass(frozen=True)
class LogState:
    """What a refused write must leave as it was."""

    last_seq: int
    leaves: int

    @classmethod
    def of(cls, records: RecordStore) -> LogState:
        return cls(records.storage.last_seq(), records.storage.leaf_count())


def _request(
    client: TestClient,
    method: str,
    url: str,
    headers: dict[str, str] | None = None,
    content: bytes | None = None,
) -> httpx.Response:
    raw = {name: value.encode("latin-1") for name, value in (headers or {}).items()}
    return client.request(method, url, headers=raw, content=content)


def _shown(response: httpx.Response) -> str:
    return f"{response.request.method} {response.request.url} -> {response.status_code}: {response.text[:2000]}"


def assert_answered(response: httpx.Response, documented_503: bool = False) -> None:
    """No 500 (nor any 5xx but a documented 503)."""
    status = response.status_code
    event(f"status {status}")  # --hypothesis-show-statistics: what the examples reached
    assert status < 500 or (documented_503 and status == 503), _shown(response)


def assert_outcome(response: httpx.Response) -> None:
    """An error under /fhir or /research is an OperationOutcome a person can read."""
    if response.status_code < 400 or response.request.method == "HEAD":
        return
    assert response.headers.get("content-type", "").startswith(
        ("application/fhir+json", "application/json")
    ), _shown(response)
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", _shown(response)
    diagnostics = body["issue"][0]["diagnostics"]
    assert isinstance(diagnostics, str) and diagnostics.strip(), _shown(response)


def assert_unchanged_if_refused(
    response: httpx.Response, records: RecordStore, before: LogState
) -> None:
    if response.status_code >= 400:
        assert LogState.of(records) == before, _shown(response)


def assert_nothing_logged(caplog: pytest.LogCaptureFixture) -> None:
    """No log line of Coffre's repeats the text of a body."""
    for record in caplog.records:
        if record.name.startswith("coffre"):
            assert MARKER not in record.getMessage(), record.getMessage()
    caplog.clear()


# -- the FHIR REST interactions -------------------------------------------------------------


TOMORROW = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
SCHEDULE = {
    "resourceType": "Schedule",
    "id": "stade",
    "active": True,
    "serviceType": [{"coding": [{"system": "http://snomed.info/sct", "code": "33879002"}]}],
    "actor": [{"reference": "Location/stade", "display": "Stade"}],
}
SLOT = {
    "resourceType": "Slot",
    "id": "nine-a",
    "schedule": {"reference": "Schedule/stade"},
    "status": "free",
    "start": f"{TOMORROW}T09:00:00-05:00",
    "end": f"{TOMORROW}T09:05:00-05:00",
}
BOOKING = {
    "resourceType": "Parameters",
    "parameter": [
        {
            "name": "appointment-resource",
            "resource": {
                "resourceType": "Appointment",
                "status": "proposed",
                "slot": [{"reference": "Slot/nine-a"}],
                "start": SLOT["start"],
                "end": SLOT["end"],
                "participant": [
                    {"actor": {"reference": "Patient/" + PATIENT}, "status": "needs-action"},
                    {"actor": {"reference": "Location/stade"}, "status": "accepted"},
                ],
            },
        }
    ],
}
CONSENT = {"resourceType": "Parameters", "parameter": [{"name": "optOut", "valueBoolean": True}]}
VALIDATE = {
    "resourceType": "Parameters",
    "parameter": [
        {"name": "resource", "resource": {"resourceType": "Patient", "id": "p", "gender": "male"}},
        {"name": "mode", "valueCode": "update"},
    ],
}
EXPORT = {
    "resourceType": "Parameters",
    "parameter": [
        {"name": "_type", "valueString": "Patient,Observation"},
        {"name": "_since", "valueInstant": "2020-01-01T00:00:00Z"},
        {"name": "_typeFilter", "valueString": "Observation?code=http://loinc.org|4548-4"},
        {"name": "_elements", "valueString": "id,Patient.gender"},
        {"name": "patient", "valueReference": {"reference": "Patient/" + PATIENT}},
    ],
}


@pytest.fixture
def seeded(client: TestClient, records: RecordStore) -> RecordStore:
    """The synthetic organisations and physicians, a patient, an observation of theirs,
    an organisation and a group, for hostile requests to find something."""
    shared = client.post(
        "/fhir", json=SHARED_BUNDLE, headers={"Content-Type": "application/fhir+json"}
    )
    assert shared.status_code == 200, shared.text
    with records.writer() as writer:
        writer.update("Patient", PATIENT, {"resourceType": "Patient", "id": PATIENT})
        writer.update(
            "Observation",
            "obs-1",
            {
                "resourceType": "Observation",
                "id": "obs-1",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
                "subject": {"reference": "Patient/" + PATIENT},
                "valueQuantity": {"value": 7.2},
                "effectiveDateTime": "2020-03-17",
            },
        )
        writer.update("Organization", "1", {"resourceType": "Organization", "id": "1"})
        for resource in (SCHEDULE, SLOT):
            writer.update(resource["resourceType"], resource["id"], resource)
        writer.update(
            "Group",
            "g1",
            {
                "resourceType": "Group",
                "id": "g1",
                "type": "person",
                "actual": True,
                "member": [{"entity": {"reference": "Patient/" + PATIENT}}],
            },
        )
    return records


INTERACTIONS = [
    ("GET", "/fhir/{type}/{id}"),
    ("GET", "/fhir/{type}/{id}"),
    ("PUT", "/fhir/{type}/{id}"),
    ("PUT", "/fhir/{type}/{id}"),
    ("DELETE", "/fhir/{type}/{id}"),
    ("DELETE", "/fhir/{type}"),
    ("PUT", "/fhir/{type}"),
    ("POST", "/fhir/{type}"),
    ("GET", "/fhir/{type}/{id}/_history"),
    ("GET", "/fhir/{type}/{id}/_history/{vid}"),
    ("GET", "/fhir/{type}/_history"),
    ("GET", "/fhir/_history"),
    ("POST", "/fhir"),
    ("GET", "/fhir/{type}/{id}/$map-proof"),
    ("POST", "/fhir/{type}/$validate"),
    ("POST", "/fhir/{type}/{id}/$validate"),
]
FHIR_PATHS = [
    "/fhir/{type}",
    "/fhir/{type}/{id}",
    "/fhir/{type}/{id}/_history",
    "/fhir/{type}/{id}/_history/{vid}",
    "/fhir/{type}/_history",
    "/fhir/{type}/_search",
    "/fhir/_history",
    "/fhir/_search",
    "/fhir/metadata",
    "/fhir",
    "/fhir/",
    "/fhir/{type}/{id}/$map-proof",
    "/fhir/{type}/{id}/{vid}",
]
methods = st.sampled_from(["GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"])


@examples(50)
@given(
    interaction=st.sampled_from(INTERACTIONS) | st.tuples(methods, st.sampled_from(FHIR_PATHS)),
    resource_type=st.sampled_from(["Patient", "Observation", "Organization"]) | types,
    resource_id=st.sampled_from([PATIENT, "obs-1", "1", "g1"]) | segments,
    vid=st.sampled_from(["1", "2", "0", "-1", "1.0", "99999999999999999999"]) | segments,
    query=st.just("") | queries | search_pairs("Patient").map(_joined),
    sent=headers,
    body=st.none() | bodies,
)
def test_any_fhir_interaction_is_answered_with_an_outcome(
    client: TestClient,
    seeded: RecordStore,
    caplog: pytest.LogCaptureFixture,
    interaction: tuple[str, str],
    resource_type: str,
    resource_id: str,
    vid: str,
    query: str,
    sent: dict[str, str],
    body: bytes | None,
) -> None:
    method, template = interaction
    path = template.format(type=resource_type, id=resource_id, vid=vid)
    before = LogState.of(seeded)
    typed = {"Content-Type": "application/fhir+json"} if body is not None else {}
    with caplog.at_level(logging.INFO):
        response = _request(client, method, f"{path}?{query}", {**typed, **sent}, body)
    assert_answered(response)
    assert_outcome(response)
    assert_unchanged_if_refused(response, seeded, before)
    assert_nothing_logged(caplog)


@examples(50)
@given(
    method=st.sampled_from(["POST", "PUT"]),
    resource_type=st.sampled_from(["Patient", "Observation", "Binary", "Group", "Organization"]),
    resource_id=st.sampled_from([PATIENT, "obs-1", "new-1", "1", "g1"]) | segments,
    query=st.sampled_from(["", "", "", "_format=json", "identifier=a|b", "_id=" + PATIENT])
    | queries,
    sent=headers,
    body=resources().map(lambda resource: json.dumps(resource).encode()) | bodies,
)
def test_any_body_written_is_refused_cleanly_or_stored(
    client: TestClient,
    seeded: RecordStore,
    caplog: pytest.LogCaptureFixture,
    method: str,
    resource_type: str,
    resource_id: str,
    query: str,
    sent: dict[str, str],
    body: bytes,
) -> None:
    path = f"/fhir/{resource_type}" + (f"/{resource_id}" if method == "PUT" else "")
    before = LogState.of(seeded)
    headers = {"Content-Type": "application/fhir+json", **sent}
    with caplog.at_level(logging.INFO):
        response = _request(client, method, f"{path}?{query}", headers, body)
    assert_answered(response)
    assert_outcome(response)
    assert_unchanged_if_refused(response, seeded, before)
    assert_nothing_logged(caplog)


PATCH_SEEDS = [
    [{"op": "replace", "path": "/status", "value": "amended"}],
    [{"op": "add", "path": "/valueQuantity/unit", "value": MARKER}],
    [
        {"op": "test", "path": "/subject/reference", "value": "Patient/" + PATIENT},
        {"op": "remove", "path": "/effectiveDateTime"},
    ],
    [{"op": "move", "from": "/valueQuantity", "path": "/valueString"}],
    [{"op": "copy", "from": "/code", "path": "/category/-"}],
    [{"op": "add", "path": "/note", "value": [{"text": MARKER}]}],
]


@examples(50)
@given(
    operations=st.sampled_from(PATCH_SEEDS).flatmap(mutations_of) | json_values,
    url=st.sampled_from(["Observation/obs-1", "Observation?_id=obs-1", "Patient/" + PATIENT])
    | st.tuples(types, segments).map("/".join),
    sent=headers,
)
def test_any_json_patch_is_refused_cleanly_or_written(
    client: TestClient,
    seeded: RecordStore,
    caplog: pytest.LogCaptureFixture,
    operations: Any,
    url: str,
    sent: dict[str, str],
) -> None:
    before = LogState.of(seeded)
    headers = {"Content-Type": "application/json-patch+json", **sent}
    with caplog.at_level(logging.INFO):
        response = _request(
            client, "PATCH", f"/fhir/{url}", headers, json.dumps(operations).encode()
        )
    assert_answered(response)
    assert_outcome(response)
    assert_unchanged_if_refused(response, seeded, before)
    assert_nothing_logged(caplog)


@examples(50)
@given(bundle=bundles(), form=st.sampled_from(["plain", "plain", "bom", "surrogate"]), sent=headers)
def test_any_bundle_is_refused_whole_or_processed(
    client: TestClient,
    seeded: RecordStore,
    caplog: pytest.LogCaptureFixture,
    bundle: dict[str, Any],
    form: str,
    sent: dict[str, str],
) -> None:
    before = LogState.of(seeded)
    headers = {"Content-Type": "application/fhir+json", **sent}
    with caplog.at_level(logging.INFO):
        response = _request(client, "POST", "/fhir", headers, _as_body(bundle, form))
    assert_answered(response)
    assert_outcome(response)
    assert_unchanged_if_refused(response, seeded, before)
    assert_nothing_logged(caplog)


SEARCHED = ["Patient", "Observation", "Encounter", "Appointment", "Slot", "Group", "AuditEvent"]


@st.composite
def searches(draw: st.DrawFn) -> tuple[str, list[tuple[str, str]], list[tuple[str, str]]]:
    resource_type = draw(st.sampled_from(SEARCHED))
    return resource_type, draw(search_pairs(resource_type)), draw(search_pairs(resource_type))


@examples(50)
@given(
    search=searches(),
    method=st.sampled_from(["GET", "GET", "GET", "POST"]),
    raw=st.booleans(),
    sent=headers,
)
def test_any_search_is_answered_with_a_bundle_or_an_outcome(
    client: TestClient,
    seeded: RecordStore,
    search: tuple[str, list[tuple[str, str]], list[tuple[str, str]]],
    method: str,
    raw: bool,
    sent: dict[str, str],
) -> None:
    resource_type, query, form = search
    if method == "POST":
        headers = {"Content-Type": "application/x-www-form-urlencoded", **sent}
        url = f"/fhir/{resource_type}/_search?{_joined(query, raw)}"
        content: bytes | None = _joined(form, raw).encode()
    else:
        headers, url, content = sent, f"/fhir/{resource_type}?{_joined(query + form, raw)}", None
    response = _request(client, method, url, headers, content)
    assert_answered(response)
    assert_outcome(response)
    if response.status_code == 200:
        assert response.json()["resourceType"] == "Bundle", _shown(response)


# -- operations -----------------------------------------------------------------------------

OPERATIONS = [
    ("GET", "/fhir/Patient/{id}/$everything"),
    ("GET", "/fhir/Patient/{id}/$access-history"),
    ("GET", "/fhir/Patient/{id}/$research-consent"),
    ("PUT", "/fhir/Patient/{id}/$research-consent"),
    ("POST", "/fhir/Patient/{id}/$research-consent"),
    ("GET", "/fhir/$export"),
    ("GET", "/fhir/Patient/$export"),
    ("GET", "/fhir/Group/{id}/$export"),
    ("POST", "/fhir/$export"),
    ("POST", "/fhir/Patient/$export"),
    ("POST", "/fhir/Group/{id}/$export"),
    ("GET", "/fhir/$export-status/{job}"),
    ("GET", "/fhir/$export-status/{job}"),
    ("DELETE", "/fhir/$export-status/{job}"),
    ("GET", "/fhir/$export-file/{job}/{type}"),
    ("GET", "/fhir/$export-file/{job}/Patient"),
    ("GET", "/fhir/$export-warnings/{job}"),
    ("GET", "/fhir/Appointment/$find"),
    ("POST", "/fhir/Appointment/$book"),
    ("GET", "/fhir/{type}/{id}/$map-proof"),
    ("POST", "/fhir/{type}/$validate"),
    ("POST", "/fhir/{type}/{id}/$validate"),
    ("GET", "/fhir/.well-known/smart-configuration"),
]
PARAMETER_NAMES = [
    "patient",
    "service-type",
    "serviceType",
    "start",
    "end",
    "location",
    "slot",
    "appointment",
    "_count",
    "_type",
    "_since",
    "_outputFormat",
    "x",
    "",
]


OPERATION_VALUES: dict[str, list[str]] = {
    "start": [TOMORROW, f"{TOMORROW}T08:00:00Z", "2020-01-01", "9999-12-31", "x", ""],
    "end": [TOMORROW, "2099-01-01", "2020-01-01", "0001-01-01", "x"],
    "_since": DATES,
    "_type": ["Patient,Observation", "Observation", "x", "", "Patient,"],
    "_count": RESULT_VALUES["_count"],
    "_offset": RESULT_VALUES["_offset"],
    "_snapshot": ["0", "1", "99999999999", "x", "-1"],
    "_outputFormat": ["application/fhir+ndjson", "ndjson", "text/csv", ""],
    "patient": ["Patient/" + PATIENT, PATIENT, "Group/g1", "Patient/", "/"],
    "location": ["Location/stade", "stade", "Patient/x", "Location/"],
    "practitioner": ["Practitioner/x", "x", "Location/x"],
    "schedule": ["Schedule/stade", "stade", "Schedule/"],
    "service-type": ["http://snomed.info/sct|33879002", "33879002", "a|b|c", ""],
    "_typeFilter": [
        "Observation?code=x",
        "x",
        "Observation%3Fcode%3Dx%2Cy,Patient%3Fname%3Aexact%3Da",
        "Observation%3F_has%3AEncounter%3Asubject%3Acode%3D1",
        "Patient%3Fbirthdate%3Dge2020%26_sort%3Dx",
        "%E9",
        ",",
    ],
    "_elements": ["id", "Patient.gender", "name.given", "Nonsense.id", ""],
    "mode": ["create", "update", "delete", "x"],
    "profile": ["http://hl7.org/fhir/StructureDefinition/Patient", ""],
}
operation_queries = st.lists(
    st.sampled_from(sorted(OPERATION_VALUES)).flatmap(
        lambda name: st.tuples(st.just(name), st.sampled_from(OPERATION_VALUES[name]))
    ),
    max_size=4,
).map(_joined)
parameters = st.one_of(
    mutations_of(EXPORT),
    mutations_of(BOOKING),
    mutations_of(CONSENT),
    mutations_of(VALIDATE),
    mutations_of(BOOKING["parameter"][0]["resource"]),
    json_values,
)


@pytest.fixture
def export_job(client: TestClient, seeded: RecordStore) -> str:
    """The job of a system export, as its status URL names it."""
    asked = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
    kick_off = client.get("/fhir/$export", headers=asked)
    assert kick_off.status_code == 202, kick_off.text
    job: str = kick_off.headers["content-location"].rsplit("/", 1)[1]
    return job


def _edited(job: str, edit: str, at: int) -> str:
    """A job's id as it is, cut short, lengthened or with one character changed."""
    at %= len(job)
    if edit == "cut":
        return job[:at]
    if edit == "longer":
        return job + job[:at]
    if edit == "changed":
        return job[:at] + ("A" if job[at] != "A" else "B") + job[at + 1 :]
    return job


@examples(50)
@given(
    operation=st.sampled_from(OPERATIONS),
    job_edit=st.sampled_from(["as-is", "as-is", "cut", "longer", "changed"]),
    edit_at=st.integers(0, 400),
    resource_type=types,
    resource_id=st.sampled_from([PATIENT, "g1", "obs-1"]) | segments,
    query=st.just("") | operation_queries | queries,
    sent=headers,
    body=parameters,
    async_asked=st.booleans(),
)
def test_any_operation_is_answered_with_an_outcome(
    client: TestClient,
    seeded: RecordStore,
    export_job: str,
    operation: tuple[str, str],
    job_edit: str,
    edit_at: int,
    resource_type: str,
    resource_id: str,
    query: str,
    sent: dict[str, str],
    body: Any,
    async_asked: bool,
) -> None:
    method, template = operation
    job = _edited(export_job, job_edit, edit_at)
    path = template.format(type=resource_type, id=resource_id, job=job)
    headers = {"Content-Type": "application/fhir+json"}
    if async_asked:
        headers["Prefer"] = "respond-async"
    before = LogState.of(seeded)
    content = json.dumps(body).encode() if method in ("POST", "PUT") else None
    response = _request(client, method, f"{path}?{query}", {**headers, **sent}, content)
    assert_answered(response)
    assert_outcome(response)
    assert_unchanged_if_refused(response, seeded, before)


# -- the ledger -----------------------------------------------------------------------------

LEDGER_PATHS = [
    "/ledger/checkpoint",
    "/ledger/checkpoint/cosigned",
    "/ledger/key",
    "/ledger/proof/inclusion",
    "/ledger/proof/consistency",
    "/ledger/leaves",
    "/ledger/proof/map",
    "/ledger/tile/{tile}",
]
TILES = [
    "0/000",
    "0/000.p/1",
    "0/000.p/0",
    "0/000.p/256",
    "0/x001/000",
    "1/000",
    "63/000",
    "64/000",
    "entries/000",
    "entries/000.p/3",
    "entries/x999/999/999",
    "0/x" + "999/" * 10 + "000",
    "..",
    "",
    "0/-1",
    "0/" + "\u0660" * 3,
]
LEDGER_NAMES = ["index", "size", "old", "new", "start", "count", "location", "record"]
LEDGER_VALUES = [
    "0",
    "1",
    "2",
    "3",
    "4",
    "256",
    "-1",
    "9" * 20,
    "9" * 21,
    "AAAA",
    "",
    "x",
    "\u0661",
]
ledger_queries = pairs_of(LEDGER_NAMES, LEDGER_VALUES, 4).map(_joined)


@examples(50)
@given(
    method=st.sampled_from(["GET", "GET", "GET", "HEAD", "POST", "DELETE"]),
    template=st.sampled_from(LEDGER_PATHS),
    tile=st.sampled_from(TILES) | st.lists(segments, max_size=4).map("/".join),
    query=ledger_queries,
    sent=headers,
)
def test_any_ledger_request_is_answered_with_an_outcome(
    client: TestClient,
    seeded: RecordStore,
    method: str,
    template: str,
    tile: str,
    query: str,
    sent: dict[str, str],
) -> None:
    response = _request(client, method, template.format(tile=tile) + "?" + query, sent)
    assert_answered(response, documented_503=True)  # a damaged log (none here)
    assert_outcome(response)


# -- the research hub -----------------------------------------------------------------------


@pytest.fixture
def hub(records: RecordStore, tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """A gateway with a project's extract, and a researcher's Authorization header."""
    research_population(records)
    folder = ResearchFolder(tmp_path / "keyring.json")
    project = replace(RESEARCH_PROJECT, expires=date(2099, 6, 30))
    save_projects(folder.projects_file, {project.project_id: project})
    made = folder.new_extract(project.project_id, datetime(2026, 12, 7, 10, tzinfo=UTC))
    extract(records, project, made, "operator", date(2026, 12, 7))
    authority = Authority.ephemeral()
    claims = {
        "iss": "http://testserver/auth",
        "aud": "http://testserver/fhir",
        "sub": "alice",
        "client_id": "labo",
        "role": "researcher",
        "fhirUser": "Practitioner/alice",
        "scope": "openid fhirUser",
    }
    token = authority.signer.sign(claims, 3600)
    app = create_app(records, authority=authority, research=folder)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, {"Authorization": f"Bearer {token}"}


COUNT_NAMES = ["table", "by", "where", "epsilon", "delta", "max-cells", "extract"]
COUNT_VALUES = [
    "person",
    "measurement",
    "gender",
    "year_of_birth",
    "year_of_birth/10",
    "year_of_birth/0",
    "year_of_birth/-1",
    "year_of_birth/1e999",
    "year_of_birth/nan",
    "gender=female",
    "gender!=female",
    "year_of_birth>=1960",
    "year_of_birth>=abc",
    "value>1e999",
    "gender='; DROP TABLE person; --",
    '"gender"',
    "person.gender",
    "0",
    "1",
    "-1",
    "1e-300",
    "1e999",
    "NaN",
    "Infinity",
    "0.5",
    "9" * 40,
    "",
]
count_queries = pairs_of(COUNT_NAMES, COUNT_VALUES, 5).map(_joined)


@examples(40)
@given(
    path=st.sampled_from(
        [
            "/research/projects",
            "/research/projects/diabete-2026/count",
            "/research/projects/diabete-2026/count",
            "/research/projects/{project}/count",
            "/research/{project}",
        ]
    ),
    project=segments,
    query=count_queries,
    with_token=st.integers(0, 5),
    sent=headers,
)
def test_any_research_request_is_answered_with_an_outcome(
    hub: tuple[TestClient, dict[str, str]],
    records: RecordStore,
    path: str,
    project: str,
    query: str,
    with_token: int,
    sent: dict[str, str],
) -> None:
    client, authorization = hub
    asked = {**sent, **authorization} if with_token else sent
    response = _request(client, "GET", path.format(project=project) + "?" + query, asked)
    assert_answered(response)
    assert_outcome(response)


# -- the portal and the authorisation server ------------------------------------------------


@pytest.fixture
def gateway(seeded: RecordStore, tmp_path: Path) -> Iterator[tuple[TestClient, str]]:
    """A gateway whose registry has a patient user and an app; and a signed-in session's
    CSRF token."""
    registry = with_user(Registry(), new_user("marie", "patient", f"Patient/{PATIENT}", PASSWORD))
    app = app_client("app", [REDIRECT], "patient/*.rs launch/patient openid fhirUser", "App")
    registry = replace(registry, clients={"app": app})
    save(tmp_path / "keyring.access.json", registry)
    key = ECKey.generate_key("P-256", private=True).as_dict(private=True)
    authority = Authority(
        key,
        id_token_pem(),
        RegistryFile(tmp_path / "keyring.access.json"),
        OneTime(":memory:"),
        AuthSettings(),
    )
    with TestClient(
        create_app(seeded, authority=authority), raise_server_exceptions=False
    ) as client:
        form = client.get("/portal/sign-in").text
        token = form.split('name="token" value="')[1].split('"')[0]
        signed = client.post(
            "/portal/sign-in",
            data={"token": token, "username": "marie", "password": PASSWORD, "next": ""},
            follow_redirects=False,
        )
        assert signed.status_code == 303, signed.text
        page = client.get("/portal/research").text
        yield client, page.split('name="csrf" value="')[1].split('"')[0]


PORTAL_PATHS = [
    "/portal",
    "/portal/",
    "/portal/sign-in",
    "/portal/sign-out",
    "/portal/access",
    "/portal/notices",
    "/portal/research",
    "/portal/booking",
    "/portal/booking/cancel",
    "/portal/{segment}",
]
PORTAL_FIELDS = [
    "csrf",
    "token",
    "username",
    "password",
    "next",
    "optOut",
    "version",
    "slot",
    "centre",
    "day",
    "appointment",
    "lang",
    "booked",
    "saved",
    "page",
]
PORTAL_VALUES = [
    "\u00b2",
    "true",
    "false",
    "marie",
    PASSWORD,
    "0",
    "1",
    "-1",
    "9" * 30,
    "stade",
    "2020-02-30",
    "2026-12-07",
    "9999-12-31",
    "0001-01-01",
    "//evil.example",
    "https://evil.example/",
    "/portal/../auth",
    "fr",
    "en",
    "zz",
    "",
]
portal_pairs = pairs_of(PORTAL_FIELDS, PORTAL_VALUES, 5)


@dataclass(frozen=True)
class FormRequest:
    """A request of a browser or an app: its form's fields, or bytes in their place."""

    method: str
    url: str
    fields: list[tuple[str, str]]
    raw: bytes | None
    sent: dict[str, str]

    def send(self, client: TestClient, *first: tuple[str, str]) -> httpx.Response:
        """Sent with ``first`` before the form's fields (unless bytes stand in their place)."""
        content = self.raw if self.raw is not None else _joined([*first, *self.fields]).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded", **self.sent}
        body = content if self.method in ("POST", "PUT") else None
        return _request(client, self.method, self.url, headers, body)


@st.composite
def form_requests(
    draw: st.DrawFn, methods: list[str], paths: list[str], pairs: st.SearchStrategy[Any]
) -> FormRequest:
    path = draw(st.sampled_from(paths)).format(segment=draw(segments))
    return FormRequest(
        draw(st.sampled_from(methods)),
        path + "?" + _joined(draw(pairs)),
        draw(pairs),
        draw(st.none() | st.binary(max_size=40)),
        draw(headers),
    )


@examples(50)
@given(
    asked=form_requests(["GET", "POST", "POST", "PUT", "DELETE"], PORTAL_PATHS, portal_pairs),
    with_csrf=st.booleans(),
    signed_in=st.booleans(),
)
def test_any_portal_request_is_answered_with_a_page(
    gateway: tuple[TestClient, str],
    seeded: RecordStore,
    asked: FormRequest,
    with_csrf: bool,
    signed_in: bool,
) -> None:
    client, csrf = gateway
    if not signed_in:
        asked = replace(asked, sent={**asked.sent, "Cookie": ""})
    before = LogState.of(seeded)
    response = asked.send(client, *(("csrf", csrf) for _ in range(with_csrf)))
    assert_answered(response)
    if response.status_code >= 400 and asked.method != "HEAD":
        assert response.headers["content-type"].startswith("text/html"), _shown(response)
        # A page refused may show records (a seat taken, the booking page again), and log
        # that it did; it writes none.
        assert seeded.storage.last_seq() == before.last_seq, _shown(response)


AUTH_FIELDS = [
    "grant_type",
    "client_id",
    "client_assertion",
    "client_assertion_type",
    "scope",
    "code",
    "redirect_uri",
    "code_verifier",
    "response_type",
    "state",
    "aud",
    "code_challenge",
    "code_challenge_method",
    "launch",
    "username",
    "password",
    "lang",
    "refresh_token",
]
AUTH_VALUES = [
    "client_credentials",
    "authorization_code",
    "refresh_token",
    "code",
    "S256",
    "plain",
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
    "eyJhbGciOiJub25lIn0.e30.",
    "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOjF9.AA",
    "x.y.z",
    "system/*.rs",
    "patient/*.read launch/patient openid fhirUser offline_access",
    "user/Patient.cruds?x=1",
    "http://testserver/fhir",
    REDIRECT,
    "app",
    "marie",
    PASSWORD,
    "a" * 43,
    "a" * 200,
    "",
]
auth_pairs = pairs_of(AUTH_FIELDS, AUTH_VALUES, 7)


AUTH_PATHS = [
    "/auth/authorize",
    "/auth/token",
    "/auth/jwks",
    "/auth/{segment}",
    "/fhir/.well-known/smart-configuration",
    "/health/live",
    "/health/ready",
]


@examples(50)
@given(asked=form_requests(["GET", "POST"], AUTH_PATHS, auth_pairs))
def test_any_authorisation_request_is_answered(
    gateway: tuple[TestClient, str], asked: FormRequest
) -> None:
    client, _ = gateway
    response = asked.send(client)
    assert_answered(response, documented_503=asked.url.startswith("/health/ready"))


VERIFIER = "v" * 43
AUTHORIZE = {
    "response_type": "code",
    "client_id": "app",
    "redirect_uri": REDIRECT,
    "scope": "patient/*.rs launch/patient openid fhirUser",
    "state": "st-1",
    "aud": "http://testserver/fhir",
    "code_challenge": base64.urlsafe_b64encode(hashlib.sha256(VERIFIER.encode()).digest())
    .rstrip(b"=")
    .decode(),
    "code_challenge_method": "S256",
}
EXCHANGE = {
    "grant_type": "authorization_code",
    "redirect_uri": REDIRECT,
    "client_id": "app",
    "code_verifier": VERIFIER,
}
SIGN_IN = {"username": "marie", "password": PASSWORD}
_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


def _text_values(fields: Any) -> list[tuple[str, str]]:
    """A mutated form as a browser could send it: text names and values."""
    if not isinstance(fields, dict):
        return [("x", json.dumps(fields))]
    return [(str(k), v if isinstance(v, str) else json.dumps(v)) for k, v in fields.items()]


@examples(12)  # each sign-in hashes a password on purpose slowly
@given(
    asked=mutations_of(AUTHORIZE, 2),
    signing_in=mutations_of(SIGN_IN, 1),
    exchange=mutations_of(EXCHANGE, 2),
)
def test_any_authorisation_code_flow_is_answered(
    gateway: tuple[TestClient, str], asked: Any, signing_in: Any, exchange: Any
) -> None:
    """The authorisation code flow, each of its three steps sent mutated."""
    client, _ = gateway
    page = client.get("/auth/authorize?" + _joined(_text_values(asked)), follow_redirects=False)
    assert_answered(page)
    if page.status_code != 200:
        return
    hidden = _HIDDEN.findall(page.text)
    form = _joined([*hidden, *_text_values(signing_in)]).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Origin": "http://testserver"}
    signed = _request(client, "POST", "/auth/authorize", headers, form)
    assert_answered(signed)
    code = re.search(r"[?&]code=([^&]+)", signed.headers.get("location", ""))
    if code is None:
        return
    form = _joined([("code", unquote(code.group(1))), *_text_values(exchange)]).encode()
    assert_answered(_request(client, "POST", "/auth/token", headers, form))


CONTENT_TYPES = [
    "text/plain",
    'text/plain; name="é"',
    'text/plain; name="\u2028"',
    'text/plain; name="a\\"b"',
    "text/plain; charset=é",
    "текст/простой",
    "image/png; x=💉",
    "text/html",
    "application/fhir+json",
]
READS = [
    "/fhir/{type}/{id}",
    "/fhir/{type}/{id}?_summary=true",
    "/fhir/{type}/{id}?_elements=id,contentType,name",
    "/fhir/{type}/{id}/_history",
    "/fhir/{type}/{id}/_history/1",
    "/fhir/{type}?_id={id}",
    "/fhir/{type}?_id={id}&_include=*&_revinclude=*",
    "/fhir/Patient/" + PATIENT + "/$everything",
    "/fhir/_history?_count=5",
]


@examples(20)
@given(
    resource=resources() | st.just({"resourceType": "Binary", "data": "WnF4anY="}),
    content_type=st.sampled_from(CONTENT_TYPES) | st.text(min_size=1, max_size=12),
    accept=st.sampled_from(["", "*/*", "application/fhir+json", "text/plain", "image/*"]),
)
def test_any_record_stored_is_read_back_without_a_500(
    gateway: tuple[TestClient, str], resource: Any, content_type: str, accept: str
) -> None:
    """What a write accepted, every reader serves: the FHIR reads, searches, history,
    $everything and the patient's portal pages."""
    client, _ = gateway
    if isinstance(resource, dict) and resource.get("resourceType") == "Binary":
        resource["contentType"] = content_type
    kind = resource.get("resourceType") if isinstance(resource, dict) else None
    written = client.post(
        "/fhir/" + quote(kind if isinstance(kind, str) and kind else "Patient", safe=""),
        content=json.dumps(resource).encode(),
        headers={"Content-Type": "application/fhir+json"},
    )
    assert_answered(written)
    if written.status_code != 201:
        return
    stored = written.json()
    for read in READS:
        url = read.format(type=stored["resourceType"], id=stored["id"])
        response = _request(client, "GET", url, {"Accept": accept} if accept else {})
        assert_answered(response)
        assert_outcome(response)
    for page in ("/portal/", "/portal/booking", "/portal/access"):
        assert_answered(client.get(page))
