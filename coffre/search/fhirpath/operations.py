"""FHIRPath arithmetic, type tests at run time, and conversions between types."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Any

from coffre.search.fhirpath.quantity import CALENDAR, Quantity, calendar_ucum, multiply
from coffre.search.fhirpath.runtime import (
    FhirPathEvaluationError,
    Items,
    compare_items,
    quantity_of,
    single,
    subset_of,
    val,
    values,
)
from coffre.search.fhirpath.temporal import Temporal

_PLAIN_RESOURCES = frozenset({"Bundle", "Binary", "Parameters"})
_QUANTITY_TEXT = re.compile(r"([+-]?\d+(?:\.\d+)?)\s*(?:'([^']+)'|([a-z]+))?")


def _number(x: Any) -> bool:
    return type(x) in (int, Decimal)


def _one(items: Items) -> Any:
    return val(single(items)[0]) if items else None


def _operator(verb: str) -> Callable[[Callable[[Any, Any], Any]], Callable[[Items, Items], Items]]:
    """An operator on single operands (a FHIR Quantity element taken as a Quantity): empty
    in, empty out. The operation returns None for an empty result, and NotImplemented
    for operands it does not take, which is an error."""

    def wrap(operation: Callable[[Any, Any], Any]) -> Callable[[Items, Items], Items]:
        def apply(a: Items, b: Items) -> Items:
            if not a or not b:
                return []
            x, y = _one(a), _one(b)
            x = quantity_of(x) if type(x) is dict else x
            y = quantity_of(y) if type(y) is dict else y
            result = operation(x, y)
            if result is NotImplemented:
                names = f"{type(x).__name__} and {type(y).__name__}"
                raise FhirPathEvaluationError(f"cannot {verb} {names}")
            return [] if result is None else [result]

        apply.__doc__ = operation.__doc__
        return apply

    return wrap


@_operator("add")
def add(x: Any, y: Any) -> Any:
    if (_number(x) and _number(y)) or (type(x) is str and type(y) is str):
        return x + y
    if type(x) is Temporal and type(y) is Quantity:
        return _move(x, y.value, y.unit)
    if type(x) is Quantity and type(y) is Quantity and x.unit == y.unit:
        return Quantity(x.value + y.value, x.unit)
    return NotImplemented


def _move(moment: Temporal, amount: Decimal, unit: str) -> Temporal:
    if unit in ("a", "mo"):
        raise FhirPathEvaluationError("a UCUM year or month is not a calendar duration")
    try:
        return moment.add(amount, unit)
    except ValueError as error:
        raise FhirPathEvaluationError(str(error)) from None


@_operator("subtract")
def sub(x: Any, y: Any) -> Any:
    if _number(x) and _number(y):
        return x - y
    if type(x) is Temporal and type(y) is Quantity:
        return _move(x, -y.value, y.unit)
    if type(x) is Quantity and type(y) is Quantity and x.unit == y.unit:
        return Quantity(x.value - y.value, x.unit)
    return NotImplemented


@_operator("multiply")
def mul(x: Any, y: Any) -> Any:
    if _number(x) and _number(y):
        return x * y
    if type(x) is Quantity and type(y) is Quantity:
        return multiply(x, y)
    if type(x) is Quantity and _number(y):
        return Quantity(x.value * y, x.unit)
    if _number(x) and type(y) is Quantity:
        return Quantity(x * y.value, y.unit)
    return NotImplemented


@_operator("divide")
def div(x: Any, y: Any) -> Any:
    if _number(x) and _number(y):
        return None if y == 0 else Decimal(x) / Decimal(y)
    if type(x) is Quantity and type(y) is Quantity:
        return multiply(x, y, divide=True)
    if type(x) is Quantity and _number(y):
        return None if y == 0 else Quantity(x.value / y, x.unit)
    return NotImplemented


@_operator("take the integer quotient of")
def idiv(x: Any, y: Any) -> Any:
    if not (_number(x) and _number(y)):
        return NotImplemented
    return None if y == 0 else int((Decimal(x) / Decimal(y)).to_integral_value(ROUND_DOWN))


@_operator("take the remainder of")
def mod(x: Any, y: Any) -> Any:
    if not (_number(x) and _number(y)):
        return NotImplemented
    return None if y == 0 else x % y


def concat(a: Items, b: Items) -> Items:
    x, y = _one(a), _one(b)
    return [("" if x is None else str(x)) + ("" if y is None else str(y))]


def neg(a: Items) -> Items:
    if not a:
        return []
    x = _one(a)
    if _number(x):
        return [-x]
    if type(x) is Quantity:
        return [Quantity(-x.value, x.unit)]
    raise FhirPathEvaluationError("only numbers and quantities have a sign")


# ---- types at run time -----------------------------------------------------------------


def type_of(item: Any) -> tuple[str, str] | None:
    """``(namespace, name)`` of an item whose type the compiler could not know."""
    item = val(item)
    if type(item) is bool:
        return "System", "Boolean"
    if type(item) is int:
        return "System", "Integer"
    if type(item) is Decimal:
        return "System", "Decimal"
    if type(item) is str:
        return "System", "String"
    if type(item) is Temporal:
        return "System", {"date": "Date", "datetime": "DateTime", "time": "Time"}[item.kind]
    if type(item) is Quantity:
        return "System", "Quantity"
    if type(item) is dict and type(item.get("resourceType")) is str:
        return "FHIR", item["resourceType"]
    return None


def is_item(item: Any, namespace: str, name: str) -> bool:
    found = type_of(item)
    if found is None:
        return False
    if found == (namespace, name):
        return True
    if namespace == "FHIR" and found[0] == "FHIR":
        return name == "Resource" or (name == "DomainResource" and found[1] not in _PLAIN_RESOURCES)
    return False


def of_type(items: Items, namespace: str, name: str) -> Items:
    return [item for item in items if is_item(item, namespace, name)]


def type_info(items: Items) -> Items:
    out: Items = []
    for item in items:
        found = type_of(item)
        if found is not None:
            out.append({"namespace": found[0], "name": found[1]})
    return out


# ---- conversions -----------------------------------------------------------------------

_TRUE = frozenset({"true", "t", "yes", "y", "1", "1.0"})
_FALSE = frozenset({"false", "f", "no", "n", "0", "0.0"})


def to_boolean(x: Any) -> bool | None:
    if type(x) is bool:
        return x
    if type(x) in (int, Decimal):
        return {1: True, 0: False}.get(int(x)) if x in (0, 1) else None
    if type(x) is str:
        lowered = x.lower()
        return True if lowered in _TRUE else False if lowered in _FALSE else None
    return None


def to_integer(x: Any) -> int | None:
    if type(x) is bool:
        return int(x)
    if type(x) is int:
        return x
    if type(x) is str and re.fullmatch(r"[+-]?\d+", x):
        return int(x)
    return None


def to_decimal(x: Any) -> Decimal | None:
    if type(x) is bool:
        return Decimal("1.0") if x else Decimal("0.0")
    if type(x) in (int, Decimal):
        return Decimal(x)
    if type(x) is str and re.fullmatch(r"[+-]?\d+(\.\d+)?", x):
        return Decimal(x)
    return None


def to_string(x: Any) -> str | None:
    if type(x) is bool:
        return "true" if x else "false"
    if type(x) in (str, int, Decimal):
        return str(x)
    if type(x) is Temporal or type(x) is Quantity:
        return str(x)
    return None


def to_quantity(x: Any, unit: str | None = None) -> Quantity | None:
    if type(x) is bool:
        found: Quantity | None = Quantity(Decimal("1.0") if x else Decimal("0.0"))
    elif type(x) in (int, Decimal):
        found = Quantity(Decimal(x))
    elif type(x) is Quantity:
        found = x
    elif type(x) is dict:
        found = quantity_of(x)
    elif type(x) is str:
        match = _QUANTITY_TEXT.fullmatch(x.strip())
        if match is None:
            return None
        number, code, word = match.groups()
        if word is not None and word not in CALENDAR and word.rstrip("s") not in CALENDAR:
            return None
        found = Quantity(Decimal(number), code or word or "1")
    else:
        return None
    if found is None or unit is None:
        return found
    if calendar_ucum(found.unit) == calendar_ucum(unit):
        return found
    target = Quantity(Decimal(1), unit)
    pair = Quantity(found.value, found.unit).canonical(), target.canonical()
    if pair[0] is None or pair[1] is None or pair[0][1] != pair[1][1]:
        return None
    try:
        return Quantity(pair[0][0] / pair[1][0], unit)
    except InvalidOperation:
        return None


def to_temporal(x: Any, kind: str) -> Temporal | None:
    if type(x) is Temporal:
        if x.kind == kind:
            return x
        if kind == "datetime" and x.kind == "date":
            return Temporal("datetime", x.fields, x.precision, x.tz)
        if kind == "date" and x.kind == "datetime":
            return Temporal("date", x.fields, min(x.precision, 3))
        return None
    if type(x) is str:
        found = Temporal.parse(x, {"date": "date", "datetime": "dateTime", "time": "time"}[kind])
        if found is not None and kind == "date" and found.kind != "date":
            return None
        if found is not None and found.kind != kind:
            return Temporal(kind, found.fields, found.precision, found.tz)
        return found
    return None


def convert(items: Items, converter: Any, *args: Any) -> Items:
    """Apply a ``to_*`` converter to a single item: empty when it does not convert."""
    if not items:
        return []
    found = converter(_one(items), *args)
    return [] if found is None else [found]


def converts(items: Items, converter: Any, *args: Any) -> Items:
    if not items:
        return []
    return [converter(_one(items), *args) is not None]


# ---- more collection functions -----------------------------------------------------------


def superset_of(a: Items, b: Items) -> Items:
    return subset_of(b, a)


def combine(a: Items, b: Items) -> Items:
    return a + b


def condition(items: Items) -> bool:
    """The criterion of ``iif``: empty is false, anything but one Boolean an error."""
    if not items:
        return False
    item = val(single(items)[0])
    if type(item) is not bool:
        raise FhirPathEvaluationError("iif() needs a Boolean criterion")
    return item


def iif(
    target: Items | None,
    criterion: Callable[[], Items],
    then: Callable[[], Items],
    otherwise: Callable[[], Items],
) -> Items:
    if target is not None:
        single(target)
    return then() if condition(criterion()) else otherwise()


def has_value(items: Items) -> Items:
    return [len(items) == 1 and not isinstance(items[0], dict | list) and val(items[0]) is not None]


def is_branches(pairs: list[tuple[Items, bool | None]], namespace: str, name: str) -> Items:
    """``x is T`` where the compiler knows, per branch, whether its items are a T."""
    found = [(item, known) for items, known in pairs for item in items]
    if not found:
        return []
    item, known = single(found)[0]
    if known is None:
        return [is_item(item, namespace, name)]
    return [known]


def temporals(items: Items, kind: str) -> Items:
    """FHIR date, dateTime, instant and time strings as :class:`Temporal` values."""
    out: Items = []
    for item in values(items):
        found = Temporal.parse(item, kind) if type(item) is str else item
        if found is not None:
            out.append(found)
    return out


def quantities(items: Items) -> Items:
    """FHIR Quantity elements (and Age, Duration...) as :class:`Quantity` values."""
    out: Items = []
    for item in items:
        found = quantity_of(item) if type(item) is dict else item
        if found is not None:
            out.append(found)
    return out


def sort_items(items: Items, keys: list[tuple[Callable[[Any], Items], bool]]) -> Items:
    def order(x: Any, y: Any) -> int:
        for key, descending in keys:
            a, b = key(x), key(y)
            if not a or not b:
                result = (len(a) > 0) - (len(b) > 0)
                if result:
                    return result
                continue
            result = compare_items(a[0], b[0]) or 0
            if result:
                return -result if descending else result
        return 0

    plain = [val(item) for item in items] if not keys else items
    if not keys:
        return sorted(plain, key=functools.cmp_to_key(lambda x, y: compare_items(x, y) or 0))
    return sorted(plain, key=functools.cmp_to_key(order))


def conforms_to(items: Items, url: Items) -> Items:
    prefix = "http://hl7.org/fhir/StructureDefinition/"
    if not items or not url:
        return []
    target = val(url[0])
    if not target.startswith(prefix):
        raise FhirPathEvaluationError("only the base FHIR profiles are known")
    item = single(items)[0]
    return [type(item) is dict and item.get("resourceType") == target[len(prefix) :]]
