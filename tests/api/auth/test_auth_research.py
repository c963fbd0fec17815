"""The research hub over HTTP: a researcher's token lists their own projects and counts
over the extracts kept for them, cells under 10 suppressed, each count logged; nobody
else gets anything."""

from __future__ import annotations

import hashlib
from contextlib import closing
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import RESEARCH_PROJECT, research_population
from joserfc.jwk import RSAKey
from smart import (
    HOSPITAL,
    Jwks,
    authority_at,
    hospital_token,
    register_app,
    register_user,
    user_token,
)
from starlette.testclient import TestClient

from coffre.api import create_app
from coffre.api.auth import Authority
from coffre.api.auth.external import ExternalIssuer, JwksCache
from coffre.fhir import json
from coffre.ledger.leaf import Leaf, LeafKind
from coffre.research.extract import EXTRACT_TYPE, extract
from coffre.research.folder import ResearchFolder
from coffre.research.projects import Budget, Project, budget_of, load, save
from coffre.service import RecordStore

TODAY = date(2026, 12, 7)
SCOPES = "openid fhirUser"
DIABETE = replace(RESEARCH_PROJECT, expires=date(2099, 6, 30))
OTHER = replace(DIABETE, project_id="grippe-2027", members=("bruno",))


@pytest.fixture
def hub(records: RecordStore, tmp_path: Path) -> tuple[TestClient, ResearchFolder, Authority]:
    """A gateway whose research folder keeps an extract of each project."""
    research_population(records)
    folder = ResearchFolder(tmp_path / "keyring.json")
    save(folder.projects_file, {p.project_id: p for p in (DIABETE, OTHER)})
    for project in (DIABETE, OTHER):
        made = folder.new_extract(project.project_id, _at(project))
        extract(records, project, made, "operator", TODAY)
    authority = authority_at(tmp_path)
    register_app(authority, "labo", SCOPES)
    register_user(authority, "alice", "researcher", "Practitioner/alice")
    register_user(authority, "bruno", "researcher", "Practitioner/bruno")
    register_user(authority, "claire", "clinician", "Practitioner/claire")
    app = create_app(records, authority=authority, research=folder)
    return TestClient(app, raise_server_exceptions=False), folder, authority


def _at(project: Project) -> datetime:
    """When the project's extract was made: each project's a minute of its own."""
    return datetime(2026, 12, 7, 10, len(project.project_id), tzinfo=UTC)


def _headers(client: TestClient, username: str) -> dict[str, str]:
    token = user_token(client, "labo", username, SCOPES)["access_token"]
    return {"Authorization": f"Bearer {token}"}


COUNT = "/research/projects/diabete-2026/count"


def test_a_researcher_sees_their_own_projects_and_extracts_only(
    hub: tuple[TestClient, ResearchFolder, Authority],
) -> None:
    client, folder, _ = hub
    answer = client.get("/research/projects", headers=_headers(client, "alice"))
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    (project,) = answer.json()["projects"]
    assert project["project_id"] == "diabete-2026" and project["state"] == "open"
    (kept,) = project["extracts"]
    assert kept["extract"] == folder.kept("diabete-2026")[0].extract_id
    assert kept["persons"] == 28
    assert kept["tables"] == {"measurement": 28, "person": 28}
    bruno = client.get("/research/projects", headers=_headers(client, "bruno")).json()
    assert [p["project_id"] for p in bruno["projects"]] == ["grippe-2027"]


