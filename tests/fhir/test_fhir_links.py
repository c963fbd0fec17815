"""The links of a narrative a transaction rewrites: its ``<a href>`` and ``<img src>``."""

from __future__ import annotations

from deadline import within
from hypothesis import example, given
from hypothesis import strategies as st

from coffre.fhir.links import _LINK_TAG, narrative_urns, rewrite_urns
from coffre.fhir.narrative import check_narrative
from coffre.fhir.references import links_in

URN = "urn:uuid:6a1e1b7e-0000-4000-8000-000000000001"
_COMMENTED = ["<a ", "<img ", '"', "'", "x", " "]
"""What a comment may hold here: tag starts and quotes, no ">" that would end a tag."""


@st.composite
def _narratives(draw: st.DrawFn) -> tuple[str, list[str]]:
    """A valid div of links, images, comments and text, and the tags of its links."""
    parts, tags = [], []
    for kind in draw(st.lists(st.sampled_from(["a", "img", "comment", "text"]), max_size=8)):
        quote = draw(st.sampled_from(['"', "'"]))
        value = draw(st.sampled_from([URN, "https://x.example/?a=1&amp;b=2", "#top"]))
        if kind == "a":
            tags.append(f"<a href={quote}{value}{quote}>")
            parts.append(f"{tags[-1]}lien</a>")
        elif kind == "img":
            tags.append(f"<img src={quote}{value}{quote} alt='x'/>")
            parts.append(tags[-1])
        elif kind == "comment":
            # ended by a "<": the comment's own "-->" would end a tag its text starts
            parts.append(f"<!--{''.join(draw(st.lists(st.sampled_from(_COMMENTED))))}<-->")
        else:
            parts.append("du texte &lt;a ")
    return f'<div xmlns="http://www.w3.org/1999/xhtml">Note {"".join(parts)}</div>', tags


@given(_narratives())
@example(
    (
        "<div xmlns='http://www.w3.org/1999/xhtml'><!--<a '--><a href='#'>x</a></div>",
        ["<a href='#'>"],
    )
)
def test_the_tags_found_are_the_links_of_the_narrative(narrative: tuple[str, list[str]]) -> None:
    """Read without crossing a "<", as no attribute value holds one, the tags are the
    links and images, and what a comment holds is none."""
    div, tags = narrative
    check_narrative(div)
    assert [tag.group(0) for tag in _LINK_TAG.finditer(div)] == tags


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
