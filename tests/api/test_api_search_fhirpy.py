"""fhirpy's search against a running ``coffre serve``: modifiers, prefixes, sorting,
includes, chains, paging by ``next`` links and ``count()``."""

from __future__ import annotations

from typing import Any

import fhirpy


def test_fhirpy_searches_pages_and_counts(server: Any) -> None:
    fhir = fhirpy.SyncFHIRClient(server.base_url)
    born = ["1975-06-30", "1980-02-01", "1990-11-11", "2001-01-01", "2003-05-05"]
    patients = []
    for n, birth in enumerate(born):
        patient = fhir.resource(
            "Patient",
            name=[{"family": f"Bérubé-{n}", "given": ["Élise" if n % 2 else "Marc"]}],
            gender="female" if n % 2 else "male",
            birthDate=birth,
        )
        patient.save()
        patients.append(patient)
    fhir.resource(
        "Observation",
        status="final",
        code={"coding": [{"system": "http://loinc.org", "code": "8302-2"}]},
        subject={"reference": f"Patient/{patients[1].id}"},
        valueQuantity={
            "value": 172,
            "unit": "cm",
            "system": "http://unitsofmeasure.org",
            "code": "cm",
        },
    ).save()

    everyone = fhir.resources("Patient")
    assert everyone.search(name="berube").count() == 5
    assert everyone.search(given="elise").count() == 2
    assert everyone.search(name__contains="RUBÉ-3").count() == 1
    assert everyone.search(family__exact="Bérubé-0").count() == 1
    assert everyone.search(birthdate__ge="1990", birthdate__lt="2002").count() == 2
    assert everyone.search(gender__not="male").count() == 2

    paged = list(everyone.search(name="berube").sort("-birthdate").limit(2))
    assert [p["birthDate"] for p in paged] == sorted(born, reverse=True)

    observations = fhir.resources("Observation")
    assert observations.search(value_quantity__gt="170").count() == 1
    assert observations.search(value_quantity="172||cm").count() == 1
    chained = observations.search(subject__Patient__given="elise").fetch()
    assert [o["subject"]["reference"] for o in chained] == [f"Patient/{patients[1].id}"]
    with_patient = (
        observations.search(code="http://loinc.org|8302-2")
        .include("Observation", "subject")
        .fetch_raw()
    )
    modes = sorted(e["search"]["mode"] for e in with_patient["entry"])
    assert modes == ["include", "match"]
