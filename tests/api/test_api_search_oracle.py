"""Search over HTTP on Synthea patients (and a few resources written here for the types
Synthea lacks), each answer checked against an independent evaluation of the same query:
fhirpathpy evaluates the parameter's official expression on every resource of the type,
and the matching rules of R4 search (http://hl7.org/fhir/R4/search.html) are applied here,
written without Coffre's search code.
"""

from __future__ import annotations

import calendar
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import pytest
from conftest import shared_data_path
from fhirpath_oracle import oracle
from starlette.testclient import TestClient

from coffre.api import create_app
from coffre.cli.importer import Importer
from coffre.search.parameters import parameters_for
from coffre.service import RecordStore, Vault, candidates

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]

PATIENT_FILES = 6
NOW = datetime.now(UTC)

EXTRA = [
    {
        "resourceType": "RiskAssessment",
        "id": f"risk-{i}",
        "status": "final",
        "subject": {"reference": "Patient/nobody"},
        "prediction": [{"probabilityDecimal": p}],
    }
    for i, p in enumerate([0.05, 0.25, 0.5, 0.51, 1, 100, 99.6, 1000, -3])
] + [
    {
        "resourceType": "ValueSet",
        "id": "vs-1",
        "status": "active",
        "url": "http://example.org/fhir/ValueSet/colours",
        "meta": {
            "profile": ["http://example.org/fhir/StructureDefinition/vs"],
            "tag": [{"system": "http://example.org/tags", "code": "demo"}],
            "security": [{"system": "http://example.org/sec", "code": "R"}],
        },
    },
    {
        "resourceType": "ValueSet",
        "id": "vs-2",
        "status": "draft",
        "url": "http://example.org/fhir/ValueSet/colours/warm",
    },
]


@dataclass
class Searchable:
    client: TestClient
    records: RecordStore
    resources: dict[str, list[dict[str, Any]]]


@pytest.fixture(scope="module")
def searchable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Searchable]:
    folder = shared_data_path("synthea", "smart-2019")
    information = sorted(folder.glob("*Information*.json"))
    patients = sorted(set(folder.glob("*.json")) - set(information), key=lambda p: p.stat().st_size)
    vault = Vault.at(tmp_path_factory.mktemp("search") / "v")
    vault.create()
    records = vault.open()
    report = Importer(records).run(information + patients[:PATIENT_FILES])
    assert report.failures == []
    with records.writer() as writer:
        for resource in EXTRA:
            writer.update(resource["resourceType"], resource["id"], dict(resource))
    client = TestClient(create_app(records))
    types = ("Patient", "Observation", "Encounter", "Condition", "RiskAssessment", "ValueSet")
    resources = {t: [s.resource() for s in records.all_of_type(t)] for t in types}
    yield Searchable(client, records, resources)
    records.storage.close()


# -- the oracle: R4 matching rules, independent of coffre.search -------------------------


def _norm(value: str) -> str:
    decomposed = unicodedata.normalize("NFKD", value)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    return " ".join(bare.split())


def _strings(item: Any) -> list[str]:
    if isinstance(item, str):
        return [item]
    if not isinstance(item, dict):
        return []
    out: list[str] = []
    for key in ("family", "given", "prefix", "suffix", "text", "line", "city", "district"):
        out += [v for v in _as_list(item.get(key)) if isinstance(v, str)]
    for key in ("state", "postalCode", "country"):
        out += [item[key]] if isinstance(item.get(key), str) else []
    return out


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [] if value is None else [value]


def _codes(item: Any) -> list[tuple[str | None, str]]:
    """(system, code) pairs; system None for a plain code."""
    if isinstance(item, bool):
        return [(None, str(item).lower())]
    if isinstance(item, str):
        return [(None, item)]
    if not isinstance(item, dict):
        return []
    if "coding" in item:
        return [p for coding in item["coding"] for p in _codes(coding)]
    if "code" in item:
        return [(item.get("system"), item["code"])]
    if "value" in item:
        return [(item.get("system"), str(item["value"]))]
    return []


def _texts(item: Any) -> list[str]:
    if not isinstance(item, dict):
        return []
    found = [item["text"]] if isinstance(item.get("text"), str) else []
    found += [c["display"] for c in item.get("coding", []) if isinstance(c.get("display"), str)]
    return found + _texts(item.get("type"))


