"""Index keys: what a resource is findable under, and which keys a criterion looks up.

Keys are plain strings here, one namespace per parameter; the service turns each into a
blind token. A criterion's plan is a union of conjunctions of keys (``((k1,), (k2, k3))``
finds resources carrying k1, or both k2 and k3); None means the criterion cannot be
planned and the type is scanned. Every plan may find too much (tokens are truncated, and
keys are coarser than the matching rules), never too little: the exact test after
decryption (:mod:`coffre.search.matching`) decides.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from coffre.exceptions import FhirError, bounded
from coffre.fhir.references import past_base
from coffre.search.criteria import Criterion, split_escaped, split_or, unescape
from coffre.search.normalise import date_range, exact_text, legacy_text, number_range, text
from coffre.search.parameters import SearchParameter
from coffre.search.values import (
    Composite,
    DateRange,
    Number,
    OfType,
    QuantityValue,
    Ref,
    RefIdentifier,
    Text,
    Token,
    TokenText,
    Value,
)

Plan = tuple[tuple[str, ...], ...]

PRESENT = "?"
# Prefix lengths a string is indexed under: a query uses the longest one it reaches.
PREFIX_LENGTHS = (1, 2, 3, 4, 6, 9, 13)
NGRAM = 3
# Longer strings are not cut into n-grams but marked, and every :contains query finds them.
NGRAM_MAX_LENGTH = 128
# A date range is indexed under each year, month and day it overlaps, unless it overlaps
# more than this many at a level (then under the level's "wide" key).
DAYS_MAX, MONTHS_MAX, YEARS_MAX = 93, 36, 30
# Years before and after these share one key each, so that any range of years is a
# bounded set of keys.
FIRST_YEAR, LAST_YEAR = 1900, 2100
# At most this many numeric buckets are looked up for one value; more means a scan.
BUCKETS_MAX = 40
PREFIXES = frozenset({"eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_WIDE = "*"


# ---- write side --------------------------------------------------------------------------


def _prefixes(family: str, normalised: str) -> list[str]:
    return [f"{family}{n}|{normalised[:n]}" for n in PREFIX_LENGTHS if len(normalised) >= n]


def _ngrams(normalised: str) -> list[str]:
    if len(normalised) > NGRAM_MAX_LENGTH:
        return [f"g|{_WIDE}"]
    return [f"g|{normalised[i : i + NGRAM]}" for i in range(len(normalised) - NGRAM + 1)]


def _token_keys(family: str, system: str | None, code: str) -> list[str]:
    keys = [f"{family}c|{code}"]
    keys.append(f"{family}s|{system}|{code}" if system is not None else f"{family}n|{code}")
    if system is not None:
        keys.append(f"{family}S|{system}")
    return keys


def _moment(micros: int) -> datetime | None:
    try:
        return _EPOCH + timedelta(microseconds=micros)
    except OverflowError:
        return None


def _year_label(year: int) -> str:
    return "<" if year < FIRST_YEAR else ">" if year > LAST_YEAR else str(year)


def _span(low: int, high: int) -> tuple[datetime, datetime] | None:
    """The first and last moments of ``[low, high)``, or None when it is empty or an end
    is open."""
    start, end = _moment(low), _moment(high - 1)
    if start is None or end is None or high <= low:
        return None
    return start, end


def _units(span: tuple[datetime, datetime] | None, level: str, limit: int) -> list[str] | None:
    """The years (``y``), months (``m``) or days (``d``) a span overlaps, or None when
    more than ``limit`` (or there is no span)."""
    if span is None:
        return None
    start, end = span
    if level == "y":
        count = end.year - start.year + 1
        if count > limit:
            return None
        return list(dict.fromkeys(_year_label(start.year + i) for i in range(count)))
    if level == "m":
        count = (end.year - start.year) * 12 + end.month - start.month + 1
        if count > limit:
            return None
        months = (start.year * 12 + start.month - 1 + i for i in range(count))
        return [f"{m // 12:04d}-{m % 12 + 1:02d}" for m in months]
    count = (end.date() - start.date()).days + 1
    if count > limit:
        return None
    return [(start.date() + timedelta(days=i)).isoformat() for i in range(count)]


_DAY_MICROS = 86_400_000_000


def _whole_day(low: int, high: int) -> tuple[int, int]:
    """A span within one UTC day has the keys of that whole day, which one entry of the
    cache then holds: an instant (a write's ``_lastUpdated``) would otherwise be an entry
    of its own, computed each time."""
    day = low // _DAY_MICROS
    if high > low and (high - 1) // _DAY_MICROS == day:
        return day * _DAY_MICROS, (day + 1) * _DAY_MICROS
    return low, high


@lru_cache(maxsize=4096)
def _date_keys(low: int, high: int) -> tuple[str, ...]:
    """Kept: a patient's dates come back in many resources (an encounter's times in each
    of its observations, reports and claims)."""
    span, keys = _span(low, high), list[str]()
    for level, limit in (("y", YEARS_MAX), ("m", MONTHS_MAX), ("d", DAYS_MAX)):
        keys.extend(f"{level}|{unit}" for unit in _units(span, level, limit) or [_WIDE])
    return tuple(keys)


_MIN_EXPONENT = -30


def _bucket(value: Decimal) -> tuple[int, int, int]:
    """``(sign, exponent, leading digit)``: 123.4 is in (1, 2, 1), [100, 200); -150 in
    (-1, 2, 1), [-200, -100]. Magnitudes under 10**-30 share the smallest bucket."""
    if value == 0:
        return (0, 0, 0)
    sign = 1 if value > 0 else -1
    magnitude = abs(value)
    exponent = magnitude.adjusted()
    if exponent < _MIN_EXPONENT:
        return (sign, _MIN_EXPONENT, 1)
    return (sign, exponent, max(1, min(9, int(magnitude.scaleb(-exponent)))))


def _lower(bucket: tuple[int, int, int]) -> Decimal:
    """A bound every value of the bucket is at or above (strictly above when negative);
    the smallest positive bucket holds every magnitude under 10**-30 too: from 0."""
    sign, exponent, digit = bucket
    if sign < 0:
        return -Decimal(digit + 1).scaleb(exponent)
    if sign == 0 or (exponent, digit) == (_MIN_EXPONENT, 1):
        return Decimal(0)
    return Decimal(digit).scaleb(exponent)


def _next_up(bucket: tuple[int, int, int]) -> tuple[int, int, int]:
    """The bucket just above (towards +infinity)."""
    sign, exponent, digit = bucket
    if sign == 0:
        return (1, _MIN_EXPONENT, 1)
    if sign > 0:
        return (1, exponent + 1, 1) if digit == 9 else (1, exponent, digit + 1)
    if digit > 1:
        return (-1, exponent, digit - 1)
    return (-1, exponent - 1, 9) if exponent > _MIN_EXPONENT else (0, 0, 0)


def _buckets(low: Decimal, high: Decimal) -> list[str] | None:
    """The buckets ``[low, high)`` overlaps, or None when too many (or an end is open)."""
    if not (low.is_finite() and high.is_finite()) or high <= low:
        return None
    current, found = _bucket(low), list[str]()
    while len(found) < BUCKETS_MAX:
        found.append("{}:{}:{}".format(*current))
        current = _next_up(current)
        if _lower(current) >= high:
            return found
    return None


def _number_keys(low: Decimal, high: Decimal, units: list[str]) -> list[str]:
    buckets = _buckets(low, high)
    if buckets is None:
        return [f"q{unit}|{_WIDE}" for unit in units]
    return [f"q{unit}|{bucket}" for unit in units for bucket in buckets]


def _quantity_units(found: QuantityValue) -> list[str]:
    units = [""]
    if found.system is not None and found.code is not None:
        units.append(f"s|{found.system}|{found.code}")
    units.extend(f"c|{unit}" for unit in dict.fromkeys((found.code, found.unit)) if unit)
    return units


def value_keys(value: Value) -> Sequence[str]:
    """The keys one index value is findable under."""
    kind = type(value)
    if kind is Token:
        return _token_keys("", value.system, value.code)
    if kind is Text:
        return [*_prefixes("p", value.normalised), f"x|{value.exact}", *_ngrams(value.normalised)]
    if kind is DateRange:
        return _date_keys(*_whole_day(value.low, value.high))
    if kind is Ref:
        keys = [f"r|{value.value}"]
        if value.type is not None and "://" not in value.value:
            keys.append(f"i|{value.value.rsplit('/', 1)[-1]}")
        return keys
    if kind is str:
        return [f"u|{value}"]
    if kind is TokenText:
        return _prefixes("t", value.text)
    if kind is OfType:
        return [f"o|{value.system or ''}|{value.code}|{value.value}"]
    if kind is RefIdentifier:
        return _token_keys("I", value.system, value.value)
    if kind is Number:
        return _number_keys(value.low, value.high, [""])
    if kind is QuantityValue:
        return _number_keys(value.low, value.high, _quantity_units(value))
    if kind is Composite:
        return [f"k|{key}" for key in value_keys(value.parts[0])]
    return []


# ---- query side --------------------------------------------------------------------------


def split_prefix(raw: str) -> tuple[str, str]:
    """``ge2020`` as ``("ge", "2020")``; no prefix is ``eq``."""
    if raw[:2] in PREFIXES and len(raw) > 2 and (raw[2].isdigit() or raw[2] in "-+."):
        return raw[:2], raw[2:]
    return "eq", raw


def unreadable(raw: str, what: str, example: str) -> FhirError:
    """The 400 for a value that is not ``what``; a space in it is most likely a ``+`` the
    client did not encode (a time zone's, an exponent's), which a URL reads as a space."""
    message = f"{raw!r} is not {what}"
    if " " in raw:
        message += f": a + in a URL reads as a space, so send it as %2B ({example})"
    return FhirError(400, "invalid", message)


def query_date(raw: str) -> tuple[int, int]:
    found = date_range(raw)
    if found is None:
        raise unreadable(raw, "a FHIR date, dateTime or instant", "%2B01:00")
    return found


# A stored number was read as a double (at most 1.8e308, at least 5e-324 apart from 0): a
# query far past them matches nothing, and near the Decimal context's own limits (1e±999999)
# its precision interval and ``ap``'s margin would overflow.
_EXPONENT_MAX = 1000


_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
"""A number as FHIR writes one (a JSON number): Python's Decimal also reads '1_000', '+5',
'.5' and other scripts' digits, which no FHIR client means."""


