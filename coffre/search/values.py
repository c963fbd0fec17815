"""The typed index values of each kind of search parameter, and how each FHIR element type
becomes them (R4 search, http://hl7.org/fhir/R4/search.html).

Each ``*_values`` function takes the elements a parameter's expression selected, grouped by
FHIR type ('' when the type is only known from the value), and appends index values.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any, NamedTuple

from coffre.fhir.references import past_base
from coffre.search.fhirpath.runtime import Prim
from coffre.search.normalise import (
    HIGHEST,
    LOWEST,
    date_range,
    decimal,
    exact_text,
    number_range,
    text,
)

_INFINITY = Decimal("Infinity")
_CURRENCY_SYSTEM = "urn:iso:std:iso:4217"


class Token(NamedTuple):
    """A code: ``system`` is None for plain codes, strings, booleans and ids, whose binding
    implies it, and for a Coding, Identifier or ContactPoint that states none, which is
    then ``no_system``: it matches no ``system|code`` (a plain code matches any)."""

    system: str | None
    code: str
    no_system: bool = False


class TokenText(NamedTuple):
    """Normalised text a token's ``:text`` modifier matches (CodeableConcept.text, display)."""

    text: str


class OfType(NamedTuple):
    """An Identifier's type coding with its value, for ``:of-type``."""

    system: str | None
    code: str
    value: str


class Text(NamedTuple):
    """A string: ``normalised`` for plain and ``:contains`` searches, ``exact`` for ``:exact``."""

    normalised: str
    exact: str


class DateRange(NamedTuple):
    """``[low, high)`` in microseconds since the epoch, UTC."""

    low: int
    high: int


class Ref(NamedTuple):
    """A reference: ``Type/id`` when local (relative, or absolute on Coffre's base), else the
    absolute URL or canonical as written; ``type`` the target type when known."""

    value: str
    type: str | None

    @property
    def local_id(self) -> str | None:
        """The id when the reference is ``Type/id``; None for a URL, a canonical, a
        ``urn:``, a ``#`` or a bare id, even when ``Reference.type`` names a type."""
        if self.type is None or not self.value.startswith(self.type + "/"):
            return None
        return self.value[len(self.type) + 1 :]


class RefIdentifier(NamedTuple):
    """A Reference's logical identifier, for ``:identifier``."""

    system: str | None
    value: str


class Number(NamedTuple):
    """A number and the interval of its implicit precision."""

    value: Decimal
    low: Decimal
    high: Decimal


class QuantityValue(NamedTuple):
    """A quantity (``value`` None for a Range, whose bounds are low and high)."""

    value: Decimal | None
    low: Decimal
    high: Decimal
    system: str | None
    code: str | None
    unit: str | None


class Composite(NamedTuple):
    """One combination of a composite parameter's component values."""

    parts: tuple[Any, ...]


Value = Any
Groups = tuple[tuple[str, list[Any]], ...]


def _plain(item: Any) -> Any:
    return item.value if type(item) is Prim else item


# ---- token -----------------------------------------------------------------------------


def stated_token(system: str | None, code: str) -> Token:
    """The token of an element that carries its own system, or says it has none."""
    return Token(system, code, no_system=system is None)


def _coding(coding: dict[str, Any], out: list[Value]) -> None:
    code, display = coding.get("code"), coding.get("display")
    if isinstance(code, str):
        out.append(stated_token(coding.get("system"), code))
    if isinstance(display, str):
        out.append(TokenText(text(display)))


def _concept(concept: dict[str, Any], out: list[Value]) -> None:
    for coding in concept.get("coding") or ():
        if isinstance(coding, dict):
            _coding(coding, out)
    if isinstance(concept.get("text"), str):
        out.append(TokenText(text(concept["text"])))


def _identifier(identifier: dict[str, Any], out: list[Value]) -> None:
    value = identifier.get("value")
    if not isinstance(value, str):
        return
    out.append(stated_token(identifier.get("system"), value))
    kind = identifier.get("type")
    if isinstance(kind, dict):
        for coding in kind.get("coding") or ():
            if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                out.append(OfType(coding.get("system"), coding["code"], value))
        if isinstance(kind.get("text"), str):
            out.append(TokenText(text(kind["text"])))


def _token(item: Any, kind: str, out: list[Value]) -> None:
    item = _plain(item)
    if isinstance(item, bool):
        out.append(Token(None, "true" if item else "false"))
    elif isinstance(item, str | int):
        out.append(Token(None, str(item)))
    elif isinstance(item, dict):
        if kind == "CodeableConcept" or "coding" in item:
            _concept(item, out)
        elif kind == "Coding" or "code" in item:
            _coding(item, out)
        else:  # Identifier, and ContactPoint (its system is phone, email...)
            _identifier(item, out)


def token_values(groups: Groups, base: str | None) -> list[Value]:
    out: list[Value] = []
    for kind, items in groups:
        for item in items:
            _token(item, kind, out)
    return out


# ---- string ----------------------------------------------------------------------------

_NAME_PARTS = ("family", "given", "prefix", "suffix", "text")
_ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country", "text")


def _text_of(value: Any, out: list[Value]) -> None:
    value = _plain(value)
    if isinstance(value, str):
        out.append(Text(text(value), exact_text(value)))
    elif isinstance(value, list):
        for part in value:
            _text_of(part, out)


def string_values(groups: Groups, base: str | None) -> list[Value]:
    out: list[Value] = []
    for kind, items in groups:
        for item in items:
            if isinstance(item, dict):
                parts = (
                    _ADDRESS_PARTS
                    if kind == "Address" or "city" in item or "line" in item
                    else _NAME_PARTS
                )
                for part in parts:
                    _text_of(item.get(part), out)
            else:
                _text_of(item, out)
    return out