def _range(value: str) -> tuple[datetime, datetime]:
    """The instants a FHIR date, dateTime or instant covers, ``[low, high)``."""
    if len(value) == 4:
        low = datetime(int(value), 1, 1, tzinfo=UTC)
        return low, low.replace(year=low.year + 1)
    if len(value) == 7:
        year, month = int(value[:4]), int(value[5:])
        low = datetime(year, month, 1, tzinfo=UTC)
        return low, low + timedelta(days=calendar.monthrange(year, month)[1])
    if len(value) == 10:
        low = datetime.fromisoformat(value).replace(tzinfo=UTC)
        return low, low + timedelta(days=1)
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    step = timedelta(seconds=1) if value.count(":") >= 2 else timedelta(minutes=1)
    if "." in value:
        digits = len(value.split(".")[1].rstrip("Z").split("+")[0].split("-")[0])
        step = timedelta(microseconds=10 ** (6 - min(digits, 6)))
    return moment, moment + step


def _dates(item: Any) -> list[tuple[datetime, datetime]]:
    far_past, far_future = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)
    if isinstance(item, str):
        return [_range(item)]
    if isinstance(item, dict) and ("start" in item or "end" in item):
        low = _range(item["start"])[0] if "start" in item else far_past
        high = _range(item["end"])[1] if "end" in item else far_future
        return [(low, high)]
    return []


def _precision(value: Decimal) -> tuple[Decimal, Decimal]:
    half = Decimal(5).scaleb(value.as_tuple().exponent - 1)  # type: ignore[operator]
    return value - half, value + half


def _prefixed(raw: str) -> tuple[str, str]:
    prefixes = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
    return (raw[:2], raw[2:]) if raw[:2] in prefixes else ("eq", raw)


def _compare(prefix: str, search: tuple[Any, Any], target: tuple[Any, Any], ap: Any) -> bool:
    (s_low, s_high), (t_low, t_high) = search, target
    contains = s_low <= t_low and t_high <= s_high
    return {
        "eq": contains,
        "ne": not contains,
        "gt": t_high > s_high,
        "lt": t_low < s_low,
        "ge": t_high > s_high or contains,
        "le": t_low < s_low or contains,
        "sa": t_low >= s_high,
        "eb": t_high <= s_low,
        "ap": t_low < s_high + ap and s_low - ap < t_high,
    }[prefix]


def _matches_value(kind: str, modifier: str | None, raw: str, item: Any) -> bool:
    if kind == "string":
        found = [_norm(s) for s in _strings(item)]
        if modifier == "exact":
            return raw in _strings(item)
        if modifier == "contains":
            return any(_norm(raw) in s for s in found)
        return any(s.startswith(_norm(raw)) for s in found)
    if kind == "token":
        if modifier == "text":
            return any(_norm(t).startswith(_norm(raw)) for t in _texts(item))
        system, bar, code = raw.rpartition("|") if "|" in raw else (None, "", raw)
        for have_system, have_code in _codes(item):
            if not bar:
                hit = have_code == code
            elif code == "":
                hit = have_system == system
            elif system == "":
                hit = have_system is None and have_code == code
            else:
                hit = have_code == code and have_system in (system, None)
            if hit:
                return True
        return False
    if kind == "date":
        prefix, value = _prefixed(raw)
        search = _range(value)
        ap = (NOW - search[0]) / 10 if search[0] < NOW else (search[0] - NOW) / 10
        return any(_compare(prefix, search, r, ap) for r in _dates(item))
    if kind == "reference":
        reference = item.get("reference") if isinstance(item, dict) else item
        if not isinstance(reference, str):
            return False
        if modifier and modifier[0].isupper():
            return reference == f"{modifier}/{raw}"
        return reference == raw if "/" in raw else reference.endswith(f"/{raw}")
    if kind == "uri":
        if not isinstance(item, str):
            return False
        return {"below": item.startswith(raw), "above": raw.startswith(item)}.get(
            modifier or "", item == raw
        )
    if kind in ("number", "quantity"):
        parts = raw.split("|")
        prefix, value = _prefixed(parts[0])
        number = Decimal(value)
        if isinstance(item, dict):
            if (
                len(parts) == 3
                and parts[2]
                and parts[2] not in (item.get("code"), item.get("unit"))
            ):
                return False
            if len(parts) == 3 and parts[1] and parts[1] != item.get("system"):
                return False
            item = item.get("value")
        if isinstance(item, bool) or not isinstance(item, int | float | Decimal):
            return False
        target = Decimal(repr(item)) if isinstance(item, float) else Decimal(item)
        return _compare(prefix, _precision(number), _precision(target), abs(number) / 10)
    raise AssertionError(kind)