def test_a_count_is_suppressed_logged_and_then_sent(
    hub: tuple[TestClient, ResearchFolder, Authority], records: RecordStore
) -> None:
    client, folder, _ = hub
    headers = _headers(client, "alice")
    before = records.storage.leaf_count()
    answer = client.get(COUNT, params={"table": "person", "by": "gender"}, headers=headers)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["cells"] == [
        {"values": ["female"], "persons": 14},
        {"values": ["male"], "persons": None},
        {"values": ["other"], "persons": None},
    ]
    assert body["total"] == 28 and body["suppressed_below"] == 10
    kept = folder.kept("diabete-2026")[0]
    assert body["extract"] == kept.extract_id
    leaves = [Leaf.decode(d) for d in records.storage.leaves(before, records.storage.leaf_count())]
    assert [leaf.kind for leaf in leaves] == [LeafKind.SEARCH]
    assert leaves[0].loc == records.keys.location(EXTRACT_TYPE, kept.extract_id)
    assert leaves[0].body_hash == hashlib.sha256(json.canonical(body)).digest()
    joined = client.get(
        COUNT,
        params={"table": "measurement", "by": ["code", "gender"], "where": "gender=female"},
        headers=headers,
    ).json()
    assert joined["cells"] == [{"values": ["4548-4", "female"], "persons": 14}]
    named = client.get(
        COUNT, params={"table": "person", "extract": kept.extract_id}, headers=headers
    )
    assert named.json()["total"] == 28


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({"by": "gender"}, 400, "name the table"),
        ({"table": "person", "by": "person_id"}, 400, "no column 'person_id'"),
        ({"table": "person", "where": "gender"}, 400, "a filter is COLUMN=VALUE"),
        ({"table": "drug_exposure"}, 400, "no table 'drug_exposure'"),
        ({"table": "person", "group": "gender"}, 400, "not group"),
        ({"table": "person", "extract": "0" * 32}, 404, "no extract 0000"),
        ({"table": "person", "epsilon": "un"}, 400, "epsilon and delta are decimals"),
        ({"table": "person", "epsilon": "0"}, 400, "a count's ε is above 0"),
        ({"table": "person", "epsilon": "1", "max-cells": "0"}, 400, "one cell at least"),
        ({"table": "person", "delta": "0.1"}, 400, "delta and max-cells go with epsilon"),
        ({"table": "person", "epsilon": "1"}, 403, "has no privacy budget"),
        ({"table": "person", "epsilon": ["1", "0.001"]}, 400, "give epsilon once"),
        ({"table": ["person", "measurement"]}, 400, "give table once"),
        ({"table": "person", "extract": ["a", "b"]}, 400, "give extract once"),
        (
            {"table": "person", "epsilon": "1", "delta": ["1e-9", "1e-6"], "max-cells": "1"},
            400,
            "give delta once",
        ),
        (
            {"table": "person", "epsilon": "1", "max-cells": ["1", "3"]},
            400,
            "give max-cells once",
        ),
    ],
)
def test_a_count_that_names_what_is_not_there_is_refused_unlogged(
    hub: tuple[TestClient, ResearchFolder, Authority],
    records: RecordStore,
    params: dict[str, str | list[str]],
    status: int,
    message: str,
) -> None:
    client, _, _ = hub
    headers = _headers(client, "alice")
    before = records.storage.leaf_count()
    answer = client.get(COUNT, params=params, headers=headers)
    assert answer.status_code == status, answer.text
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert message in outcome["issue"][0]["diagnostics"]
    assert records.storage.leaf_count() == before


def test_nobody_but_the_projects_researchers_counts(
    hub: tuple[TestClient, ResearchFolder, Authority],
) -> None:
    client, _, _ = hub
    params = {"table": "person"}
    anonymous = client.get(COUNT, params=params)
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    refused = client.get("/research/projects")
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == 'Bearer realm="coffre"'
    clinician = client.get(COUNT, params=params, headers=_headers(client, "claire"))
    assert clinician.status_code == 403
    assert "researchers only" in clinician.json()["issue"][0]["diagnostics"]
    stranger = client.get(COUNT, params=params, headers=_headers(client, "bruno"))
    assert stranger.status_code == 404
    assert "member of no project 'diabete-2026'" in stranger.text


def test_another_issuers_researcher_of_a_members_name_gets_nothing(
    hub: tuple[TestClient, ResearchFolder, Authority],
) -> None:
    """A subject is unique within its issuer only: the hospital's "alice" is not the alice
    Coffre registered, whose projects she was given (a review's finding)."""
    client, _, authority = hub
    with closing(Jwks()) as served:
        key = RSAKey.generate_key(2048, private=True)
        served.keys = [key]
        authority.external = ExternalIssuer(HOSPITAL, JwksCache(served.url))
        token = hospital_token(key, sub="alice", role="researcher", fhirUser="Practitioner/a")
        headers = {"Authorization": f"Bearer {token}"}
        for url in ("/research/projects", f"{COUNT}?table=person&by=gender"):
            response = client.get(url, headers=headers)
            assert response.status_code == 403, response.text
            assert "researchers Coffre registers" in response.text
        assert client.get("/research/projects", headers=_headers(client, "alice")).json()[
            "projects"
        ]


def test_a_tokenless_count_is_refused_even_where_tokens_are_optional(
    records: RecordStore, tmp_path: Path
) -> None:
    folder = ResearchFolder(tmp_path / "keyring.json")
    app = create_app(records, authority=authority_at(tmp_path, mode="off"), research=folder)
    client = TestClient(app, raise_server_exceptions=False)
    assert client.get("/fhir/Patient").status_code == 200
    refused = client.get("/research/projects")
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == 'Bearer realm="coffre"'