def query_number(raw: str) -> Decimal:
    try:
        value = Decimal(raw) if _NUMBER.fullmatch(raw) else Decimal("NaN")
    except InvalidOperation:
        value = Decimal("NaN")
    if not value.is_finite():
        raise unreadable(raw, "a number", "1e%2B5")
    if not -_EXPONENT_MAX <= value.adjusted() <= _EXPONENT_MAX:
        raise FhirError(
            400,
            "invalid",
            f"{raw!r} is beyond the numbers Coffre compares (1e-{_EXPONENT_MAX} to 1e{_EXPONENT_MAX})",
        )
    return value


def now_micros() -> int:
    return (datetime.now(UTC) - _EPOCH) // timedelta(microseconds=1)


def approximate(low: Any, high: Any, width: Any) -> tuple[Any, Any]:
    """The interval ``ap`` accepts: widened by a tenth of ``width`` each way."""
    margin = abs(width) / 10
    if isinstance(low, int):
        margin = int(margin)
    return low - margin, high + margin


def date_interval(prefix: str, low: int, high: int) -> tuple[int, int] | None:
    """The interval a matching range must overlap, or None (``ne``: anything may match)."""
    lowest, highest = -(2**62), 2**62
    if prefix == "eq":
        return low, high
    if prefix in ("gt", "sa", "ge"):
        return (high if prefix != "ge" else low), highest
    if prefix in ("lt", "eb", "le"):
        return lowest, (low if prefix != "le" else high)
    if prefix == "ap":
        return approximate(low, high, now_micros() - low)
    return None


