"""A narrative's div is XHTML that holds only basic formatting and some text (R4 txt-1,
txt-2): what a viewer renders as HTML cannot run a script or submit a form."""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape, quoteattr

import pytest
from conftest import COMPOSITION
from hypothesis import given
from hypothesis import strategies as st

from coffre.exceptions import FhirError
from coffre.fhir.narrative import ATTRIBUTES, ELEMENT_ATTRIBUTES, ELEMENTS, NarrativeError
from coffre.fhir.narrative import check_narrative as check
from coffre.fhir.validation import validate

XMLNS = 'xmlns="http://www.w3.org/1999/xhtml"'


def div(inner: str, attributes: str = "") -> str:
    return f"<div {XMLNS}{attributes}>{inner}</div>"


def refusal(text: str) -> NarrativeError:
    with pytest.raises(NarrativeError) as raised:
        check(text)
    return raised.value


@pytest.mark.parametrize(
    "text",
    [
        div("Généré par Coffre"),
        div('<p>Tension <b>12/8</b></p><a href="https://hl7.org/fhir/">R4</a>'),
        div('<table class="grid"><tr><td colspan="2" style="color: red">x</td></tr></table>'),
        div('<img src="#photo" alt="photo"/>'),  # an image is content, text or not
        div("a &amp; b &lt; c &gt; d &quot; &apos; &#160;&#xE9;"),
        div("<!-- a comment --><![CDATA[1 < 2]]>", ' xml:lang="fr" lang="fr" id="n"'),
        "\n  " + div("<pre>a\n  b</pre>") + "\n",
        div('<a href="https://javascript.info/">a site about the language</a>'),
        div("<p xmlns='http://www.w3.org/1999/xhtml'>declared again</p>"),
        div('<p style="color: red; background: url(bg.png)">styled</p>'),
        div('<img src="data:image/png;base64,iVBORw0KGgo="/>'),  # an image's data: URL
    ],
)
def test_a_narrative_of_basic_formatting_passes(text: str) -> None:
    check(text)


@pytest.mark.parametrize(
    ("text", "told", "code"),
    [
        ("not xml", "is not well-formed XML: syntax error, line 1, column 1", "structure"),
        (div("<p>a</b>"), "is not well-formed XML: mismatched tag, line 1, column 49", "structure"),
        (div("a") + "<p/>", "junk after document element", "structure"),
        (
            "<div>no ns</div>",
            f"must be XHTML: a div element in the namespace {XMLNS[7:-1]}",
            "structure",
        ),
        (f"<p {XMLNS}>a</p>", "(it is a p element of the namespace", "structure"),
        (div("<script>alert(1)</script>"), "may not contain a script element (txt-1", "invariant"),
        (div("<iframe src='x'/>a"), "may not contain an iframe element (txt-1", "invariant"),
        (div("<form><input name='x'/></form>"), "may not contain a form element", "invariant"),
        (div("<object data='x'/>a"), "may not contain an object element", "invariant"),
        (div("<u>a</u>"), "u element (txt-1", "invariant"),  # deprecated
        (
            div("<svg xmlns='http://www.w3.org/2000/svg'/>a"),
            "svg element of the namespace http://www.w3.org/2000/svg",
            "invariant",
        ),
        (div("<p xmlns=''>a</p>"), "may not contain a p element of no namespace", "invariant"),
        (
            div('<p onclick="x()">a</p>'),
            "has a p element with an attribute onclick (event handlers are not allowed, txt-1)",
            "invariant",
        ),
        (div("a", ' onload="x()"'), "attribute onload (event handlers", "invariant"),
        (div('<p href="x">a</p>'), "attribute href, which HTML's basic formatting", "invariant"),
        (
            div("a", ' xmlns:x="urn:x" x:y="1"'),
            "an attribute y of the namespace urn:x",
            "invariant",
        ),
        (div('<a href="javascript:alert(1)">a</a>'), "whose href is a script URL", "invariant"),
        (div('<a href=" \tJaVa\nScRiPt:alert(1)">a</a>'), "script URL", "invariant"),
        (div('<a href="&#9;java&#10;script&#13;:x">a</a>'), "script URL", "invariant"),
        (div('<img src="vbscript:x"/>'), "whose src is a script URL", "invariant"),
        (div('<p style="width: expression(alert(1))">a</p>'), "style runs a script", "invariant"),
        (div("<p style=\"background: url('JavaScript:x')\">a</p>"), "style runs", "invariant"),
        (div('<span style="-moz-binding: url(x.xml#x)">a</span>'), "style runs", "invariant"),
        (div('<a href=" DATA:text/html,&lt;script&gt;">a</a>'), "href is a data: URL", "invariant"),
        (div(""), "has no text (txt-2", "invariant"),
        (div(" \n <p>\t</p> &#160;"), "has no text (txt-2", "invariant"),
        (f'<!DOCTYPE d [<!ENTITY x "y">]>{div("&x;")}', "may not hold a DOCTYPE", "structure"),
        (div("<?php echo 1 ?>a"), "may not hold a processing instruction", "structure"),
        ('<?xml version="1.0"?>' + div("a"), "may not start with an XML declaration", "structure"),
        (div("a&nbsp;b"), "uses the entity &nbsp; at line 1, column 44", "structure"),
        (div("\n<p>&copy;</p>"), "&copy; at line 2, column 4: XML defines only", "structure"),
        (
            div("\n<p>&copy;</p>"),
            "write a character reference instead (&#169; for &copy;)",
            "structure",
        ),
        (div("&zork;"), "(&#160; for &nbsp;)", "structure"),
        (div("\ud800"), "lone UTF-16 surrogate", "structure"),
    ],
)
def test_a_narrative_breaking_a_rule_is_refused_saying_which(
    text: str, told: str, code: str
) -> None:
    error = refusal(text)

    assert told in error.problem
    assert error.code == code


