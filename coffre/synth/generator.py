"""Coffre's synthetic patients: FHIR R4 transaction Bundles for the demo and the benchmarks.

``generate_shared_bundle`` gives the organizations (hospitals, CHU, CLSC, practices of
France and Quebec), physicians and their roles; POST it first, once. Then each bundle of
``generate_bundles`` (or ``generate_patient_bundle``) holds one patient and their history,
30 to 150 resources for most. Every entry is a POST under a ``urn:uuid:`` fullUrl drawn
from the random source, so a seed always gives the same output.

References:
    inside a patient bundle     ``urn:uuid:`` references (Encounter.subject to the Patient,
                                Observation.encounter to the Encounter, MedicationRequest
                                .reasonReference to the Condition...)
    to the shared resources     conditional references, resolved by the server at
                                transaction time, as Synthea does:
                                ``Organization?identifier=https://coffre.example/org|<key>``
                                ``Practitioner?identifier=https://coffre.example/practitioner|<key>``

Identifier systems:
    France, NIR (INS-NIR)       ``urn:oid:1.2.250.1.213.1.4.8``, 15 characters with its key
    Quebec, RAMQ number         ``https://fhir.infoway-inforoute.ca/NamingSystem/ca-qc-patient-healthcare-id``
                                (the Canadian Baseline naming system, type v2-0203 JHN)
    organizations, physicians,  ``https://coffre.example/org``, ``.../practitioner``,
    physicians' roles           ``.../practitioner-role`` (invented values, so an example
                                domain rather than FINESS or RPPS)

Clinical content: SNOMED CT conditions and encounter types, LOINC observations in UCUM
units, ATC medications with French dosage instructions, CVX vaccines. A patient's chronic
conditions drive their prescriptions, tests and blood pressure (a diabetic gets HbA1c tests
and metformin); vital signs are taken at every visit.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from coffre.synth.builders import Transaction
from coffre.synth.demographics import new_patient
from coffre.synth.history import History


def generate_patient_bundle(rng: random.Random, *, now: datetime | None = None) -> dict[str, Any]:
    """One patient and their history up to ``now`` (the present by default), as a transaction."""
    today = (now or datetime.now(UTC)).date()
    transaction = Transaction(rng)
    person, patient = new_patient(rng, today)
    History(rng, transaction, person, transaction.add(patient), today).write()
    return transaction.bundle()


def generate_bundles(
    count: int, seed: int = 0, *, now: datetime | None = None
) -> Iterator[dict[str, Any]]:
    """``count`` patient bundles.

    Patient i of a seed has a random source of its own, so it is the same whatever ``count``
    is, and slices of a large run can be generated apart (e.g. one per process).
    """
    now = now or datetime.now(UTC)
    for index in range(count):
        yield generate_patient_bundle(random.Random(f"coffre-synth:{seed}:{index}"), now=now)
