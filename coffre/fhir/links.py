"""The links besides References that a transaction rewrites when they name one of its
entries (http.html#trules): URNs in elements of a uri type, and in the narrative's
``<a href>`` and ``<img src>``, found by ``coffre.fhir.references.links_in``."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from functools import partial

from coffre.fhir.references import Links

_LINK_TAG = re.compile(r"""<(a|img)(\s(?:[^>"']++|"[^"]*+"|'[^']*+')*+)>""")
_TAG_START = re.compile(r"<(?:a|img)\s")
# A tag's reading outside quotes, through the quoted values that hold no tag start.
_READS_ON = re.compile(
    r"""(?:[^>"']++|"(?:[^"<]++|<(?!(?:a|img)\s))*+"|'(?:[^'<]++|<(?!(?:a|img)\s))*+')*+"""
)
_LINK_ATTRIBUTE = {
    "a": re.compile(r"""(\shref\s*=\s*)(?:"([^"]*)"|'([^']*)')"""),
    "img": re.compile(r"""(\ssrc\s*=\s*)(?:"([^"]*)"|'([^']*)')"""),
}


def rewrite_urns(links: Links, targets: Mapping[str, str]) -> None:
    """Replace, in place, each URN of ``links`` that is a key of ``targets`` with its
    target: a whole value of an element of a uri type, or of an ``<a href>`` or ``<img
    src>`` in a narrative (its XHTML otherwise left as written, quotes included)."""
    for holder, key in links.urns:
        target = targets.get(holder[key])
        if target is not None:
            holder[key] = target
    for narrative in links.narratives:
        narrative["div"] = _rewrite_tags(narrative["div"], targets)


def _rewrite_tags(div: str, targets: Mapping[str, str]) -> str:
    """``div`` with the links of its tags rewritten, as ``_LINK_TAG.sub`` would."""
    parts: list[str] = []
    done = 0
    for tag in _link_tags(div):
        parts += (div[done : tag.start()], _rewrite_tag(tag, targets))
        done = tag.end()
    parts.append(div[done:])
    return "".join(parts)


def _rewrite_tag(tag: re.Match[str], targets: Mapping[str, str]) -> str:
    attribute = _LINK_ATTRIBUTE[tag.group(1)]
    rewritten = attribute.sub(partial(_rewrite_attribute, targets=targets), tag.group(2))
    return f"<{tag.group(1)}{rewritten}>"


def _rewrite_attribute(attribute: re.Match[str], targets: Mapping[str, str]) -> str:
    target = targets.get(_value_of(attribute))
    if target is None:
        return attribute.group(0)
    quote = '"' if attribute.group(2) is not None else "'"
    return f"{attribute.group(1)}{quote}{target}{quote}"


def narrative_urns(links: Links) -> list[str]:
    """The values of the ``<a href>`` and ``<img src>`` of ``links``' narratives."""
    return [
        _value_of(attribute)
        for narrative in links.narratives
        for tag in _link_tags(narrative["div"])
        for attribute in _LINK_ATTRIBUTE[tag.group(1)].finditer(tag.group(2))
    ]


def _value_of(attribute: re.Match[str]) -> str:
    """An attribute's value, in double quotes or single ones."""
    double = attribute.group(2)
    return double if double is not None else attribute.group(3)


def _link_tags(div: str) -> Iterator[re.Match[str]]:
    """What ``_LINK_TAG.finditer`` finds in ``div``, each character read a few times at most.

    finditer tries again at every tag start after one it finds no end for, and each try
    may read on to the end of the div: 10,000 ``<a `` and a quote in a comment took a
    second, 30,000 of them eight. A quote takes every reading outside quotes into a
    value, and every reading in a value it closes out of it, alike: so a tag start that
    an endless reading is outside quotes at reads on as that one does, without an end,
    and is not read again. Any other is, and if it finds no end, its reading is in a
    state (outside quotes, in ``'...'``, in ``"..."``) none of the others is in, and
    stays so: there are three endless readings at most.
    """
    endless: list[_Endless] = []
    position = 0
    while (start := _TAG_START.search(div, position)) is not None:
        position = start.start() + 1
        if any(reading.outside(start.start()) for reading in endless):
            continue
        tag = _LINK_TAG.match(div, start.start())
        if tag is None:
            endless.append(_Endless(div, start.start()))
        else:
            yield tag
            position = tag.end()


class _Endless:
    """The reading of a tag start that ``_LINK_TAG`` finds no end for, followed on
    lazily: it is outside quotes at any tag start from ``start`` to ``stop``."""

    def __init__(self, div: str, start: int) -> None:
        self.div = div
        self.start, self.stop = start, _read_on(div, start)

    def outside(self, position: int) -> bool:
        """Whether the reading is outside quotes at ``position`` (asked in increasing order)."""
        while self.stop <= position:  # it stopped at a quote: read the value apart
            close = self.div.find(self.div[self.stop], self.stop + 1)
            if close < 0:  # a quote left open: nothing further is outside quotes
                self.start = self.stop = len(self.div)
            else:
                self.start, self.stop = close + 1, _read_on(self.div, close + 1)
        return self.start <= position


def _read_on(div: str, start: int) -> int:
    """Where reading ``div`` outside quotes from ``start`` stops: at a ``>``, at a quote
    left open or whose value holds a tag start, or at the end."""
    found = _READS_ON.match(div, start)
    assert found is not None  # it matches the empty string
    return found.end()
