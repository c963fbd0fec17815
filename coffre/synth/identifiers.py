"""The national health identifiers of France (NIR) and Quebec (RAMQ health insurance number).

NIR: sex (1 or 2), year and month of birth, INSEE code of the birthplace at the birth
(department and commune, or 99 and the country for people born abroad; Corsica is 20 before
1976, then 2A or 2B), a 3-digit birth order, then the key 97 - (those 13 characters as a
number, Corsica's 2A and 2B read as 19 and 18, mod 97).

RAMQ: the first three letters of the family name (X-padded), the first letter of the first
given name, then the date of birth as YYMMDD with 50 added to the month for women, and two
administrative digits.
"""

from __future__ import annotations

import string
import unicodedata
from datetime import date
from typing import Any

from coffre.synth.builders import Code, concept

NIR_SYSTEM = "urn:oid:1.2.250.1.213.1.4.8"
RAMQ_SYSTEM = "https://fhir.infoway-inforoute.ca/NamingSystem/ca-qc-patient-healthcare-id"
NIR_TYPE = Code("https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203", "INS-NIR", "NIR")
RAMQ_TYPE = Code(
    "http://terminology.hl7.org/CodeSystem/v2-0203", "JHN", "Jurisdictional health number"
)

_LETTERS = frozenset(string.ascii_letters)


def ascii_letters(text: str) -> str:
    """The letters of a name without accents, spaces, hyphens or apostrophes, upper-cased."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if c in _LETTERS).upper()


def nir_key(nir13: str) -> int:
    return 97 - int(nir13.replace("2A", "19").replace("2B", "18")) % 97


CORSICA_SPLIT = date(1976, 1, 1)
"""When the department 20 (Corsica) became 2A and 2B: a NIR keeps the code of the birth."""


def nir(sex: str, birth: date, birthplace: str, order: int) -> str:
    """A 15-character NIR; ``birthplace`` is a 5-character INSEE commune or 99+country code,
    as today (a Corsican born before 1976 has the department 20 of then)."""
    if birthplace.startswith(("2A", "2B")) and birth < CORSICA_SPLIT:
        birthplace = "20" + birthplace[2:]
    sex_digit = 1 if sex == "male" else 2
    nir13 = f"{sex_digit}{birth.year % 100:02d}{birth.month:02d}{birthplace}{order:03d}"
    return f"{nir13}{nir_key(nir13):02d}"


def ramq_number(family: str, given: str, sex: str, birth: date, serial: int) -> str:
    letters = ascii_letters(family)[:3].ljust(3, "X") + ascii_letters(given)[:1]
    month = birth.month + (50 if sex == "female" else 0)
    return f"{letters}{birth.year % 100:02d}{month:02d}{birth.day:02d}{serial:02d}"


def identifier(kind: Code, system: str, value: str) -> dict[str, Any]:
    return {"use": "official", "type": concept(kind), "system": system, "value": value}
