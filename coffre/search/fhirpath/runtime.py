"""What compiled FHIRPath calls at run time: navigation over JSON, equality, comparison,
boolean logic and collection operations. Every value is a list (a FHIRPath collection).

Items are JSON values as parsed (dicts, str, bool, int, float or Decimal), FHIRPath
values (:class:`Temporal`, :class:`Quantity`), or :class:`Prim` for a primitive that
carries an ``id`` or extensions (``_birthDate`` in JSON).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

from coffre.fhir.json import PreciseDecimal, exact
from coffre.search.fhirpath.parser import FhirPathError
from coffre.search.fhirpath.quantity import Quantity
from coffre.search.fhirpath.temporal import Temporal

Items = list[Any]
_NUMBERS = (int, float, Decimal)


class FhirPathEvaluationError(FhirPathError):
    """The expression fails on this input (for example ``single()`` on two items)."""


class Prim:
    """A primitive with its JSON ``_name`` companion (``id``, ``extension``)."""

    __slots__ = ("ext", "value")

    def __init__(self, value: Any, ext: dict[str, Any]) -> None:
        self.value = value
        self.ext = ext

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Prim) and (self.value, self.ext) == (other.value, other.ext)

    def __hash__(self) -> int:
        return hash(repr(self.value))

    def __repr__(self) -> str:
        return f"Prim({self.value!r})"


def val(item: Any) -> Any:
    """The plain value of an item: a Prim's value, a JSON float as a Decimal (as written)."""
    if type(item) is Prim:
        item = item.value
    if type(item) is float or type(item) is PreciseDecimal:
        return exact(item)
    return item


def values(items: Iterable[Any]) -> Items:
    """The plain values of a collection, primitives without a value left out."""
    out = []
    for item in items:
        if type(item) is Prim or type(item) is float or type(item) is PreciseDecimal:
            item = val(item)
            if item is None:
                continue
        out.append(item)
    return out


# ---- navigation ------------------------------------------------------------------------


def nav(items: Items, key: str) -> Items:
    """The children under ``key`` of each JSON object, arrays flattened."""
    out: Items = []
    for item in items:
        if type(item) is dict:
            child = item.get(key)
            if child is not None:
                if type(child) is list:
                    out.extend(child)
                else:
                    out.append(child)
    return out


def navp(items: Items, key: str) -> Items:
    """Like :func:`nav` for a primitive element: values paired with their ``_key`` companion."""
    out: Items = []
    companion = "_" + key
    for item in items:
        if type(item) is not dict:
            continue
        child, extra = item.get(key), item.get(companion)
        if extra is None:
            if type(child) is list:
                out.extend(value for value in child if value is not None)
            elif child is not None:
                out.append(child)
        elif type(child) is list or type(extra) is list:
            child = child if type(child) is list else [child]
            extra = extra if type(extra) is list else [extra]
            size = max(len(child), len(extra))
            child, extra = (
                child + [None] * (size - len(child)),
                extra + [None] * (size - len(extra)),
            )
            out.extend(
                Prim(value, more) if more else value
                for value, more in zip(child, extra, strict=True)
                if value is not None or more
            )
        else:
            out.append(Prim(child, extra))
    return out


def navd(items: Items, name: str) -> Items:
    """Navigation where the type is not known: a property, or a choice element's ``nameType``."""
    out: Items = []
    for item in items:
        if type(item) is Prim:
            out.extend(_listed(item.ext.get(name)))
        elif type(item) is dict:
            if name in item or "_" + name in item:
                out.extend(navp([item], name))
                continue
            for key in item:
                if key.startswith(name) and len(key) > len(name) and key[len(name)].isupper():
                    out.extend(navp([item], key))
    return out


def _listed(value: Any) -> Items:
    if value is None:
        return []
    return value if type(value) is list else [value]


def children(items: Items) -> Items:
    out: Items = []
    for item in items:
        if type(item) is dict:
            for key in item:
                if not key.startswith("_") and key != "resourceType":
                    out.extend(navp([item], key))
        elif type(item) is Prim:
            for value in item.ext.values():
                out.extend(_listed(value))
    return out


def descendants(items: Items) -> Items:
    out: Items = []
    level = children(items)
    while level:
        out.extend(level)
        level = children(level)
    return out


def extension(items: Items, urls: Items) -> Items:
    if not urls:
        return []
    url = urls[0]
    found = nav([item.ext if type(item) is Prim else item for item in items], "extension")
    return [ext for ext in found if type(ext) is dict and ext.get("url") == url]


