"""A vaccination campaign as FHIR R4: its sites, their Schedules, and a Slot a seat a turn.

Each site is a Location with a Schedule whose actor it is; from 8:00 to 20:00, local time,
each of its vaccinators (its seats) has a Slot a five-minute turn, ``free``, for the
administration of a vaccine (SNOMED CT 33879002), as ``Appointment/$find`` offers and
``Appointment/$book`` books them (docs/booking.md).

A site's day is one transaction Bundle of PUTs at fixed ids (the Location and Schedule
again in each, unchanged after the first), so that importing the files twice writes
nothing the second time. The venues are real stadiums, exhibition and convention centres
of Quebec and France, several of which hosted the mass vaccination of 2021; the campaign
on them is invented.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from typing import Any, NamedTuple

from coffre.fhir.primitives import TZ_CODE
from coffre.synth.builders import Code, Region, Resource, address, concept, reference
from coffre.synth.catalog import snomed
from coffre.synth.clock import stamp

VACCINATION = snomed("33879002", "Administration of vaccine to produce active immunity (procedure)")
OPENING, CLOSING = time(8), time(20)
ZONES: dict[Region, str] = {"FR": "Europe/Paris", "QC": "America/Montreal"}
"""The IANA zone of each region, which a centre's Schedule names (its local day)."""
TURN = timedelta(minutes=5)
TURNS_A_DAY = (datetime.combine(date.min, CLOSING) - datetime.combine(date.min, OPENING)) // TURN
_BUILDING = Code("http://terminology.hl7.org/CodeSystem/location-physical-type", "bu", "Building")
_EVERY_DAY = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class Venue(NamedTuple):
    """A site of the campaign; ``key`` is the id of its Location and Schedule."""

    key: str
    name: str
    region: Region
    line: str
    city: str
    postal_code: str


VENUES: tuple[Venue, ...] = (  # Quebec's and France's in turn: the first few have both
    Venue(
        "qc-stade-olympique",
        "Centre de vaccination du Stade olympique",
        "QC",
        "4141, avenue Pierre-De Coubertin",
        "Montréal",
        "H1V 3N7",
    ),
    Venue(
        "fr-paris-expo",
        "Centre de vaccination de Paris Expo Porte de Versailles",
        "FR",
        "1 place de la Porte-de-Versailles",
        "Paris",
        "75015",
    ),
    Venue(
        "qc-expocite",
        "Centre de vaccination du Centre de foires de Québec",
        "QC",
        "250, boulevard Wilfrid-Hamel",
        "Québec",
        "G1L 5A7",
    ),
    Venue(
        "fr-lyon-gerland",
        "Centre de vaccination du Palais des sports de Gerland",
        "FR",
        "350 avenue Jean-Jaurès",
        "Lyon",
        "69007",
    ),
    Venue(
        "qc-palais-des-congres",
        "Centre de vaccination du Palais des congrès de Montréal",
        "QC",
        "1001, place Jean-Paul-Riopelle",
        "Montréal",
        "H2Z 1H5",
    ),
    Venue(
        "fr-marseille-velodrome",
        "Centre de vaccination du Stade Vélodrome",
        "FR",
        "3 boulevard Michelet",
        "Marseille",
        "13008",
    ),
    Venue(
        "qc-place-bell",
        "Centre de vaccination de la Place Bell",
        "QC",
        "1950, rue Claude-Gagné",
        "Laval",
        "H7N 0E4",
    ),
    Venue(
        "fr-nantes-beaujoire",
        "Centre de vaccination du Parc des expositions de la Beaujoire",
        "FR",
        "route de Saint-Joseph",
        "Nantes",
        "44300",
    ),
    Venue(
        "qc-centre-de-foires-sherbrooke",
        "Centre de vaccination du Centre de foires de Sherbrooke",
        "QC",
        "1600, boulevard du Plateau-Saint-Joseph",
        "Sherbrooke",
        "J1L 0C8",
    ),
    Venue(
        "fr-toulouse-pierre-baudis",
        "Centre de vaccination du Centre de congrès Pierre-Baudis",
        "FR",
        "11 esplanade Compans-Caffarelli",
        "Toulouse",
        "31000",
    ),
    Venue(
        "fr-lille-grand-palais",
        "Centre de vaccination de Lille Grand Palais",
        "FR",
        "1 boulevard des Cités-Unies",
        "Lille",
        "59777",
    ),
)


def _put(resource: Resource) -> dict[str, Any]:
    url = f"{resource['resourceType']}/{resource['id']}"
    return {"resource": resource, "request": {"method": "PUT", "url": url}}


def _location(venue: Venue) -> Resource:
    return {
        "resourceType": "Location",
        "id": venue.key,
        "status": "active",
        "name": venue.name,
        "mode": "instance",
        "address": address(venue.region, "work", venue.city, venue.postal_code, venue.line),
        "physicalType": concept(_BUILDING),
        "hoursOfOperation": [
            {
                "daysOfWeek": _EVERY_DAY,
                "openingTime": OPENING.isoformat(),
                "closingTime": CLOSING.isoformat(),
            }
        ],
    }


def _schedule(venue: Venue, first: date, last: date) -> Resource:
    return {
        "resourceType": "Schedule",
        "id": venue.key,
        "active": True,
        "serviceType": [concept(VACCINATION, "Vaccination")],
        "actor": [{**reference(f"Location/{venue.key}"), "display": venue.name}],
        "planningHorizon": {
            "start": stamp(venue.region, datetime.combine(first, OPENING)),
            "_start": {"extension": [{"url": TZ_CODE, "valueCode": ZONES[venue.region]}]},
            "end": stamp(venue.region, datetime.combine(last, CLOSING)),
        },
    }


def _slots(venue: Venue, day: date, seats: int) -> Iterator[Resource]:
    """A Slot a seat for each turn of the day, in the order of time."""
    for turn in range(TURNS_A_DAY):
        start = datetime.combine(day, OPENING) + turn * TURN
        for seat in range(1, seats + 1):
            yield {
                "resourceType": "Slot",
                "id": f"{venue.key}-{start:%Y%m%d-%H%M}-{seat}",
                "schedule": reference(f"Schedule/{venue.key}"),
                "serviceType": [concept(VACCINATION, "Vaccination")],
                "status": "free",
                "start": stamp(venue.region, start),
                "end": stamp(venue.region, start + TURN),
            }


def campaign_bundles(
    sites: int, days: int, seats: int, opens: date
) -> Iterator[tuple[str, Resource]]:
    """The first ``sites`` of ``VENUES``, open ``days`` days from ``opens`` with ``seats``
    vaccinators each: a transaction a site and day, with the name of its file. A day's
    Slots come in a shuffled order: the host sees the order they are written in, and in
    the order of time a Slot's rank would give its time (docs/leakage.md, Booking)."""
    last = opens + timedelta(days=days - 1)
    for venue in VENUES[:sites]:
        site = [_put(_location(venue)), _put(_schedule(venue, opens, last))]
        for offset in range(days):
            day = opens + timedelta(days=offset)
            slots = list(_slots(venue, day, seats))
            random.Random(f"{venue.key} {day}").shuffle(slots)  # the same files each run
            entries = [*site, *(_put(slot) for slot in slots)]
            bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
            yield f"campaign-{venue.key}-{day.isoformat()}", bundle