def _oracle_match(resource: dict[str, Any], name: str, raw_values: str) -> bool:
    code, _, modifier = name.partition(":")
    param = parameters_for(resource["resourceType"])[code]
    assert param.expression is not None
    items = oracle(param.expression, resource["resourceType"])(resource)
    if modifier == "missing":
        return (not items) == (raw_values == "true")
    values = raw_values.split(",")
    if param.type == "composite":
        hit = any(_composite(param, resource, raw) for raw in values)
    else:
        hit = any(
            _matches_value(param.type, modifier or None, raw, item)
            for item in items
            for raw in values
        )
    return not hit if modifier == "not" else hit


def _component_matches(
    param: Any, resource: dict[str, Any], index: int, component: Any, part: str
) -> bool:
    """One component on the composite's element at ``index`` (evaluated from the resource,
    so that fhirpathpy knows the element's type)."""
    expression = f"({param.expression})[{index}].{component.expression}"
    selected = oracle(expression, resource["resourceType"])(resource)
    return any(_matches_value(component.type, None, part, item) for item in selected)


def _composite(param: Any, resource: dict[str, Any], raw: str) -> bool:
    """Whether one element the composite selects has every component matching."""
    parts = raw.split("$")
    count = len(oracle(param.expression, resource["resourceType"])(resource))
    return any(
        all(
            _component_matches(param, resource, index, component, part)
            for component, part in zip(param.components, parts, strict=True)
        )
        for index in range(count)
    )


def _expected(searchable: Searchable, resource_type: str, query: list[tuple[str, str]]) -> set[str]:
    return {
        r["id"]
        for r in searchable.resources[resource_type]
        if all(_oracle_match(r, name, raw) for name, raw in query)
    }


def _found(searchable: Searchable, resource_type: str, query: list[tuple[str, str]]) -> set[str]:
    """Every match, following the ``next`` links of pages of 7."""
    url: str | None = f"/fhir/{resource_type}?{urlencode([*query, ('_count', '7')])}"
    found: list[str] = []
    while url:
        response = searchable.client.get(url)
        assert response.status_code == 200, response.text
        bundle = response.json()
        found += [
            e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"
        ]
        assert bundle.get("total") is None or bundle["total"] >= len(found)
        url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
    assert len(found) == len(set(found)), "a resource appeared on two pages"
    return set(found)


# -- the queries: values picked from the data, so that most match something --------------


def _first(searchable: Searchable, resource_type: str, pick: Any) -> Any:
    for resource in searchable.resources[resource_type]:
        found = pick(resource)
        if found:
            return found
    raise AssertionError(f"no {resource_type} to pick from")


