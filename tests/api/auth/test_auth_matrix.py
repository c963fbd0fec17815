"""Who may do what, cell by cell: each role against each interaction, on the data of a
patient it reaches and of one it does not, with the exact status of each answer.

The world: patients alice and bob; Dr Who has a care relationship with alice (an
Encounter naming him), Dr No with nobody, Dr Team with bob (a CareTeam naming her).
Tokens are real ES256 JWTs signed by the vault's authority, as its token endpoint signs
them, and checked by the middleware on every request. One vault per backend and module:
reads run first, writes touch only resources made for them.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from conftest import FHIR_JSON
from joserfc import jwt
from joserfc.jwk import ECKey
from pg import BACKENDS, Cluster
from smart import FHIR_BASE, ORIGIN, authority_at, client_for
from starlette.requests import Request
from starlette.testclient import TestClient

from coffre.api.access import add_access_hook
from coffre.api.auth import Authority, enforce
from coffre.api.auth.enforce import Reached
from coffre.api.auth.scopes import RESEARCH_READABLE
from coffre.service import RecordStore, Vault
from coffre.service.audit import is_break_glass

CODE = {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}


def _observation(resource_id: str, patient: str, **more: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": resource_id,
        "status": "final",
        "code": CODE,
        "subject": {"reference": f"Patient/{patient}"},
        **more,
    }


def _condition(patient: str, resource_id: str | None = None) -> dict[str, Any]:
    condition: dict[str, Any] = {
        "resourceType": "Condition",
        "subject": {"reference": f"Patient/{patient}"},
        "code": {"text": "made by the matrix"},
    }
    return {**condition, "id": resource_id} if resource_id else condition


def _task(resource_id: str | None, patient: str | None, **more: Any) -> dict[str, Any]:
    """A Task (outside the patient compartment) owned by Dr Who, for ``patient`` if any."""
    task: dict[str, Any] = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "owner": {"reference": "Practitioner/drwho"},
        **more,
    }
    if resource_id is not None:
        task["id"] = resource_id
    if patient is not None:
        task["for"] = {"reference": f"Patient/{patient}"}
    return task


def _written_task(resource_id: str | None, patient: str | None, **more: Any) -> dict[str, Any]:
    """A Task the write tests make: a draft of Dr No's, which the searches of Dr Who's
    requested Tasks never find, whatever order the tests run in."""
    return _task(
        resource_id, patient, status="draft", owner={"reference": "Practitioner/drno"}, **more
    )


WORLD: list[dict[str, Any]] = [
    {"resourceType": "Patient", "id": "alice", "name": [{"family": "Alice"}]},
    {"resourceType": "Patient", "id": "bob", "name": [{"family": "Bob"}]},
    {"resourceType": "Practitioner", "id": "drwho"},
    {"resourceType": "Practitioner", "id": "drno"},
    {"resourceType": "Practitioner", "id": "drteam"},
    # alice's observation points at bob: what _include could leak.
    _observation("obs-alice", "alice", focus=[{"reference": "Patient/bob"}]),
    _observation("obs-bob", "bob"),
    {
        "resourceType": "Encounter",
        "id": "enc-alice",
        "status": "finished",
        "class": {"code": "AMB"},
        "subject": {"reference": "Patient/alice"},
        "participant": [{"individual": {"reference": "Practitioner/drwho"}}],
    },
    {
        "resourceType": "CareTeam",
        "id": "team-bob",
        "subject": {"reference": "Patient/bob"},
        "participant": [{"member": {"reference": "Practitioner/drteam"}}],
    },
    # Types outside the patient compartment that name patients: sealed in the compartment of
    # the one they name, or under the shared key (task-both, task-none).
    _task("task-alice", "alice"),
    _task("task-bob", "bob"),
    _task("task-both", "alice", focus={"reference": "Patient/bob"}),
    _task("task-none", None),
    {"resourceType": "Device", "id": "device-bob", "patient": {"reference": "Patient/bob"}},
    # A record of the compartment of two patients, sealed under the shared key.
    {
        "resourceType": "Group",
        "id": "group-both",
        "type": "person",
        "actual": True,
        "member": [{"entity": {"reference": f"Patient/{p}"}} for p in ("alice", "bob")],
    },
]

PATIENT = "patient"
DR_WHO = "clinician with a care relationship (alice)"
DR_NO = "clinician without one"
GLASS = "clinician breaking the glass"
SYSTEM = "system"
RESEARCHER = "researcher"
NO_TOKEN = "no token"
EXPIRED = "expired token"
STRANGER = "token from an unknown issuer"
TAMPERED = "tampered signature"
ROLES = (PATIENT, DR_WHO, DR_NO, GLASS, SYSTEM, RESEARCHER, NO_TOKEN, EXPIRED, STRANGER, TAMPERED)
UNAUTHENTICATED = (NO_TOKEN, EXPIRED, STRANGER, TAMPERED)
REASON = "patient unconscious in the emergency room"
READ_ONLY = "patient reading Observations only"
READ_ONLY_SCOPE = "launch/patient patient/Observation.r"
WRITE_ONLY = "system writing Tasks without reading them"


@dataclass
class World:
    client: TestClient
    records: RecordStore
    headers: dict[str, dict[str, str]]

    def call(self, role: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**FHIR_JSON, **self.headers[role], **kwargs.pop("headers", {})}
        return self.client.request(method, f"/fhir/{path}", headers=headers, **kwargs)


def _token(authority: Authority, lifetime: int = 300, **claims: Any) -> str:
    base = {"iss": f"{ORIGIN}/auth", "aud": FHIR_BASE, "client_id": "matrix-app"}
    return authority.signer.sign({**base, **claims}, lifetime)


def _tampered(token: str) -> str:
    head, payload, signature = token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    return f"{head}.{payload}.{flipped}"


def _stranger() -> str:
    key = ECKey.generate_key("P-256", private=True)
    claims = {
        "iss": "https://elsewhere.example/auth",
        "aud": FHIR_BASE,
        "sub": "mallory",
        "scope": "system/*.cruds",
        "exp": int(time.time()) + 300,
    }
    return jwt.encode({"alg": "ES256"}, claims, key, algorithms=["ES256"])


def _headers(authority: Authority) -> dict[str, dict[str, str]]:
    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def clinician(who: str) -> str:
        return _token(
            authority,
            sub=who,
            role="clinician",
            fhirUser=f"Practitioner/{who}",
            scope="user/*.cruds",
        )

    patient = _token(
        authority,
        sub="alice",
        role="patient",
        fhirUser="Patient/alice",
        patient="alice",
        scope="launch/patient patient/*.cruds",
    )
    system = _token(authority, sub="lab", client_id="lab", role="system", scope="system/*.cruds")
    researcher = _token(
        authority,
        sub="rita",
        role="researcher",
        fhirUser="Practitioner/rita",
        scope="user/*.rs",
    )
    return {
        PATIENT: bearer(patient),
        DR_WHO: bearer(clinician("drwho")),
        DR_NO: bearer(clinician("drno")),
        GLASS: {**bearer(clinician("drno")), "X-Break-Glass": REASON},
        SYSTEM: bearer(system),
        RESEARCHER: bearer(researcher),
        NO_TOKEN: {},
        EXPIRED: bearer(_token(authority, lifetime=-120, sub="alice", scope="patient/*.rs")),
        STRANGER: bearer(_stranger()),
        TAMPERED: bearer(_tampered(patient)),
        "drteam": bearer(clinician("drteam")),
        READ_ONLY: bearer(
            _token(authority, sub="alice", role="patient", patient="alice", scope=READ_ONLY_SCOPE)
        ),
        WRITE_ONLY: bearer(
            _token(authority, sub="feed", client_id="feed", role="system", scope="system/Task.cu")
        ),
    }


@pytest.fixture(scope="module", params=BACKENDS)
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("matrix")
    url = ""
    if request.param == "postgresql":
        cluster: Cluster = request.getfixturevalue("postgres")
        url = cluster.new_storage_url()
    vault = Vault.at(folder / "vault")
    vault.create(url)
    records = vault.open()
    with records.writer() as writer:
        for resource in WORLD:
            writer.update(
                resource["resourceType"], resource["id"], json.loads(json.dumps(resource))
            )
        writer.update("Condition", "cond-alice", _condition("alice", "cond-alice"))
        writer.update("Condition", "cond-bob", _condition("bob", "cond-bob"))
    authority = authority_at(folder)
    with client_for(records, authority) as client:
        yield World(client, records, _headers(authority))
    records.storage.close()


def _ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    entries = response.json().get("entry", [])
    return sorted(
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in entries
        if e["resource"]["resourceType"] != "OperationOutcome"
    )


def _as_missing(world: World, role: str, response: httpx.Response, path: str, real: str) -> None:
    """A hidden record's answer is, body included, that of a record that does not exist."""
    missing = world.call(role, "GET", path.replace(real, "ghost"))
    assert missing.status_code == 404
    assert response.json() == json.loads(missing.text.replace("ghost", real))


