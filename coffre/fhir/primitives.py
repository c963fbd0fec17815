"""What FHIR R4 says of its primitive types that the JSON schema's patterns leave out.

``scripts/generate_fhir_modules.py`` adds these rules to the schema it compiles, and
``coffre.fhir.validation`` gives the compiled validator the check of calendar dates.
"""

from __future__ import annotations

from datetime import date

INTEGER_RANGES = {"integer": -(2**31), "positiveInt": 1, "unsignedInt": 0}
"""The smallest value of each integer type; all of them end at 2**31 - 1 (32 bits)."""
LARGEST_INTEGER = 2**31 - 1
LONGEST_STRING = 1024 * 1024
"""R4: "strings SHALL NOT exceed 1MB (1024*1024 characters) in size" (markdown is one)."""
STRING_TYPES = ("string", "markdown")

CALENDAR_DATE = "a date of the calendar"
"""The format the schema's date, dateTime and instant are given ("Dates SHALL be valid
dates"): a validator's message reads "Patient.birthDate must be a date of the calendar"."""
DATED_TYPES = ("date", "dateTime", "instant")
TZ_CODE = "http://hl7.org/fhir/StructureDefinition/tz-code"
"""R4's extension on a date, dateTime or instant naming the IANA time zone of its offset."""


def is_calendar_date(value: str) -> bool:
    """Whether a date, dateTime or instant that matches its pattern names a day that
    exists: the patterns let 2023-02-30 and 2023-04-31 through. A year, or a year and a
    month, always does."""
    if len(value) < 10:
        return True
    try:
        date.fromisoformat(value[:10])
    except ValueError:
        return False
    return True