def test_an_ended_project_counts_no_more(
    hub: tuple[TestClient, ResearchFolder, Authority],
) -> None:
    client, folder, _ = hub
    save(folder.projects_file, {"diabete-2026": replace(DIABETE, ended=TODAY)})
    headers = _headers(client, "alice")
    answer = client.get(COUNT, params={"table": "person"}, headers=headers)
    assert answer.status_code == 403
    assert "ended on 2026-12-07" in answer.json()["issue"][0]["diagnostics"]
    listed = client.get("/research/projects", headers=headers).json()["projects"]
    assert listed[0]["state"] == "ended"


def test_an_altered_extract_is_not_counted(
    hub: tuple[TestClient, ResearchFolder, Authority],
    records: RecordStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, folder, _ = hub
    kept = folder.kept("diabete-2026")[0]
    person = kept.folder / "person.parquet"
    person.write_bytes(person.read_bytes()[:-1] + b"\x00")
    before = records.storage.leaf_count()
    answer = client.get(COUNT, params={"table": "person"}, headers=_headers(client, "alice"))
    assert answer.status_code == 500
    assert "failed its check against the log" in answer.json()["issue"][0]["diagnostics"]
    assert str(kept.folder) not in answer.text and str(kept.folder) not in caplog.text
    assert records.storage.leaf_count() == before


def test_a_gateway_without_a_research_folder_says_so(
    hub: tuple[TestClient, ResearchFolder, Authority], records: RecordStore
) -> None:
    _, _, authority = hub
    client = TestClient(create_app(records, authority=authority), raise_server_exceptions=False)
    answer = client.get("/research/projects", headers=_headers(client, "alice"))
    assert answer.status_code == 404
    assert "holds no research projects" in answer.json()["issue"][0]["diagnostics"]


def test_a_project_with_a_privacy_budget_answers_differentially_private_counts_only(
    hub: tuple[TestClient, ResearchFolder, Authority], records: RecordStore
) -> None:
    client, folder, _ = hub
    budgeted = replace(DIABETE, budget=Budget(Decimal("1.5")))
    save(folder.projects_file, {"diabete-2026": budgeted})
    headers = _headers(client, "alice")
    exact = client.get(COUNT, params={"table": "person", "by": "gender"}, headers=headers)
    assert exact.status_code == 400
    assert "counts are differentially private: give epsilon" in exact.text
    before = records.storage.leaf_count()
    params = {"table": "person", "by": "gender", "epsilon": "1"}
    private = client.get(COUNT, params=params, headers=headers)
    assert private.status_code == 200, private.text
    body = private.json()
    assert body["privacy"]["epsilon"] == "1" and body["privacy"]["max_cells"] == 1
    assert all(cell["persons"] is None or cell["persons"] >= 10 for cell in body["cells"])
    (leaf,) = [Leaf.decode(d) for d in records.storage.leaves(before, before + 1)]
    assert leaf.body_hash == hashlib.sha256(json.canonical(body)).digest()
    assert budget_of(load(folder.projects_file)["diabete-2026"]).spent_epsilon == 1
    over = client.get(COUNT, params=params, headers=headers)
    assert over.status_code == 403 and "exceeds the project's privacy budget" in over.text
    assert budget_of(load(folder.projects_file)["diabete-2026"]).spent_epsilon == 1
    assert records.storage.leaf_count() == before + 1


def test_a_budgeted_projects_list_gives_no_exact_count_of_its_extracts(
    hub: tuple[TestClient, ResearchFolder, Authority],
) -> None:
    """Its researchers get no exact count: not the persons of an extract, nor a table's
    rows, which the exact project's list gives (28 persons, 28 rows each)."""
    client, folder, _ = hub
    budgeted = replace(DIABETE, budget=Budget(Decimal("1.5")))
    save(folder.projects_file, {"diabete-2026": budgeted, "grippe-2027": OTHER})
    answer = client.get("/research/projects", headers=_headers(client, "alice"))
    assert answer.status_code == 200, answer.text
    (project,) = answer.json()["projects"]
    (kept,) = project["extracts"]
    assert kept["extract"] == folder.kept("diabete-2026")[0].extract_id
    assert kept["persons"] is None
    assert kept["tables"] == {"measurement": None, "person": None}
    exact = client.get("/research/projects", headers=_headers(client, "bruno")).json()
    assert exact["projects"][0]["extracts"][0]["persons"] == 28
