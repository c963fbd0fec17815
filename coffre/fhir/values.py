"""Parsing the plain values that reach Coffre in URLs and headers."""

from __future__ import annotations

from coffre.exceptions import FhirError

# SQLite and PostgreSQL integers are signed 64-bit.
LARGEST = 2**63 - 1


def whole_number(text: str) -> int | None:
    """A non-negative integer written in ASCII digits that fits the storage, or None."""
    digits = text.lstrip("0")
    if not (text.isascii() and text.isdigit()) or len(digits) > len(str(LARGEST)):
        return None  # before int(), which refuses a text of over 4,300 digits
    number = int(text)
    return number if number <= LARGEST else None


def given_whole_number(name: str, text: str) -> int:
    """The value ``text`` of parameter ``name`` as a whole number, or a 400 saying why it
    is not one: not digits, or more than the storage's integers hold."""
    number = whole_number(text)
    if number is None:
        digits = text.isascii() and text.isdigit()
        why = (
            f"is a whole number larger than {LARGEST:,}, the largest Coffre takes"
            if digits
            else "is not a whole number"
        )
        raise FhirError(400, "invalid", f"{name}={text} {why}")
    return number
