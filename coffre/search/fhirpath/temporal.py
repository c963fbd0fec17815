"""FHIRPath Date, DateTime and Time values: partial precision, time zones, comparison that
may be uncertain (an empty result), and calendar arithmetic."""

from __future__ import annotations

import calendar
import datetime as dt
import re
from decimal import ROUND_DOWN, Decimal

# Precisions: year, month, day, hour, minute, second (milliseconds compare as seconds).
YEAR, MONTH, DAY, HOUR, MINUTE, SECOND, MILLISECOND = range(1, 8)
_DATETIME = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?"
    r"(?:(T)(?:(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?)?)?"
    r"(Z|[+-]\d{2}:\d{2})?"
)
_TIME = re.compile(r"T?(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?")
# Calendar and UCUM time units a date can be moved by, as (field, amount per unit).
TIME_UNITS: dict[str, tuple[str, int]] = {
    "year": ("years", 1),
    "month": ("months", 1),
    "week": ("days", 7),
    "day": ("days", 1),
    "hour": ("seconds", 3600),
    "minute": ("seconds", 60),
    "second": ("seconds", 1),
    "millisecond": ("microseconds", 1000),
    "wk": ("days", 7),
    "d": ("days", 1),
    "h": ("seconds", 3600),
    "min": ("seconds", 60),
    "s": ("seconds", 1),
    "ms": ("microseconds", 1000),
}


def _offset(text: str | None) -> int | None:
    if text is None:
        return None
    if text == "Z":
        return 0
    sign = -1 if text[0] == "-" else 1
    return sign * (int(text[1:3]) * 60 + int(text[4:6]))


def _moment(fields: tuple[int, ...]) -> dt.datetime:
    year, month, day, hour, minute, second, micro = fields
    return dt.datetime(year, month, day, hour, minute, second, micro)