# ---- date ------------------------------------------------------------------------------


def _date(value: Any) -> tuple[int, int] | None:
    value = _plain(value)
    return date_range(value) if isinstance(value, str) else None


def _period(period: dict[str, Any]) -> DateRange | None:
    start, end = _date(period.get("start")), _date(period.get("end"))
    if start is None and end is None:
        return None
    return DateRange(start[0] if start else LOWEST, end[1] if end else HIGHEST)


def _timing(timing: dict[str, Any]) -> DateRange | None:
    found = [r for r in map(_date, timing.get("event") or ()) if r is not None]
    repeat = timing.get("repeat")
    bounds = repeat.get("boundsPeriod") if isinstance(repeat, dict) else None
    if isinstance(bounds, dict) and (period := _period(bounds)) is not None:
        found.append((period.low, period.high))
    if not found:
        return None
    return DateRange(min(r[0] for r in found), max(r[1] for r in found))


def date_values(groups: Groups, base: str | None) -> list[Value]:
    out: list[Value] = []
    for _, items in groups:
        for item in items:
            found: Any = None
            if isinstance(item, dict):
                found = _timing(item) if "event" in item or "repeat" in item else _period(item)
            else:
                found = _date(item)
            if found is not None:
                out.append(DateRange(*found))
    return out


# ---- reference and uri -----------------------------------------------------------------


def reference(value: str, base: str | None) -> Ref:
    """A reference string normalised: ``Type/id`` where it points into Coffre."""
    if base and (local := past_base(value, base)) is not None:
        value = local
    if "://" not in value and not value.startswith(("#", "urn:")) and "?" not in value:
        parts = value.split("/")
        if len(parts) >= 2 and parts[0][:1].isupper():
            return Ref(f"{parts[0]}/{parts[1]}", parts[0])
        return Ref(value, None)
    unversioned = value.split("/_history/")[0]  # an absolute one names its record too
    parts = unversioned.split("/")
    kind = parts[-2] if len(parts) >= 2 and parts[-2][:1].isupper() else None
    return Ref(unversioned if kind else value, kind)


def reference_values(groups: Groups, base: str | None) -> list[Value]:
    out: list[Value] = []
    for _, items in groups:
        for item in items:
            item = _plain(item)
            if isinstance(item, str):
                out.append(Ref(item, None))
                if "|" in item:
                    out.append(Ref(item.split("|", 1)[0], None))
            elif isinstance(item, dict):
                if isinstance(item.get("resourceType"), str) and isinstance(item.get("id"), str):
                    # a resource itself, as Bundle.entry[0].resource for ``composition``
                    out.append(Ref(f"{item['resourceType']}/{item['id']}", item["resourceType"]))
                if isinstance(item.get("reference"), str):
                    found = reference(item["reference"], base)
                    kind = item.get("type")
                    out.append(
                        found if found.type or not isinstance(kind, str) else Ref(found.value, kind)
                    )
                identifier = item.get("identifier")
                if isinstance(identifier, dict) and isinstance(identifier.get("value"), str):
                    out.append(RefIdentifier(identifier.get("system"), identifier["value"]))
    return out


def uri_values(groups: Groups, base: str | None) -> list[Value]:
    return [value for _, items in groups for value in map(_plain, items) if isinstance(value, str)]


# ---- number and quantity ---------------------------------------------------------------


def number_values(groups: Groups, base: str | None) -> list[Value]:
    out: list[Value] = []
    for _, items in groups:
        for item in items:
            value = decimal(_plain(item))
            if value is not None:
                out.append(Number(value, *number_range(value)))
    return out


def _quantity(item: dict[str, Any]) -> QuantityValue | None:
    value = decimal(_plain(item.get("value")))
    if value is None:
        return None
    if "currency" in item:
        return QuantityValue(value, *number_range(value), _CURRENCY_SYSTEM, item["currency"], None)
    return QuantityValue(
        value, *number_range(value), item.get("system"), item.get("code"), item.get("unit")
    )


def _range(item: dict[str, Any]) -> QuantityValue | None:
    low, high = item.get("low"), item.get("high")
    low_q = _quantity(low) if isinstance(low, dict) else None
    high_q = _quantity(high) if isinstance(high, dict) else None
    if low_q is None and high_q is None:
        return None
    unit = low_q or high_q
    assert unit is not None
    return QuantityValue(
        None,
        low_q.value if low_q and low_q.value is not None else -_INFINITY,
        high_q.value if high_q and high_q.value is not None else _INFINITY,
        unit.system,
        unit.code,
        unit.unit,
    )


def quantity_values(groups: Groups, base: str | None) -> list[Value]:
    out: list[Value] = []
    for kind, items in groups:
        for item in items:
            item = _plain(item)
            found: QuantityValue | None = None
            if isinstance(item, dict):
                found = (
                    _range(item)
                    if kind == "Range" or "low" in item or "high" in item
                    else _quantity(item)
                )
            elif (value := decimal(item)) is not None:
                found = QuantityValue(value, *number_range(value), None, None, None)
            if found is not None:
                out.append(found)
    return out


def special_values(groups: Groups, base: str | None) -> list[Value]:
    return []


BY_TYPE: dict[str, Callable[[Groups, str | None], list[Value]]] = {
    "token": token_values,
    "string": string_values,
    "date": date_values,
    "reference": reference_values,
    "uri": uri_values,
    "number": number_values,
    "quantity": quantity_values,
    "special": special_values,
}
