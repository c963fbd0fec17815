"""FHIR JSON in and out: orjson, with a canonical form for what gets sealed.

FHIR gives a decimal's written precision a meaning (``0.010`` is not ``0.01``, a lab's
``7.20`` not ``7.2``), which a float loses. A number whose float would be written back
otherwise than it came is read as a ``PreciseDecimal``: a float for every computation and
comparison, which remembers its text and is written back as it.
"""

from __future__ import annotations

import json as _stdlib_json
import re
from decimal import Decimal
from typing import Any

import orjson

from coffre.exceptions import FhirError

MAX_DEPTH = 128
"""How deeply a body from a client may nest arrays and objects: a stored resource must
still be written inside the Bundles that answers put it in."""
_WRITTEN_DEPTH = 254  # the deepest orjson writes


class PreciseDecimal(float):
    """A JSON number as written (``1.50``, ``1e2``): its float's value, and its text."""

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> PreciseDecimal:
        number = super().__new__(cls, text)
        number.text = text
        return number

    def __reduce__(self) -> tuple[type[PreciseDecimal], tuple[str]]:
        return PreciseDecimal, (self.text,)


def exact(number: float) -> Decimal:
    """The decimal a JSON number read as a float stands for: as written for a
    PreciseDecimal (``1.50``, ``18446744073709551616``), else the float's shortest repr."""
    return Decimal(number.text if type(number) is PreciseDecimal else repr(number))


# A member's number, or array of numbers (R4 has three, of decimals): where a decimal can
# be. Looked for from its key's closing quote, which the regex module finds fast.
_NUMBERS = re.compile(rb'"\s*:\s*(-?\d[\d.eE+-]*|\[\s*-?\d[^\]]*)')


def _number(text: str) -> float:
    number = float(text)
    return number if repr(number) == text else PreciseDecimal(text)


# The integers orjson reads as ints (and writes): past them it reads a float.
_INTEGERS = range(-(2**63), 2**64)


def _integer(text: str) -> int | float:
    number = int(text)
    return number if number in _INTEGERS else PreciseDecimal(text)


def _rewritten(body: bytes) -> bool:
    """Whether a float would write some number of ``body`` otherwise than it is written
    (1.50, 1e2, 0.1000000000000000055, an integer past 64 bits). A string that looks like
    such a member costs the slower parse, no more."""
    for found in _NUMBERS.findall(body):
        for token in found.removeprefix(b"[").split(b","):
            text = token.strip().decode()
            decimal = "." in text or "e" in text or "E" in text
            if not decimal and len(text) < 19:  # an int of 64 bits
                continue
            try:
                if type((_number if decimal else _integer)(text)) is PreciseDecimal:
                    return True
            except ValueError:  # not a number after all: the slower parse decides
                return True
    return False


def loads(
    body: bytes | str,
    where: str = "the body",
    max_depth: int | None = None,
    *,
    precise: bool = True,
) -> Any:
    """The JSON value of ``body``; ``precise``: with its decimals as written (a value only
    looked at, never written out again, can go without: it costs a scan of the bytes)."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise FhirError(
            400, "structure", f"{where} is not valid JSON: {_why(body, error)}"
        ) from None
    if max_depth is not None and not nests_within(value, max_depth):
        raise FhirError(
            400, "structure", f"{where} nests arrays and objects more than {max_depth} deep"
        )
    if not precise or not _rewritten(body.encode() if isinstance(body, str) else body):
        return value
    try:
        # orjson found it valid JSON
        return _stdlib_json.loads(body, parse_float=_number, parse_int=_integer)
    except RecursionError:
        raise FhirError(400, "structure", f"{where} nests arrays and objects too deep") from None


def _why(body: bytes | str, error: orjson.JSONDecodeError) -> str:
    """orjson's reason, or where the bytes stop being UTF-8 (orjson then points at the
    document's first character); its line only in a text of several (an NDJSON file's
    line is named by the caller, as ``where``)."""
    if isinstance(body, bytes):
        try:
            body.decode()
        except UnicodeDecodeError as bad:
            line = body.count(b"\n", 0, bad.start) + 1
            column = bad.start - (body.rfind(b"\n", 0, bad.start) + 1) + 1
            several = b"\n" in body.rstrip(b"\r\n")  # an NDJSON line keeps its own end
            at = f"line {line}, column {column}" if several else f"column {column}"
            return (
                f"byte {bad.start} ({at}) is not UTF-8"
                " (FHIR JSON is UTF-8: a Latin-1 or Windows-1252 text must be converted)"
            )
    return str(error)


def _written(value: Any) -> orjson.Fragment:
    if isinstance(value, PreciseDecimal):
        return orjson.Fragment(value.text)
    raise TypeError(f"{type(value).__name__} is not JSON")


def nests_within(value: Any, depth: int) -> bool:
    """Whether ``value`` nests at most ``depth`` deep: orjson writes it inside
    ``_WRITTEN_DEPTH - depth`` arrays only then (in C: a tenth of a walk in Python)."""
    for _ in range(_WRITTEN_DEPTH - depth):
        value = [value]
    try:
        orjson.dumps(value, default=_written)
    except orjson.JSONEncodeError:
        return False
    return True


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_written)


def embedded(document: bytes) -> orjson.Fragment:
    """JSON already serialised, which ``dumps`` writes as is inside another document."""
    return orjson.Fragment(document)


def canonical(value: Any) -> bytes:
    """Keys sorted, no spaces: equal resources give equal bytes."""
    return orjson.dumps(value, default=_written, option=orjson.OPT_SORT_KEYS)