def _queries(s: Searchable) -> list[tuple[str, list[tuple[str, str]]]]:
    family = _first(s, "Patient", lambda p: p["name"][0]["family"])
    given = _first(s, "Patient", lambda p: p["name"][0]["given"][0])
    city = _first(s, "Patient", lambda p: p["address"][0]["city"])
    identifier = _first(s, "Patient", lambda p: p["identifier"][1])
    patient = s.resources["Patient"][0]["id"]
    birth = s.resources["Patient"][0]["birthDate"]
    obs = _first(s, "Observation", lambda o: o.get("valueQuantity") and o)
    loinc = obs["code"]["coding"][0]["code"]
    quantity = obs["valueQuantity"]
    bp = _first(s, "Observation", lambda o: o.get("component") and o)
    bp_code = bp["component"][0]["code"]["coding"][0]["code"]
    encounter = s.resources["Encounter"][0]
    enc_day = encounter["period"]["start"][:10]
    display = obs["code"]["coding"][0]["display"]
    return [
        ("Patient", [("name", family[:3])]),
        ("Patient", [("name", given.upper())]),
        ("Patient", [("family:exact", family)]),
        ("Patient", [("family:exact", family.lower())]),
        ("Patient", [("given:contains", given[1:4])]),
        ("Patient", [("address-city", city[:2])]),
        ("Patient", [("address:contains", city[2:6].lower())]),
        ("Patient", [("name", "zzzz")]),
        ("Patient", [("gender", "male")]),
        ("Patient", [("gender:not", "male")]),
        ("Patient", [("gender", "http://hl7.org/fhir/administrative-gender|female")]),
        ("Patient", [("gender", "male,female")]),
        ("Patient", [("identifier", f"{identifier['system']}|{identifier['value']}")]),
        ("Patient", [("identifier", identifier["value"])]),
        ("Patient", [("identifier", f"{identifier['system']}|")]),
        ("Patient", [("identifier", f"|{identifier['value']}")]),
        ("Patient", [("identifier:text", identifier["type"]["text"][:4])]),
        ("Patient", [("birthdate", birth)]),
        ("Patient", [("birthdate", birth[:4])]),
        ("Patient", [("birthdate", f"ne{birth}")]),
        *[
            ("Patient", [("birthdate", f"{p}{birth[:7]}")])
            for p in ("lt", "gt", "le", "ge", "sa", "eb", "ap")
        ],
        ("Patient", [("birthdate", "ge1950"), ("birthdate", "lt2000")]),
        ("Patient", [("deceased:missing", "true")]),
        ("Patient", [("death-date:missing", "false")]),
        ("Patient", [("general-practitioner:missing", "false")]),
        ("Patient", [("_id", patient)]),
        ("Patient", [("_lastUpdated", "gt2000")]),
        ("Observation", [("code", loinc)]),
        ("Observation", [("code", f"http://loinc.org|{loinc}")]),
        ("Observation", [("code", f"http://snomed.info/sct|{loinc}")]),
        ("Observation", [("code:text", display[:5])]),
        ("Observation", [("category", "laboratory")]),
        (
            "Observation",
            [("category", "http://terminology.hl7.org/CodeSystem/observation-category|")],
        ),
        ("Observation", [("subject", f"Patient/{patient}")]),
        ("Observation", [("subject:Patient", patient)]),
        ("Observation", [("patient", patient)]),
        ("Observation", [("subject", f"Patient/{patient}"), ("code", loinc)]),
        ("Observation", [("value-quantity", f"{quantity['value']}")]),
        ("Observation", [("value-quantity", f"gt{quantity['value']}")]),
        ("Observation", [("value-quantity", f"le{quantity['value']}||{quantity['code']}")]),
        (
            "Observation",
            [("value-quantity", f"ap{quantity['value']}|{quantity['system']}|{quantity['code']}")],
        ),
        ("Observation", [("value-quantity", "lt0")]),
        ("Observation", [("code-value-quantity", f"{loinc}$gt{quantity['value']}")]),
        ("Observation", [("component-code-value-quantity", f"{bp_code}$lt100")]),
        ("Observation", [("date", f"ge{enc_day[:4]}")]),
        ("Observation", [("date", enc_day)]),
        ("Observation", [("value-quantity:missing", "true")]),
        ("Encounter", [("date", f"eb{enc_day}")]),
        ("Encounter", [("date", f"sa{enc_day[:7]}")]),
        ("Encounter", [("date", f"ap{enc_day}")]),
        ("Encounter", [("class", encounter["class"]["code"])]),
        ("Encounter", [("type:text", encounter["type"][0]["text"][:6])]),
        ("Encounter", [("patient", patient)]),
        ("Condition", [("onset-date", "ge2010")]),
        ("Condition", [("clinical-status", "active")]),
        *[
            ("RiskAssessment", [("probability", f"{p}{v}")])
            for p in ("", "gt", "lt", "ge", "le", "ne", "sa", "eb", "ap")
            for v in ("0.5", "100")
        ],
        ("ValueSet", [("url", "http://example.org/fhir/ValueSet/colours")]),
        ("ValueSet", [("url:below", "http://example.org/fhir/ValueSet/colours")]),
        ("ValueSet", [("url:above", "http://example.org/fhir/ValueSet/colours/warm/more")]),
        ("ValueSet", [("_profile", "http://example.org/fhir/StructureDefinition/vs")]),
        ("ValueSet", [("_tag", "http://example.org/tags|demo")]),
        ("ValueSet", [("_security", "R")]),
    ]


@pytest.mark.parametrize("first_page", [candidates.FIRST_PAGE, 1], ids=["pages", "one-by-one"])
def test_every_query_finds_what_the_oracle_finds(
    searchable: Searchable, first_page: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Candidates are read a page at a time; from a page of one, every page boundary of
    the look-ups falls somewhere in these queries."""
    monkeypatch.setattr(candidates, "FIRST_PAGE", first_page)
    checked, nonempty, wrong = 0, 0, []
    for resource_type, query in _queries(searchable):
        expected = _expected(searchable, resource_type, query)
        found = _found(searchable, resource_type, query)
        checked += 1
        nonempty += bool(expected)
        if found != expected:
            wrong.append(
                f"{resource_type}?{urlencode(query)}: extra {sorted(found - expected)[:3]} missing {sorted(expected - found)[:3]}"
            )
    assert not wrong, "\n".join(wrong)
    assert nonempty >= checked * 2 // 3, "too few queries match anything to prove much"
