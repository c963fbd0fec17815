"""Search result control over HTTP: paging that stays valid while data changes, _sort,
_total, _summary, _elements, _include and _revinclude, chains, _has, $everything."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import FHIR_JSON, put_resource
from starlette.testclient import TestClient

from coffre.search import values as values_module
from coffre.search.normalise import legacy_text

DATA_ABSENT = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"


def _patient(client: TestClient, pid: str, family: str, born: str, **more: Any) -> None:
    name = {"family": family, "given": [pid.capitalize()]}
    put_resource(
        client, {"resourceType": "Patient", "id": pid, "name": [name], "birthDate": born, **more}
    )


def _people(client: TestClient) -> None:
    _patient(client, "ana", "Bérubé", "1980-02-01", gender="female")
    _patient(client, "bob", "Berger", "1975-06-30", gender="male")
    _patient(client, "cyd", "Zola", "1990-11-11", gender="male")
    _patient(client, "dee", "Berger", "2001-01-01", gender="female")
    put_resource(client, {"resourceType": "Organization", "id": "org", "name": "Clinique du Lac"})
    for i, (who, code, value) in enumerate(
        [("ana", "8302-2", 160), ("bob", "8302-2", 181), ("bob", "29463-7", 80)]
    ):
        put_resource(
            client,
            {
                "resourceType": "Observation",
                "id": f"obs-{i}",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                "subject": {"reference": f"Patient/{who}"},
                "encounter": {"reference": f"Encounter/enc-{who}"},
                "valueQuantity": {"value": value, "system": "http://unitsofmeasure.org"},
            },
        )
    for who in ("ana", "bob"):
        put_resource(
            client,
            {
                "resourceType": "Encounter",
                "id": f"enc-{who}",
                "status": "finished",
                "class": {"code": "AMB"},
                "subject": {"reference": f"Patient/{who}"},
                "serviceProvider": {"reference": "Organization/org"},
            },
        )


def _search(client: TestClient, query: str, **headers: str) -> dict[str, Any]:
    response = client.get(f"/fhir/{query}", headers=headers)
    assert response.status_code == 200, response.text
    bundle: dict[str, Any] = response.json()
    return bundle


def _ids(bundle: dict[str, Any], mode: str = "match") -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == mode]


def _link(bundle: dict[str, Any], relation: str) -> str | None:
    return next((k["url"] for k in bundle["link"] if k["relation"] == relation), None)


def test_pages_stay_valid_while_data_changes(client: TestClient) -> None:
    _people(client)
    born = {"ana": "1980-02-01", "bob": "1975-06-30", "dee": "2001-01-01"}
    first = _search(client, "Patient?name=ber&_count=2")
    assert first["total"] == 3 and len(_ids(first)) == 2
    (later,) = set(born) - set(_ids(first))
    _patient(client, "eve", "Bernard", "1999-01-01")  # created after the first page
    _patient(client, later, "Berger", "2002-02-02")  # changed after it, still matching
    following = client.get(_link(first, "next") or "").json()
    assert following["total"] == 3
    assert sorted(_ids(first) + _ids(following)) == ["ana", "bob", "dee"]
    shown = following["entry"][0]["resource"]
    assert (shown["id"], shown["birthDate"]) == (later, born[later])  # as at the first page
    back = client.get(_link(following, "previous") or "").json()
    assert _ids(back) == _ids(first)
    assert len(_ids(_search(client, "Patient?name=ber"))) == 4  # a new search sees eve


def test_a_record_deleted_or_changed_between_pages_shifts_no_other(client: TestClient) -> None:
    """A next page starts after the last record of the page before (``_after``): counted
    by an offset, each deletion or change that stopped a record matching shifted the later
    pages by one, and an untouched record was never handed out."""
    code = {"coding": [{"system": "urn:example:probe", "code": "paged"}]}
    for number in range(12):
        put_resource(
            client,
            {"resourceType": "Observation", "id": f"o{number}", "status": "final", "code": code},
        )
    page = _search(client, "Observation?code=paged&_count=3")
    seen: list[str] = []
    while True:
        seen += _ids(page)
        if len(seen) == 3:  # between the pages: one gone, one no longer matching
            client.delete(f"/fhir/Observation/{seen[0]}")
            put_resource(
                client,
                {
                    "resourceType": "Observation",
                    "id": seen[1],
                    "status": "final",
                    "code": {"text": "x"},
                },
            )
        following = _link(page, "next")
        if following is None:
            break
        assert "_after=" in following
        page = client.get(following).json()
    assert len(seen) == len(set(seen)) == 12


@pytest.mark.parametrize("criterion", ["_id=gone", "identifier=urn:example:probe|gone"])
def test_a_record_deleted_after_the_snapshot_is_found_by_no_criterion(
    client: TestClient, criterion: str
) -> None:
    """Looked up by ``_id``, its version of the snapshot's time came back: what a read
    answers 410 for, to whoever may search."""
    patient = {
        "resourceType": "Patient",
        "id": "gone",
        "identifier": [{"system": "urn:example:probe", "value": "gone"}],
    }
    put_resource(client, patient)
    snapshot = _search(client, "Patient?_id=gone")["link"][0]["url"].split("_snapshot=")[1]
    client.delete("/fhir/Patient/gone")
    page = _search(client, f"Patient?{criterion}&_snapshot={snapshot.split('&')[0]}")
    assert _ids(page) == []


def test_sort_by_several_keys_either_way(client: TestClient) -> None:
    _people(client)
    assert _ids(_search(client, "Patient?_sort=birthdate")) == ["bob", "ana", "cyd", "dee"]
    assert _ids(_search(client, "Patient?_sort=-birthdate")) == ["dee", "cyd", "ana", "bob"]
    assert _ids(_search(client, "Patient?_sort=family,-birthdate")) == ["dee", "bob", "ana", "cyd"]


def test_total_summary_and_elements(client: TestClient) -> None:
    _people(client)
    assert "total" not in _search(client, "Patient?gender=male&_total=none")
    assert _search(client, "Patient?gender=male&_total=accurate")["total"] == 2
    count = _search(client, "Patient?gender=male&_summary=count")
    assert count["total"] == 2 and "entry" not in count
    elements = _search(client, "Patient?_id=ana&_elements=gender")["entry"][0]["resource"]
    assert set(elements) == {"resourceType", "id", "meta", "gender"}
    assert elements["meta"]["tag"][-1]["code"] == "SUBSETTED"
    summary = _search(client, "Observation?_id=obs-0&_summary=true")["entry"][0]["resource"]
    assert {"code", "subject", "status"} <= set(summary)
    assert client.get("/fhir/Patient?_summary=maybe").status_code == 400


def test_elements_keep_the_mandatory_elements(client: TestClient) -> None:
    """search.html#elements: "Servers SHOULD always return mandatory elements whether they
    are requested or not": an Observation's status and code (1..1), an Encounter's status
    and class; ``_summary=text`` keeps the top-level mandatory elements too."""
    _people(client)
    observation = _search(client, "Observation?_id=obs-0&_elements=id")["entry"][0]["resource"]
    assert set(observation) == {"resourceType", "id", "meta", "status", "code"}
    assert observation["meta"]["tag"][-1]["code"] == "SUBSETTED"
    encounter = _search(client, "Encounter?_id=enc-ana&_elements=subject")["entry"][0]["resource"]
    assert set(encounter) == {"resourceType", "id", "meta", "status", "class", "subject"}
    text = _search(client, "Observation?_id=obs-0&_summary=text")["entry"][0]["resource"]
    assert set(text) == {"resourceType", "id", "meta", "status", "code"}


def test_elements_name_a_choice_element_without_its_type(client: TestClient) -> None:
    """``_elements=value`` keeps an Observation's ``valueQuantity`` (``value[x]``), and a
    look-alike is not a choice: a MedicationRequest's ``status`` leaves its ``statusReason``."""
    _people(client)
    observation = _search(client, "Observation?_id=obs-0&_elements=value")["entry"][0]["resource"]
    assert "valueQuantity" in observation
    assert "subject" not in observation
    request = {
        "resourceType": "MedicationRequest",
        "id": "mr-1",
        "status": "stopped",
        "statusReason": {"text": "allergy"},
        "intent": "order",
        "medicationCodeableConcept": {"text": "amoxicillin"},
        "subject": {"reference": "Patient/ana"},
    }
    assert client.put("/fhir/MedicationRequest/mr-1", json=request).status_code == 201
    shown = _search(client, "MedicationRequest?_id=mr-1&_elements=status")["entry"][0]["resource"]
    assert set(shown) == {
        "resourceType",
        "id",
        "meta",
        "status",
        "intent",
        "medicationCodeableConcept",
        "subject",
    }


