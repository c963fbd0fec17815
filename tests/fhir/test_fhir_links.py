"""The links of a narrative a transaction rewrites: its ``<a href>`` and ``<img src>``."""

from __future__ import annotations

import re

from deadline import within
from hypothesis import example, given
from hypothesis import strategies as st

from coffre.fhir.links import _link_tags, narrative_urns, rewrite_urns
from coffre.fhir.narrative import check_narrative
from coffre.fhir.references import links_in

URN = "urn:uuid:6a1e1b7e-0000-4000-8000-000000000001"
_OLD_LINK_TAG = re.compile(r"""<(a|img)(\s(?:[^>"']|"[^"]*"|'[^']*')*)>""")
"""The expression the tags were once found with, by ``finditer`` and ``sub``."""
_PIECES = ["<a ", "<img ", "<a", '"', "'", ">", "x", "\t"]


@given(st.lists(st.sampled_from(_PIECES), max_size=20).map("".join))
@example("<a x='<a b' '>")  # a tag start inside the quotes of one with no end has one
@example("""<a '<a ' <a '<a ' "<img "'>""")
def test_the_tags_are_those_finditer_found(div: str) -> None:
    """Read in one pass, any text gives the tags it gave before, where it gave them."""
    found = [(tag.span(), tag.groups()) for tag in _link_tags(div)]
    assert found == [(tag.span(), tag.groups()) for tag in _OLD_LINK_TAG.finditer(div)]


def test_tag_starts_with_no_end_are_read_once() -> None:
    """Each ``<a `` in a comment was read on to the quote that left it without an end:
    100,000 of them (300 KB of a valid narrative) took minutes."""
    div = (
        f'<div xmlns="http://www.w3.org/1999/xhtml"><a href="{URN}">x</a>'
        f'<!-- {"<a " * 100_000}" --></div>'
    )
    check_narrative(div)
    links = links_in({"resourceType": "Patient", "text": {"status": "generated", "div": div}})
    with within(10):
        urns = narrative_urns(links)
        rewrite_urns(links, {URN: "Patient/1"})
    assert urns == [URN]
    assert links.narratives[0]["div"] == div.replace(URN, "Patient/1")
