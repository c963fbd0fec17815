"""Search values normalised as the R4 search specification compares them.

- strings: case- and accent-insensitive (NFKD, combining marks dropped, case folded); for
  ``:exact``, as written but canonically composed (NFC);
- dates: the interval ``[low, high)`` a value stands for at its precision, in microseconds
  since 1970-01-01T00:00:00Z. A date or a time without a zone is taken as UTC: Coffre keeps
  no local time zone, so ``2020-03-01`` is the UTC day (a server in UTC+1 would start it an
  hour earlier; the difference shows only at a day's edges);
- numbers: the interval of the implicit precision (``100`` stands for ``[99.5, 100.5)``).
"""

from __future__ import annotations

import calendar
import re
import unicodedata
from datetime import datetime, timedelta
from decimal import Decimal
from functools import lru_cache

from coffre.fhir.json import exact

# Open ends of a Period and of a Range.
LOWEST = -(2**62)
HIGHEST = 2**62
_EPOCH = datetime(1970, 1, 1)
_DATE = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?"
    r"(Z|[+-](?:(?:0\d|1[0-3]):[0-5]\d|14:00))?)?)?)?",
    re.ASCII,  # a digit is 0-9: Python's \d takes any script's (a full-width nine)
)


_LETTERS = str.maketrans(
    {
        "ø": "o",
        "ł": "l",
        "đ": "d",
        "ð": "d",
        "ħ": "h",
        "ŧ": "t",
        "\u0131": "i",  # a dotless i
        "æ": "ae",
        "œ": "oe",
        "þ": "th",
    }
)
"""Letters that no Unicode decomposition takes apart, as a reader without them types them
(Søren as soren, Łukasz as lukasz, œuvre as oeuvre)."""


@lru_cache(maxsize=8192)
def text(value: str) -> str:
    """A string as compared by string search: no case, no accents, single spaces."""
    if value.isascii():
        return " ".join(value.lower().split())
    return legacy_text(value).translate(_LETTERS)


def legacy_text(value: str) -> str:
    """``text`` as it was before 2026-12-06, which left ø, ł, đ, æ, œ and the like as
    they are: the index of a record written then holds them so, and a search looks for
    both forms (``plan``) until every such record has been written again."""
    if value.isascii():
        return " ".join(value.lower().split())
    stripped = "".join(
        c for c in unicodedata.normalize("NFKD", value) if not unicodedata.combining(c)
    )
    folded = unicodedata.normalize("NFKD", stripped.casefold())
    return " ".join("".join(c for c in folded if not unicodedata.combining(c)).split())


PHONETIC = "phonetic"
"""The parameter R4 gives Patient, Person, Practitioner and RelatedPerson to find a name
by how it sounds: Coffre indexes and searches the Soundex code of each word."""
_SOUNDEX = str.maketrans("bfpvcgjkqsxzdtlmnr", "111122222222334556")
_WORDS = re.compile(r"[a-z]+")


def soundex(word: str) -> str:
    """American Soundex of a word of ASCII letters (``text`` folds accents first):
    Tremblay and Tramblay, Müller and Mueller are ``t651`` and ``m460``."""
    codes = word.translate(_SOUNDEX)
    kept, previous = [], codes[0]
    for letter, code in zip(word[1:], codes[1:], strict=True):
        if code.isdigit() and code != previous:
            kept.append(code)
        if letter not in "hw":  # h and w do not part two letters of one code; vowels do
            previous = code
    return (word[0] + "".join(kept) + "000")[:4]


def phonetic(value: str) -> str:
    """The Soundex codes of a string's words, as string search compares them."""
    return " ".join(soundex(word) for word in _WORDS.findall(text(value)))


def exact_text(value: str) -> str:
    """A string as ``:exact`` compares it: case, accents and spaces kept, but canonically
    composed (NFC), so that an é typed as one character or as an e and its accent, which
    no one can tell apart on screen, is the same letter."""
    return value if value.isascii() else unicodedata.normalize("NFC", value)


def _micros(moment: timedelta) -> int:
    return moment // timedelta(microseconds=1)


def instant(value: str) -> int | None:
    """A FHIR instant (to the second at least, with a time zone) in microseconds since the
    epoch; None for anything else, however readable."""
    match = _DATE.fullmatch(value)
    if match is None or match.group(6) is None or match.group(8) is None:
        return None
    moment = date_range(value)
    return None if moment is None else moment[0]


@lru_cache(maxsize=4096)
def date_range(value: str) -> tuple[int, int] | None:
    """``[low, high)`` in microseconds for a FHIR date, dateTime or instant; None if invalid.

    Computed from the value's start and its length, never as a datetime past it: the
    range of ``9999-12-31`` ends after the last datetime, that of ``0001-01-01T00:00:00+01:00``
    starts before the first."""
    match = _DATE.fullmatch(value)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        if month is None:
            low = datetime(int(year), 1, 1)
            step = timedelta(days=366 if calendar.isleap(low.year) else 365)
        elif day is None:
            low = datetime(int(year), int(month), 1)
            step = timedelta(days=calendar.monthrange(low.year, low.month)[1])
        elif hour is None:
            low = datetime(int(year), int(month), int(day))
            step = timedelta(days=1)
        else:
            low = datetime(int(year), int(month), int(day), int(hour), int(minute))
            step = timedelta(minutes=1)
            if second is not None:
                low = low.replace(second=int(second))
                step = timedelta(seconds=1)
                if fraction is not None:
                    digits = min(len(fraction), 6)
                    low = low.replace(microsecond=int(fraction[:digits].ljust(6, "0")))
                    step = timedelta(microseconds=10 ** (6 - digits))
    except ValueError:
        return None
    start = _micros(low - _EPOCH - _offset(zone))
    return start, start + _micros(step)


def _offset(zone: str | None) -> timedelta:
    if zone is None or zone == "Z":
        return timedelta(0)
    sign = -1 if zone[0] == "-" else 1
    return sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))


def number_range(value: Decimal) -> tuple[Decimal, Decimal]:
    """The values a number stands for at its precision: half a unit of its last digit each way."""
    exponent = value.as_tuple().exponent
    half = Decimal(5).scaleb((exponent if isinstance(exponent, int) else 0) - 1)
    return value - half, value + half


def decimal(value: object) -> Decimal | None:
    """A JSON number as a Decimal (a float from the parser as written)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return exact(value)
    return None