def test_exact_takes_an_accent_typed_either_way(client: TestClient) -> None:
    """``:exact`` keeps case and accents, but an é typed as one character (NFC) or as an e
    and a combining accent (NFD) is the same letter, stored or searched."""
    for pid, given in (("zoe", "Zoe\u0301"), ("zoe-nfc", "Zo\u00e9")):
        patient = {"resourceType": "Patient", "id": pid, "name": [{"given": [given]}]}
        assert client.put(f"/fhir/Patient/{pid}", json=patient).status_code == 201
    for given in ("Zo%C3%A9", "Zoe%CC%81"):
        found = _ids(_search(client, f"Patient?given:exact={given}"))
        assert sorted(found) == ["zoe", "zoe-nfc"], given
    assert _ids(_search(client, "Patient?given:exact=zo%C3%A9")) == []


@pytest.mark.parametrize(
    "query",
    [
        "Observation?date=ge2020-01-01T10:00:00+01:00",
        "Observation?value-quantity=1e+5",
        "RiskAssessment?probability=gt1e+5",
    ],
)
def test_a_plus_sent_unencoded_says_to_encode_it(client: TestClient, query: str) -> None:
    refused = client.get(f"/fhir/{query}")
    assert refused.status_code == 400
    assert "%2B" in refused.json()["issue"][0]["diagnostics"]


