"""FHIRPath functions over single values: strings, math, boundaries and precision.

Each takes the input collection and the argument collections, already plain values, and
returns a collection. ``FUNCTIONS`` maps a FHIRPath name to the Python one and the number
of arguments it accepts.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from typing import Any

from coffre.search.fhirpath.quantity import Quantity
from coffre.search.fhirpath.runtime import FhirPathEvaluationError, Items, single, val
from coffre.search.fhirpath.temporal import Temporal


def _text(items: Items) -> str | None:
    if not items:
        return None
    item = val(single(items)[0])
    if type(item) is not str:
        raise FhirPathEvaluationError("a string function was given something that is not a string")
    return item


def _arg(items: Items) -> Any:
    return val(items[0]) if items else None


def fn_index_of(items: Items, sub: Items) -> Items:
    text, part = _text(items), _arg(sub)
    return [] if text is None or part is None else [text.find(part)]


def fn_substring(items: Items, start: Items, length: Items | None = None) -> Items:
    text, begin = _text(items), _arg(start)
    if text is None or begin is None or begin < 0 or begin >= len(text):
        return []
    if length is None:
        return [text[begin:]]
    size = _arg(length)
    return [text[begin:]] if size is None else [text[begin : begin + max(size, 0)]]


def fn_starts_with(items: Items, prefix: Items) -> Items:
    text, part = _text(items), _arg(prefix)
    return [] if text is None or part is None else [text.startswith(part)]


def fn_ends_with(items: Items, suffix: Items) -> Items:
    text, part = _text(items), _arg(suffix)
    return [] if text is None or part is None else [text.endswith(part)]


def fn_contains(items: Items, sub: Items) -> Items:
    text, part = _text(items), _arg(sub)
    return [] if text is None or part is None else [part in text]


def fn_upper(items: Items) -> Items:
    text = _text(items)
    return [] if text is None else [text.upper()]


def fn_lower(items: Items) -> Items:
    text = _text(items)
    return [] if text is None else [text.lower()]


def fn_replace(items: Items, pattern: Items, substitution: Items) -> Items:
    text, old, new = _text(items), _arg(pattern), _arg(substitution)
    if text is None or old is None or new is None:
        return []
    if old == "":
        return [new + new.join(text) + new]
    return [text.replace(old, new)]


def fn_matches(items: Items, regex: Items) -> Items:
    text, pattern = _text(items), _arg(regex)
    return [] if text is None or pattern is None else [re.search(pattern, text, re.S) is not None]


def fn_matches_full(items: Items, regex: Items) -> Items:
    text, pattern = _text(items), _arg(regex)
    return (
        [] if text is None or pattern is None else [re.fullmatch(pattern, text, re.S) is not None]
    )


def fn_replace_matches(items: Items, regex: Items, substitution: Items) -> Items:
    text, pattern, new = _text(items), _arg(regex), _arg(substitution)
    if text is None or pattern is None or new is None:
        return []
    if pattern == "":
        return [text]
    return [re.sub(pattern, re.sub(r"\$(\d+)", r"\\\1", new), text)]


def fn_length(items: Items) -> Items:
    text = _text(items)
    return [] if text is None else [len(text)]


def fn_to_chars(items: Items) -> Items:
    text = _text(items)
    return [] if text is None else list(text)


def fn_split(items: Items, separator: Items) -> Items:
    text, part = _text(items), _arg(separator)
    return [] if text is None or part is None else text.split(part)


def fn_join(items: Items, separator: Items | None = None) -> Items:
    part = _arg(separator) if separator is not None else ""
    return ["".join([]) if not items else (part or "").join(str(val(item)) for item in items)]


def fn_trim(items: Items) -> Items:
    text = _text(items)
    return [] if text is None else [text.strip()]


def fn_encode(items: Items, form: Items) -> Items:
    text, how = _text(items), _arg(form)
    if text is None:
        return []
    data = text.encode()
    if how == "hex":
        return [data.hex()]
    if how == "urlbase64":
        return [base64.urlsafe_b64encode(data).decode()]
    return [base64.b64encode(data).decode()]


def fn_decode(items: Items, form: Items) -> Items:
    text, how = _text(items), _arg(form)
    if text is None:
        return []
    if how == "hex":
        return [bytes.fromhex(text).decode()]
    if how == "urlbase64":
        return [base64.urlsafe_b64decode(text).decode()]
    return [base64.b64decode(text).decode()]


def fn_escape(items: Items, form: Items) -> Items:
    text, how = _text(items), _arg(form)
    if text is None:
        return []
    return [json.dumps(text)[1:-1] if how == "json" else html.escape(text)]


def fn_unescape(items: Items, form: Items) -> Items:
    text, how = _text(items), _arg(form)
    if text is None:
        return []
    if how == "json":
        return [re.sub(r'\\(["\\/bfnrt])', lambda m: json.loads(f'"\\{m.group(1)}"'), text)]
    return [html.unescape(text)]


# ---- math --------------------------------------------------------------------------------


def _number(items: Items) -> Any:
    if not items:
        return None
    item = val(single(items)[0])
    if type(item) not in (int, Decimal, Quantity):
        raise FhirPathEvaluationError("a math function was given something that is not a number")
    return item


def _decimal_result(value: float) -> Items:
    return [] if math.isnan(value) or math.isinf(value) else [Decimal(repr(value))]


def fn_abs(items: Items) -> Items:
    x = _number(items)
    if x is None:
        return []
    return [Quantity(abs(x.value), x.unit)] if type(x) is Quantity else [abs(x)]


def _rounded(items: Items, mode: str) -> Items:
    x = _number(items)
    return [] if x is None else [int(Decimal(x).to_integral_value(mode))]


def fn_ceiling(items: Items) -> Items:
    return _rounded(items, ROUND_CEILING)


def fn_floor(items: Items) -> Items:
    return _rounded(items, ROUND_FLOOR)


def fn_truncate(items: Items) -> Items:
    return _rounded(items, ROUND_DOWN)


def fn_exp(items: Items) -> Items:
    x = _number(items)
    return [] if x is None else [Decimal(x).exp()]


def fn_ln(items: Items) -> Items:
    x = _number(items)
    return [] if x is None or x <= 0 else [Decimal(x).ln()]


def fn_log(items: Items, base: Items) -> Items:
    x, b = _number(items), _arg(base)
    if x is None or b is None or x <= 0 or b <= 0 or b == 1:
        return []
    return _decimal_result(math.log(float(x), float(b)))


def fn_power(items: Items, exponent: Items) -> Items:
    x, e = _number(items), _arg(exponent)
    if x is None or e is None:
        return []
    if type(x) is int and type(e) is int and e >= 0:
        return [x**e]
    if x < 0 and Decimal(e) != Decimal(e).to_integral_value():
        return []
    return [Decimal(x) ** Decimal(e)]


def fn_round(items: Items, digits: Items | None = None) -> Items:
    x = _number(items)
    if x is None:
        return []
    places = _arg(digits) if digits else 0
    return [Decimal(x).quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP)]


def fn_sqrt(items: Items) -> Items:
    x = _number(items)
    return [] if x is None or x < 0 else [Decimal(x).sqrt()]


# ---- boundaries and precision ------------------------------------------------------------


def _decimal_places(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    return max(-exponent, 0) if isinstance(exponent, int) else 0


def _decimal_boundary(value: Decimal, high: bool, places: int | None) -> Decimal | None:
    known = _decimal_places(value)
    target = 8 if places is None else places
    if target < 0 or target > 28:
        return None
    half = Decimal(5).scaleb(-(known + 1))
    edge = value + half if high else value - half
    return edge.quantize(Decimal(1).scaleb(-target), ROUND_CEILING if high else ROUND_FLOOR)


def fn_boundary(items: Items, high: bool, precision: Items | None = None) -> Items:
    if not items:
        return []
    x = val(single(items)[0])
    places = _arg(precision) if precision else None
    if type(x) is int:
        x = Decimal(x)
    if type(x) is Decimal:
        found = _decimal_boundary(x, high, places)
        return [] if found is None else [found]
    if type(x) is Quantity:
        found = _decimal_boundary(x.value, high, places)
        return [] if found is None else [Quantity(found, x.unit)]
    if type(x) is Temporal:
        limit = {4: 1, 6: 2, 8: 3, 10: 4, 12: 5, 14: 6, 17: 7}
        if x.kind == "time":
            limit = {2: 4, 4: 5, 6: 6, 9: 7}
        if places is not None and places not in limit:
            return []
        return [x.boundary(high, limit[places] if places is not None else None)]
    return []


def fn_precision(items: Items) -> Items:
    if not items:
        return []
    x = val(single(items)[0])
    if type(x) is Decimal:
        return [_decimal_places(x)]
    if type(x) is int:
        return [0]
    if type(x) is Temporal:
        digits = (4, 6, 8, 10, 12, 14, 17) if x.kind != "time" else (0, 0, 0, 2, 4, 6, 9)
        return [digits[x.precision - 1]]
    return []


def fn_comparable(items: Items, other: Items) -> Items:
    x, y = _number(items), _arg(other)
    if type(x) is not Quantity or type(y) is not Quantity:
        return []
    return [x.convert(y) is not None]


FUNCTIONS: dict[str, tuple[str, int, int]] = {
    "indexOf": ("fn_index_of", 1, 1),
    "substring": ("fn_substring", 1, 2),
    "startsWith": ("fn_starts_with", 1, 1),
    "endsWith": ("fn_ends_with", 1, 1),
    "contains": ("fn_contains", 1, 1),
    "upper": ("fn_upper", 0, 0),
    "lower": ("fn_lower", 0, 0),
    "replace": ("fn_replace", 2, 2),
    "matches": ("fn_matches", 1, 1),
    "matchesFull": ("fn_matches_full", 1, 1),
    "replaceMatches": ("fn_replace_matches", 2, 2),
    "length": ("fn_length", 0, 0),
    "toChars": ("fn_to_chars", 0, 0),
    "split": ("fn_split", 1, 1),
    "join": ("fn_join", 0, 1),
    "trim": ("fn_trim", 0, 0),
    "encode": ("fn_encode", 1, 1),
    "decode": ("fn_decode", 1, 1),
    "escape": ("fn_escape", 1, 1),
    "unescape": ("fn_unescape", 1, 1),
    "abs": ("fn_abs", 0, 0),
    "ceiling": ("fn_ceiling", 0, 0),
    "floor": ("fn_floor", 0, 0),
    "truncate": ("fn_truncate", 0, 0),
    "exp": ("fn_exp", 0, 0),
    "ln": ("fn_ln", 0, 0),
    "log": ("fn_log", 1, 1),
    "power": ("fn_power", 1, 1),
    "round": ("fn_round", 0, 1),
    "sqrt": ("fn_sqrt", 0, 0),
    "precision": ("fn_precision", 0, 0),
    "comparable": ("fn_comparable", 1, 1),
}