def _target(item: Any, root: Items) -> dict[str, Any] | None:
    """What a Reference points to, as far as its string tells: the contained resource for
    ``#id``, else a stand-in ``{"resourceType": T, "id": id}``; None if it cannot tell."""
    reference = val(item.get("reference") if type(item) is dict else item)
    if type(reference) is not str:
        return None
    if reference.startswith("#"):
        for resource in nav(root, "contained"):
            if type(resource) is dict and resource.get("id") == reference[1:]:
                return resource
        return None
    parts = reference.split("/_history/")[0].rsplit("/", 2)
    if len(parts) >= 2 and parts[-2][:1].isupper():
        return {"resourceType": parts[-2], "id": parts[-1]}
    return None


def resolve(items: Items, root: Items) -> Items:
    """The targets of references; search only needs their type (see :func:`_target`)."""
    return [found for item in items if (found := _target(item, root)) is not None]


def refers_to(items: Items, resource_type: str, root: Items) -> Items:
    """``where(resolve() is T)`` without building the stand-ins: the references to a T."""
    out: Items = []
    for item in items:
        reference = item.get("reference") if type(item) is dict else None
        if type(reference) is str and not reference.startswith("#"):
            parts = reference.split("/_history/")[0].rsplit("/", 2)
            if len(parts) >= 2 and parts[-2] == resource_type:
                out.append(item)
        else:
            found = _target(item, root)
            if found is not None and found.get("resourceType") == resource_type:
                out.append(item)
    return out


# ---- truth, equality, comparison -------------------------------------------------------


def single(items: Items) -> Items:
    if len(items) > 1:
        raise FhirPathEvaluationError("a single item was expected, the collection has more")
    return items


def only_if_single(items: Items, whole: Items) -> Items:
    """``items``, once ``whole`` (what ``as`` was applied to) is known to be one item at most."""
    single(whole)
    return items


def truth(items: Items) -> bool | None:
    """A collection used as a Boolean: None for empty (or a string that is not one)."""
    if not items:
        return None
    if len(items) > 1:
        raise FhirPathEvaluationError("a Boolean was expected, the collection has several items")
    item = val(items[0])
    return item if type(item) is bool else True


def test(items: Items) -> bool:
    """A criterion (``where``, ``exists``, ``all``) holds: true, not empty or false."""
    return truth(items) is True


def boolean(value: bool | None) -> Items:
    return [] if value is None else [value]


def and_(a: bool | None, b: bool | None) -> Items:
    if a is False or b is False:
        return [False]
    return [True] if a is True and b is True else []


def or_(a: bool | None, b: bool | None) -> Items:
    if a is True or b is True:
        return [True]
    return [False] if a is False and b is False else []


def xor(a: bool | None, b: bool | None) -> Items:
    return [] if a is None or b is None else [a != b]


def implies(a: bool | None, b: bool | None) -> Items:
    if a is False or b is True:
        return [True]
    return [False] if a is True and b is False else []


def not_(items: Items) -> Items:
    value = truth(items)
    return [] if value is None else [not value]


def _coerce_pair(x: Any, y: Any) -> tuple[Any, Any]:
    x, y = val(x), val(y)
    if type(x) is Temporal and type(y) is str:
        y = Temporal.parse(y, x.kind) or y
    elif type(y) is Temporal and type(x) is str:
        x = Temporal.parse(x, y.kind) or x
    elif type(x) is Quantity and type(y) is dict:
        y = quantity_of(y) or y
    elif type(y) is Quantity and type(x) is dict:
        x = quantity_of(x) or x
    return x, y


def quantity_of(item: dict[str, Any]) -> Quantity | None:
    """A FHIR Quantity element as a FHIRPath Quantity."""
    value = val(item.get("value"))
    if value is None:
        return None
    unit = item.get("code") or item.get("unit") or "1"
    return Quantity(Decimal(value) if type(value) is int else value, unit)


def eq_item(x: Any, y: Any) -> bool | None:
    x, y = _coerce_pair(x, y)
    if type(x) is bool or type(y) is bool:
        return x is y
    if isinstance(x, _NUMBERS) and isinstance(y, _NUMBERS):
        return bool(x == y)
    if type(x) is Temporal and type(y) is Temporal:
        if (x.kind == "time") != (y.kind == "time"):
            return False
        order = x.compare(y)
        return None if order is None else order == 0
    if type(x) is Quantity and type(y) is Quantity:
        pair = x.convert(y)
        return None if pair is None else pair[0] == pair[1]
    return bool(type(x) is type(y) and x == y)


def eq(a: Items, b: Items) -> Items:
    if not a or not b:
        return []
    if len(a) != len(b):
        return [False]
    result: bool | None = True
    for x, y in zip(a, b, strict=True):
        same = eq_item(x, y)
        if same is False:
            return [False]
        if same is None:
            result = None
    return boolean(result)


def ne(a: Items, b: Items) -> Items:
    return not_(eq(a, b))


def _normal_text(text: str) -> str:
    return " ".join(text.lower().split())