def test_include_revinclude_and_iterate(client: TestClient) -> None:
    _people(client)
    bundle = _search(client, "Observation?code=8302-2&_include=Observation:subject")
    assert sorted(_ids(bundle)) == ["obs-0", "obs-1"]
    assert sorted(_ids(bundle, "include")) == ["ana", "bob"]
    bundle = _search(client, "Patient?_id=bob&_revinclude=Observation:subject")
    assert sorted(_ids(bundle, "include")) == ["obs-1", "obs-2"]
    bundle = _search(
        client,
        "Observation?_id=obs-0&_include=Observation:encounter"
        "&_include:iterate=Encounter:service-provider",
    )
    assert sorted(_ids(bundle, "include")) == ["enc-ana", "org"]


def test_elements_shape_the_matches_and_leave_the_includes_whole(client: TestClient) -> None:
    _people(client)
    query = "Observation?code=8302-2&_include=Observation:subject&_elements=code,subject"
    entries = _search(client, query)["entry"]
    for entry in entries:
        resource = entry["resource"]
        if entry["search"]["mode"] == "match":
            assert "valueQuantity" not in resource and "subject" in resource
            assert resource["meta"]["tag"][-1]["code"] == "SUBSETTED"
        else:
            assert {"name", "birthDate", "gender"} <= set(resource), resource
            assert "tag" not in resource["meta"], resource
    assert sorted(e["resource"]["id"] for e in entries) == ["ana", "bob", "obs-0", "obs-1"]


