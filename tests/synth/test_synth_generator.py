"""The synthetic patient generator: valid FHIR, reproducible, self-consistent, plausible."""

from __future__ import annotations

import json
import random
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import pytest

from coffre.fhir.validation import validate
from coffre.synth import generate_bundles, generate_patient_bundle, generate_shared_bundle
from coffre.synth.identifiers import NIR_SYSTEM, RAMQ_SYSTEM, nir_key
from coffre.synth.shared import HOSPITALS, PRACTICES

NOW = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)
SEEDS = range(30)
Bundle = dict[str, Any]


@pytest.fixture(scope="module")
def bundles() -> list[Bundle]:
    return [generate_patient_bundle(random.Random(seed), now=NOW) for seed in SEEDS]


@pytest.fixture(scope="module")
def shared() -> Bundle:
    return generate_shared_bundle(random.Random(0))


def resources(bundle: Bundle, resource_type: str | None = None) -> list[dict[str, Any]]:
    return [
        entry["resource"]
        for entry in bundle["entry"]
        if resource_type in (None, entry["resource"]["resourceType"])
    ]


def walk(value: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair nested anywhere in a JSON value."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield key, item
            yield from walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk(item)


def references(resource: dict[str, Any]) -> list[str]:
    return [value for key, value in walk(resource) if key == "reference"]


def shared_identifiers(shared: Bundle) -> set[str]:
    return {
        f"{r['resourceType']}?identifier={i['system']}|{i['value']}"
        for r in resources(shared)
        for i in r["identifier"]
    }


def test_every_bundle_and_resource_validates(bundles: list[Bundle], shared: Bundle) -> None:
    for bundle in [shared, *bundles]:
        assert validate(bundle) == "Bundle"  # validates each entry's resource too
        for resource in resources(bundle):
            validate(resource)


def test_bundles_are_transactions_of_posts(bundles: list[Bundle], shared: Bundle) -> None:
    for bundle in [shared, *bundles]:
        assert bundle["type"] == "transaction"
        full_urls = [entry["fullUrl"] for entry in bundle["entry"]]
        assert len(set(full_urls)) == len(full_urls)
        for entry in bundle["entry"]:
            assert entry["request"]["method"] == "POST"
            assert entry["request"]["url"] == entry["resource"]["resourceType"]
            assert "id" not in entry["resource"]
            assert uuid.UUID(entry["fullUrl"].removeprefix("urn:uuid:")).version == 4


def test_one_patient_per_bundle_first(bundles: list[Bundle]) -> None:
    for bundle in bundles:
        assert [r["resourceType"] for r in resources(bundle)].count("Patient") == 1
        assert bundle["entry"][0]["resource"]["resourceType"] == "Patient"


def test_same_seed_same_output_and_other_seed_other_output() -> None:
    def dump(seed: int) -> str:
        return json.dumps(generate_patient_bundle(random.Random(seed), now=NOW), sort_keys=True)

    assert dump(7) == dump(7)
    assert dump(7) != dump(8)
    assert generate_shared_bundle(random.Random(3)) == generate_shared_bundle(random.Random(3))


def test_generate_bundles_is_reproducible_and_prefix_stable() -> None:
    five = list(generate_bundles(5, seed=42, now=NOW))
    assert len(five) == 5
    assert five == list(generate_bundles(5, seed=42, now=NOW))
    assert five[:3] == list(generate_bundles(3, seed=42, now=NOW))
    assert five != list(generate_bundles(5, seed=43, now=NOW))


def test_references_resolve_in_the_bundle_or_the_shared_one(
    bundles: list[Bundle], shared: Bundle
) -> None:
    conditional = shared_identifiers(shared)
    for bundle in bundles:
        full_urls = {entry["fullUrl"] for entry in bundle["entry"]}
        patient = bundle["entry"][0]["fullUrl"]
        for resource in resources(bundle):
            for target in references(resource):
                assert target in full_urls or target in conditional, target
            subject = resource.get("subject") or resource.get("patient")
            if subject is not None:
                assert subject["reference"] == patient
    for resource in resources(shared):
        shared_urls = {entry["fullUrl"] for entry in shared["entry"]}
        assert all(target in shared_urls for target in references(resource))


def test_observations_point_at_encounters_of_the_bundle(bundles: list[Bundle]) -> None:
    for bundle in bundles:
        encounters = {
            e["fullUrl"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Encounter"
        }
        for observation in resources(bundle, "Observation"):
            assert observation["encounter"]["reference"] in encounters


def test_shared_entries_are_conditional_creates(shared: Bundle) -> None:
    for entry in shared["entry"]:
        identifier = entry["resource"]["identifier"][0]
        expected = f"identifier={identifier['system']}|{identifier['value']}"
        assert entry["request"]["ifNoneExist"] == expected
    types = {r["resourceType"] for r in resources(shared)}
    assert types == {"Organization", "Practitioner", "PractitionerRole"}


def test_every_site_has_physicians() -> None:
    for sites in [*PRACTICES.values(), *HOSPITALS.values()]:
        assert sites
        assert all(site.physicians for site in sites)


def test_patients_have_the_identifiers_of_their_region(bundles: list[Bundle]) -> None:
    for bundle in bundles:
        patient = resources(bundle, "Patient")[0]
        systems = {identifier["system"] for identifier in patient["identifier"]}
        country = patient["address"][0]["country"]
        assert (NIR_SYSTEM in systems) if country == "FR" else (RAMQ_SYSTEM in systems)
        language = patient["communication"][0]["language"]["coding"][0]["code"]
        assert language in ({"fr-FR"} if country == "FR" else {"fr-CA", "en-CA"})


def test_nir_keys_and_contents(bundles: list[Bundle]) -> None:
    nirs = 0
    for bundle in bundles:
        patient = resources(bundle, "Patient")[0]
        birth = date.fromisoformat(patient["birthDate"])
        for identifier in patient["identifier"]:
            if identifier["system"] != NIR_SYSTEM:
                continue
            nirs += 1
            value = identifier["value"]
            assert re.fullmatch(r"[12]\d{4}(\d{2}|2A|2B)\d{8}", value)
            assert int(value[13:]) == nir_key(value[:13])
            assert value[0] == ("1" if patient["gender"] == "male" else "2")
            assert value[1:5] == f"{birth.year % 100:02d}{birth.month:02d}"
    assert nirs > 0


def test_ramq_numbers_encode_birth_and_sex(bundles: list[Bundle]) -> None:
    numbers = 0
    for bundle in bundles:
        patient = resources(bundle, "Patient")[0]
        birth = date.fromisoformat(patient["birthDate"])
        for identifier in patient["identifier"]:
            if identifier["system"] != RAMQ_SYSTEM:
                continue
            numbers += 1
            value = identifier["value"]
            assert re.fullmatch(r"[A-Z]{4}\d{8}", value)
            month = birth.month + (50 if patient["gender"] == "female" else 0)
            assert value[4:10] == f"{birth.year % 100:02d}{month:02d}{birth.day:02d}"
    assert numbers > 0


def test_names_have_accents_sometimes(bundles: list[Bundle]) -> None:
    names = [
        " ".join([*name["given"], name["family"]])
        for bundle in bundles
        for name in resources(bundle, "Patient")[0]["name"]
    ]
    accented = [name for name in names if re.search(r"[àâäçéèêëîïôöùûüÿÉÈÎÔ]", name)]
    assert 0 < len(accented) < len(names)


def test_times_carry_offsets_and_lie_in_the_past(bundles: list[Bundle]) -> None:
    stamp = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(.*)")
    for bundle in bundles:
        for resource in resources(bundle):
            for _key, value in walk(resource):
                match = stamp.fullmatch(value) if isinstance(value, str) else None
                if match:
                    assert match.group(1) in {"+01:00", "+02:00", "-05:00", "-04:00"}
                    assert datetime.fromisoformat(value) < NOW


def test_ages_and_birth_dates(bundles: list[Bundle]) -> None:
    for bundle in bundles:
        birth = date.fromisoformat(resources(bundle, "Patient")[0]["birthDate"])
        assert 0 <= (NOW.date() - birth).days / 365.25 < 96


def codes(bundle: Bundle, resource_type: str, element: str) -> set[str]:
    return {
        coding["code"]
        for resource in resources(bundle, resource_type)
        for coding in resource[element]["coding"]
    }


def test_conditions_drive_treatments_and_tests() -> None:
    diabetics = 0
    for bundle in generate_bundles(150, seed=5, now=NOW):
        conditions = codes(bundle, "Condition", "code")
        if "44054006" in conditions:
            diabetics += 1
            assert "4548-4" in codes(bundle, "Observation", "code")
            assert "A10BA02" in codes(bundle, "MedicationRequest", "medicationCodeableConcept")
        for request in resources(bundle, "MedicationRequest"):
            assert request["intent"] == "order"
            assert request["dosageInstruction"][0]["text"]
    assert diabetics > 0


def test_vital_signs_at_every_encounter(bundles: list[Bundle]) -> None:
    for bundle in bundles:
        measured: dict[str, set[str]] = {}
        for observation in resources(bundle, "Observation"):
            code = observation["code"]["coding"][0]["code"]
            measured.setdefault(observation["encounter"]["reference"], set()).add(code)
        for entry in bundle["entry"]:
            if entry["resource"]["resourceType"] == "Encounter":
                assert {"29463-7", "8867-4"} <= measured[entry["fullUrl"]]


def test_resources_per_patient_and_speed() -> None:
    """Prints the generation rate (CPU time of this process, and wall time); asserts no speed."""
    count = 1000
    cpu, wall = time.process_time(), time.perf_counter()
    total = sum(len(bundle["entry"]) for bundle in generate_bundles(count, seed=1, now=NOW))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(
        f"\nsynth: {count} patients, {total} resources ({total / count:.1f} per patient): "
        f"{total / cpu:,.0f} resources/s of CPU, {total / wall:,.0f} resources/s of wall time"
    )
    assert 60 <= total / count <= 140