def number_interval(prefix: str, low: Decimal, high: Decimal) -> tuple[Decimal, Decimal] | None:
    infinity = Decimal("Infinity")
    if prefix == "eq":
        return low, high
    if prefix == "ap":
        return approximate(low, high, (low + high) / 2)
    if prefix in ("gt", "sa", "ge"):
        return (high if prefix != "ge" else low), infinity
    if prefix in ("lt", "eb", "le"):
        return -infinity, (low if prefix != "le" else high)
    return None


def _date_plan(raw: str) -> Plan | None:
    prefix, rest = split_prefix(raw)
    interval = date_interval(prefix, *query_date(rest))
    if interval is None:
        return None
    for level, limit in (("d", DAYS_MAX), ("m", MONTHS_MAX), ("y", LAST_YEAR - FIRST_YEAR + 3)):
        low, high = interval
        units = _units(_span(low, high), level, limit) if level != "y" else _year_units(low, high)
        if units is not None:
            return tuple((f"{level}|{unit}",) for unit in [*units, _WIDE])
    return None


def _year_units(low: int, high: int) -> list[str]:
    """Every year label ``[low, high)`` overlaps (open ends take the before/after keys)."""
    start, end = _moment(low), _moment(high - 1)
    first = start.year if start else FIRST_YEAR - 1
    last = end.year if end else LAST_YEAR + 1
    first, last = (min(max(year, FIRST_YEAR - 1), LAST_YEAR + 1) for year in (first, last))
    return list(dict.fromkeys(_year_label(year) for year in range(first, last + 1)))


