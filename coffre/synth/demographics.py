"""Who a synthetic patient is: name, sex, birth, address, language, identifiers, doctors."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta

from coffre.synth import names, places
from coffre.synth.builders import Code, Region, Resource, address, concept, reference
from coffre.synth.identifiers import (
    NIR_SYSTEM,
    NIR_TYPE,
    RAMQ_SYSTEM,
    RAMQ_TYPE,
    ascii_letters,
    identifier,
    nir,
    ramq_number,
)
from coffre.synth.shared import HOSPITALS, PRACTICES, Site, nearest_site

_BCP47 = "urn:ietf:bcp:47"
_LANGUAGES = {
    "fr-FR": (Code(_BCP47, "fr-FR", "French (France)"), "français"),
    "fr-CA": (Code(_BCP47, "fr-CA", "French (Canada)"), "français"),
    "en-CA": (Code(_BCP47, "en-CA", "English (Canada)"), "anglais"),
}
_NAMES = {  # (male given names, female given names, family names) by language
    "fr-FR": (names.FR_MALE, names.FR_FEMALE, names.FR_FAMILY),
    "fr-CA": (names.QC_MALE, names.QC_FEMALE, names.QC_FAMILY),
    "en-CA": (names.QC_EN_MALE, names.QC_EN_FEMALE, names.QC_EN_FAMILY),
}
_POSTAL_LETTERS = "ABCEGHJKLMNPRSTVWXYZ"  # the letters Canada Post uses
_OLDEST = 96 * 365  # days: ages run from a month to 95 years


@dataclass(frozen=True, slots=True)
class Person:
    """What the clinical history needs to know about the patient."""

    region: Region
    sex: str
    birth: date
    family_doctor: str
    practice: Site
    hospital: Site


def _names(rng: random.Random, language: str, sex: str) -> tuple[list[str], str]:
    male, female, family = _NAMES[language]
    pool = male if sex == "male" else female
    given = [rng.choice(pool)]
    if rng.random() < 0.3:
        second = rng.choice(pool)
        if second != given[0]:
            given.append(second)
    return given, rng.choice(family)


def _digits(rng: random.Random, groups: int) -> str:
    return " ".join(f"{rng.randrange(100):02d}" for _ in range(groups))


def _french_home(rng: random.Random) -> tuple[Resource, str]:
    """A French address and a telephone number (a landline of the town's zone, or a mobile)."""
    city, postal_codes, _insee, zone = rng.choice(places.FR_TOWNS)
    number = str(rng.randint(1, 180)) + (" bis" if rng.random() < 0.05 else "")
    line = f"{number} {rng.choice(places.FR_STREETS)}"
    home = address("FR", "home", city, rng.choice(postal_codes), line)
    first = rng.choice("67") if rng.random() < 0.6 else str(zone)
    return home, f"+33 {first} {_digits(rng, 4)}"


def _quebec_home(rng: random.Random, language: str) -> tuple[Resource, str]:
    city, sortation_areas, area_codes = rng.choice(places.QC_TOWNS)
    letter = rng.choice(_POSTAL_LETTERS)
    postal_code = f"{rng.choice(sortation_areas)} {rng.randrange(10)}{letter}{rng.randrange(10)}"
    lines = [f"{rng.randint(100, 9999)}, {rng.choice(places.QC_STREETS)}"]
    if rng.random() < 0.3:
        lines.append(f"{'app.' if language == 'fr-CA' else 'apt.'} {rng.randint(1, 24)}")
    home = address("QC", "home", city, postal_code, *lines)
    phone = f"+1 {rng.choice(area_codes)} {rng.randint(200, 999)}-{rng.randrange(10000):04d}"
    return home, phone


def _nir(rng: random.Random, sex: str, birth: date) -> Resource:
    if rng.random() < 0.9:
        birthplace = rng.choice(places.FR_TOWNS)[2]
    else:
        birthplace = "99" + rng.choice(places.FR_BIRTH_COUNTRIES)
    return identifier(NIR_TYPE, NIR_SYSTEM, nir(sex, birth, birthplace, rng.randint(1, 999)))


def _identifiers(
    rng: random.Random, region: Region, sex: str, birth: date, given: str, family: str
) -> list[Resource]:
    """A NIR in France; in Quebec a RAMQ number, and a NIR too for the few born in France."""
    if region == "FR":
        return [_nir(rng, sex, birth)]
    ramq = ramq_number(family, given, sex, birth, rng.randrange(100))
    found = [identifier(RAMQ_TYPE, RAMQ_SYSTEM, ramq)]
    if rng.random() < 0.05:
        found.append(_nir(rng, sex, birth))
    return found


def _telecom(rng: random.Random, phone: str, given: str, family: str) -> list[Resource]:
    telecom = [
        {"system": "phone", "value": phone, "use": "mobile" if rng.random() < 0.6 else "home"}
    ]
    if rng.random() < 0.4:
        local = f"{ascii_letters(given)}.{ascii_letters(family)}".lower()
        telecom.append({"system": "email", "value": f"{local}@example.org", "use": "home"})
    return telecom


def new_patient(rng: random.Random, today: date) -> tuple[Person, Resource]:
    """A person of France or Quebec, and the Patient resource that describes them."""
    region: Region = "FR" if rng.random() < 0.5 else "QC"
    sex = rng.choice(("female", "male"))
    birth = today - timedelta(days=rng.randint(30, _OLDEST))
    if region == "FR":
        language = "fr-FR"
        home, phone = _french_home(rng)
    else:
        language = "en-CA" if rng.random() < 0.2 else "fr-CA"
        home, phone = _quebec_home(rng, language)
    given, family = _names(rng, language, sex)
    practice = nearest_site(rng, PRACTICES[region], home["city"])
    hospital = nearest_site(rng, HOSPITALS[region], home["city"])
    person = Person(region, sex, birth, rng.choice(practice.physicians), practice, hospital)
    language_code, language_text = _LANGUAGES[language]
    patient = {
        "resourceType": "Patient",
        "identifier": _identifiers(rng, region, sex, birth, given[0], family),
        "active": True,
        "name": [{"use": "official", "family": family, "given": given}],
        "telecom": _telecom(rng, phone, given[0], family),
        "gender": sex,
        "birthDate": birth.isoformat(),
        "address": [home],
        "communication": [{"language": concept(language_code, language_text), "preferred": True}],
        "generalPractitioner": [reference(person.family_doctor)],
        "managingOrganization": reference(practice.organization),
    }
    return person, patient
