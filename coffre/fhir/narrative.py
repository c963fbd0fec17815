"""The check of a narrative's XHTML (``Narrative.div``): R4's txt-1 and txt-2.

Whoever renders a narrative (an EHR's viewer, a SMART app) shows it as HTML, so a div
that held a script, a form or an event handler would run in their pages. R4 says the div
is well-formed XHTML, a ``div`` in the XHTML namespace, that holds only the basic
formatting of HTML 4.0 (chapters 7 to 11 but section 9.4, and 15), links and images
(txt-1), and some text (txt-2). The lists of elements and attributes below are the ones
HL7's own validator allows for txt-1; the deprecated ones of chapter 15 (``u``, ``font``,
``center``...) are left out, as the xhtml datatype forbids them.

The div is read in one pass by expat, with no DOM. A DOCTYPE is refused as soon as it
starts, before its internal subset is read, so no entity is ever declared or expanded;
without one, expat knows only XML's five entities and refuses any other (``&nbsp;``).
"""

from __future__ import annotations

import re
from html.entities import name2codepoint
from typing import NoReturn
from xml.parsers import expat

NARRATIVE_TYPE = "Narrative"
"""The element type whose ``div`` this module checks."""
XHTML = "http://www.w3.org/1999/xhtml"
_ROOT = f"{XHTML} div"
_XML_LANG = "http://www.w3.org/XML/1998/namespace lang"  # xml:lang, as expat names it
_SEPARATOR = " "  # between a name's namespace and its local name (no name holds a space)

ELEMENTS = frozenset(
    {
        *("p", "br", "div", "h1", "h2", "h3", "h4", "h5", "h6", "a", "span", "hr", "img"),
        *("b", "em", "i", "strong", "small", "big", "tt", "dfn", "q", "var", "abbr"),
        *("acronym", "cite", "blockquote", "address", "bdo", "kbd", "sub", "sup", "code"),
        *("samp", "ul", "ol", "li", "dl", "dt", "dd", "pre", "map", "area"),
        *("table", "caption", "colgroup", "col", "thead", "tr", "tfoot", "tbody", "th", "td"),
    }
)
# Attributes any element may carry, then those of one element only.
ATTRIBUTES = frozenset(
    {
        *("title", "style", "class", "id", "lang", _XML_LANG, "dir", "accesskey", "tabindex"),
        *("span", "width", "align", "valign", "char", "charoff", "abbr", "axis", "headers"),
        *("scope", "rowspan", "colspan"),
    }
)
ELEMENT_ATTRIBUTES: dict[str, frozenset[str]] = {
    "a": frozenset(
        ("href", "name", "charset", "type", "hreflang", "rel", "rev", "shape", "coords")
    ),
    "img": frozenset(("src", "alt", "border", "longdesc", "height", "width", "usemap", "ismap")),
    "area": frozenset(("shape", "coords", "href", "nohref", "alt")),
    "table": frozenset(
        ("summary", "width", "border", "frame", "rules", "cellspacing", "cellpadding")
    ),
    "blockquote": frozenset(("cite",)),
    "q": frozenset(("cite",)),
    "map": frozenset(("name",)),
    "td": frozenset(("nowrap",)),
}
_NONE: frozenset[str] = frozenset()
_XHTML_ELEMENTS = {f"{XHTML}{_SEPARATOR}{element}": element for element in ELEMENTS}
_URLS = frozenset(("href", "src", "cite", "longdesc", "usemap"))
# A script's URL scheme, as a browser reads it: it ignores spaces and controls before a
# URL and tabs and line breaks in it, and an XML parser has made those spaces already.
_SCRIPT_URL = re.compile(
    r"\s*(?:{})\s*:".format("|".join(r"\s*".join(s) for s in ("javascript", "vbscript"))),
    re.IGNORECASE,
)
# What makes a style run code in some browser: IE's expression() and behavior, Firefox's
# -moz-binding, a script URL in url(); R4 allows style attributes, not scripts in them.
_SCRIPT_STYLE = re.compile(
    r"expression\s*\(|behavior\s*:|-moz-binding|(?:java|vb)script\s*:", re.IGNORECASE
)
_DATA_URL = re.compile(r"\s*data\s*:", re.IGNORECASE)
_LINKS = frozenset(("a", "area"))
_LINES = re.compile(r"\r\n|\r|\n")  # where expat starts a new line
_ENTITY = re.compile(r"&([^\s;&<]{1,32});")
_TXT_1 = "txt-1: a narrative holds only HTML's basic formatting elements, links and images"


class NarrativeError(ValueError):
    """What is wrong with a narrative's div, in words for whoever wrote it, and the
    OperationOutcome's issue code (``structure``: not XHTML at all; ``invariant``:
    txt-1 or txt-2)."""

    def __init__(self, problem: str, code: str = "invariant") -> None:
        super().__init__(problem)
        self.problem, self.code = problem, code