def _string_plan(modifier: str | None, raw: str, family: str = "p") -> Plan | None:
    if modifier == "exact":
        return ((f"x|{exact_text(raw)}",),)
    conjunctions: list[tuple[str, ...]] = []
    for folded in dict.fromkeys((text(raw), legacy_text(raw))):  # one form, mostly
        planned = _folded_plan(modifier, folded, family)
        if planned is None:
            return None  # a form that cannot be looked up: every candidate is read
        conjunctions.extend(planned)
    return tuple(conjunctions)


def _folded_plan(modifier: str | None, normalised: str, family: str) -> Plan | None:
    """The look-up of a string query folded one way (``text`` or ``legacy_text``)."""
    if modifier == "contains":
        if len(normalised) < NGRAM:
            return None
        grams = tuple(dict.fromkeys(_ngrams(normalised)))
        return (grams, (f"g|{_WIDE}",)) if grams != (f"g|{_WIDE}",) else None
    usable = [n for n in PREFIX_LENGTHS if n <= len(normalised)]
    return ((f"{family}{usable[-1]}|{normalised[: usable[-1]]}",),) if usable else None


def token_query(raw: str) -> tuple[str | None, str | None]:
    """``(system, code)``: ``code`` gives (None, code) meaning any system, ``|code`` ("",
    code), ``system|`` (system, None)."""
    parts = split_escaped(raw, "|")
    if len(parts) == 1:
        return None, parts[0]
    system, code = parts[0], "|".join(parts[1:])
    return system, code or None


def _token_plan(raw: str, family: str = "") -> Plan | None:
    system, code = token_query(raw)
    if code is None:
        return ((f"{family}S|{system}",),) if system else None
    if system is None:
        return ((f"{family}c|{code}",),)
    if system == "":
        return ((f"{family}n|{code}",),)
    return ((f"{family}s|{system}|{code}",), (f"{family}n|{code}",))