def _places(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    return max(-exponent, 0) if isinstance(exponent, int) else 0


def equiv_item(x: Any, y: Any) -> bool:
    x, y = _coerce_pair(x, y)
    if type(x) is str and type(y) is str:
        return _normal_text(x) == _normal_text(y)
    if isinstance(x, _NUMBERS) and isinstance(y, _NUMBERS) and type(x) is not bool:
        places = min(_places(Decimal(x)), _places(Decimal(y)))
        exponent = Decimal(1).scaleb(-places)
        return Decimal(x).quantize(exponent) == Decimal(y).quantize(exponent)
    if type(x) is Temporal and type(y) is Temporal:
        same = min(x.precision, 6) == min(y.precision, 6)
        return same and x.compare(y) == 0
    if type(x) is Quantity and type(y) is Quantity:
        pair = x.convert(y)
        if pair is None:
            return False
        places = min(_places(x.value), _places(y.value))
        return equiv_item(round(pair[0], places), round(pair[1], places))
    if type(x) is dict and type(y) is dict:
        return x.keys() == y.keys() and all(
            equiv(_listed(x[k]), _listed(y[k])) == [True] for k in x if k != "id"
        )
    return eq_item(x, y) is True


def equiv(a: Items, b: Items) -> Items:
    if len(a) != len(b):
        return [False]
    remaining = list(b)
    for x in a:
        for index, y in enumerate(remaining):
            if equiv_item(x, y):
                del remaining[index]
                break
        else:
            return [False]
    return [True]


def nequiv(a: Items, b: Items) -> Items:
    return [not equiv(a, b)[0]]


def compare_items(x: Any, y: Any) -> int | None:
    x, y = _coerce_pair(x, y)
    if isinstance(x, _NUMBERS) and isinstance(y, _NUMBERS) and bool not in (type(x), type(y)):
        return int((x > y) - (x < y))
    if type(x) is str and type(y) is str:
        return (x > y) - (x < y)
    if type(x) is Temporal and type(y) is Temporal:
        return x.compare(y)
    if type(x) is Quantity and type(y) is Quantity:
        pair = x.convert(y)
        if pair is None:
            return None
        return (pair[0] > pair[1]) - (pair[0] < pair[1])
    raise FhirPathEvaluationError(f"cannot compare {type(x).__name__} with {type(y).__name__}")


def _compare(a: Items, b: Items, test_: Callable[[int], bool]) -> Items:
    if not a or not b:
        return []
    order = compare_items(single(a)[0], single(b)[0])
    return [] if order is None else [test_(order)]


def lt(a: Items, b: Items) -> Items:
    return _compare(a, b, lambda order: order < 0)


def le(a: Items, b: Items) -> Items:
    return _compare(a, b, lambda order: order <= 0)


def gt(a: Items, b: Items) -> Items:
    return _compare(a, b, lambda order: order > 0)


def ge(a: Items, b: Items) -> Items:
    return _compare(a, b, lambda order: order >= 0)


# ---- collections -----------------------------------------------------------------------


def member(x: Any, items: Items) -> bool:
    return any(eq_item(x, y) for y in items)


def in_(a: Items, b: Items) -> Items:
    if not a:
        return []
    return [member(single(a)[0], b)]


def contains(a: Items, b: Items) -> Items:
    return in_(b, a)


def distinct(items: Items) -> Items:
    out: Items = []
    for item in items:
        if not member(item, out):
            out.append(item)
    return out


def union(*collections: Items) -> Items:
    return distinct([item for items in collections for item in items])


def intersect(a: Items, b: Items) -> Items:
    return distinct([x for x in a if member(x, b)])


def exclude(a: Items, b: Items) -> Items:
    return [x for x in a if not member(x, b)]


def subset_of(a: Items, b: Items) -> Items:
    return [all(member(x, b) for x in a)]


def at(items: Items, index: Items) -> Items:
    if not index:
        return []
    position = val(index[0])
    return [items[position]] if 0 <= position < len(items) else []


def first_int(items: Items) -> int:
    return int(val(items[0])) if items else 0


def aggregate(items: Items, step: Callable[[Any, int, Items], Items], total: Items) -> Items:
    for index, item in enumerate(items):
        total = step(item, index, total)
    return total


def repeat(items: Items, step: Callable[[Any], Items]) -> Items:
    out: Items = []
    level = items
    while level:
        found = [child for item in level for child in step(item) if not member(child, out)]
        found = distinct(found)
        out.extend(found)
        level = found
    return out


def _booleans(items: Items) -> Items:
    found = [val(item) for item in items]
    if any(type(item) is not bool for item in found):
        raise FhirPathEvaluationError("a collection of Booleans was expected")
    return found


def all_true(items: Items, wanted: bool) -> Items:
    return [all(item is wanted for item in _booleans(items))]


def any_true(items: Items, wanted: bool) -> Items:
    return [any(item is wanted for item in _booleans(items))]
