"""The exact test of a criterion against a resource's index values, with the R4 rules.

This runs on the decrypted resource after the blind look-up, which may find too much.
Prefixes compare ranges (http://hl7.org/fhir/R4/search.html#prefix): a date, a number
and a quantity each stand for the interval of their precision, the search value too.
"""

from __future__ import annotations

from typing import Any

from coffre.exceptions import FhirError
from coffre.search.criteria import Criterion, parameter_of, split_escaped, split_or, unescape
from coffre.search.normalise import exact_text, number_range, text
from coffre.search.parameters import SearchParameter
from coffre.search.plan import (
    approximate,
    now_micros,
    quantity_query,
    query_date,
    query_number,
    reference_query,
    split_prefix,
    token_query,
)
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
    stated_token,
)


def compare(prefix: str, q_low: Any, q_high: Any, low: Any, high: Any, width: Any) -> bool:
    """Whether the target range ``[low, high)`` meets the search range under ``prefix``;
    ``width`` is what a tenth of makes ``ap``'s margin."""
    within = bool(q_low <= low and high <= q_high)
    if prefix == "eq":
        return within
    if prefix == "ne":
        return not within
    if prefix == "gt":
        return bool(high > q_high)
    if prefix == "lt":
        return bool(low < q_low)
    if prefix == "ge":
        return bool(high > q_high or within)
    if prefix == "le":
        return bool(low < q_low or within)
    if prefix == "sa":
        return bool(low >= q_high)
    if prefix == "eb":
        return bool(high <= q_low)
    a_low, a_high = approximate(q_low, q_high, width)
    return bool(low < a_high and a_low < high)


def _token(value: Value, system: str | None, code: str | None) -> bool:
    if type(value) is not Token:
        return False
    if code is None:
        return value.system == system
    if value.code != code:
        return False
    if system is None:
        return True
    if not system:  # ``|code`` asks for no system
        return value.system is None
    # A plain code (Patient.gender) has no system in the resource: the binding implies it,
    # so it matches any system; a Coding or Identifier without one matches none.
    return value.system == system or (value.system is None and not value.no_system)


def _token_match(value: Value, modifier: str | None, raw: str) -> bool:
    if modifier == "text":
        return type(value) is TokenText and value.text.startswith(text(unescape(raw)))
    if modifier == "of-type":
        parts = split_escaped(raw, "|")
        return (
            type(value) is OfType
            and len(parts) == 3
            and ((value.system or ""), value.code, value.value) == tuple(parts)
        )
    return _token(value, *token_query(raw))


def _string_match(value: Value, modifier: str | None, raw: str) -> bool:
    if type(value) is not Text:
        return False
    if modifier == "exact":
        return value.exact == exact_text(raw)
    if modifier == "contains":
        return text(raw) in value.normalised
    return value.normalised.startswith(text(raw))


def _date_match(value: Value, raw: str) -> bool:
    if type(value) is not DateRange:
        return False
    prefix, rest = split_prefix(raw)
    low, high = query_date(rest)
    return compare(prefix, low, high, value.low, value.high, now_micros() - low)


def _number_match(value: Value, raw: str) -> bool:
    if type(value) is not Number:
        return False
    prefix, rest = split_prefix(raw)
    number = query_number(rest)
    return compare(prefix, *number_range(number), value.low, value.high, number)


def _quantity_match(value: Value, raw: str) -> bool:
    if type(value) is not QuantityValue:
        return False
    prefix, number, system, code = quantity_query(raw)
    if code is not None:
        if system is not None and (value.system, value.code) != (system, code):
            return False
        if system is None and code not in (value.code, value.unit):
            return False
    return compare(prefix, *number_range(number), value.low, value.high, number)


def _reference_match(value: Value, modifier: str | None, raw: str, base: str | None) -> bool:
    if modifier == "identifier":
        return type(value) is RefIdentifier and _token(
            stated_token(value.system, value.value), *token_query(raw)
        )
    if type(value) is not Ref:
        return False
    forms = reference_query(raw, modifier, base)
    if "/" in forms[0] or ":" in forms[0]:
        return value.value in forms
    return (
        value.type is not None and "://" not in value.value and value.value.endswith("/" + forms[0])
    )


def value_match(
    param: SearchParameter,
    kind: str,
    value: Value,
    modifier: str | None,
    raw: str,
    base: str | None,
) -> bool:
    """Whether one index value matches one search value of a parameter of type ``kind``."""
    if kind == "token":
        return _token_match(value, modifier, raw)
    if kind == "string":
        return _string_match(value, modifier, unescape(raw))
    if kind == "date":
        return _date_match(value, raw)
    if kind == "reference":
        return _reference_match(value, modifier, raw, base)
    if kind == "uri":
        if not isinstance(value, str):
            return False
        raw = unescape(raw)
        if modifier == "below":
            return value.startswith(raw)
        return raw.startswith(value) if modifier == "above" else value == raw
    if kind == "number":
        return _number_match(value, raw)
    if kind == "quantity":
        return _quantity_match(value, raw)
    if kind == "composite":
        return _composite_match(param, value, raw, base)
    return False


def _composite_match(param: SearchParameter, value: Value, raw: str, base: str | None) -> bool:
    parts = split_or(raw, "$")
    if type(value) is not Composite or len(parts) != len(param.components):
        return False
    return all(
        value_match(param, component.type, part_value, None, part, base)
        for component, part_value, part in zip(param.components, value.parts, parts, strict=True)
    )


def check_missing(found: Criterion) -> bool:
    """The value of ``:missing``, which must be ``true`` or ``false``."""
    if found.values not in (("true",), ("false",)):
        raise FhirError(400, "invalid", f"{found.name} takes true or false")
    return found.values == ("true",)


def check_values(resource_type: str, found: Criterion) -> None:
    """Refuse (400) a value the parameter's type cannot read (a composite's, each part's),
    before any record is read: a scan over no record would otherwise accept it silently.
    A chain's value is read by the search at its end; an unknown parameter is not here."""
    param = parameter_of(resource_type, found.parameter)
    if param is None or found.chain is not None:
        return
    if found.modifier == "missing":
        check_missing(found)
        return
    for raw in found.values:
        if param.type != "composite":
            _check_value(param.type, raw)
            continue
        for component, part in zip(param.components, split_or(raw, "$"), strict=False):
            _check_value(component.type, part)


def _check_value(kind: str, raw: str) -> None:
    if kind == "date":
        query_date(split_prefix(raw)[1])
    elif kind == "number":
        query_number(split_prefix(raw)[1])
    elif kind == "quantity":
        quantity_query(raw)


def criterion_match(
    param: SearchParameter, found: Criterion, values: list[Value] | None, base: str | None = None
) -> bool:
    """Whether a resource whose index values for ``param`` are ``values`` (None or none:
    the parameter is missing; an element may be there with no value, as a birthDate
    whose data-absent-reason extension says why) meets the criterion."""
    if found.modifier == "missing":
        return check_missing(found) == (not values)
    hit = any(
        value_match(param, param.type, value, found.modifier, raw, base)
        for raw in found.values
        for value in values or ()
    )
    return not hit if found.modifier == "not" else hit


def sort_key(value: Value) -> Any:
    """What a value sorts by; values of one parameter compare with each other."""
    kind = type(value)
    if kind in (DateRange, Number):
        return value.low
    if kind is QuantityValue:
        return value.value if value.value is not None else value.low
    if kind is Text:
        return value.normalised
    if kind is Token:
        return value.code
    if kind is Ref:
        return value.value
    return value if isinstance(value, str) else None