def test_entities_are_never_expanded() -> None:
    """A billion laughs: the DOCTYPE is refused as it starts, before its entities are read."""
    laughs = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10 if i else "lol"}">' for i in range(10))

    assert "DOCTYPE" in refusal(f"<!DOCTYPE d [{laughs}]>{div('&l9;')}").problem
    assert "the entity &l9;" in refusal(div("&l9;")).problem


def xml_chars(text: str) -> str:
    """The characters of ``text`` that XML 1.0 may hold."""
    return "".join(
        c
        for c in text
        if c in "\t\n\r" or "\x20" <= c <= "\ud7ff" or "\ue000" <= c <= "\ufffd" or c > "\uffff"
    )


@given(st.text())
def test_any_escaped_text_is_accepted(text: str) -> None:
    """Any text XML can hold, escaped, is a narrative (with a letter: txt-2)."""
    text = xml_chars(text)
    check(div(f"<p title={quoteattr(text)}>{escape(text)}x</p>"))


ELEMENT = st.sampled_from(sorted(ELEMENTS))


@given(ELEMENT, st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=12), st.text())
def test_any_event_attribute_is_refused(element: str, event: str, value: str) -> None:
    inner = f"<{element} on{event}={quoteattr(xml_chars(value))}>a</{element}>"

    assert f"attribute on{event} (event handlers" in refusal(div(inner)).problem


@given(ELEMENT, st.sampled_from(["script", "SCRIPT", "Script"]), st.text(max_size=20))
def test_a_script_element_anywhere_is_refused(parent: str, script: str, code: str) -> None:
    inner = f"<{parent}>a<{script}>{escape(xml_chars(code))}</{script}></{parent}>"

    assert f"may not contain a {script} element" in refusal(div(inner)).problem


def test_the_allow_lists_name_no_element_or_attribute_that_runs_anything() -> None:
    attributes = ATTRIBUTES | frozenset().union(*ELEMENT_ATTRIBUTES.values())

    assert not {"script", "style", "form", "input", "iframe", "object", "embed"} & ELEMENTS
    assert not [name for name in attributes if name.startswith("on")]
    assert set(ELEMENT_ATTRIBUTES) <= ELEMENTS


def invalid(resource: dict[str, Any]) -> FhirError:
    with pytest.raises(FhirError) as raised:
        validate(resource)
    return raised.value


def patient(narrative: str, **more: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "text": {"status": "generated", "div": narrative}, **more}


@pytest.mark.parametrize(
    ("resource", "path"),
    [
        (patient("<div>x</div>"), "Patient.text.div"),
        (
            {"resourceType": "Patient", "contained": [patient(div("<script/>x"), id="p")]},
            "Patient.text.div",
        ),
        (
            {
                **COMPOSITION,
                "section": [
                    {
                        "section": [
                            {"text": {"status": "generated", "div": div('<b onclick="x">a</b>')}}
                        ]
                    }
                ],
            },
            "Composition.section[0].section[0].text.div",
        ),
        (
            {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": patient(div(""))}],
            },
            "Patient.text.div",
        ),
    ],
)
def test_validation_refuses_every_narrative_a_resource_carries(
    resource: dict[str, Any], path: str
) -> None:
    error = invalid(resource)

    assert (error.status, error.expression) == (422, path)
    assert f"{path} " in error.diagnostics


def test_a_refusal_quotes_a_long_element_name_only_in_part() -> None:
    name = "x" * 5000

    diagnostics = invalid(patient(div(f"<{name}>a</{name}>"))).diagnostics

    assert len(diagnostics) < 1000
    assert "5,000 characters" in diagnostics
