"""The organizations, physicians and their roles, shared by every patient bundle.

They go to the server once, in a transaction of their own POSTed before any patient; each
entry is a conditional create (``ifNoneExist`` on its identifier), so sending it again
creates nothing new. Patient bundles reach them by conditional references on those
identifiers, which the server resolves when it processes the patient's transaction.
"""

from __future__ import annotations

import random
from typing import NamedTuple

from coffre.synth.builders import (
    Code,
    Region,
    Resource,
    Transaction,
    address,
    concept,
    conditional_reference,
    reference,
)
from coffre.synth.catalog import SPECIALTIES
from coffre.synth.facilities import (
    FR_ORGANIZATIONS,
    FR_PHYSICIANS,
    QC_ORGANIZATIONS,
    QC_PHYSICIANS,
    Organization,
    Physician,
)

ORGANIZATION_SYSTEM = "https://coffre.example/org"
PRACTITIONER_SYSTEM = "https://coffre.example/practitioner"
ROLE_SYSTEM = "https://coffre.example/practitioner-role"

_PROVIDER = Code(
    "http://terminology.hl7.org/CodeSystem/organization-type", "prov", "Healthcare Provider"
)
_DOCTOR_OF_MEDICINE = Code(
    "http://terminology.hl7.org/CodeSystem/v2-0360", "MD", "Doctor of Medicine"
)
_DOCTOR = Code("http://terminology.hl7.org/CodeSystem/practitioner-role", "doctor", "Doctor")

_DIRECTORY: dict[Region, tuple[tuple[Organization, ...], tuple[Physician, ...]]] = {
    "FR": (FR_ORGANIZATIONS, FR_PHYSICIANS),
    "QC": (QC_ORGANIZATIONS, QC_PHYSICIANS),
}


class Site(NamedTuple):
    """An organization and the physicians who work there, as conditional references."""

    organization: str
    physicians: tuple[str, ...]
    city: str


def _sites(region: Region, kind: str) -> tuple[Site, ...]:
    organizations, physicians = _DIRECTORY[region]
    return tuple(
        Site(
            conditional_reference("Organization", ORGANIZATION_SYSTEM, key),
            tuple(
                conditional_reference("Practitioner", PRACTITIONER_SYSTEM, physician[0])
                for physician in physicians
                if physician[4] == key
            ),
            city,
        )
        for key, _name, city, _postal_code, org_kind in organizations
        if org_kind == kind
    )


PRACTICES: dict[Region, tuple[Site, ...]] = {r: _sites(r, "primary") for r in _DIRECTORY}
HOSPITALS: dict[Region, tuple[Site, ...]] = {r: _sites(r, "hospital") for r in _DIRECTORY}


def nearest_site(rng: random.Random, sites: tuple[Site, ...], city: str) -> Site:
    """A site of the patient's town if there is one, else any site of their region."""
    local = [site for site in sites if site.city == city]
    return rng.choice(local or sites)


def _organization(region: Region, organization: Organization) -> Resource:
    key, name, city, postal_code, _kind = organization
    return {
        "resourceType": "Organization",
        "identifier": [{"system": ORGANIZATION_SYSTEM, "value": key}],
        "active": True,
        "type": [concept(_PROVIDER)],
        "name": name,
        "address": [address(region, "work", city, postal_code)],
    }


def _practitioner(region: Region, physician: Physician) -> Resource:
    key, given, family, gender, _organization, _specialty = physician
    prefix = "Dre" if region == "QC" and gender == "female" else "Dr"
    return {
        "resourceType": "Practitioner",
        "identifier": [{"system": PRACTITIONER_SYSTEM, "value": key}],
        "active": True,
        "name": [{"use": "official", "family": family, "given": [given], "prefix": [prefix]}],
        "gender": gender,
        "qualification": [{"code": concept(_DOCTOR_OF_MEDICINE)}],
    }


def _role(physician: Physician, practitioner: str, organization: str) -> Resource:
    return {
        "resourceType": "PractitionerRole",
        "identifier": [{"system": ROLE_SYSTEM, "value": f"{physician[0]}@{physician[4]}"}],
        "active": True,
        "practitioner": reference(practitioner),
        "organization": reference(organization),
        "code": [concept(_DOCTOR)],
        "specialty": [concept(SPECIALTIES[physician[5]])],
    }


def _if_none_exist(resource: Resource) -> str:
    identifier = resource["identifier"][0]
    return f"identifier={identifier['system']}|{identifier['value']}"


def generate_shared_bundle(rng: random.Random) -> Resource:
    """The transaction creating every organization, physician and role, once."""
    transaction = Transaction(rng)

    def add(resource: Resource) -> str:
        return transaction.add(resource, if_none_exist=_if_none_exist(resource))

    for region, (organizations, physicians) in _DIRECTORY.items():
        urls = {org[0]: add(_organization(region, org)) for org in organizations}
        for physician in physicians:
            practitioner = add(_practitioner(region, physician))
            add(_role(physician, practitioner, urls[physician[4]]))
    return transaction.bundle()