class Temporal:
    """A Date (``kind='date'``), DateTime or Time to some precision."""

    __slots__ = ("fields", "kind", "precision", "tz")

    def __init__(
        self, kind: str, fields: tuple[int, ...], precision: int, tz: int | None = None
    ) -> None:
        self.kind = kind
        self.fields = fields  # year, month, day, hour, minute, second, microsecond
        self.precision = precision
        self.tz = tz

    @classmethod
    def parse(cls, text: str, kind: str = "") -> Temporal | None:
        """A FHIRPath literal (without ``@``) or a FHIR date, dateTime, instant or time."""
        if kind == "time" or text.startswith("T"):
            return cls._parse_time(text)
        match = _DATETIME.fullmatch(text)
        if match is None:
            return None
        year, month, day, tee, hour, minute, second, fraction, zone = match.groups()
        values = [year, month, day, hour, minute, second]
        precision = sum(1 for value in values if value is not None)
        if fraction is not None:
            precision = MILLISECOND
        if zone and not tee:
            return None
        is_datetime = tee is not None or kind in ("dateTime", "instant", "datetime")
        fields = cls._fields(values, fraction)
        if fields is None or (kind == "date" and is_datetime):
            return None
        return cls("datetime" if is_datetime else "date", fields, precision, _offset(zone))

    @classmethod
    def _parse_time(cls, text: str) -> Temporal | None:
        match = _TIME.fullmatch(text)
        if match is None:
            return None
        hour, minute, second, fraction = match.groups()
        precision = HOUR + sum(1 for value in (minute, second) if value is not None)
        if fraction is not None:
            precision = MILLISECOND
        fields = cls._fields(["2000", "1", "1", hour, minute, second], fraction)
        return None if fields is None else cls("time", fields, precision)

    @staticmethod
    def _fields(values: list[str | None], fraction: str | None) -> tuple[int, ...] | None:
        numbers = [
            int(value) if value is not None else default
            for value, default in zip(values, (1, 1, 1, 0, 0, 0), strict=True)
        ]
        micro = int((fraction or "0")[:6].ljust(6, "0"))
        try:
            _moment((*numbers, micro))
        except ValueError:
            return None
        return (*numbers, micro)

    def moment(self) -> dt.datetime:
        value = _moment(self.fields)
        return value if self.tz is None else value - dt.timedelta(minutes=self.tz)

    def _key(self, precision: int) -> tuple[int, ...]:
        fields = self.fields
        if self.tz is not None and precision >= HOUR and self.kind == "datetime":
            moment = self.moment()
            fields = (*moment.timetuple()[:6], moment.microsecond)
        start = 3 if self.kind == "time" else 0
        return fields[start : min(precision, SECOND)] + (
            (fields[6],) if precision >= SECOND else ()
        )

    def compare(self, other: Temporal) -> int | None:
        """-1, 0 or 1; None where precision leaves it unknown."""
        if (self.kind == "time") != (other.kind == "time"):
            return None
        if (self.tz is None) != (other.tz is None) and min(self.precision, other.precision) >= HOUR:
            return None
        mine, theirs = min(self.precision, SECOND), min(other.precision, SECOND)
        common = min(mine, theirs)
        a, b = self._key(common), other._key(common)
        if a != b:
            return -1 if a < b else 1
        if mine != theirs:
            return None
        return 0

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Temporal) and self.compare(other) == 0 and self.kind == other.kind

    def __hash__(self) -> int:
        return hash((self.kind, self._key(self.precision)))

    def add(self, amount: Decimal, unit: str) -> Temporal:
        """This moment moved by a time quantity; raises ValueError for units that cannot move it."""
        name = unit.rstrip("s") if unit not in ("s", "ms") else unit
        if name not in TIME_UNITS:
            raise ValueError(f"cannot add {unit!r} to a date")
        field, per = TIME_UNITS[name]
        count = int(amount.to_integral_value(ROUND_DOWN))
        year, month, day, hour, minute, second, micro = self.fields
        if field in ("years", "months"):
            months = year * 12 + month - 1 + count * (12 if field == "years" else 1)
            year, month = divmod(months, 12)
            month += 1
            day = min(day, calendar.monthrange(year, month)[1])
            moved = dt.datetime(year, month, day, hour, minute, second, micro)
        else:
            if field == "seconds":
                delta = dt.timedelta(seconds=count * per)
            elif field == "microseconds":
                delta = dt.timedelta(microseconds=float(amount) * per)
            else:
                delta = dt.timedelta(days=count * per)
            moved = _moment(self.fields) + delta
        fields = (*moved.timetuple()[:6], moved.microsecond)
        return Temporal(self.kind, fields, self.precision, self.tz)

    def boundary(self, high: bool, precision: int | None = None) -> Temporal:
        """The earliest (or latest) value this one may stand for, at ``precision``."""
        target = precision or (MILLISECOND if self.kind != "date" else DAY)
        lows = (1, 1, 1, 0, 0, 0, 0)
        highs = (9999, 12, 0, 23, 59, 59, 999000)
        fields = list(self.fields)
        for index in range(self.precision, 7):
            fields[index] = highs[index] if high else lows[index]
        if high and self.precision < DAY:
            fields[2] = calendar.monthrange(fields[0], fields[1])[1]
        tz = self.tz
        if self.kind == "datetime" and tz is None and target > DAY:
            tz = -12 * 60 if high else 14 * 60
        return Temporal(self.kind, tuple(fields), target, tz)

    def __str__(self) -> str:
        year, month, day, hour, minute, second, micro = self.fields
        parts = [f"{year:04d}", f"-{month:02d}", f"-{day:02d}"]
        text = "".join(parts[: min(self.precision, 3)]) if self.kind != "time" else ""
        if self.precision > DAY or self.kind == "time":
            clock = [f"{hour:02d}", f":{minute:02d}", f":{second:02d}", f".{micro // 1000:03d}"]
            text += ("T" if self.kind == "datetime" else "") + "".join(clock[: self.precision - 3])
        if self.tz is not None and self.kind == "datetime":
            sign, minutes = ("+" if self.tz >= 0 else "-"), abs(self.tz)
            text += "Z" if self.tz == 0 else f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"
        return text

    def __repr__(self) -> str:
        return f"@{self!s}" if self.kind != "time" else f"@T{self}"


def now() -> Temporal:
    moment = dt.datetime.now(dt.UTC).astimezone()
    offset = moment.utcoffset()
    fields = (*moment.timetuple()[:6], moment.microsecond // 1000 * 1000)
    return Temporal(
        "datetime", fields, MILLISECOND, int(offset.total_seconds() // 60) if offset else 0
    )


def today() -> Temporal:
    day = dt.date.today()
    return Temporal("date", (day.year, day.month, day.day, 0, 0, 0, 0), DAY)


def time_of_day() -> Temporal:
    moment = dt.datetime.now()
    return Temporal("time", (2000, 1, 1, *moment.timetuple()[3:6], moment.microsecond), MILLISECOND)