# -- reads ------------------------------------------------------------------------------

# role -> (status on alice's record, status on bob's record)
READS = {
    PATIENT: (200, 404),
    DR_WHO: (200, 404),
    DR_NO: (404, 404),
    GLASS: (200, 200),
    SYSTEM: (200, 200),
    RESEARCHER: (403, 403),
    **{role: (401, 401) for role in UNAUTHENTICATED},
}
READ_PATHS = {
    "read": "Observation/obs-{p}",
    "vread": "Observation/obs-{p}/_history/1",
    "history": "Observation/obs-{p}/_history",
    "$everything": "Patient/{p}/$everything",
    "$map-proof": "Observation/obs-{p}/$map-proof",
}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("interaction", sorted(READ_PATHS))
@pytest.mark.parametrize("whose", ["alice", "bob"])
def test_reading_one_record(world: World, role: str, interaction: str, whose: str) -> None:
    path = READ_PATHS[interaction].format(p=whose)
    response = world.call(role, "GET", path)
    expected = READS[role][whose == "bob"]
    assert response.status_code == expected, response.text
    if expected == 404:
        _as_missing(
            world, role, response, path, whose if interaction == "$everything" else f"obs-{whose}"
        )
    if expected == 401:
        assert response.headers["www-authenticate"].startswith('Bearer realm="coffre"')


@pytest.mark.parametrize("whose", ["alice", "bob"])
def test_everything_stays_within_the_patient(world: World, whose: str) -> None:
    found = _ids(world.call(GLASS, "GET", f"Patient/{whose}/$everything"))
    other = "bob" if whose == "alice" else "alice"
    assert f"Patient/{whose}" in found and f"Observation/obs-{whose}" in found
    assert not [ref for ref in found if other in ref]


def test_a_patient_s_everything_holds_what_names_them_alone_and_what_supports_it(
    world: World,
) -> None:
    """Alice's token: her Task (outside the compartment, naming her alone) and the
    practitioners her records refer to come with her records; a Task that also names Bob,
    and Bob's own records, never do."""
    response = world.call(PATIENT, "GET", "Patient/alice/$everything")
    entries = response.json()["entry"]
    found = {
        mode: {
            f"{e['resource']['resourceType']}/{e['resource']['id']}"
            for e in entries
            if e["search"]["mode"] == mode
        }
        for mode in ("match", "include")
    }
    assert "Task/task-alice" in found["match"] and "Practitioner/drwho" in found["include"]
    assert not [ref for ref in _ids(response) if "bob" in ref or ref == "Task/task-both"]


# role -> (ids found searching alice's observations, bob's), or a status
SEARCHES: dict[str, tuple[list[str], list[str]] | int] = {
    PATIENT: (["Observation/obs-alice"], []),
    DR_WHO: (["Observation/obs-alice"], []),
    DR_NO: ([], []),
    GLASS: (["Observation/obs-alice"], ["Observation/obs-bob"]),
    SYSTEM: (["Observation/obs-alice"], ["Observation/obs-bob"]),
    RESEARCHER: 403,
    **{role: 401 for role in UNAUTHENTICATED},
}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("whose", ["alice", "bob"])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_searching(world: World, role: str, whose: str, method: str) -> None:
    query = f"subject=Patient/{whose}&code=8867-4"
    if method == "GET":
        response = world.call(role, "GET", f"Observation?{query}")
    else:
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        response = world.call(role, "POST", "Observation/_search", content=query, headers=form)
    expected = SEARCHES[role]
    if isinstance(expected, int):
        assert response.status_code == expected, response.text
        return
    assert _ids(response) == expected[whose == "bob"]
    assert response.json()["total"] == len(expected[whose == "bob"])


