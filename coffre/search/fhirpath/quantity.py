"""FHIRPath quantities with the basics of UCUM: common atoms and prefixes, products and
quotients of units, exponents, and conversion between commensurable units."""

from __future__ import annotations

import re
from decimal import Decimal
from functools import lru_cache

Dimensions = tuple[tuple[str, int], ...]

# Atom -> (factor to the base units, base units with exponents).
_ATOMS: dict[str, tuple[Decimal, dict[str, int]]] = {
    "1": (Decimal(1), {}),
    "m": (Decimal(1), {"m": 1}),
    "g": (Decimal(1), {"g": 1}),
    "s": (Decimal(1), {"s": 1}),
    "K": (Decimal(1), {"K": 1}),
    "mol": (Decimal("6.0221367e23"), {}),
    "A": (Decimal(1), {"A": 1}),
    "cd": (Decimal(1), {"cd": 1}),
    "rad": (Decimal(1), {"rad": 1}),
    "L": (Decimal("0.001"), {"m": 3}),
    "l": (Decimal("0.001"), {"m": 3}),
    "min": (Decimal(60), {"s": 1}),
    "h": (Decimal(3600), {"s": 1}),
    "d": (Decimal(86400), {"s": 1}),
    "wk": (Decimal(604800), {"s": 1}),
    "mo": (Decimal("2629800"), {"s": 1}),
    "a": (Decimal("31557600"), {"s": 1}),
    "Hz": (Decimal(1), {"s": -1}),
    "N": (Decimal(1000), {"g": 1, "m": 1, "s": -2}),
    "Pa": (Decimal(1000), {"g": 1, "m": -1, "s": -2}),
    "J": (Decimal(1000), {"g": 1, "m": 2, "s": -2}),
    "W": (Decimal(1000), {"g": 1, "m": 2, "s": -3}),
    "bar": (Decimal(100000000), {"g": 1, "m": -1, "s": -2}),
    "mm[Hg]": (Decimal("133322.387415"), {"g": 1, "m": -1, "s": -2}),
    "cal": (Decimal("4184"), {"g": 1, "m": 2, "s": -2}),
    "%": (Decimal("0.01"), {}),
    "[lb_av]": (Decimal("453.59237"), {"g": 1}),
    "[oz_av]": (Decimal("28.349523125"), {"g": 1}),
    "[in_i]": (Decimal("0.0254"), {"m": 1}),
    "[ft_i]": (Decimal("0.3048"), {"m": 1}),
    "[mi_i]": (Decimal("1609.344"), {"m": 1}),
    "eq": (Decimal("6.0221367e23"), {}),
    "U": (Decimal(1), {"U": 1}),
    "[iU]": (Decimal(1), {"[iU]": 1}),
    "[IU]": (Decimal(1), {"[iU]": 1}),
    "Cel": (Decimal(1), {"Cel": 1}),
    "[degF]": (Decimal(1), {"[degF]": 1}),
    "[pH]": (Decimal(1), {"[pH]": 1}),
}
_PREFIXES: dict[str, Decimal] = {
    "Y": Decimal("1e24"),
    "Z": Decimal("1e21"),
    "E": Decimal("1e18"),
    "P": Decimal("1e15"),
    "T": Decimal("1e12"),
    "G": Decimal("1e9"),
    "M": Decimal("1e6"),
    "k": Decimal("1e3"),
    "h": Decimal("1e2"),
    "da": Decimal("1e1"),
    "d": Decimal("1e-1"),
    "c": Decimal("1e-2"),
    "m": Decimal("1e-3"),
    "u": Decimal("1e-6"),
    "n": Decimal("1e-9"),
    "p": Decimal("1e-12"),
    "f": Decimal("1e-15"),
}
# FHIRPath calendar durations and the UCUM unit each compares as.
CALENDAR: dict[str, str] = {
    "year": "a",
    "month": "mo",
    "week": "wk",
    "day": "d",
    "hour": "h",
    "minute": "min",
    "second": "s",
    "millisecond": "ms",
}


def _inexact(unit: str) -> bool:
    """Calendar years and months have no fixed length: they equal only themselves."""
    return unit.rstrip("s") in ("year", "month")