def test_elements_naming_no_element_of_the_type_are_refused_or_reported(
    client: TestClient,
) -> None:
    _people(client)
    query = "Patient?_id=ana&_elements=identifier.value,gender,foo"
    strict = client.get(f"/fhir/{query}", headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400, strict.text
    assert "identifier.value,foo" in strict.text
    lenient = _search(client, query)
    (outcome,) = [e for e in lenient["entry"] if e["search"]["mode"] == "outcome"]
    assert "identifier.value,foo" in outcome["resource"]["issue"][0]["diagnostics"]
    assert set(lenient["entry"][0]["resource"]) == {"resourceType", "id", "meta", "gender"}
    fine = "Observation?_id=obs-0&_elements=value,effective,contained,text"
    answered = client.get(f"/fhir/{fine}", headers={"Prefer": "handling=strict"})
    assert answered.status_code == 200, answered.text
    assert "valueQuantity" in answered.json()["entry"][0]["resource"]


def _members(client: TestClient, length: int) -> None:
    """Observations ``m0`` to ``m{length-1}``, each a member of the one before."""
    for i in range(length):
        member = {"hasMember": [{"reference": f"Observation/m{i + 1}"}]} if i + 1 < length else {}
        put_resource(
            client,
            {
                "resourceType": "Observation",
                "id": f"m{i}",
                "status": "final",
                "code": {"text": "m"},
                **member,
            },
        )


@pytest.mark.parametrize(("length", "cut"), [(5, False), (6, True)])
def test_an_iterate_cut_at_its_last_round_says_so(
    client: TestClient, length: int, cut: bool
) -> None:
    _members(client, length)
    bundle = _search(client, "Observation?_id=m0&_include:iterate=Observation:has-member")
    assert _ids(bundle, "include") == ["m1", "m2", "m3", "m4"]
    outcomes = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert bool(outcomes) == cut
    if cut:
        assert "past 4 rounds" in outcomes[0]["issue"][0]["diagnostics"]


def test_chains_and_has(client: TestClient) -> None:
    _people(client)
    assert sorted(_ids(_search(client, "Observation?subject:Patient.name=berg"))) == [
        "obs-1",
        "obs-2",
    ]
    assert sorted(_ids(_search(client, "Observation?subject.gender=female"))) == ["obs-0"]
    has = _search(client, "Patient?_has:Observation:subject:code=29463-7")
    assert _ids(has) == ["bob"]
    nested = _search(client, "Encounter?service-provider.name=clinique&patient.family=berube")
    assert _ids(nested) == ["enc-ana"]


def test_chains_and_has_follow_four_references_at_most(client: TestClient) -> None:
    _people(client)
    four = (
        "Observation?subject:Patient._has:Observation:subject:encounter.service-provider.name=clin"
    )
    assert sorted(_ids(_search(client, four))) == ["obs-0", "obs-1", "obs-2"]
    for query in (
        "Task?" + "subject." * 5 + "name=x",  # each link over the 145 types a Task names
        "Patient?" + "_has:Observation:subject:" * 1000 + "code=x",
        "Organization?" + "partof." * 1000 + "name=x",
    ):
        response = client.get(f"/fhir/{query}")
        assert response.status_code == 400, response.text
        issue = response.json()["issue"][0]
        assert issue["code"] == "too-costly" and "4 at most" in issue["diagnostics"]


def test_everything_with_type_since_and_count(client: TestClient) -> None:
    _people(client)
    bundle = _search(client, "Patient/bob/$everything")
    assert sorted(_ids(bundle)) == ["bob", "enc-bob", "obs-1", "obs-2"]
    assert sorted(_ids(_search(client, "Patient/bob/$everything?_type=Observation"))) == [
        "obs-1",
        "obs-2",
    ]
    first = _search(client, "Patient/bob/$everything?_count=3")
    assert len(_ids(first)) == 3 and _link(first, "next")
    later = _search(client, "Patient/bob/$everything?_since=2100-01-01T00:00:00Z")
    assert _ids(later) == []
    assert client.get("/fhir/Patient/nobody/$everything").status_code == 404


def test_everything_refuses_what_it_does_not_take_when_strict_and_says_so_when_lenient(
    client: TestClient,
) -> None:
    """An unknown parameter was ignored even under handling=strict, and its page links
    repeated it as if it had been applied."""
    _people(client)
    url = "/fhir/Patient/bob/$everything?_count=2&code=1234-5&_sort=date"
    strict = client.get(url, headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400, strict.text
    assert "does not support _sort, code" in strict.json()["issue"][0]["diagnostics"]
    lenient = _search(client, url.removeprefix("/fhir/"))
    assert len(_ids(lenient)) == 2
    outcome = lenient["entry"][-1]
    assert outcome["search"]["mode"] == "outcome"
    said = " ".join(i["diagnostics"] for i in outcome["resource"]["issue"])
    assert "code is no parameter of $everything" in said and "_sort" in said
    for link in lenient["link"]:
        assert "code=" not in link["url"] and "_sort" not in link["url"], link


def test_post_search_and_conditional_create_use_every_parameter(client: TestClient) -> None:
    _people(client)
    response = client.post("/fhir/Patient/_search", data={"family": "berger", "gender": "male"})
    assert _ids(response.json()) == ["bob"]
    as_json = client.post("/fhir/Patient/_search", data={"family": "berger", "_format": "json"})
    as_xml = client.post("/fhir/Patient/_search", data={"family": "berger", "_format": "xml"})
    assert as_json.status_code == 200
    assert as_xml.status_code == 406, as_xml.text  # the form's _format, as the URL's
    created = client.post(
        "/fhir/Patient",
        json={"resourceType": "Patient"},
        headers={**FHIR_JSON, "If-None-Exist": "family:exact=Zola&birthdate=1990"},
    )
    assert created.status_code == 200 and created.json()["id"] == "cyd"


def test_a_search_with_no_match_and_a_bad_value(client: TestClient) -> None:
    for query in (
        "Patient?birthdate=ne1980-99",
        "Patient?birthdate=2020-01-01T10:00:00%2B25:00",
        "Patient?deceased:missing=maybe",
        "Observation?code-value-quantity=8302-2$lots",
        "Observation?value-quantity=1e999999999",
        "Observation?value-quantity=ap9e999999",
        "Observation?combo-code-value-quantity=8302-2$ap1e-999999999",
        "RiskAssessment?probability=gt1e999999999",
    ):
        assert client.get(f"/fhir/{query}").status_code == 400  # refused before any record
    _people(client)
    assert _ids(_search(client, "Patient?birthdate=1800")) == []
    assert client.get("/fhir/Patient?birthdate=yesterday").status_code == 400
    assert client.get("/fhir/Observation?value-quantity=lots").status_code == 400
    strict = client.get("/fhir/Patient?colour=blue", headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400


def test_dates_at_the_ends_of_the_calendar_are_stored_and_found(client: TestClient) -> None:
    _patient(client, "far", "Loin", "9999-12-31")
    _patient(client, "old", "Ancien", "0001-01-01")
    put_resource(
        client,
        {
            "resourceType": "Observation",
            "id": "edge",
            "status": "final",
            "code": {"text": "edge"},
            "effectiveDateTime": "0001-01-01T00:00:00+01:00",
            "issued": "9999-12-31T23:30:00.000-01:00",
        },
    )
    for query in ("birthdate=9999-12-31", "birthdate=9999", "birthdate=sa9999-12-30"):
        assert _ids(_search(client, f"Patient?{query}")) == ["far"], query
    assert _ids(_search(client, "Patient?birthdate=lt0001-01-02")) == ["old"]
    early = "date=0001-01-01T00:00:00%2B01:00"
    assert _ids(_search(client, f"Observation?{early}")) == ["edge"]


def test_identifier_modifiers_of_type_and_reference_identifier(client: TestClient) -> None:
    mr = {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}
    _patient(
        client,
        "ann",
        "Roy",
        "1970-01-01",
        identifier=[{"type": {"coding": [mr], "text": "Medical record"}, "value": "42"}],
    )
    _patient(client, "ben", "Roy", "1971-01-01", identifier=[{"value": "42"}])
    of_type = f"{mr['system']}|MR|42"
    assert _ids(_search(client, f"Patient?identifier:of-type={of_type}")) == ["ann"]
    assert _ids(_search(client, "Patient?identifier:text=medical")) == ["ann"]
    assert sorted(_ids(_search(client, "Patient?identifier=42"))) == ["ann", "ben"]
    put_resource(
        client,
        {
            "resourceType": "Observation",
            "id": "by-badge",
            "status": "final",
            "code": {"text": "note"},
            "performer": [{"identifier": {"system": "urn:badge", "value": "B7"}}],
        },
    )
    assert _ids(_search(client, "Observation?performer:identifier=urn:badge|B7")) == ["by-badge"]
    assert _ids(_search(client, "Observation?performer:identifier=urn:other|B7")) == []


MRN = "https://hospital.example/mrn"


def test_system_and_code_never_find_a_coding_or_identifier_without_a_system(
    client: TestClient,
) -> None:
    _patient(client, "legacy", "Legacy", "1950-01-01", identifier=[{"value": "1234567"}])
    _patient(client, "other", "Other", "1951-01-01", identifier=[{"value": "7654321"}])
    _patient(client, "mailer", "Mailer", "1952-01-01", telecom=[{"value": "a@b.example"}])
    put_resource(
        client,
        {
            "resourceType": "Condition",
            "id": "uncoded",
            "subject": {"reference": "Patient/legacy"},
            "code": {"coding": [{"code": "44054006"}]},
        },
    )
    assert _ids(_search(client, f"Patient?identifier={MRN}|1234567")) == []
    assert _ids(_search(client, "Patient?identifier=|1234567")) == ["legacy"]
    assert _ids(_search(client, "Patient?identifier=1234567")) == ["legacy"]
    assert _ids(_search(client, "Patient?telecom=email|a@b.example")) == []
    assert _ids(_search(client, "Condition?code=http://snomed.info/sct|44054006")) == []
    assert _ids(_search(client, "Condition?code=44054006")) == ["uncoded"]
    put_resource(
        client,
        {
            "resourceType": "Observation",
            "id": "by-bare-badge",
            "status": "final",
            "code": {"text": "note"},
            "performer": [{"identifier": {"value": "B8"}}],
        },
    )
    assert _ids(_search(client, "Observation?performer:identifier=urn:badge|B8")) == []
    assert _ids(_search(client, "Observation?performer:identifier=B8")) == ["by-bare-badge"]
    assert _ids(_search(client, "Patient?gender=male")) == []  # a plain code still matches
    _patient(client, "coded", "Coded", "1953-01-01", gender="male")
    gender = "http://hl7.org/fhir/administrative-gender|male"
    assert _ids(_search(client, f"Patient?gender={gender}")) == ["coded"]

    newcomer = {
        "resourceType": "Patient",
        "name": [{"family": "Newcomer"}],
        "identifier": [{"system": MRN, "value": "1234567"}],
    }
    created = client.post(
        "/fhir/Patient",
        json=newcomer,
        headers={**FHIR_JSON, "If-None-Exist": f"identifier={MRN}|1234567"},
    )
    assert created.status_code == 201, created.text
    assert created.json()["id"] != "legacy"
    updated = client.put(
        f"/fhir/Patient?identifier={MRN}|7654321", json=newcomer, headers=FHIR_JSON
    )
    assert updated.status_code == 201, updated.text  # created, Other left as it was
    assert client.get("/fhir/Patient/other").json()["name"][0]["family"] == "Other"
    assert client.get("/fhir/Patient/legacy").json()["name"][0]["family"] == "Legacy"
    assert client.delete(f"/fhir/Patient?identifier={MRN}|7654321").status_code in (200, 204)
    assert client.get("/fhir/Patient/other").status_code == 200


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_reference_on_the_base_is_found_by_its_url_over_either_scheme(
    client: TestClient, scheme: str
) -> None:
    _people(client)
    written = f"{scheme}://testserver/fhir/Patient/cyd"
    put_resource(
        client,
        {
            "resourceType": "Observation",
            "id": "by-url",
            "status": "final",
            "code": {"text": "note"},
            "subject": {"reference": written},
        },
    )
    for searched in ("http", "https"):
        url = f"{searched}://testserver/fhir/Patient/cyd"
        for query in (f"subject={url}", f"subject:Patient={url}", f"patient={url}"):
            assert _ids(_search(client, f"Observation?{query}")) == ["by-url"], query
    assert _ids(_search(client, "Observation?subject=https://elsewhere/fhir/Patient/cyd")) == []


def test_the_capability_statement_lists_every_parameter_coffre_answers(
    client: TestClient,
) -> None:
    statement = client.get("/fhir/metadata").json()
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    patient = {p["name"]: p for p in resources["Patient"]["searchParam"]}
    assert {"_id", "_lastUpdated", "_tag", "_profile", "_security", "name", "birthdate"} <= set(
        patient
    )
    assert "_text" not in patient and "_content" not in patient  # not answered
    assert patient["birthdate"]["type"] == "date" and "ap" in patient["birthdate"]["documentation"]
    assert ":contains" in patient["name"]["documentation"]
    observation = {p["name"]: p["type"] for p in resources["Observation"]["searchParam"]}
    assert observation["code-value-quantity"] == "composite"
    assert resources["Patient"]["operation"][0]["name"] == "everything"


def test_a_special_parameter_coffre_cannot_answer_is_neither_claimed_nor_answered_empty(
    client: TestClient,
) -> None:
    position = {"latitude": 45.5, "longitude": -73.6}
    put_resource(client, {"resourceType": "Location", "id": "here", "position": position})
    statement = client.get("/fhir/metadata").json()
    location = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Location")
    assert "near" not in {p["name"] for p in location["searchParam"]}
    strict = client.get(
        "/fhir/Location?near=45.5|-73.6|10|km", headers={"Prefer": "handling=strict"}
    )
    assert strict.status_code == 400
    lenient = _search(client, "Location?near=45.5|-73.6|10|km")  # ignored and reported
    assert _ids(lenient) == ["here"] and lenient["entry"][-1]["search"]["mode"] == "outcome"


def test_revinclude_with_a_wildcard_follows_every_reference_parameter(client: TestClient) -> None:
    _people(client)
    bundle = _search(client, "Patient?_id=ana&_revinclude=Observation:*")
    assert _ids(bundle, "include") == ["obs-0"]
    bundle = _search(client, "Patient?_id=ana&_revinclude=*")
    assert sorted(_ids(bundle, "include")) == ["enc-ana", "obs-0"]
    bundle = _search(client, "Organization?_id=org&_revinclude=Encounter:*:Organization")
    assert sorted(_ids(bundle, "include")) == ["enc-ana", "enc-bob"]


def test_include_and_has_pass_over_typed_references_that_name_no_local_resource(
    client: TestClient,
) -> None:
    _people(client)
    for i, reference in enumerate(["https://elsewhere.example/fhir/Patient/ana", "ana", "#p"]):
        observation = {
            "resourceType": "Observation",
            "id": f"typed-{i}",
            "status": "final",
            "code": {"coding": [{"system": "urn:x", "code": "typed"}]},
            "subject": {"reference": reference, "type": "Patient"},
        }
        if reference == "#p":  # a contained resource, which no include reaches
            observation["contained"] = [{"resourceType": "Patient", "id": "p"}]
        put_resource(client, observation)
    bundle = _search(client, "Observation?code=typed&_include=Observation:subject")
    assert sorted(_ids(bundle)) == ["typed-0", "typed-1", "typed-2"]
    assert _ids(bundle, "include") == []
    assert _ids(_search(client, "Patient?_has:Observation:subject:code=typed")) == []


def test_an_include_coffre_cannot_follow_is_reported_or_refused_like_a_parameter(
    client: TestClient,
) -> None:
    _people(client)
    for spec in (
        "_include=Patient:bar",  # no such parameter
        "_revinclude=Observation:nope",
        "_include=Patient:family",  # not a reference
        "_include:iterate=Patient:general-practitioner:Observation",  # not one of its targets
        "_revinclude=*:nope",  # no type has it
    ):
        lenient = _search(client, f"Patient?_id=ana&{spec}")
        assert _ids(lenient) == ["ana"], spec
        outcome = lenient["entry"][-1]
        assert outcome["search"]["mode"] == "outcome", spec
        (issue,) = outcome["resource"]["issue"]
        assert issue["diagnostics"].startswith("ignored: ") and spec.split("=")[1] in str(issue)
        strict = client.get(f"/fhir/Patient?_id=ana&{spec}", headers={"Prefer": "handling=strict"})
        assert strict.status_code == 400, spec
        assert spec.split("=")[1] in strict.json()["issue"][0]["diagnostics"]
    followed = _search(
        client, "Patient?_id=ana&_revinclude=Observation:subject&_include=Patient:bar"
    )
    assert _ids(followed, "include") == ["obs-0"]
    assert followed["entry"][-1]["search"]["mode"] == "outcome"
    everything = _search(client, "Patient/ana/$everything?_include=Patient:bar")
    assert everything["entry"][-1]["search"]["mode"] == "outcome"


def test_a_whole_system_search_is_refused_plainly_however_it_is_sent(client: TestClient) -> None:
    _people(client)
    for method, url, allow in (
        ("GET", "/fhir?name=ana", "POST"),
        ("GET", "/fhir/?name=ana", "POST"),
        ("POST", "/fhir/_search", ""),
        ("GET", "/fhir/_search?name=ana", ""),
    ):
        response = client.request(method, url, data={"name": "ana"} if method == "POST" else None)
        assert response.status_code == 405, (method, url, response.text)
        assert response.headers["allow"] == allow
        (issue,) = response.json()["issue"]
        assert issue["code"] == "not-supported", url
        assert "whole-system search" in issue["diagnostics"], url
        assert "/fhir/Patient?" in issue["diagnostics"], url
    statement = client.get("/fhir/metadata").json()
    assert {"code": "search-system"} not in statement["rest"][0]["interaction"]
    assert client.patch("/fhir").headers["allow"] == "POST"  # the base takes a Bundle only


def test_a_number_past_64_bits_is_found_by_its_exact_value(client: TestClient) -> None:
    big = 18446744073709551616  # 2**64: stored exactly, and indexed so
    observation = {
        "resourceType": "Observation",
        "id": "big",
        "status": "final",
        "code": {"text": "count"},
        "valueQuantity": {"value": big},
    }
    put_resource(client, observation)
    subject = {"reference": "Patient/ana"}
    risk = {"resourceType": "RiskAssessment", "id": "big", "status": "final", "subject": subject}
    put_resource(client, {**risk, "prediction": [{"probabilityDecimal": big}]})
    for query in (f"Observation?value-quantity={big}", f"RiskAssessment?probability={big}"):
        assert _ids(_search(client, query)) == ["big"], query
        assert _ids(_search(client, query.replace(str(big), str(big + 1)))) == [], query


def test_a_decimal_is_found_at_the_precision_it_was_written_with(client: TestClient) -> None:
    """``7.20`` stands for [7.195, 7.205): a search for 7.20 finds it, one for 7.21 not."""
    body = b'{"resourceType": "Observation", "id": "lab", "status": "final",'
    body += b' "code": {"text": "k"}, "valueQuantity": {"value": 7.20}}'
    response = client.put("/fhir/Observation/lab", content=body, headers=FHIR_JSON)
    assert response.status_code == 201, response.text
    for value, found in (("7.20", ["lab"]), ("7.2", ["lab"]), ("7.21", []), ("7.19", [])):
        assert _ids(_search(client, f"Observation?value-quantity={value}")) == found, value
    assert _ids(_search(client, "Observation?value-quantity=7.20&_sort=value-quantity")) == ["lab"]


@pytest.mark.parametrize(
    "query",
    [
        "Patient?_elements=",
        "Patient?_elements=gender,,name",
        "Patient/ana/$everything?_type=",
        "Patient/ana/$everything?_type=Observation,,Encounter",
        "Patient?_include=",
        "Patient?_include=Patient:organization:Foo",  # a typo, even leniently
    ],
)
def test_an_empty_or_misspelt_name_in_a_list_is_400(client: TestClient, query: str) -> None:
    """Left out, it would narrow nothing: every element, every type, or no include."""
    _people(client)

    response = client.get(f"/fhir/{query}", headers={"Prefer": "handling=lenient"})

    assert response.status_code == 400, response.text
    (issue,) = response.json()["issue"]
    assert "empty value" in issue["diagnostics"] or "'Foo'" in issue["diagnostics"]


def test_a_malformed_sort_is_refused_saying_what_a_sort_looks_like(client: TestClient) -> None:
    _people(client)
    for sort in ("--birthdate", "", "-", "birthdate,,family", "family,", "-,family"):
        response = client.get(f"/fhir/Patient?_sort={sort}")
        assert response.status_code == 400, (sort, response.text)
        (issue,) = response.json()["issue"]
        assert issue["code"] == "invalid", sort
        assert "_sort=-birthdate,family" in issue["diagnostics"], sort
    assert _ids(_search(client, "Patient?_sort=-birthdate&_count=1")) == ["dee"]


def test_the_links_leave_out_the_parameters_the_search_ignored(client: TestClient) -> None:
    """search.html: the self link says what the search used, so that a client can check."""
    _people(client)
    bundle = _search(client, "Patient?_text=x&_filter=a&gender=male&favourite=tea&_count=1")
    assert bundle["entry"][-1]["search"]["mode"] == "outcome"  # what it ignored, said there
    for relation in ("self", "next"):
        url = _link(bundle, relation) or ""
        assert "gender=male" in url and "_count=1" in url
        assert "_text" not in url and "_filter" not in url and "favourite" not in url


def test_phonetic_finds_a_name_by_how_it_sounds(client: TestClient) -> None:
    """R4's phonetic matches "using some kind of phonetic matching algorithm": it was the
    name's prefix search under another name (Mueller did not find Müller)."""
    _patient(client, "mul", "Müller", "1970-01-01")
    _patient(client, "tre", "Gagnon-Tremblay", "1971-01-01")
    for query, found in [
        ("mueller", ["mul"]),
        ("Muller", ["mul"]),
        ("tramblay", ["tre"]),
        ("gagnon", ["tre"]),
        ("smith", []),
    ]:
        assert _ids(_search(client, f"Patient?phonetic={query}")) == found, query
    assert (
        client.get(
            "/fhir/Patient?phonetic:exact=Muller", headers={"Prefer": "handling=strict"}
        ).status_code
        == 400
    )
    metadata = client.get("/fhir/metadata").json()
    patient = next(r for r in metadata["rest"][0]["resource"] if r["type"] == "Patient")
    described = next(p for p in patient["searchParam"] if p["name"] == "phonetic")
    assert "Soundex" in described["documentation"]


def test_an_element_with_only_a_data_absent_reason_is_missing(client: TestClient) -> None:
    """search.html: :missing=true finds the resources with no value for the parameter; a
    birthDate replaced by a data-absent-reason extension has none, and was found present."""
    absent = {"extension": [{"url": DATA_ABSENT, "valueCode": "unknown"}]}
    put_resource(
        client, {"resourceType": "Patient", "id": "why", "_birthDate": absent, "_gender": absent}
    )
    _patient(client, "has", "Roy", "1960-05-05", gender="female")
    for name in ("birthdate", "gender"):
        assert _ids(_search(client, f"Patient?{name}:missing=true")) == ["why"], name
        assert _ids(_search(client, f"Patient?{name}:missing=false")) == ["has"], name


def test_letters_no_decomposition_takes_apart_are_folded_and_old_records_still_found(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """soren found nothing for Søren (NFKD leaves ø, ł, đ, æ, œ whole); a record indexed
    before they were folded is still found by the letters it was written with."""
    with monkeypatch.context() as before:  # a record indexed as Coffre did until 2026-12-06
        before.setattr(values_module, "text", legacy_text)
        _patient(client, "old", "Søren", "1950-01-01")
    _patient(client, "new", "Sørensen", "1951-01-01")
    _patient(client, "pol", "Łukasz", "1952-01-01")
    _patient(client, "fra", "Œuvray", "1953-01-01")
    assert _ids(_search(client, "Patient?family=søren&_sort=birthdate")) == ["old", "new"]
    assert _ids(_search(client, "Patient?family=soren")) == ["new"]
    assert _ids(_search(client, "Patient?family=lukasz")) == ["pol"]
    assert _ids(_search(client, "Patient?family:contains=euvr")) == ["fra"]
    assert _ids(_search(client, "Patient?family=oeuvray")) == ["fra"]
