"""The links besides References that a transaction rewrites when they name one of its
entries (http.html#trules): URNs in elements of a uri type, and in the narrative's
``<a href>`` and ``<img src>``, found by ``coffre.fhir.references.links_in``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import partial

from coffre.fhir.references import Links

# XML allows no "<" in an attribute's value, so a tag is read to its ">" without crossing
# one: each try stops at the next "<", and the div is read about once. (Allowed to cross
# them, tries from each "<a " in a comment ran on to a quote left open: 100,000 of them,
# 300 KB of a valid narrative, took over seven minutes.)
_LINK_TAG = re.compile(r"""<(a|img)(\s(?:[^<>"']++|"[^<"]*+"|'[^<']*+')*+)>""")
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
        narrative["div"] = _LINK_TAG.sub(partial(_rewrite_tag, targets=targets), narrative["div"])


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
        for tag in _LINK_TAG.finditer(narrative["div"])
        for attribute in _LINK_ATTRIBUTE[tag.group(1)].finditer(tag.group(2))
    ]


def _value_of(attribute: re.Match[str]) -> str:
    """An attribute's value, in double quotes or single ones."""
    double = attribute.group(2)
    return double if double is not None else attribute.group(3)