def calendar_ucum(unit: str) -> str:
    """The UCUM code of a calendar duration word (``days`` -> ``d``); other units unchanged."""
    return CALENDAR.get(unit[:-1] if unit.endswith("s") and unit[:-1] in CALENDAR else unit, unit)


def _atom(text: str) -> tuple[Decimal, dict[str, int]] | None:
    if text.startswith("{"):
        return Decimal(1), {}
    match = re.fullmatch(r"10[*^](-?\d+)", text)
    if match:
        return Decimal(10) ** int(match.group(1)), {}
    if text.isdigit():
        return Decimal(text), {}
    if text in _ATOMS:
        return _ATOMS[text]
    for prefix, factor in _PREFIXES.items():
        if text.startswith(prefix) and text[len(prefix) :] in _ATOMS:
            base, dims = _ATOMS[text[len(prefix) :]]
            return factor * base, dims
    return None


@lru_cache(maxsize=512)
def unit_dimensions(unit: str) -> tuple[Decimal, Dimensions] | None:
    """A UCUM unit as (factor, base dimensions); None for units this table does not know."""
    unit = calendar_ucum(unit)
    factor, dims = Decimal(1), dict[str, int]()
    text, sign = unit, 1
    if text.startswith("/"):
        text = "1" + text
    for index, (operator, term) in enumerate(re.findall(r"(^|[./])([^./]+)", text)):
        if operator == "/" and index:
            sign = -1
        elif operator == ".":
            sign = 1
        match = re.fullmatch(r"(.+?)(-?\d+)?", term)
        if match is None:
            return None
        name, exponent_text = match.groups()
        exponent = int(exponent_text) if exponent_text and not name.startswith("10") else 1
        if name in ("10*", "10^"):
            name, exponent = f"10*{exponent_text}", 1
        atom = _atom(name if not (exponent_text and name.startswith("10")) else term)
        if atom is None:
            return None
        atom_factor, atom_dims = atom
        factor *= atom_factor ** (exponent * sign)
        for base, power in atom_dims.items():
            dims[base] = dims.get(base, 0) + power * exponent * sign
    return factor, tuple(sorted((k, v) for k, v in dims.items() if v))


class Quantity:
    """A value with a unit (a UCUM code, or a calendar duration word)."""

    __slots__ = ("unit", "value")

    def __init__(self, value: Decimal, unit: str = "1") -> None:
        self.value = value
        self.unit = unit

    def canonical(self) -> tuple[Decimal, Dimensions] | None:
        known = unit_dimensions(self.unit)
        if known is None:
            return None
        factor, dims = known
        return self.value * factor, dims

    def convert(self, other: Quantity) -> tuple[Decimal, Decimal] | None:
        """Both values in one unit, or None if the units are not commensurable."""
        if _inexact(self.unit) or _inexact(other.unit):
            same = self.unit.rstrip("s") == other.unit.rstrip("s")
            return (self.value, other.value) if same else None
        if calendar_ucum(self.unit) == calendar_ucum(other.unit):
            return self.value, other.value
        mine, theirs = self.canonical(), other.canonical()
        if mine is None or theirs is None or mine[1] != theirs[1]:
            return None
        return mine[0], theirs[0]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Quantity):
            return False
        pair = self.convert(other)
        return pair is not None and pair[0] == pair[1]

    def __hash__(self) -> int:
        known = self.canonical()
        return hash(known[1] if known else self.unit)

    def __str__(self) -> str:
        unit = (
            self.unit
            if self.unit in CALENDAR or self.unit.rstrip("s") in CALENDAR
            else f"'{self.unit}'"
        )
        return f"{self.value} {unit}"

    def __repr__(self) -> str:
        return f"Quantity({self.value!s}, {self.unit!r})"


def multiply(left: Quantity, right: Quantity, divide: bool = False) -> Quantity | None:
    """A product or quotient of two quantities, in base units."""
    a, b = left.canonical(), right.canonical()
    if a is None or b is None:
        return None
    if divide and b[0] == 0:
        return None
    value = a[0] / b[0] if divide else a[0] * b[0]
    dims = dict(a[1])
    for base, power in b[1]:
        dims[base] = dims.get(base, 0) + (-power if divide else power)
    terms = [
        f"{base}{power if power != 1 else ''}" for base, power in sorted(dims.items()) if power
    ]
    return Quantity(value, ".".join(terms) or "1")
