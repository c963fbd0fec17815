"""A centre's local day: the time zone a Schedule is kept in, the bounds of one of its
days, daylight-saving changes included, and the time its clocks show (docs/booking.md,
"In the portal")."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from coffre.booking.find import EPOCH, midnight
from coffre.fhir.primitives import TZ_CODE


def time_zone(schedule: dict[str, Any]) -> tzinfo:
    """The zone of a Schedule's planning horizon: the IANA zone its start names (the
    ``tz-code`` extension), else the UTC offset the start is written with; UTC without
    either. Only a named zone knows when summer time begins and ends."""
    horizon = schedule.get("planningHorizon")
    if not isinstance(horizon, dict):
        return UTC
    return _named_zone(horizon.get("_start")) or _written_offset(horizon.get("start")) or UTC


def _named_zone(element: Any) -> tzinfo | None:
    extensions = element.get("extension", []) if isinstance(element, dict) else []
    codes = [
        e.get("valueCode") for e in extensions if isinstance(e, dict) and e.get("url") == TZ_CODE
    ]
    if not codes or not isinstance(codes[0], str):
        return None
    try:
        return ZoneInfo(codes[0])
    except (ZoneInfoNotFoundError, ValueError, OSError):  # not a zone this machine knows
        return None


def _written_offset(start: Any) -> tzinfo | None:
    try:
        return datetime.fromisoformat(start).tzinfo if isinstance(start, str) else None
    except ValueError:
        return None


def day_bounds(schedule: dict[str, Any], day: date) -> tuple[int, int]:
    """``[start, end)`` of the Schedule's local ``day``, in microseconds since the epoch: 23
    or 25 hours long on the day summer time begins or ends in its zone."""
    zone = time_zone(schedule)
    return midnight(day, zone), midnight(day + timedelta(days=1), zone)


def wall_clock(moment_us: int, zone: tzinfo, layout: str = "%H:%M") -> str:
    """``HH:MM`` (or ``layout``) on the clocks of ``zone`` at ``moment_us`` microseconds
    since the epoch."""
    return (EPOCH + timedelta(microseconds=moment_us)).astimezone(zone).strftime(layout)
