"""Conformance on the official HL7 R4 4.0.1 examples (../shared/data/fhir-examples).

Each of the 792 examples is checked by ``$validate``, then PUT at its own id
(``<Type>-<id>.json`` holds ``Type/id``; an example without an id would be POSTed). It is
either accepted and reads back as it went in,
apart from ``meta.versionId`` and ``meta.lastUpdated``, or refused with an OperationOutcome
that names the element at fault and the rule of the official R4 JSON schema it breaks.
Bundles, transactions and batches included, are stored as resources like any other.

``EXPECTED_REFUSALS`` lists every refusal, with why the example really breaks the rule:
a refusal not listed fails, and so does a listed example that is accepted. ``$validate``
must say what the write then does: the same issue, or that nothing is wrong.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import FHIR_JSON, SHARED_DATA, shared_data_path
from starlette.testclient import TestClient

from coffre.api import create_app
from coffre.service import Vault

pytestmark = pytest.mark.shared_data

EXAMPLES = "fhir-examples"

# file → why the official schema or R4's rules refuse it (HL7 published these examples
# unvalidated).
EMPTY_NARRATIVE = (
    "text.div is '<div xmlns=\"http://www.w3.org/1999/xhtml\">\\n    </div>', whitespace alone"
    " (with status 'generated'): R4's txt-2, 'The narrative SHALL have some non-whitespace"
    " content', where an empty narrative's status is 'empty' and its div says so"
)
EXPECTED_REFUSALS = {
    "ActivityDefinition-blood-tubes-supply.json": EMPTY_NARRATIVE,
    "ActivityDefinition-heart-valve-replacement.json": EMPTY_NARRATIVE,
    "DiagnosticReport-gingival-mass.json": (
        "resultsInterpreter[0].display 'Sean Stover, BS,\\u00a0DVM, ...' holds a NO-BREAK SPACE"
        " (U+00A0): the schema's string pattern ^[ \\r\\n\\t\\S]+$ allows no whitespace but"
        " space, CR, LF and tab, and U+00A0 is whitespace to both ECMAScript and Python"
    ),
    "EventDefinition-example.json": EMPTY_NARRATIVE,
    "Questionnaire-qs1.json": (
        "32 of its nested items (item[0].item[0] first) have no linkId, which R4's"
        " Questionnaire.item.linkId makes mandatory (1..1): the schema's required lists only"
        " complex elements, and Coffre checks the mandatory primitives too"
    ),
    "Questionnaire-zika-virus-exposure-assessment.json": (
        "text.div holds an empty pre element and whitespace ('<div xmlns=...>\\n      <pre>\\n"
        "      </pre>\\n    </div>'): R4's txt-2, 'The narrative SHALL have some non-whitespace"
        " content', where an empty narrative's status is 'empty' and its div says so"
    ),
    "StructureDefinition-example-composition.json": (
        "differential.element[2].type[0] has '_profile' (an extension on the canonical"
        " type.profile): in the R4 schema ElementDefinition_Type has no '_profile' property"
        " (canonical has no primitive-extension sibling there) and additionalProperties is false"
    ),
}

# file → (the element the OperationOutcome must name, words of the rule its diagnostics must give)
REFUSAL_RULES = {
    "ActivityDefinition-blood-tubes-supply.json": (
        "ActivityDefinition.text.div",
        "has no text (txt-2",
    ),
    "ActivityDefinition-heart-valve-replacement.json": (
        "ActivityDefinition.text.div",
        "has no text (txt-2",
    ),
    "DiagnosticReport-gingival-mass.json": (
        "DiagnosticReport.resultsInterpreter[0].display",
        "must be text that is not empty",
    ),
    "EventDefinition-example.json": ("EventDefinition.text.div", "has no text (txt-2"),
    "Questionnaire-qs1.json": (
        "Questionnaire.item[0].item[0].linkId",
        "is missing: the element is mandatory",
    ),
    "Questionnaire-zika-virus-exposure-assessment.json": (
        "Questionnaire.text.div",
        "has no text (txt-2",
    ),
    "StructureDefinition-example-composition.json": (
        "StructureDefinition.differential.element[2].type[0]",
        "must not contain {'_profile'} properties",
    ),
}

SERVER_META = ("versionId", "lastUpdated")


def _example_names() -> list[str]:
    """Listed at collection; where the data is absent, one case that skips (or fails in CI)."""
    folder = SHARED_DATA / EXAMPLES
    if not folder.is_dir():
        return ["<the examples are absent>"]
    return sorted(path.name for path in folder.glob("*.json"))


@pytest.fixture(scope="module")
def examples_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    vault = Vault.at(tmp_path_factory.mktemp("examples") / "v")
    vault.create()
    records = vault.open()
    with TestClient(create_app(records), raise_server_exceptions=False) as client:
        yield client
    records.storage.close()


def _without_server_meta(resource: dict[str, Any]) -> dict[str, Any]:
    trimmed = {k: v for k, v in resource.items() if k != "meta"}
    meta = {k: v for k, v in resource.get("meta", {}).items() if k not in SERVER_META}
    if meta:
        trimmed["meta"] = meta
    return trimmed


def _validation(
    client: TestClient, resource_type: str, resource_id: str | None, body: bytes
) -> dict[str, Any]:
    """``$validate``'s one issue for the example, for the write the test then makes."""
    where = resource_type if resource_id is None else f"{resource_type}/{resource_id}"
    response = client.post(f"/fhir/{where}/$validate", content=body, headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    (issue,) = response.json()["issue"]
    issue["diagnostics"] = issue["diagnostics"].replace("the resource is", "the body is")
    found: dict[str, Any] = issue
    return found


def test_the_examples_are_all_there() -> None:
    folder = shared_data_path(EXAMPLES)
    names = {path.name for path in folder.glob("*.json")}
    assert len(names) == 792
    assert set(EXPECTED_REFUSALS) <= names
    assert set(REFUSAL_RULES) == set(EXPECTED_REFUSALS)


@pytest.mark.parametrize("name", _example_names())
def test_an_example_is_stored_as_it_is_or_refused_for_its_rule(
    name: str, examples_client: TestClient
) -> None:
    path = shared_data_path(EXAMPLES, name)
    body = path.read_bytes()
    example = json.loads(body)
    resource_type, resource_id = example["resourceType"], example.get("id")
    verdict = _validation(examples_client, resource_type, resource_id, body)
    if resource_id is None:
        response = examples_client.post(f"/fhir/{resource_type}", content=body, headers=FHIR_JSON)
    else:
        assert name == f"{resource_type}-{resource_id}.json"
        response = examples_client.put(
            f"/fhir/{resource_type}/{resource_id}", content=body, headers=FHIR_JSON
        )
    answer = response.json()

    if name in EXPECTED_REFUSALS:
        assert response.status_code == 422, f"{name} was accepted, yet it is listed: {answer}"
        assert answer["resourceType"] == "OperationOutcome"
        (issue,) = answer["issue"]
        element, rule = REFUSAL_RULES[name]
        assert issue["severity"] == "error"
        assert issue["expression"] == [element], issue
        assert rule in issue["diagnostics"], issue
        assert verdict == issue, "$validate and the write disagree"
        return

    assert response.status_code in (200, 201), f"{name} was refused: {answer}"
    assert verdict["severity"] == "information", f"$validate refused {name}: {verdict}"
    resource_id = answer["id"]
    url = f"/fhir/{resource_type}/{resource_id}"
    read = examples_client.get(url, headers={"Accept": "application/fhir+json"})
    assert read.status_code == 200, read.text
    stored = read.json()
    assert stored["meta"]["versionId"] == "1"
    assert _without_server_meta(stored) == _without_server_meta(example)
    assert _without_server_meta(answer) == _without_server_meta(example)
    if resource_type == "Binary":  # read without a FHIR format: the bytes themselves
        native = examples_client.get(url)
        assert native.content == base64.b64decode(example.get("data", ""))
        assert native.headers["content-type"].startswith(example["contentType"])