def check_narrative(div: str) -> None:
    """Raise NarrativeError unless ``div`` is a div element of XHTML that keeps to R4's
    rules for a narrative."""
    parser = expat.ParserCreate(namespace_separator=_SEPARATOR)
    parser.buffer_text = True
    reader = _Reader()
    parser.StartElementHandler = reader.start
    parser.CharacterDataHandler = reader.text
    parser.StartDoctypeDeclHandler = _doctype
    parser.ProcessingInstructionHandler = _instruction
    parser.XmlDeclHandler = _declaration
    try:
        parser.Parse(div, True)
    except expat.ExpatError as error:
        raise _not_well_formed(error, div) from None
    except UnicodeEncodeError:
        raise NarrativeError("is not text: it holds a lone UTF-16 surrogate", "structure") from None
    if not reader.content:
        raise NarrativeError("has no text (txt-2: a narrative has some non-whitespace content)")


class _Reader:
    """expat's handlers for the elements and the text of one div."""

    def __init__(self) -> None:
        self.root = True
        self.content = False  # some text that is not whitespace, or an image

    def start(self, name: str, attributes: dict[str, str]) -> None:
        element = _XHTML_ELEMENTS.get(name)
        if element is None or self.root:
            element = self._first_or_refused(name)
        if attributes:
            _check_attributes(element, attributes)
        if element == "img":
            self.content = True

    def _first_or_refused(self, name: str) -> str:
        """The root's name if it is XHTML's div; else what is wrong with the element."""
        namespace, _, element = name.rpartition(_SEPARATOR)
        if self.root:
            self.root = False
            if name == _ROOT:
                return element
            raise NarrativeError(
                f"must be XHTML: a div element in the namespace {XHTML}"
                f" (it is {_named(element, namespace)})",
                "structure",
            )
        if namespace != XHTML:
            raise NarrativeError(f"may not contain {_named(element, namespace)} ({_TXT_1})")
        raise NarrativeError(f"may not contain {_an(element)} element ({_TXT_1})")

    def text(self, data: str) -> None:
        if not self.content and not data.isspace():
            self.content = True


def _check_attributes(element: str, attributes: dict[str, str]) -> None:
    own = ELEMENT_ATTRIBUTES.get(element, _NONE)
    for attribute, value in attributes.items():
        if attribute not in ATTRIBUTES and attribute not in own:
            raise NarrativeError(_refused_attribute(element, attribute))
        if attribute in _URLS and _SCRIPT_URL.match(value):
            raise NarrativeError(
                f"has {_an(element)} element whose {attribute} is a script URL"
                " (javascript: or vbscript:, txt-1)"
            )
        if attribute == "style" and _SCRIPT_STYLE.search(value):
            raise NarrativeError(
                f"has {_an(element)} element whose style runs a script (expression(),"
                " behavior, -moz-binding or a script URL, txt-1)"
            )
        if attribute == "href" and element in _LINKS and _DATA_URL.match(value):
            raise NarrativeError(
                f"has {_an(element)} element whose href is a data: URL, a document of its"
                " own that may hold a script (link to a stored resource instead, txt-1)"
            )


def _named(element: str, namespace: str) -> str:
    where = f"of the namespace {namespace}" if namespace else "of no namespace"
    return f"{_an(element)} element {where}"


def _an(element: str) -> str:
    """``a p``, ``an img``: the element's name with its article."""
    return f"{'an' if element[:1] in ('a', 'e', 'i', 'o', 'u') else 'a'} {element}"


def _refused_attribute(element: str, attribute: str) -> str:
    namespace, _, local = attribute.rpartition(_SEPARATOR)
    found = f"has {_an(element)} element with an attribute {local}"
    if namespace:
        return f"{found} of the namespace {namespace} ({_TXT_1})"
    if local.lower().startswith("on"):
        return f"{found} (event handlers are not allowed, txt-1)"
    return f"{found}, which HTML's basic formatting does not give it ({_TXT_1})"


def _doctype(*_: object) -> NoReturn:
    raise NarrativeError("may not hold a DOCTYPE (a narrative is a div element alone)", "structure")


def _instruction(*_: object) -> NoReturn:
    raise NarrativeError("may not hold a processing instruction", "structure")


def _declaration(*_: object) -> NoReturn:
    raise NarrativeError(
        "may not start with an XML declaration (a narrative is a div element alone)", "structure"
    )


def _not_well_formed(error: expat.ExpatError, div: str) -> NarrativeError:
    where = f"line {error.lineno}, column {error.offset + 1}"
    if error.code == expat.errors.codes[expat.errors.XML_ERROR_UNDEFINED_ENTITY]:
        lines = _LINES.split(div, error.lineno)
        found = (
            _ENTITY.match(lines[error.lineno - 1], error.offset)
            if len(lines) >= error.lineno
            else None
        )
        name = found[1] if found else ""
        code = name2codepoint.get(name)
        example = f"&#{code}; for &{name};" if code else "&#160; for &nbsp;"
        entity = f"the entity &{name};" if found else "an entity"
        return NarrativeError(
            f"uses {entity} at {where}: XML defines only amp, lt, gt, quot and apos;"
            f" write a character reference instead ({example})",
            "structure",
        )
    return NarrativeError(
        f"is not well-formed XML: {expat.ErrorString(error.code)}, {where}", "structure"
    )