EVERY_OBSERVATION = ["Observation/obs-alice", "Observation/obs-bob"]
# What a search hands out with what it pulls in: nothing outside what the token reaches.
LEAKS: dict[str, tuple[str, dict[str, list[str]]]] = {
    "_include": (
        "Observation?_id=obs-alice&_include=Observation:focus",
        {
            PATIENT: ["Observation/obs-alice"],
            DR_WHO: ["Observation/obs-alice"],
            DR_NO: [],
            GLASS: ["Observation/obs-alice", "Patient/bob"],
            SYSTEM: ["Observation/obs-alice", "Patient/bob"],
        },
    ),
    "_revinclude": (
        "Patient?_id=alice,bob&_revinclude=Observation:subject",
        {
            PATIENT: ["Observation/obs-alice", "Patient/alice"],
            DR_WHO: ["Observation/obs-alice", "Patient/alice"],
            DR_NO: [],
            GLASS: [*EVERY_OBSERVATION, "Patient/alice", "Patient/bob"],
            SYSTEM: [*EVERY_OBSERVATION, "Patient/alice", "Patient/bob"],
        },
    ),
    "chain": (
        "Observation?subject:Patient.name=Bob",
        {
            PATIENT: [],
            DR_WHO: [],
            DR_NO: [],
            GLASS: ["Observation/obs-bob"],
            SYSTEM: ["Observation/obs-bob"],
        },
    ),
    "_has": (
        "Patient?_has:Observation:subject:code=8867-4",
        {
            PATIENT: ["Patient/alice"],
            DR_WHO: ["Patient/alice"],
            DR_NO: [],
            GLASS: ["Patient/alice", "Patient/bob"],
            SYSTEM: ["Patient/alice", "Patient/bob"],
        },
    ),
    "no criteria": (
        "Observation",
        {
            PATIENT: ["Observation/obs-alice"],
            DR_WHO: ["Observation/obs-alice"],
            DR_NO: [],
            GLASS: EVERY_OBSERVATION,
            SYSTEM: EVERY_OBSERVATION,
        },
    ),
}


@pytest.mark.parametrize("role", [PATIENT, DR_WHO, DR_NO, GLASS, SYSTEM])
@pytest.mark.parametrize("what", sorted(LEAKS))
def test_what_a_search_pulls_in_is_filtered_too(world: World, role: str, what: str) -> None:
    query, expected = LEAKS[what]
    assert _ids(world.call(role, "GET", query)) == expected[role]


# role -> status of a type's history, and of the system's
WIDE_HISTORY = {
    PATIENT: 403,
    DR_WHO: 403,
    DR_NO: 403,
    GLASS: 200,
    SYSTEM: 200,
    RESEARCHER: 403,
    **{role: 401 for role in UNAUTHENTICATED},
}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("path", ["Observation/_history", "_history"])
def test_history_across_records_needs_an_unconfined_token(
    world: World, role: str, path: str
) -> None:
    assert world.call(role, "GET", path).status_code == WIDE_HISTORY[role]


@pytest.mark.parametrize("role", [PATIENT, READ_ONLY])
def test_a_records_history_lists_and_counts_what_the_token_may_read(
    world: World, role: str
) -> None:
    """Of a record that was bob's before it was alice's, alice's token gets her version
    only, and a read scope without search is enough for it."""
    victim = {PATIENT: "moved-1", READ_ONLY: "moved-2"}[role]
    for patient in ("bob", "alice"):
        with world.records.writer() as writer:
            moved = _observation(victim, patient, code={"text": "moved to alice"})
            writer.update("Observation", victim, moved)
    history = world.call(role, "GET", f"Observation/{victim}/_history").json()
    assert [entry["response"]["etag"] for entry in history["entry"]] == ['W/"2"']
    assert history["total"] == 1


def test_a_care_team_is_a_care_relationship(world: World) -> None:
    assert world.call("drteam", "GET", "Observation/obs-bob").status_code == 200
    assert world.call("drteam", "GET", "Observation/obs-alice").status_code == 404


@pytest.mark.parametrize(
    "subject", [f"{FHIR_BASE}/Patient/bob", "https://testserver/fhir/Patient/bob"]
)
def test_a_reference_on_coffres_own_base_names_the_patient_it_names(
    world: World, subject: str
) -> None:
    """Written as an absolute URL on this server's base, a reference to bob named nobody:
    Dr No, who does not care for bob, created records about him that every clinician
    could read and bob could not."""
    observation = {"resourceType": "Observation", "status": "final", "code": CODE}
    refused = world.call(
        DR_NO, "POST", "Observation", json={**observation, "subject": {"reference": subject}}
    )
    assert refused.status_code == 403, refused.text
    assert "no care relationship" in refused.text


DR_NO_ON_ALICES_TEAM = {
    "resourceType": "CareTeam",
    "subject": {"reference": "Patient/alice"},
    "participant": [{"member": {"reference": "Practitioner/drno"}}],
}
"""A care relationship that would open alice's record to Dr No."""


def test_a_patients_token_neither_makes_nor_ends_a_care_relationship(world: World) -> None:
    """A care relationship opens the patient's whole record to a practitioner: the patient's
    app may read Encounters and CareTeams, never write one (docs/access.md)."""
    team = DR_NO_ON_ALICES_TEAM
    made = world.call(PATIENT, "POST", "CareTeam", json=team)
    assert made.status_code == 403, made.text
    assert "care relationships are recorded by" in made.json()["issue"][0]["diagnostics"]
    in_bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": team, "request": {"method": "POST", "url": "CareTeam"}}],
    }
    assert world.call(PATIENT, "POST", "", json=in_bundle).status_code == 403
    assert world.call(DR_NO, "GET", "Observation/obs-alice").status_code == 404

    encounter = world.call(PATIENT, "GET", "Encounter/enc-alice")
    assert encounter.status_code == 200  # she still reads it
    body = {**encounter.json(), "participant": []}
    body.pop("meta")
    assert world.call(PATIENT, "PUT", "Encounter/enc-alice", json=body).status_code == 403
    assert world.call(PATIENT, "DELETE", "Encounter/enc-alice").status_code == 403
    assert world.call(DR_WHO, "GET", "Observation/obs-alice").status_code == 200


