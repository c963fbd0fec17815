"""Media types and the ``Accept`` header (RFC 9110 §8.3.1 and §12.5.1), parsed into values.

Type, subtype and parameter names are case-insensitive, so they are kept in lower case;
parameter values keep their case, without the quotes of a quoted string. A ``q`` parameter
is a range's weight, not one of its parameters. Parsing is lenient where clients are known
to stray (spaces around ``=``, a weight written ``.2``), and an element of ``Accept`` that
is not a media range at all (``*``, ``json``) is left out, as if the client had not sent it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

# Possessive quantifiers throughout: no run of spaces or parameters can be matched in two
# ways, so a header the patterns fail on fails at once (linear time, not exponential).
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]++"
_QUOTED = r'"(?:[^"\\]|\\.)*+"'
_PARAMETERS = re.compile(rf";\s*+(?:({_TOKEN})\s*+=\s*+({_TOKEN}|{_QUOTED})\s*+)?")
_ANY_PARAMETERS = rf"(?:;\s*+(?:{_TOKEN}\s*+=\s*+(?:{_TOKEN}|{_QUOTED})\s*+)?)*+"
_MEDIA_TYPE = re.compile(rf"\s*+({_TOKEN})/({_TOKEN})\s*+({_ANY_PARAMETERS})")
# An element of a header; or, where none starts, a quote left open and what it holds.
_ELEMENT_OR_OPEN = re.compile(rf'((?:[^,"]++|{_QUOTED})++)|"(?:[^"\\]|\\.)*+')
_RUN = re.compile(r'[^,"]++')
_WEIGHT = re.compile(r"[01](?:\.[0-9]*)?|\.[0-9]+")


@dataclass(frozen=True)
class MediaType:
    """``type/subtype;name=value...``; a media range has ``*`` for either or both."""

    type: str
    subtype: str
    parameters: tuple[tuple[str, str], ...] = ()

    def parameter(self, name: str) -> str | None:
        return next((value for n, value in self.parameters if n == name), None)


@dataclass(frozen=True)
class MediaRange:
    """One element of ``Accept``: a media type or range, and its weight (0 refuses it)."""

    media: MediaType
    quality: float = 1.0


@dataclass(frozen=True, order=True)
class Preference:
    """What the most specific of the ranges that name a media type says of it (RFC 9110
    §12.5.1: ``type/subtype`` with parameters, then without, then ``type/*``, then
    ``*/*``); ranges as specific as each other count as the one of greatest weight."""

    level: int  # 2: the type itself, 1: type/*, 0: */*
    parameters: int
    quality: float

    @property
    def exact(self) -> bool:
        return self.level == 2


def preference(
    ranges: Iterable[MediaRange], media: MediaType, applies: Callable[[MediaType], bool]
) -> Preference | None:
    """What ``ranges`` say of ``media``, counting only those ``applies`` to (whose
    parameters ask for what is sent); None if none names it."""
    named = (
        Preference(level, len(r.media.parameters), r.quality)
        for r in ranges
        if (level := _level(r.media, media)) is not None and applies(r.media)
    )
    return max(named, default=None)


def _level(media_range: MediaType, media: MediaType) -> int | None:
    if (media_range.type, media_range.subtype) == (media.type, media.subtype):
        return 2
    if media_range.subtype != "*" or media_range.type not in ("*", media.type):
        return None
    return 1 if media_range.type == media.type else 0


def parse_media_type(text: str) -> MediaType | None:
    """A ``Content-Type`` (or one of its values), or None if it is not one."""
    found = _MEDIA_TYPE.fullmatch(text)
    if found is None or (found[1] == "*" and found[2] != "*"):
        return None
    parameters = tuple(
        (name.lower(), _unquoted(value))
        for name, value in _PARAMETERS.findall(found[3])
        if name  # RFC 9110 allows an empty parameter (``;;``)
    )
    return MediaType(found[1].lower(), found[2].lower(), parameters)


def parse_accept(header: str) -> list[MediaRange]:
    """The media ranges of an ``Accept`` header, in its order."""
    return list(_ranges(header))


def _ranges(header: str) -> Iterator[MediaRange]:
    for element in _elements(header):
        media = parse_media_type(element)
        if media is None:
            continue
        quality = media.parameter("q")
        weight = 1.0 if quality is None else _weight(quality)
        if weight is not None:
            kept = tuple((n, v) for n, v in media.parameters if n != "q")
            yield MediaRange(MediaType(media.type, media.subtype, kept), weight)


def _elements(header: str) -> Iterator[str]:
    """The elements of a header (what lies between commas, quoted strings whole), in one
    pass. A quote left open, never closed, is read once to where it stops: the quotes
    it holds are escaped, so none of them opens a string either, and up to there an
    element is a run between commas and quotes. Trying each of them in turn read on to
    that point each time: ``"\\"`` repeated in 100 KB of ``Accept`` took a minute."""
    position = 0
    while position < len(header):
        for found in _ELEMENT_OR_OPEN.finditer(header, position):
            if found[1] is None:
                break
            yield found[1]
        else:
            return
        position = found.end()
        for run in _RUN.finditer(header, found.start() + 1, position):
            if run.end() == position:  # it may go on past where the quote's reading stopped
                position = run.start()
                break
            yield run[0]


def _weight(text: str) -> float | None:
    """A qvalue, 0 to 1 (``0.5``; ``.5`` too), or None."""
    if _WEIGHT.fullmatch(text) is None:
        return None
    weight = float(text)
    return weight if weight <= 1 else None


def _unquoted(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value
