"""References inside resources: finding them, parsing them, rewriting them; and, in the
same walk, the URNs in elements of a uri type and in the narrative, other links a
transaction rewrites (``coffre.fhir.links``)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from coffre.exceptions import FhirError, bounded
from coffre.fhir._definitions_r4 import RESOURCE_TYPES
from coffre.fhir._elements_r4 import ELEMENT_RULES, URI_ELEMENTS
from coffre.fhir.narrative import NARRATIVE_TYPE

REFERENCE_TYPE = "FHIRReference"
"""Reference's name in the element definitions' table (fhirclient's model's)."""
ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_RELATIVE = re.compile(
    r"^(?:.*/)?([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/([A-Za-z0-9\-.]{1,64}))?$"
)


@dataclass(slots=True)
class Links:
    """What a walk of a resource found: its References; and its URNs in elements of a uri
    type (uri, url, canonical, oid, uuid), each as the object or list that holds it and
    its key or index there, and the Narratives whose ``div`` holds one."""

    references: list[dict[str, Any]] = field(default_factory=list)
    urns: list[tuple[Any, Any]] = field(default_factory=list)
    narratives: list[dict[str, Any]] = field(default_factory=list)

    def urn_values(self) -> list[str]:
        """The values of the URNs in elements of a uri type."""
        return [holder[key] for holder, key in self.urns]


def references_in(resource: Any) -> list[dict[str, Any]]:
    """Every Reference in a resource, nested ones (contained resources, a Bundle's entries)
    too, found by the types R4's element definitions give its elements: three elements
    named ``reference`` are uris, not References (``DetectedIssue.reference``,
    ``Immunization.education.reference``, ``Expression.reference``)."""
    return links_in(resource).references


def links_in(resource: Any) -> Links:
    """A resource's References and URN links (see ``Links``), nested resources' too, found
    by the types R4's element definitions give its elements, not by their names. Gathered
    by plain recursion: a generator of generators took twice as long, and every entry of
    every Bundle is walked."""
    found = Links()
    if type(resource) is dict:
        _in_resource(resource, found)
    return found


def _in_resource(resource: dict[str, Any], found: Links) -> None:
    resource_type = resource.get("resourceType")
    if type(resource_type) is str and resource_type in RESOURCE_TYPES:
        _in_element(resource, resource_type, found)


def _in_element(node: dict[str, Any], type_name: str, found: Links) -> None:
    if type_name == REFERENCE_TYPE and type(node.get("reference")) is str:
        found.references.append(node)
    elif type_name == NARRATIVE_TYPE:
        div = node.get("div")
        if type(div) is str and "urn:" in div:
            found.narratives.append(node)
    uris = URI_ELEMENTS.get(type_name)
    if uris is not None:
        _urns_in(node, uris, found)
    looks = ELEMENT_RULES[type_name][1]
    for key, value in node.items():
        kind = type(value)
        if kind is dict:
            _in_value(value, looks.get(key, _NESTED)[0], found)
        elif kind is list:
            child = looks.get(key, _NESTED)[0]
            for item in value:
                if type(item) is dict:
                    _in_value(item, child, found)


def _urns_in(node: dict[str, Any], uris: tuple[str, ...], found: Links) -> None:
    """The URNs among the values of ``node``'s elements ``uris`` (a repeating one's too)."""
    for key in uris:
        value = node.get(key)
        if type(value) is str:
            if value.startswith("urn:"):
                found.urns.append((node, key))
        elif type(value) is list:
            found.urns.extend(
                (value, index)
                for index, item in enumerate(value)
                if type(item) is str and item.startswith("urn:")
            )


_NESTED = (None, None)
"""The look of a name the definitions give no type to descend into."""


def _in_value(node: dict[str, Any], child: str | None, found: Links) -> None:
    """An element's value: of the type ``child``, or else a nested resource (an element
    whose definitions give no type to descend into holds a primitive or a resource)."""
    if child is not None:
        _in_element(node, child, found)
    else:
        _in_resource(node, found)


def rewrite_references(node: Any, replace: Callable[[str], str | None]) -> None:
    """Replace each reference for which ``replace`` returns a new value, in place."""
    rewrite_reference_nodes(references_in(node), replace)


def rewrite_reference_nodes(
    references: list[dict[str, Any]], replace: Callable[[str], str | None]
) -> None:
    """Replace each of ``references`` for which ``replace`` returns a new value, in place."""
    for reference in references:
        new = replace(reference["reference"])
        if new is not None:
            reference["reference"] = new


_LOCAL = re.compile(r"([A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64}(?:/_history/[A-Za-z0-9\-.]{1,64})?")


def local_reference(reference: str, base: str) -> str | None:
    """``Type/id`` (or ``Type/id/_history/n``) for a reference to it on this server's own
    ``base``, reached over http or https alike: the same reference as the relative one
    (references.html), which the compartments, the search index and the access decisions
    know a record by; None for any other reference. A reference that looks relative but
    is no literal reference (`` Patient/1``, ``/Patient/1``, ``Patient//1``) is a 422:
    stored as it is, it would name the patient to a reader and to no compartment."""
    if _looks_relative(reference) and _LOCAL.fullmatch(reference) is None:
        raise FhirError(
            422,
            "value",
            f"the reference '{bounded(reference)}' is no literal reference: a relative one is"
            " Type/id (Patient/123), without spaces or a leading or doubled slash",
        )
    local = past_base(reference, base)
    if local is None:
        return None
    found = _LOCAL.fullmatch(local)
    return local if found is not None and found.group(1) in RESOURCE_TYPES else None


def localise_references(node: Any, base: str) -> None:
    """Rewrite, in place, every reference to this server's own ``base`` as a relative one."""
    rewrite_references(node, lambda reference: local_reference(reference, base))


def localise_standalone(node: Any, base: str, kept: frozenset[str] = frozenset()) -> None:
    """``localise_references`` for a resource sent alone, not in a Bundle: a 422 for a
    ``urn:`` reference, which names a Bundle's entry, and for a conditional one, which R4
    resolves in a transaction only (http.html#trules). Stored as written, either would
    name no record: a record of the compartment would be no patient's, kept from their
    access history and from their erasure. A Bundle stored as a resource (a document, a
    collection) is exempt: its entries' URNs name each other, as its fullUrls say; and so
    are the references ``kept`` (a patched record's own, stored before Coffre refused
    them: a patch of its status must not fail on them)."""
    if type(node) is dict and node.get("resourceType") == "Bundle":
        localise_references(node, base)
        return

    def localised(reference: str) -> str | None:
        if reference in kept:
            return local_reference(reference, base)
        if reference[:4].lower() == "urn:":
            raise FhirError(
                422,
                "value",
                f"the reference {bounded(reference)!r} names a Bundle's entry, which this"
                " resource cannot: refer to a stored resource as Type/id, or write both in"
                " one transaction Bundle",
            )
        refuse_local_query(reference, "send the resource in one")
        return local_reference(reference, base)

    rewrite_references(node, localised)


def refuse_local_query(reference: str, remedy: str) -> None:
    """A 422 for a reference to this server with a query (``Patient?identifier=...``,
    ``Patient/1?`` too) that is left once a transaction has resolved what it resolves:
    stored as written, it would name no record."""
    head, query_mark, _ = reference.partition("?")
    if query_mark and (head in RESOURCE_TYPES or _LOCAL.fullmatch(head) is not None):
        raise FhirError(
            422,
            "value",
            f"the reference {masked_conditional(reference)} carries a query: a reference names"
            " a record as Type/id, and a conditional one (Type?criteria) is resolved in a"
            f" transaction Bundle only (R4 http.html#trules): {remedy}, or refer to the"
            " record as Type/id",
        )


def masked_conditional(conditional: str) -> str:
    """A conditional reference or criteria as a message names it: its type and its
    parameters, not their values (a health-card number, a name), which would reach the
    import's output and the client's logs."""
    resource_type, _, query = conditional.partition("?")
    names = [name for name, _ in parse_qsl(query, keep_blank_values=True)]
    return f"{resource_type}?" + "&".join(f"{name}=…" for name in names)


def _looks_relative(reference: str) -> bool:
    """Neither absolute, contained, conditional nor a URN, and with a path or spaces."""
    if reference.startswith(("urn:", "#")) or "?" in reference or "://" in reference:
        return False
    return "/" in reference or reference != reference.strip()


def past_base(url: str, base: str) -> str | None:
    """What ``url`` names below this server's ``base``, reached over http or https alike
    (``Patient/1`` of ``https://host/fhir/Patient/1`` on ``http://host/fhir``); None for a
    URL elsewhere."""
    own, theirs = _past_scheme(base.rstrip("/")), _past_scheme(url)
    if not own or theirs is None or not theirs.startswith(own + "/"):
        return None
    return theirs[len(own) + 1 :]


def _past_scheme(url: str) -> str | None:
    scheme, separator, rest = url.partition("://")
    return rest if separator and scheme.lower() in ("http", "https") else None


def parse_reference(reference: str) -> tuple[str, str] | None:
    """``(type, id)`` of a literal reference such as ``Patient/123`` or ``http://x/fhir/Patient/123``;
    None for contained (``#a``), conditional (``Patient?...``) and ``urn:`` references."""
    if reference.startswith(("#", "urn:")) or "?" in reference:
        return None
    match = _RELATIVE.match(reference)
    if match is None or match.group(1) not in RESOURCE_TYPES:
        return None
    return match.group(1), match.group(2)