def test_a_clinician_makes_no_care_relationship_but_under_break_glass(world: World) -> None:
    """Dr Who treats alice: a CareTeam of his naming Dr No opened her whole record to Dr
    No, without a word in it (a review's finding). The admission system, an administrator
    or a clinician breaking the glass records care relationships (docs/access.md)."""
    team = DR_NO_ON_ALICES_TEAM
    made = world.call(DR_WHO, "POST", "CareTeam", json=team)
    assert made.status_code == 403, made.text
    assert "under break-glass" in made.json()["issue"][0]["diagnostics"]
    encounter = world.call(DR_WHO, "GET", "Encounter/enc-alice").json()
    encounter.pop("meta")
    moved = {**encounter, "participant": [{"individual": {"reference": "Practitioner/drno"}}]}
    assert world.call(DR_WHO, "PUT", "Encounter/enc-alice", json=moved).status_code == 403
    assert world.call(DR_WHO, "DELETE", "Encounter/enc-alice").status_code == 403
    assert world.call(DR_NO, "GET", "Observation/obs-alice").status_code == 404
    glass = world.call(GLASS, "POST", "CareTeam", json=team)
    assert glass.status_code == 201, glass.text
    try:
        assert world.call(DR_NO, "GET", "Observation/obs-alice").status_code == 200
    finally:  # the world is the module's: Dr No keeps no relationship with alice
        world.call(SYSTEM, "DELETE", f"CareTeam/{glass.json()['id']}").raise_for_status()
    assert world.call(DR_NO, "GET", "Observation/obs-alice").status_code == 404


# -- shared resources that name a patient --------------------------------------------------
# A Task or a Device is outside R4's patient compartment and sealed under the shared key, but
# one whose reference parameters name a patient is judged as that patient's record: a
# patient reaches it only if it names nobody else, a clinician only if they care for every
# patient it names, a researcher never. One that names nobody stays shared.

NAMED = (
    "Task/task-alice",
    "Task/task-bob",
    "Task/task-both",
    "Task/task-none",
    "Device/device-bob",
)
# role -> status of a read of each of NAMED
NAMED_READS = {
    PATIENT: (200, 404, 404, 200, 404),
    DR_WHO: (200, 404, 404, 200, 404),
    DR_NO: (404, 404, 404, 200, 404),
    GLASS: (200, 200, 200, 200, 200),
    SYSTEM: (200, 200, 200, 200, 200),
    RESEARCHER: (403,) * len(NAMED),  # Tasks and Devices: not the directory's types
    **{role: (401,) * len(NAMED) for role in UNAUTHENTICATED},
}
NAMED_PATHS = {"read": "{r}", "vread": "{r}/_history/1", "history": "{r}/_history"}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("interaction", sorted(NAMED_PATHS))
@pytest.mark.parametrize("reference", NAMED)
def test_reading_a_shared_resource_that_names_a_patient(
    world: World, role: str, interaction: str, reference: str
) -> None:
    path = NAMED_PATHS[interaction].format(r=reference)
    response = world.call(role, "GET", path)
    expected = NAMED_READS[role][NAMED.index(reference)]
    assert response.status_code == expected, response.text
    if expected == 404:
        _as_missing(world, role, response, path, reference.partition("/")[2])


def _visible(role: str, *references: str) -> list[str]:
    """Which of ``references`` (of NAMED, or not) the role reads."""
    return sorted(
        r for r in references if r not in NAMED or NAMED_READS[role][NAMED.index(r)] == 200
    )


TASKS = [r for r in NAMED if r.startswith("Task/")]
# What a search of these types hands out, pulls in or resolves through them, per query.
NAMED_SEARCHES = {
    "reference": ("Task?patient=Patient/bob", ["Task/task-bob"]),
    "token": ("Task?status=requested", TASKS),
    "no criteria": ("Device", ["Device/device-bob"]),
    "_revinclude": (
        "Practitioner?_id=drwho&_revinclude=Task:owner",
        ["Practitioner/drwho", *TASKS],
    ),
    "_include": (
        "Task?owner=Practitioner/drwho&_include=Task:patient",
        [*TASKS, "Patient/alice", "Patient/bob"],
    ),
    "chain": ("Task?patient.name=Bob", ["Task/task-bob"]),
    # what only the named resource links: found by whoever may read it, and nobody else
    "_has": ("Practitioner?_has:Task:owner:patient=Patient/bob", ["Practitioner/drwho"]),
    "_has to its patient": ("Patient?_has:Task:patient:_id=task-both", ["Patient/alice"]),
}


@pytest.mark.parametrize("role", [PATIENT, DR_WHO, DR_NO, GLASS, SYSTEM, RESEARCHER])
@pytest.mark.parametrize("what", sorted(NAMED_SEARCHES))
def test_a_search_reaches_a_shared_resource_only_if_it_may_read_it(
    world: World, role: str, what: str
) -> None:
    query, every = NAMED_SEARCHES[what]
    if role == RESEARCHER and query.partition("?")[0] not in RESEARCH_READABLE:
        assert world.call(role, "GET", query).status_code == 403
        return
    response = world.call(role, "GET", query)
    if what.startswith("_has"):
        expected = [] if role not in (GLASS, SYSTEM) else every
    else:
        expected = [r for r in _visible(role, *every) if _reaches_patient(role, r)]
    assert _ids(response) == expected
    matches = [e for e in response.json().get("entry", []) if e["search"]["mode"] == "match"]
    assert response.json()["total"] == len(matches)


def _reaches_patient(role: str, reference: str) -> bool:
    """Whether a role reads a Patient record (anything else: True)."""
    if not reference.startswith("Patient/"):
        return True
    whose = reference.partition("/")[2]
    return READS[role][whose == "bob"] == 200


@pytest.mark.parametrize("kind", ["Binary", "Bundle"])
def test_a_researcher_searches_no_type_that_holds_what_was_put_in_it(
    world: World, kind: str
) -> None:
    """A Binary whose securityContext is a DocumentReference, a Bundle of a patient's
    records: they name no patient, yet hold one's record."""
    assert world.call(RESEARCHER, "GET", kind).status_code == 403
    assert world.call(SYSTEM, "GET", kind).status_code == 200


@pytest.mark.parametrize("role", [PATIENT, DR_WHO, DR_NO, GLASS, SYSTEM])
@pytest.mark.parametrize("query", ["_summary=count", "_total=accurate&_count=1"])
def test_a_count_counts_only_what_may_be_read(world: World, role: str, query: str) -> None:
    response = world.call(role, "GET", f"Task?status=requested&{query}")
    assert response.status_code == 200, response.text
    assert response.json()["total"] == len(_visible(role, *TASKS))


@pytest.mark.parametrize("role", ROLES)
def test_a_types_history_of_resources_that_name_patients_needs_an_unconfined_token(
    world: World, role: str
) -> None:
    """It would list every patient's Tasks, or how many there are."""
    assert world.call(role, "GET", "Task/_history").status_code == WIDE_HISTORY[role]


