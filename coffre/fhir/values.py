"""Parsing the plain values that reach Coffre in URLs and headers."""

from __future__ import annotations

# SQLite and PostgreSQL integers are signed 64-bit.
LARGEST = 2**63 - 1


def whole_number(text: str) -> int | None:
    """A non-negative integer written in ASCII digits that fits the storage, or None."""
    digits = text.lstrip("0")
    if not (text.isascii() and text.isdigit()) or len(digits) > len(str(LARGEST)):
        return None  # before int(), which refuses a text of over 4,300 digits
    number = int(text)
    return number if number <= LARGEST else None