def reference_query(raw: str, modifier: str | None, base: str | None) -> tuple[str, ...]:
    """A reference as the index may hold it: ``Type/id`` where local, else the URL; an
    absolute URL on Coffre's base (over http or https alike, as writes take it) is also
    looked for as written, with either scheme, which is how a resource that wrote it
    before writes made it relative is indexed (resources are indexed without the base)."""
    value, written = unescape(raw), tuple[str, ...]()
    local = past_base(value, base) if base else None
    if local is not None:
        past = value.partition("://")[2]
        value, written = local, tuple(dict.fromkeys((value, f"http://{past}", f"https://{past}")))
    if "/_history/" in value:  # a version names its record, relative or absolute
        value, written = value.split("/_history/")[0], (*written, value)
    if modifier and modifier[:1].isupper():
        if "/" not in value:
            value = f"{modifier}/{value}"
        elif (named := value.split("/")[-2]) != modifier:
            raise FhirError(
                400,
                "invalid",
                f"the reference {bounded(raw)} is to a {bounded(named)} record, where the"
                f" modifier :{modifier} asks for a {modifier}: send the id alone, or drop the"
                " modifier",
            )
    return (value, *written)


def _reference_plan(raw: str, modifier: str | None, base: str | None) -> Plan:
    forms = reference_query(raw, modifier, base)
    if "/" not in forms[0] and ":" not in forms[0]:
        return ((f"i|{forms[0]}",),)
    return tuple((f"r|{form}",) for form in forms)


def quantity_query(raw: str) -> tuple[str, Decimal, str | None, str | None]:
    """``(prefix, number, system, code)`` of ``[prefix]number|system|code``."""
    parts = split_escaped(raw, "|")
    prefix, number = split_prefix(parts[0])
    system = parts[1] if len(parts) > 1 and parts[1] else None
    code = "|".join(parts[2:]) if len(parts) > 2 and parts[2] else None
    return prefix, query_number(number), system, code


def _numeric_plan(raw: str, quantity: bool) -> Plan | None:
    if quantity:
        prefix, value, system, code = quantity_query(raw)
    else:
        prefix, number = split_prefix(raw)
        value, system, code = query_number(number), None, None
    interval = number_interval(prefix, *number_range(value))
    buckets = None if interval is None else _buckets(*interval)
    if buckets is None:
        return None
    unit = "" if code is None else f"s|{system}|{code}" if system else f"c|{code}"
    return tuple((f"q{unit}|{bucket}",) for bucket in [*buckets, _WIDE])


def value_plan(
    param: SearchParameter, kind: str, modifier: str | None, raw: str, base: str | None
) -> Plan | None:
    """The keys one value of a criterion looks up, or None to scan."""
    if kind == "token":
        if modifier == "text":
            return _string_plan(None, unescape(raw), "t")
        if modifier == "of-type":
            parts = split_escaped(raw, "|")
            return ((f"o|{'|'.join(parts)}",),) if len(parts) == 3 else None
        return None if modifier == "not" else _token_plan(raw)
    if kind == "string":
        return _string_plan(modifier, unescape(raw))
    if kind == "date":
        return _date_plan(raw)
    if kind == "reference":
        if modifier == "identifier":
            return _token_plan(raw, "I")
        return _reference_plan(raw, modifier, base)
    if kind == "uri":
        return None if modifier in ("below", "above") else ((f"u|{unescape(raw)}",),)
    if kind in ("number", "quantity"):
        return _numeric_plan(raw, kind == "quantity")
    if kind == "composite":
        first = split_or(raw, "$")[0]
        component = param.components[0]
        plan = value_plan(param, component.type, None, first, base)
        return None if plan is None else tuple(tuple(f"k|{k}" for k in c) for c in plan)
    return None


def plan(param: SearchParameter, found: Criterion, base: str | None = None) -> Plan | None:
    """The keys of a criterion (the union of its values' plans), or None to scan."""
    if found.modifier == "missing":
        return ((PRESENT,),) if found.values == ("false",) else None
    union: list[tuple[str, ...]] = []
    for raw in found.values:
        found_plan = value_plan(param, param.type, found.modifier, raw, base)
        if found_plan is None:
            return None
        union.extend(found_plan)
    return tuple(dict.fromkeys(union))