def test_a_shared_type_that_never_names_a_patient_keeps_its_history_open(world: World) -> None:
    assert world.call(PATIENT, "GET", "Practitioner/_history").status_code == 200


# role -> status of creating a Task for alice, for bob, for nobody
NAMED_CREATES = {
    PATIENT: (403, 403, 403),  # a patient's scopes do not write what is sealed under the shared key
    DR_WHO: (201, 403, 201),
    DR_NO: (403, 403, 201),
    GLASS: (201, 201, 201),
    SYSTEM: (201, 201, 201),
    RESEARCHER: (403, 403, 403),
    **{role: (401, 401, 401) for role in UNAUTHENTICATED},
}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("whose", ["alice", "bob", None])
def test_creating_a_shared_resource_that_names_a_patient(
    world: World, role: str, whose: str | None
) -> None:
    response = world.call(role, "POST", "Task", json=_written_task(None, whose))
    expected = NAMED_CREATES[role][["alice", "bob", None].index(whose)]
    assert response.status_code == expected, response.text


@pytest.mark.parametrize("role", [DR_WHO, DR_NO])
def test_updating_another_patients_shared_resource_answers_as_missing(
    world: World, role: str
) -> None:
    """The content sent names nobody: the record it would replace decides, hidden."""
    body = _written_task("task-bob", None, note=[{"text": role}])
    response = world.call(role, "PUT", "Task/task-bob", json=body)
    assert response.status_code == 404, response.text
    missing = world.call(role, "GET", "Task/ghost")
    assert response.json() == json.loads(missing.text.replace("ghost", "task-bob"))
    kept = world.call(SYSTEM, "GET", "Task/task-bob").json()
    assert kept["for"] == {"reference": "Patient/bob"} and "note" not in kept


@pytest.mark.parametrize("role", [DR_WHO, DR_NO])
def test_deleting_another_patients_shared_resource_answers_as_missing(
    world: World, role: str
) -> None:
    victim = f"victim-task-{ROLES.index(role)}"
    with world.records.writer() as writer:
        writer.update("Task", victim, _written_task(victim, "bob"))
    response = world.call(role, "DELETE", f"Task/{victim}")
    assert response.status_code == 200, response.text
    missing = world.call(role, "DELETE", "Task/ghost")
    assert response.json() == json.loads(missing.text.replace("ghost", victim))
    assert world.call(SYSTEM, "GET", f"Task/{victim}").status_code == 200


def test_a_clinician_may_update_a_shared_resource_of_a_patient_they_care_for(
    world: World,
) -> None:
    victim = "updatable-task"
    with world.records.writer() as writer:
        writer.update("Task", victim, _written_task(victim, "alice"))
    body = _written_task(victim, "alice", note=[{"text": "accepted"}])
    assert world.call(DR_WHO, "PUT", f"Task/{victim}", json=body).status_code == 200
    assert world.call(DR_NO, "PUT", f"Task/{victim}", json=body).status_code == 403  # as sent
    for_nobody = _written_task(victim, None, note=[{"text": "moved"}])
    assert world.call(DR_NO, "PUT", f"Task/{victim}", json=for_nobody).status_code == 404


def test_a_batch_reads_a_shared_resource_only_if_it_may(world: World) -> None:
    bundle = _bundle(
        "batch", _get("Task/task-alice"), _get("Task/task-bob"), _get("Task?patient=Patient/bob")
    )
    response = world.call(PATIENT, "POST", "", json=bundle)
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    assert [e["response"]["status"].split()[0] for e in entries] == ["200", "404", "200"]
    assert entries[2]["resource"]["total"] == 0


@contextmanager
def _heard(world: World) -> Iterator[list[Reached]]:
    """What the access hooks hear of the requests made inside."""
    heard: list[Reached] = []

    async def hook(request: Request, reached: list[Reached]) -> None:
        heard.extend(reached)

    app = world.client.app
    before = list(getattr(app.state, "access_hooks", []))
    add_access_hook(app, hook)
    try:
        yield heard
    finally:
        app.state.access_hooks = before


def test_a_clinician_handed_a_shared_resource_reached_its_patients(world: World) -> None:
    with _heard(world) as heard:
        world.call(DR_WHO, "GET", "Task/task-alice")
        world.call(GLASS, "GET", "Task/task-both")
    assert heard == [
        Reached("alice", "Practitioner/drwho", None),
        Reached("alice", "Practitioner/drno", REASON),
        Reached("bob", "Practitioner/drno", REASON),
    ]


