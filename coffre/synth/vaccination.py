"""When vaccines are given outside visits: the childhood calendar and the COVID-19 campaign."""

from __future__ import annotations

import random
from datetime import date, timedelta

from coffre.synth.catalog import (
    COVID_19,
    DTAP_IPV,
    HEXAVALENT,
    HPV,
    MENINGOCOCCAL_C,
    MMR,
    PNEUMOCOCCAL,
    TDAP,
    Vaccine,
)

Doses = list[tuple[Vaccine, date]]

# Doses by age in months, after the French calendar (Quebec's differs by a few months).
CHILDHOOD_SCHEDULE: tuple[tuple[Vaccine, int], ...] = (
    (HEXAVALENT, 2),
    (PNEUMOCOCCAL, 2),
    (HEXAVALENT, 4),
    (PNEUMOCOCCAL, 4),
    (MENINGOCOCCAL_C, 5),
    (HEXAVALENT, 11),
    (PNEUMOCOCCAL, 11),
    (MMR, 12),
    (MMR, 16),
    (DTAP_IPV, 72),
    (HPV, 132),
    (HPV, 138),
    (TDAP, 300),
)

_DIGITAL_RECORDS = 1995  # childhood vaccines are on record for children born since
_COVERAGE = 0.95  # share of the scheduled doses given


def _years(birth: date, day: date) -> float:
    return (day - birth).days / 365.25


def childhood_doses(rng: random.Random, birth: date, today: date) -> Doses:
    """The calendar's doses given before today, each within two weeks of its due date."""
    if birth.year < _DIGITAL_RECORDS:
        return []
    doses = []
    for vaccine, months in CHILDHOOD_SCHEDULE:
        day = birth + timedelta(days=int(months * 30.44) + rng.randint(0, 14))
        if day < today and rng.random() < _COVERAGE:
            doses.append((vaccine, day))
    return doses


def covid_doses(rng: random.Random, birth: date, today: date) -> Doses:
    """Two doses in 2021 for most people of 12 and over, the old first; a booster for some adults."""
    age = _years(birth, date(2021, 6, 1))
    if age < 12 or rng.random() >= 0.85:
        return []
    vaccine = COVID_19[0] if rng.random() < 0.7 else COVID_19[1]
    wait = rng.randint(0, 75) if age >= 70 else rng.randint(60, 200)
    first = date(2021, 1, 4) + timedelta(days=wait)
    days = [first, first + timedelta(days=rng.randint(21, 56))]
    if age >= 18 and rng.random() < 0.6:
        days.append(days[1] + timedelta(days=rng.randint(150, 240)))
    return [(vaccine, day) for day in days if day < today]