def test_whom_a_shared_resource_names_is_not_worked_out_when_it_cannot_matter(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A system token reaches every record whoever it names: nothing is opened to know."""

    def never(resource: dict[str, Any]) -> tuple[str, ...]:
        raise AssertionError("the patients a resource names were worked out")

    monkeypatch.setattr(enforce, "record_patients", never)
    found = _ids(world.call(SYSTEM, "GET", "Task?status=requested&_revinclude=Task:based-on"))
    assert found == TASKS
    assert world.call(SYSTEM, "GET", "Task/task-bob").status_code == 200


# -- records of the compartment of several patients ---------------------------------------
# A Group's members, an Appointment's actors: the record is in each one's compartment, and
# judged as each one's record, as a shared resource naming them is.

SEVERAL = "Group/group-both"
SEVERAL_READS = {
    PATIENT: 404,
    DR_WHO: 404,
    DR_NO: 404,
    GLASS: 200,
    SYSTEM: 200,
    RESEARCHER: 403,
    **{role: 401 for role in UNAUTHENTICATED},
}


@pytest.mark.parametrize("role", ROLES)
def test_a_record_of_several_patients_is_reached_only_with_each_of_them(
    world: World, role: str
) -> None:
    response = world.call(role, "GET", SEVERAL)
    assert response.status_code == SEVERAL_READS[role], response.text
    if SEVERAL_READS[role] == 404:
        _as_missing(world, role, response, SEVERAL, "group-both")


def test_a_record_of_several_patients_is_in_each_one_s_compartment(world: World) -> None:
    for patient in ("alice", "bob"):
        assert SEVERAL in _ids(world.call(SYSTEM, "GET", f"Patient/{patient}/$everything"))
    assert SEVERAL not in _ids(world.call(PATIENT, "GET", "Patient/alice/$everything"))
    assert SEVERAL not in _ids(world.call(PATIENT, "GET", "Group"))


def test_a_patient_does_not_write_a_record_of_another_patient_too(world: World) -> None:
    group = {
        "resourceType": "Group",
        "type": "person",
        "actual": True,
        "member": [{"entity": {"reference": f"Patient/{p}"}} for p in ("alice", "bob")],
    }
    assert world.call(PATIENT, "POST", "Group", json=group).status_code == 403
    alone = {**group, "member": group["member"][:1]}
    assert world.call(PATIENT, "POST", "Group", json=alone).status_code == 201


# -- the access history -------------------------------------------------------------------

ACCESS_HISTORY = {
    PATIENT: (200, 404),
    DR_WHO: (403, 403),
    DR_NO: (403, 403),
    GLASS: (403, 403),
    SYSTEM: (200, 200),
    RESEARCHER: (403, 403),
    **{role: (401, 401) for role in UNAUTHENTICATED},
}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("whose", ["alice", "bob"])
def test_the_access_history(world: World, role: str, whose: str) -> None:
    path = f"Patient/{whose}/$access-history"
    response = world.call(role, "GET", path)
    assert response.status_code == ACCESS_HISTORY[role][whose == "bob"], response.text
    if response.status_code == 404:
        _as_missing(world, role, response, path, whose)


def test_break_glass_is_recorded_with_its_reason_and_listed_first(world: World) -> None:
    assert world.call(GLASS, "GET", "Observation/obs-bob").status_code == 200
    assert world.call(SYSTEM, "GET", "Observation/obs-bob").status_code == 200
    events = [
        e["resource"]
        for e in world.call(SYSTEM, "GET", "Patient/bob/$access-history").json()["entry"]
    ]
    flags = [is_break_glass(event) for event in events]
    assert flags[0] and not flags[-1] and flags == sorted(flags, reverse=True)
    glass = events[0]
    assert glass["purposeOfEvent"][0]["text"] == REASON
    person, app = glass["agent"]
    assert person["who"]["reference"] == "Practitioner/drno"
    assert person["role"] == [{"text": "clinician"}]
    assert app["who"]["identifier"]["value"] == "matrix-app"
    assert any(
        e["agent"][0]["who"]["display"].startswith("lab") for e in events if not is_break_glass(e)
    )


def test_a_break_glass_needs_a_reason(world: World) -> None:
    headers = {"X-Break-Glass": "  "}
    response = world.call(DR_NO, "GET", "Observation/obs-bob", headers=headers)
    assert response.status_code == 400


# -- writes -------------------------------------------------------------------------------

WRITES = {
    PATIENT: (201, 403),
    DR_WHO: (201, 403),
    DR_NO: (403, 403),
    GLASS: (201, 201),
    SYSTEM: (201, 201),
    RESEARCHER: (403, 403),
    **{role: (401, 401) for role in UNAUTHENTICATED},
}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("whose", ["alice", "bob"])
def test_creating(world: World, role: str, whose: str) -> None:
    response = world.call(role, "POST", "Condition", json=_condition(whose))
    assert response.status_code == WRITES[role][whose == "bob"], response.text


# role -> status of an update of alice's record, of bob's, each with its own patient named:
# content naming a patient the token may not write is refused as a create's (403)
UPDATES = {
    PATIENT: (200, 403),
    DR_WHO: (200, 403),
    DR_NO: (403, 403),
    GLASS: (200, 200),
    SYSTEM: (200, 200),
    RESEARCHER: (403, 403),
    **{role: (401, 401) for role in UNAUTHENTICATED},
}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("whose", ["alice", "bob"])
def test_updating(world: World, role: str, whose: str) -> None:
    body = {**_condition(whose, f"cond-{whose}"), "note": [{"text": role}]}
    response = world.call(role, "PUT", f"Condition/cond-{whose}", json=body)
    assert response.status_code == UPDATES[role][whose == "bob"], response.text
    if response.status_code == 403 and role not in (RESEARCHER, *UNAUTHENTICATED):
        ghost = {**body, "id": "ghost"}  # the same answer where no record is
        assert world.call(role, "PUT", "Condition/ghost", json=ghost).json() == response.json()


# role -> status of a delete of alice's record, of bob's; a hidden one answers as missing
DELETES = {
    PATIENT: (204, 200),
    DR_WHO: (204, 200),
    DR_NO: (200, 200),
    GLASS: (204, 204),
    SYSTEM: (204, 204),
    RESEARCHER: (403, 403),
    **{role: (401, 401) for role in UNAUTHENTICATED},
}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("whose", ["alice", "bob"])
def test_deleting(world: World, role: str, whose: str) -> None:
    victim = f"victim-{whose}-{ROLES.index(role)}"
    with world.records.writer() as writer:
        writer.update("Condition", victim, _condition(whose, victim))
    response = world.call(role, "DELETE", f"Condition/{victim}")
    assert response.status_code == DELETES[role][whose == "bob"], response.text
    still_there = world.call(SYSTEM, "GET", f"Condition/{victim}").status_code == 200
    assert still_there == (response.status_code != 204)
    if response.status_code == 200:
        missing = world.call(role, "DELETE", "Condition/ghost")
        assert response.json() == json.loads(missing.text.replace("ghost", victim))


def _bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def _post(resource: dict[str, Any]) -> dict[str, Any]:
    return {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}


def _get(url: str) -> dict[str, Any]:
    return {"request": {"method": "GET", "url": url}}


def test_a_transaction_with_a_refused_entry_fails_whole(world: World) -> None:
    marked = {**_condition("alice"), "code": {"text": "transaction marker"}}
    bundle = _bundle("transaction", _post(marked), _post(_condition("bob")))
    assert world.call(PATIENT, "POST", "", json=bundle).status_code == 403
    found = world.call(SYSTEM, "GET", "Condition?code:text=transaction marker")
    assert _ids(found) == []
    allowed = _bundle("transaction", _post(marked))
    assert world.call(PATIENT, "POST", "", json=allowed).status_code == 200


def test_a_batch_checks_each_entry_as_its_own_interaction(world: World) -> None:
    bundle = _bundle(
        "batch",
        _get("Observation/obs-alice"),
        _get("Observation/obs-bob"),
        _get("Observation?code=8867-4"),
        _post(_condition("bob")),
    )
    response = world.call(PATIENT, "POST", "", json=bundle)
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    assert [e["response"]["status"].split()[0] for e in entries] == ["200", "404", "200", "403"]
    searchset = entries[2]["resource"]
    assert [e["resource"]["id"] for e in searchset["entry"]] == ["obs-alice"]


@pytest.mark.parametrize("role", [PATIENT, DR_WHO, DR_NO])
def test_a_batch_answers_a_version_of_a_hidden_record_as_a_missing_one(
    world: World, role: str
) -> None:
    victim = f"gone-bob-{ROLES.index(role)}"
    with world.records.writer() as writer:
        writer.update("Observation", victim, _observation(victim, "bob"))
    with world.records.writer() as writer:
        writer.delete("Observation", victim)
    urls = [f"Observation/{victim}/_history/2", "Observation/obs-bob/_history/1"]
    hidden = world.call(role, "POST", "", json=_bundle("batch", *map(_get, urls)))
    ghosts = [url.replace(victim, "ghost").replace("obs-bob", "ghost") for url in urls]
    missing = world.call(role, "POST", "", json=_bundle("batch", *map(_get, ghosts)))
    assert hidden.status_code == missing.status_code == 200, hidden.text
    answers = zip(hidden.json()["entry"], missing.json()["entry"], urls, ghosts, strict=True)
    for entry, as_missing, url, ghost in answers:
        record, nothing = url.split("/_history")[0], ghost.split("/_history")[0]
        assert entry == json.loads(json.dumps(as_missing).replace(nothing, record))


@pytest.mark.parametrize("role", [PATIENT, DR_WHO])  # each may write alice's records
def test_another_patient_s_deleted_record_is_neither_taken_over_nor_told_of(
    world: World, role: str
) -> None:
    """A deletion is judged by the version it deleted: an update at a deleted record's id
    made it the requester's, and the version numbers of an If-Match's 412 said that a
    record had been there (a review's finding)."""
    victim = f"deleted-bob-{ROLES.index(role)}"
    with world.records.writer() as writer:
        writer.update("Observation", victim, _observation(victim, "bob"))
    with world.records.writer() as writer:
        writer.delete("Observation", victim)
    body = _observation(victim, "alice")
    put = {"resource": body, "request": {"method": "PUT", "url": f"Observation/{victim}"}}
    was = {"If-Match": 'W/"1"'}
    answers = [
        world.call(role, "PUT", f"Observation/{victim}", json=body),
        world.call(role, "PUT", f"Observation/{victim}", json=body, headers=was),
        world.call(role, "PUT", "Observation?_id=nothing-here", json=body),
        world.call(role, "POST", "", json=_bundle("transaction", put)),
    ]
    assert [answer.status_code for answer in answers] == [404] * 4, answers[-1].text
    deleting = world.call(role, "DELETE", f"Observation/{victim}", headers=was)
    assert deleting.status_code == 200, deleting.text
    assert "did not exist" in deleting.text and "version" not in deleting.text
    assert world.records.latest_version("Observation", victim).deleted


def test_a_conditional_create_never_matches_a_record_it_cannot_see(world: World) -> None:
    body = _observation("x", "alice")
    del body["id"]
    response = world.call(
        PATIENT, "POST", "Observation", json=body, headers={"If-None-Exist": "_id=obs-bob"}
    )
    assert response.status_code == 201 and response.json()["id"] not in ("obs-bob",)


def test_a_conditional_update_matching_nothing_says_nothing_of_a_hidden_record(
    world: World,
) -> None:
    """Its body's id names bob's observation, hidden from alice: answered as missing, as
    a plain update of it is, not with the 409 that would say it exists."""
    body = _observation("obs-bob", "alice", code={"text": "overwritten"})
    plain = world.call(PATIENT, "PUT", "Observation/obs-bob", json=body)
    conditional = world.call(PATIENT, "PUT", "Observation?_id=nothing-here", json=body)
    assert plain.status_code == conditional.status_code == 404, conditional.text
    assert world.records.read("Observation", "obs-bob").resource()["code"] == CODE


# Criteria whose chain or _has names bob's records, which only their matches can hide:
# bob's name through alice's observation (its focus), bob's care team through Dr Team.
HIDDEN_CHAINS = (
    ("Observation", "focus:Patient.name=Bob", "focus:Patient.name=Nobody"),
    (
        "Practitioner",
        "_id=drteam&_has:CareTeam:participant:patient.name=Bob",
        "_id=drteam&_has:CareTeam:participant:patient.name=Nobody",
    ),
)


@pytest.mark.parametrize("role", [PATIENT, DR_WHO, DR_NO])
@pytest.mark.parametrize(("kind", "hidden", "nothing"), HIDDEN_CHAINS)
def test_a_bundles_search_resolves_chains_and_has_among_what_it_may_see(
    world: World, role: str, kind: str, hidden: str, nothing: str
) -> None:
    bundle = _bundle("batch", _get(f"{kind}?{hidden}"), _get(f"{kind}?{nothing}"))
    response = world.call(role, "POST", "", json=bundle)
    assert response.status_code == 200, response.text
    found, missing = (entry["resource"] for entry in response.json()["entry"])
    assert found["total"] == missing["total"] == 0


@pytest.mark.parametrize("role", [PATIENT, DR_WHO])
def test_a_conditional_create_resolves_its_chain_among_what_it_may_see(
    world: World, role: str
) -> None:
    kind, hidden, nothing = HIDDEN_CHAINS[0]
    body = {**_observation("x", "alice"), "code": {"text": "made by a conditional create"}}
    del body["id"]
    statuses = [
        world.call(role, "POST", kind, json=body, headers={"If-None-Exist": criteria}).status_code
        for criteria in (hidden, nothing)
    ]
    assert statuses == [201, 201]


@pytest.mark.parametrize("path", ["metadata", ".well-known/smart-configuration"])
def test_discovery_is_public(world: World, path: str) -> None:
    assert world.call(NO_TOKEN, "GET", path).status_code == 200


def test_the_ledger_is_public_to_auditors(world: World) -> None:
    assert world.client.get("/ledger/checkpoint").status_code == 200


def test_the_access_hooks_hear_of_each_patient_a_clinician_was_handed(world: World) -> None:
    with _heard(world) as heard:
        world.call(DR_WHO, "GET", "Observation/obs-alice")
        world.call(DR_NO, "GET", "Observation/obs-alice")
        world.call(DR_WHO, "GET", "Observation?code=8867-4")
        world.call(GLASS, "GET", "Observation/obs-bob")
        world.call(SYSTEM, "GET", "Observation/obs-bob")
    assert heard == [
        Reached("alice", "Practitioner/drwho", None),
        Reached("alice", "Practitioner/drwho", None),
        Reached("bob", "Practitioner/drno", REASON),
    ]


def test_a_patients_search_opens_only_their_own_compartment(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []
    original = world.records.open_found

    def spy(sealed: Any, key_of: Any = None) -> Any:
        stored = original(sealed, key_of)
        opened.append(stored.reference)
        return stored

    monkeypatch.setattr(world.records, "open_found", spy)
    found = _ids(world.call(PATIENT, "GET", "Observation"))
    assert "Observation/obs-alice" in found and "Observation/obs-bob" not in found
    assert "Observation/obs-alice" in opened and "Observation/obs-bob" not in opened


LAB = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"


def _categorised(resource_id: str, category: str, code: str, **more: Any) -> dict[str, Any]:
    system = LAB.partition("|")[0]
    return {
        **_observation(resource_id, "alice", **more),
        "category": [{"coding": [{"system": system, "code": category}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
    }


PANEL = ["Observation/panel-alice"]


@pytest.mark.parametrize(
    ("pulled_in", "expected"),
    [
        ("_include=Observation:has-member", PANEL),
        ("_revinclude=Observation:derived-from", PANEL),
        ("_include:iterate=Observation:has-member", PANEL),
        ("has-member:Observation.code=8310-5", []),
        ("_has:Observation:derived-from:code=8310-5", []),
    ],
)
def test_a_granular_scope_holds_for_what_a_search_pulls_in_of_its_own_type(
    world: World, pulled_in: str, expected: list[str]
) -> None:
    """A token for alice's laboratory results only: its search carries the filter, so its
    matches are laboratory results, but what they reference or what references them is
    not, even of the same type (a temperature here)."""
    with world.records.writer() as writer:
        writer.update(
            "Observation",
            "panel-alice",
            _categorised(
                "panel-alice",
                "laboratory",
                "24323-8",
                hasMember=[{"reference": "Observation/temperature-alice"}],
            ),
        )
        writer.update(
            "Observation",
            "temperature-alice",
            _categorised(
                "temperature-alice",
                "vital-signs",
                "8310-5",
                derivedFrom=[{"reference": "Observation/panel-alice"}],
            ),
        )
    token = _token(
        world.client.app.state.authority,
        sub="alice",
        role="patient",
        fhirUser="Patient/alice",
        patient="alice",
        scope=f"launch/patient patient/Observation.rs?category={LAB}",
    )
    headers = {"Authorization": f"Bearer {token}"}
    query = f"Observation?category={LAB}&code=24323-8"
    assert _ids(world.client.get(f"/fhir/{query}", headers=headers)) == ["Observation/panel-alice"]
    assert _ids(world.client.get(f"/fhir/{query}&{pulled_in}", headers=headers)) == expected


def test_moving_a_readable_record_to_another_patient_is_forbidden_not_missing(
    world: World,
) -> None:
    """Alice reads her observation: an update that would make it bob's is refused for its
    content (403), not answered as if the record did not exist; in a batch too (it said
    "Observation/ does not exist", the id left out)."""
    moved = {**_observation("obs-alice", "bob"), "note": [{"text": "moved"}]}
    refused = world.call(PATIENT, "PUT", "Observation/obs-alice", json=moved)
    assert refused.status_code == 403, refused.text
    assert "does not exist" not in refused.text
    entry = {"resource": moved, "request": {"method": "PUT", "url": "Observation/obs-alice"}}
    answered = world.call(PATIENT, "POST", "", json=_bundle("batch", entry)).json()
    response = answered["entry"][0]["response"]
    assert response["status"].startswith("403")
    assert "another patient's record" in response["outcome"]["issue"][0]["diagnostics"]
    assert world.call(SYSTEM, "GET", "Observation/obs-alice").json()["subject"] == {
        "reference": "Patient/alice"
    }


def _patch(world: World, role: str, path: str, operations: list[dict[str, Any]]) -> httpx.Response:
    headers = {"Content-Type": "application/json-patch+json"}
    return world.call(role, "PATCH", path, content=json.dumps(operations), headers=headers)


def test_a_patch_is_checked_as_the_update_it_is(world: World) -> None:
    """The record patched and the resource the patch makes of it, as an update's version
    replaced and resource as sent: a token that may not write is refused, a hidden record
    answered as missing, and a patch that moves a record to another patient refused."""
    victim = "patchable-task"
    with world.records.writer() as writer:
        writer.update("Task", victim, _written_task(victim, "alice"))
    note = [{"op": "add", "path": "/note", "value": [{"text": "seen"}]}]
    to_bob = [{"op": "replace", "path": "/for/reference", "value": "Patient/bob"}]

    assert _patch(world, READ_ONLY, f"Task/{victim}", note).status_code == 403
    # A patch reads the record: its test operations, and the record it hands back.
    assert _patch(world, WRITE_ONLY, f"Task/{victim}", note).status_code == 403
    entry = {
        "resource": {
            "resourceType": "Binary",
            "contentType": "application/json-patch+json",
            "data": base64.b64encode(json.dumps(note).encode()).decode(),
        },
        "request": {"method": "PATCH", "url": f"Task/{victim}"},
    }
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [entry]}
    answer = world.call(WRITE_ONLY, "POST", "", json=batch).json()
    assert answer["entry"][0]["response"]["status"] == "403 Forbidden"
    written = _written_task(victim, "alice", note=[{"text": "sent whole"}])
    assert world.call(WRITE_ONLY, "PUT", f"Task/{victim}", json=written).status_code == 200
    assert _patch(world, RESEARCHER, f"Task/{victim}", note).status_code == 403
    assert _patch(world, NO_TOKEN, f"Task/{victim}", note).status_code == 401
    hidden = _patch(world, DR_NO, f"Task/{victim}", note)
    assert hidden.status_code == 404, hidden.text
    missing = _patch(world, DR_NO, "Task/ghost", note)
    assert hidden.json() == json.loads(missing.text.replace("ghost", victim))
    assert _patch(world, PATIENT, f"Task/{victim}", to_bob).status_code == 403
    assert _patch(world, DR_WHO, f"Task/{victim}", to_bob).status_code == 403
    assert world.call(SYSTEM, "GET", f"Task/{victim}").json()["meta"]["versionId"] == "2"

    patched = _patch(world, DR_WHO, f"Task/{victim}", note)

    assert patched.status_code == 200, patched.text
    assert world.call(SYSTEM, "GET", f"Task/{victim}").json()["note"] == [{"text": "seen"}]
