"""Batch and transaction Bundles (FHIR R4 http.html#transaction).

A transaction is all-or-nothing: its writes share one storage transaction, and any
failure rolls every one of them back. Entries run in the order the spec gives (DELETE,
POST, PUT and PATCH, GET); ``urn:uuid:`` and conditional references are resolved before any write.
A batch runs its entries one by one, each committed or refused on its own.

A transaction is prepared before the write lock as far as the storage's state cannot
change it: the new ids of its plain creates are drawn, the references to them rewritten
(and their fullUrls in uri elements and the narrative) and the entries' index tokens
computed, but for those of the references that only the storage can resolve (conditional
ones, and those to conditional creates and updates).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, partial
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from coffre.exceptions import FhirError, bounded, information, operation_outcome
from coffre.fhir import json
from coffre.fhir._definitions_r4 import RESOURCE_TYPES
from coffre.fhir.bundles import fhir_bundle
from coffre.fhir.json_patch import json_patch_of_binary
from coffre.fhir.links import narrative_urns, rewrite_urns
from coffre.fhir.references import (
    Links,
    links_in,
    local_reference,
    masked_conditional,
    parse_reference,
    refuse_local_query,
    rewrite_reference_nodes,
)
from coffre.fhir.validation import check_url_type, url_type, validate
from coffre.ledger.leaf import LeafKind
from coffre.search import parse_criteria
from coffre.search.criteria import query_pairs, same_criteria
from coffre.search.normalise import instant
from coffre.search.parameters import parameters_for
from coffre.search.results import Pairs
from coffre.search.shapes import read_shape
from coffre.service.conditions import (
    if_none_exist_query,
    not_modified,
    parse_if_match,
)
from coffre.service.indexing import OwnTokens, own_tokens
from coffre.service.interactions import (
    Gate,
    Open,
    answered,
    conditional_update_id,
    delete_visible,
    patch_visible,
    patched_id,
    update_visible,
    visible_match,
)
from coffre.service.records import RecordStore
from coffre.service.stored import (
    Outcome,
    Stored,
    check_id,
    gone,
    new_id,
    no_version,
    not_found,
    nothing_deleted,
    written_outcome,
)
from coffre.service.writer import Writer, same_content

_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
_INTERACTIONS = {
    "DELETE": "delete",
    "PUT": "update",
    "PATCH": "update",
    "GET": "read",
    "HEAD": "read",
}
# What an entry's url takes by its number of parts, as the REST API: a type, a resource,
# a version (``Patient/1/_history/2``: read only).
_METHODS_OF_URL = {
    1: ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"),
    2: ("GET", "HEAD", "PUT", "PATCH", "DELETE"),
    4: ("GET", "HEAD"),
}


@dataclass(slots=True)
class Entry:
    """One entry's request, parsed."""

    index: int
    method: str
    resource_type: str
    resource_id: str | None
    query: str | None
    history_version: str | None
    resource: dict[str, Any] | None
    full_url: str | None
    if_none_exist: str | None
    if_match: int | None
    if_none_match: str | None = None
    if_modified_since: int | None = None
    """``ifModifiedSince``, an instant, in microseconds since the epoch."""
    existing: Stored | None = None
    own_tokens: OwnTokens | None = None
    drawn_id: str | None = None
    """The id of a plain create, drawn before the write lock."""
    unresolved: bool = True
    """Whether the resource holds references that only the write lock can resolve."""
    identities: tuple[str, ...] = ()
    """What the entry writes, once resolved: ``Type/id`` of each resource it creates,
    updates or deletes, and a conditional update's ``Type?criteria``."""
    same_as: Entry | None = None
    """An earlier conditional create with the same criteria: this one creates nothing, its
    resource is what that one created or matched."""
    stored_at_source_id: bool = False
    """An import's create whose id, kept from its file, names a resource already stored."""

    @property
    def label(self) -> str:
        return f"entry[{self.index}] ({self.method} {self.resource_type})"

    @property
    def create_condition(self) -> str | None:
        """``Type?criteria`` of a conditional create."""
        if self.method != "POST" or not self.if_none_exist:
            return None
        return f"{self.resource_type}?{same_criteria(self.if_none_exist)}"


T = TypeVar("T")
V = TypeVar("V")


def _of_entry(index: int, read: Callable[[V], T], value: V) -> T:
    """``read(value)``, its refusal naming the entry."""
    try:
        return read(value)
    except FhirError as error:
        raise FhirError(error.status, error.code, f"entry[{index}]: {error.diagnostics}") from None


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")


def _check_relative(url: str, base_url: str) -> None:
    """Refuse an entry's url that is not relative to the base (http.html#transaction):
    an absolute one, or one that starts with the base's path; the refusal says what to
    write instead (``Patient/1`` for ``http://host/fhir/Patient/1`` or ``/fhir/Patient/1``
    on this server)."""
    base_path = urlsplit(base_url).path.strip("/")
    bases = [f"{base}/" for base in (base_url, base_path) if base]
    target = url.lstrip("/")
    rest = next((target.removeprefix(base) for base in bases if target.startswith(base)), None)
    if rest is None and _SCHEME.match(url.partition("?")[0]) is None:
        return
    example = f"as {rest!r}" if rest else "such as 'Patient/123'"
    raise FhirError(
        400,
        "invalid",
        f"the request url {url!r} must be relative to the base (http.html#transaction), {example}",
    )


_UUID_URN = re.compile(r"urn:uuid:[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
_OID_URN = re.compile(r"urn:oid:[0-2](?:\.(?:0|[1-9][0-9]*))+")


def _check_full_url(full_url: Any, resource: Any) -> None:
    """An entry's fullUrl as R4 defines it (Bundle.entry.fullUrl): a ``urn:uuid:`` holds a
    UUID and a ``urn:oid:`` an OID; a URL names no version (bdl-8) and "SHALL NOT disagree
    with the id in the resource", which references to it would otherwise re-point."""
    if not isinstance(full_url, str):
        return
    for urn, pattern, example in (
        ("urn:uuid:", _UUID_URN, "urn:uuid:6a1e1b7e-0d2c-4f6a-9c1e-3b5d7f9a1c2e"),
        ("urn:oid:", _OID_URN, "urn:oid:1.2.250.1.213.1.4.8"),
    ):
        if full_url.startswith(urn):
            if pattern.fullmatch(full_url) is None:
                raise FhirError(
                    400, "invalid", f"the fullUrl {bounded(full_url)!r} is no {urn} (as {example})"
                )
            return
    if "/_history/" in full_url:
        raise FhirError(
            400,
            "invalid",
            f"the fullUrl {bounded(full_url)!r} names a version (bdl-8): give the resource's"
            " URL without /_history/",
        )
    named = _resource_id(resource)
    if named is not None and full_url != named and not full_url.endswith(f"/{named}"):
        raise FhirError(
            400,
            "invalid",
            f"the fullUrl {bounded(full_url)!r} disagrees with the resource's id: a fullUrl"
            f" that is a URL ends with {named}",
        )


def _resource_id(resource: Any) -> str | None:
    """``Type/id`` of an entry's resource that has an id."""
    if not isinstance(resource, dict):
        return None
    resource_type, resource_id = resource.get("resourceType"), resource.get("id")
    if isinstance(resource_type, str) and isinstance(resource_id, str):
        return f"{resource_type}/{resource_id}"
    return None


def _parse_entry(index: int, entry: dict[str, Any], base_url: str) -> Entry:
    request = entry.get("request")
    if not isinstance(request, dict) or "method" not in request or "url" not in request:
        raise FhirError(
            400,
            "required",
            f"entry[{index}] has no request with a method and url",
            f"Bundle.entry[{index}].request",
        )
    method, url = request["method"], request["url"]
    if method not in _ORDER:
        raise FhirError(
            400, "not-supported", f"entry[{index}]: Coffre does not support {method} in bundles"
        )
    _of_entry(index, partial(_check_relative, base_url=base_url), url)
    _of_entry(index, partial(_check_full_url, resource=entry.get("resource")), entry.get("fullUrl"))
    path, _, query = url.partition("?")
    parts = [unquote(part) for part in path.strip("/").split("/")]
    if "" in parts[1:]:
        raise FhirError(
            400, "invalid", f"entry[{index}]: the request url {url!r} has an empty segment"
        )
    if parts == [""]:
        raise FhirError(
            400, "invalid", f"entry[{index}]: the request url {url!r} names no resource type"
        )
    named = parts[:2]  # a type and an id: never a history, a search or an operation
    if (
        len(parts) not in (1, 2, 4)
        or (len(parts) == 4 and parts[2] != "_history")
        or any(part.startswith(("_", "$")) for part in named)
    ):
        raise FhirError(
            400,
            "not-supported",
            f"entry[{index}]: the request url {url!r} is not a supported interaction",
        )
    allowed = _METHODS_OF_URL[len(parts)]
    if method not in allowed:
        raise FhirError(
            405,
            "not-supported",
            f"entry[{index}]: {method} is not an interaction the url {url!r} supports:"
            f" it takes {', '.join(allowed)}",
        )
    resource = entry.get("resource")
    resource_type = _of_entry(index, url_type, parts[0])
    if len(parts) >= 2:
        _of_entry(index, partial(check_id, resource_type), parts[1])
    if method in ("PUT", "PATCH", "DELETE") and len(parts) >= 2 and query:
        raise FhirError(
            400,
            "invalid",
            f"entry[{index}]: {method} {parts[0]}/{parts[1]} names its resource by id and takes"
            f" no criteria besides, which it would ignore: give the id alone, or the criteria"
            f" alone ({method} {parts[0]}?...), a conditional {method.lower()}",
        )
    if_none_exist = request.get("ifNoneExist")
    if method == "POST" and query:  # a conditional create's criteria, as over REST
        if if_none_exist:
            raise FhirError(
                400,
                "invalid",
                f"entry[{index}]: a conditional create gives its criteria once, in"
                " request.ifNoneExist or in the url's query, not both",
            )
        if_none_exist, query = query, ""
    if if_none_exist:
        if_none_exist = _of_entry(index, partial(if_none_exist_query, resource_type), if_none_exist)
    for criteria in (if_none_exist, query):
        if criteria:  # refused here, naming the entry, if its %-escapes are not UTF-8
            _of_entry(index, query_pairs, criteria)
    return Entry(
        index=index,
        method=method,
        resource_type=resource_type,
        resource_id=parts[1] if len(parts) >= 2 else None,
        query=query or None,
        history_version=parts[3] if len(parts) == 4 else None,
        resource=resource if isinstance(resource, dict) else None,
        full_url=entry.get("fullUrl"),
        if_none_exist=if_none_exist,
        if_match=_of_entry(index, parse_if_match, request.get("ifMatch")),
        if_none_match=request.get("ifNoneMatch"),
        if_modified_since=_of_entry(index, _if_modified_since, request.get("ifModifiedSince")),
    )


def _if_modified_since(value: str | None) -> int | None:
    """An entry's ``ifModifiedSince``, a FHIR instant, in microseconds since the epoch; the
    Bundle's validation has checked its form, but for a leap second, which the schema takes
    and no moment Coffre records can be."""
    if value is None:
        return None
    moment = instant(value)
    if moment is None:
        raise FhirError(
            400,
            "invalid",
            f"ifModifiedSince {value!r} cannot be compared to a record's lastUpdated: give an"
            " instant whose seconds run from 00 to 59, such as 2026-01-31T12:00:00Z",
        )
    return moment


def _pairs(entry: Entry) -> Pairs:
    """The parameters of an entry's url."""
    return query_pairs(entry.query or "")


def _own_part(resource: dict[str, Any]) -> dict[str, Any]:
    """What of an entry's resource holds references the Bundle resolves: all of it, but
    the entries of a Bundle resource (a document, a message), whose references name each
    other, for whoever reads it. The parts are shared: rewriting them rewrites the resource."""
    if resource.get("resourceType") != "Bundle":
        return resource
    return {key: value for key, value in resource.items() if key != "entry"}


def _without_entry_resources(bundle: dict[str, Any]) -> dict[str, Any]:
    entries = bundle.get("entry")
    if not isinstance(entries, list):
        return bundle
    shells = [
        {k: v for k, v in e.items() if k != "resource"} if isinstance(e, dict) else e
        for e in entries
    ]
    return {**bundle, "entry": shells}


@cache
def _reference_parameters(resource_type: str) -> frozenset[str]:
    """The parameters whose values a transaction may change: its references, resolved."""
    parameters = parameters_for(resource_type).values()
    return frozenset(p.code for p in parameters if p.type == "reference")


def _unresolved(reference: str, pending: frozenset[str]) -> bool:
    """Whether resolving the transaction's references under the write lock may change
    ``reference``: an ``urn:``, a conditional reference, or one of the ``pending``
    fullUrls."""
    return reference.startswith("urn:") or "?" in reference or reference in pending


def _names_pending(links: Links, pending: frozenset[str]) -> bool:
    """Whether a uri element or the narrative of ``links`` holds one of the ``pending``
    fullUrls, which the write lock resolves."""
    if not pending or not (links.urns or links.narratives):
        return False
    return any(value in pending for value in (*links.urn_values(), *narrative_urns(links)))


_BATCH_URN = (
    "names no stored resource: the entries of a batch do not name each other, so refer to"
    " a stored resource as Type/id, or send the entries as a transaction"
)


def _missing(entry: Entry) -> FhirError:
    return not_found(entry.resource_type, entry.resource_id)


def _same(entry: Entry, first: Entry) -> str:
    """Make ``entry`` a repeat of the conditional create ``first``; its target."""
    entry.same_as, entry.existing, entry.resource_id = first, first.existing, first.resource_id
    return f"{entry.resource_type}/{entry.resource_id}"


def _check_written_once(entries: list[Entry]) -> None:
    """Refuse a transaction that writes a resource twice: http.html#trules fails one whose
    DELETE, POST and PUT entries overlap, in what their conditions resolve to too."""
    writers: dict[str, Entry] = {}
    for entry in entries:
        for identity in entry.identities:
            first = writers.setdefault(identity, entry)
            if first is not entry:
                raise FhirError(
                    400,
                    "invalid",
                    f"{entry.label}: {identity} is written twice, by this entry and by"
                    f" {first.label}; a transaction writes each resource once at most",
                )


STORED_WITH_OTHER_CONTENT = "duplicate"
"""The issue code (FHIR's IssueType) of an import's create whose id names a resource
stored with other content."""


def _stored_with_other_content(stored: Stored) -> dict[str, Any]:
    """What an import says of a resource whose id names ``stored``, which holds other
    content (another hospital's Patient/1, a second line of a file at that id): the stored
    one is kept, as an import never overwrites, but not without a word."""
    return operation_outcome(
        "warning",
        STORED_WITH_OTHER_CONTENT,
        f"{stored.reference} is already stored with other content: kept as it is, not overwritten",
    )


def _in_entry(entry: Entry, error: FhirError) -> FhirError:
    return FhirError(
        error.status, error.code, f"{entry.label}: {error.diagnostics}", error.expression
    )


EntrySearch = Callable[[Writer, str, Pairs], tuple[dict[str, Any], list[Stored]]]
"""A search entry's answer: the searchset Bundle that ``GET [type]?query`` gives in the
transaction's view of the records (its result parameters, paging and the requester's
authorisation included), and the resources it hands out."""


@dataclass(frozen=True, slots=True)
class Prepared:
    """A checked Bundle: its type, and its parsed entries (raw ones for a batch)."""

    kind: str
    entries: list[Any]


class BundleProcessor:
    """Runs a batch or transaction Bundle against a record store."""

    def __init__(
        self,
        records: RecordStore,
        base_url: str,
        returning: str | None,
        *,
        search: EntrySearch,
        keep_source_ids: bool = False,
        logs_found: bool = True,
        gate: Gate | None = None,
    ) -> None:
        """``returning``: what a write entry gives besides its status, as the client's
        ``Prefer: return=`` asks: ``representation`` the resource, ``OperationOutcome``
        an outcome that says what was done, anything else nothing more.
        ``search``: how a search entry is answered, as the API answers the same search.
        ``keep_source_ids`` (imports): a POST whose resource has an id creates it at that
        id, unless a resource is already there, which is left as it is, a deletion too: an
        import never overwrites, so running it twice changes nothing, and a record deleted
        between the two runs (at the patient's request, say) is not brought back.
        ``logs_found``: a write entry that wrote nothing is logged as the read it is
        (``interactions.answered``); an import, which answers no one, sets it False."""
        self.records = records
        self.base_url = base_url.rstrip("/")
        self.returning = returning
        self.search = search
        self.keep_source_ids = keep_source_ids
        self.logs_found = logs_found
        self.gate: Gate = gate or Open()

    def _single_match(
        self, writer: Writer, resource_type: str, query: str, what: str
    ) -> Stored | None:
        criteria = parse_criteria(query)
        shown = masked_conditional(f"{resource_type}?{query}")
        return visible_match(writer, self.gate, resource_type, criteria, f"{what} {shown}")

    def prepare(self, bundle: Any) -> Prepared:
        """Check a Bundle before any write: a transaction is validated whole, a batch's
        entries one by one when they run, so that an invalid entry fails alone."""
        kind = bundle.get("type") if isinstance(bundle, dict) else None
        if validate(_without_entry_resources(bundle) if kind == "batch" else bundle) != "Bundle":
            raise FhirError(
                400, "invalid", "only a batch or transaction Bundle can be POSTed to the base"
            )
        if kind not in ("batch", "transaction"):
            raise FhirError(
                400,
                "invalid",
                f"a Bundle POSTed to the base must be a batch or a transaction, not {kind!r}",
                "Bundle.type",
            )
        raw_entries = bundle.get("entry", [])
        if kind == "transaction":
            entries = [_parse_entry(i, raw, self.base_url) for i, raw in enumerate(raw_entries)]
            fixed, pending = self._fixed_targets(entries)
            resolve = partial(self._resolve_ahead, fixed=fixed, pending=pending)
            for index, entry in enumerate(entries):
                _of_entry(index, resolve, entry)
            return Prepared(kind, entries)
        return Prepared(kind, raw_entries)

    def _fixed_targets(self, entries: list[Entry]) -> tuple[dict[str, str], frozenset[str]]:
        """The targets that no state of the storage can change, by fullUrl: a create
        without ``ifNoneExist`` (its id drawn now, or the source id an import keeps) and
        an update of a given id; and the fullUrls of the other writing entries, which the
        write lock resolves (a fullUrl named twice among them: the transaction fails)."""
        fixed: dict[str, str] = {}
        pending: set[str] = set()
        for entry in entries:
            target = self._fixed_target(entry)  # draws a plain create's id, fullUrl or not
            if not entry.full_url or entry.method not in ("POST", "PUT"):
                continue
            if target is None or entry.full_url in fixed or entry.full_url in pending:
                pending.add(entry.full_url)
                fixed.pop(entry.full_url, None)
            else:
                fixed[entry.full_url] = target
        return fixed, frozenset(pending)

    def _fixed_target(self, entry: Entry) -> str | None:
        """``Type/id`` of an entry that no state of the storage can change, or None; a
        plain create's id is drawn here (``entry.drawn_id``), unless an import keeps it."""
        if entry.method == "POST" and not entry.if_none_exist:
            source_id = self._source_id(entry)
            if source_id is None:
                entry.drawn_id = new_id()
            return f"{entry.resource_type}/{source_id or entry.drawn_id}"
        if entry.method == "PUT" and entry.resource_id is not None:
            return f"{entry.resource_type}/{entry.resource_id}"
        return None

    def _source_id(self, entry: Entry) -> str | None:
        """The id an import keeps: the one the created resource has in its source."""
        source_id = entry.resource.get("id") if self.keep_source_ids and entry.resource else None
        return source_id or None

    def _resolve_ahead(self, entry: Entry, fixed: dict[str, str], pending: frozenset[str]) -> None:
        """Rewrite an entry's references to fixed targets, and the URNs of its uri elements
        and narrative that are their fullUrls, and compute the index tokens of its
        resource; but for those of its reference parameters if the write lock has some of
        its references still to resolve (``pending``: fullUrls it resolves). All of them:
        a parameter may take a reference only once it knows its target's type
        (``Encounter.participant.individual.where(resolve() is Practitioner)``). None if a
        uri element or the narrative holds a pending fullUrl: uri, token (a system) and
        string parameters may index those (rare: Synthea's Bundles have none)."""
        resource = entry.resource
        if resource is None:
            return

        def ahead(reference: str) -> str | None:
            if reference in fixed:
                return fixed[reference]
            return None if reference in pending else local_reference(reference, self.base_url)

        links = links_in(_own_part(resource))
        rewrite_reference_nodes(links.references, ahead)
        rewrite_urns(links, fixed)
        pending_urns = _names_pending(links, pending)
        entry.unresolved = pending_urns or any(
            _unresolved(node["reference"], pending) for node in links.references
        )
        if pending_urns:  # what a uri or the narrative holds may be indexed by any parameter
            return
        if entry.method in ("POST", "PUT") and resource.get("resourceType") == entry.resource_type:
            later = _reference_parameters(entry.resource_type) if entry.unresolved else frozenset()
            entry.own_tokens = own_tokens(self.records.keys, resource, later)

    def execute(self, prepared: Prepared, writer: Writer) -> dict[str, Any]:
        """Run a prepared Bundle in ``writer``'s transaction; a failed transaction Bundle
        leaves nothing behind, a failed batch entry only its own nothing."""
        if prepared.kind == "transaction":
            with writer.savepoint():
                entries = self._transaction(writer, prepared.entries)
            return self._response("transaction-response", entries)
        return self._response(
            "batch-response",
            [self._batch_entry(writer, i, raw) for i, raw in enumerate(prepared.entries)],
        )

    def run(self, bundle: Any, writer: Writer) -> dict[str, Any]:
        return self.execute(self.prepare(bundle), writer)

    def _response(self, kind: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
        return fhir_bundle(kind, entries)

    # -- transaction ----------------------------------------------------------------------

    def _transaction(self, writer: Writer, entries: list[Entry]) -> list[dict[str, Any]]:
        """Deletes first, as the spec orders; then ids are assigned and references resolved
        against the state the deletes left, then the other entries run."""
        results: dict[int, dict[str, Any]] = {}
        ordered = sorted(entries, key=lambda e: _ORDER[e.method])
        deletes = [entry for entry in ordered if entry.method == "DELETE"]
        others = [entry for entry in ordered if entry.method != "DELETE"]
        self._run_entries(writer, deletes, results)
        targets = self._assign_targets(writer, others)
        _check_written_once(ordered)
        for entry in others:
            try:
                if entry.resource is not None and entry.unresolved:
                    self._resolve_references(writer, entry.resource, targets)
            except FhirError as error:
                raise _in_entry(entry, error) from None
        self._run_entries(writer, others, results)
        return [results[entry.index] for entry in entries]

    def _run_entries(
        self,
        writer: Writer,
        entries: list[Entry],
        results: dict[int, dict[str, Any]],
    ) -> None:
        for entry in entries:
            try:
                results[entry.index] = self._execute(writer, entry)
            except FhirError as error:
                raise _in_entry(entry, error) from None

    def _assign_targets(self, writer: Writer, entries: list[Entry]) -> dict[str, str]:
        """Decide the id each creating entry writes to, keyed by its fullUrl, and by its
        ``Type?criteria`` for a conditional create: a conditional reference with the same
        criteria names what it creates (http.html#trules resolves them after the creates),
        and so does a later conditional create with the same criteria."""
        targets: dict[str, str] = {}
        creates: dict[str, Entry] = {}
        for entry in entries:
            condition = entry.create_condition
            first = creates.setdefault(condition, entry) if condition else entry
            try:
                target = self._target_of(writer, entry) if first is entry else _same(entry, first)
            except FhirError as error:
                raise _in_entry(entry, error) from None
            if target is not None and entry.full_url:
                if entry.full_url in targets:
                    raise FhirError(
                        400,
                        "invalid",
                        f"{entry.label}: fullUrl {entry.full_url} appears twice in the bundle",
                    )
                targets[entry.full_url] = target
        for condition, first in creates.items():
            targets.setdefault(condition, f"{first.resource_type}/{first.resource_id}")
        return targets

    def _target_of(self, writer: Writer, entry: Entry) -> str | None:
        if entry.method == "POST":
            existing = None
            if entry.if_none_exist:
                existing = self._single_match(
                    writer, entry.resource_type, entry.if_none_exist, "ifNoneExist criteria"
                )
            source_id = self._source_id(entry)
            if existing is None and source_id:  # deleted since, it stays deleted
                existing = writer.latest(entry.resource_type, source_id)
                entry.stored_at_source_id = existing is not None and not existing.deleted
            entry.existing = existing
            entry.resource_id = (
                existing.id
                if existing
                else (source_id or writer.new_id(entry.resource_type, entry.drawn_id))
            )
            target = f"{entry.resource_type}/{entry.resource_id}"
            entry.identities = () if existing else (target,)
            return target
        if entry.method == "PUT":
            if entry.resource_id is None:
                if entry.query is None:
                    raise FhirError(
                        400, "invalid", "a PUT needs an id or search criteria in its url"
                    )
                existing = self._single_match(
                    writer, entry.resource_type, entry.query, "conditional update"
                )
                body_id = entry.resource.get("id") if entry.resource else None
                entry.resource_id = conditional_update_id(
                    writer, self.gate, entry.resource_type, existing, body_id, entry.if_match
                )
                if entry.resource is not None:
                    entry.resource["id"] = entry.resource_id
            target = f"{entry.resource_type}/{entry.resource_id}"
            condition = () if entry.query is None else (f"{entry.resource_type}?{entry.query}",)
            entry.identities = (target, *condition)
            return target
        if entry.method == "PATCH":
            entry.resource_id = entry.resource_id or self._patched_id(writer, entry)
            entry.identities = (f"{entry.resource_type}/{entry.resource_id}",)
        return None

    def _patched_id(self, writer: Writer, entry: Entry) -> str:
        if entry.query is None:
            raise FhirError(400, "invalid", "a PATCH needs an id or search criteria in its url")
        return patched_id(writer, self.gate, entry.resource_type, parse_criteria(entry.query))

    def _resolve_references(
        self, writer: Writer, resource: dict[str, Any], targets: dict[str, str], batch: bool = False
    ) -> None:
        """Rewrite ``urn:uuid:`` references to their targets, and resolve conditional ones;
        rewrite the URNs of uri elements and of the narrative that are fullUrls of entries.
        A ``batch``'s entry has no ``targets``: a batch's entries do not name each other.

        A conditional reference resolved once is added to ``targets``: a bundle names the
        same practitioner or organisation in hundreds of entries.
        """
        unnamed = _BATCH_URN if batch else "names no entry of this bundle"

        def resolve(reference: str) -> str | None:
            if reference in targets:
                return targets[reference]
            if reference.startswith("urn:uuid:") or reference.startswith("urn:oid:"):
                raise FhirError(400, "not-found", f"the reference {reference} {unnamed}")
            resource_type, query_mark, query = reference.partition("?")
            if query_mark and (condition := f"{resource_type}?{same_criteria(query)}") in targets:
                return targets[condition]  # a conditional create's, however escaped
            if query_mark and resource_type.isalpha() and resource_type not in RESOURCE_TYPES:
                raise FhirError(
                    400,
                    "invalid",
                    f"the conditional reference {masked_conditional(reference)} names {resource_type!r},"
                    " not an R4 resource type",
                )
            if query_mark and parse_reference(resource_type + "/x") is not None:
                match = self._single_match(writer, resource_type, query, "conditional reference")
                if match is None:
                    raise FhirError(
                        404,
                        "not-found",
                        f"the conditional reference {masked_conditional(reference)} matches no resource",
                    )
                targets[reference] = match.reference
                return match.reference
            refuse_local_query(reference, "give criteria alone, Type?criteria")
            return local_reference(reference, self.base_url)

        links = links_in(_own_part(resource))
        rewrite_reference_nodes(links.references, resolve)
        rewrite_urns(links, targets)

    def _execute(self, writer: Writer, entry: Entry) -> dict[str, Any]:
        answer = self._answer(writer, entry)
        if entry.method == "HEAD":  # a GET's answer without its body, as over REST
            answer.pop("resource", None)
        return answer

    def _answer(self, writer: Writer, entry: Entry) -> dict[str, Any]:
        if entry.same_as is not None and entry.existing is None:
            assert entry.resource_id is not None  # created by the earlier entry, which ran
            entry.existing = writer.latest(entry.resource_type, entry.resource_id)
        if entry.existing is not None:
            found = Outcome(entry.existing, created=False, changed=False)
            answer = self._write_result(writer, found)
            if entry.stored_at_source_id and not same_content(entry.existing, self._body(entry)):
                answer["response"]["outcome"] = _stored_with_other_content(entry.existing)
            return answer
        if entry.method == "POST":
            resource = self._body(entry)
            check_url_type(resource["resourceType"], entry.resource_type)
            self.gate.check(writer, "create", resource)
            return self._write_result(
                writer,
                writer.create(
                    resource, entry.resource_id, validated=True, own_tokens=entry.own_tokens
                ),
            )
        if entry.method in ("GET", "HEAD") and entry.resource_id is None:
            return self._search(writer, entry)
        self.gate.check(writer, _INTERACTIONS[entry.method], entry.resource_type)
        if entry.method == "PUT":
            assert entry.resource_id is not None
            resource = self._body(entry)
            self.gate.check(writer, "update", resource)
            return self._write_result(
                writer,
                update_visible(
                    writer,
                    self.gate,
                    entry.resource_type,
                    entry.resource_id,
                    resource,
                    entry.if_match,
                    entry.if_none_match,
                    entry.own_tokens,
                ),
            )
        if entry.method == "PATCH":
            return self._patch(writer, entry)
        if entry.method == "DELETE":
            return self._delete(writer, entry)
        return self._get(writer, entry)

    def _patch(self, writer: Writer, entry: Entry) -> dict[str, Any]:
        """A JSON Patch, which the entry carries as a Binary (http.html#patch)."""
        assert entry.resource_id is not None  # a conditional patch's was matched
        self.gate.check(writer, "read", entry.resource_type)  # a patch reads: patch_visible
        patch = json_patch_of_binary(self._body(entry))
        conditions = (entry.if_match, entry.if_none_match)
        return self._write_result(
            writer,
            patch_visible(
                writer,
                self.gate,
                entry.resource_type,
                entry.resource_id,
                patch,
                conditions,
                self.base_url,
            ),
        )

    def _body(self, entry: Entry) -> dict[str, Any]:
        if entry.resource is None:
            raise FhirError(400, "required", f"a {entry.method} entry needs a resource")
        return entry.resource

    def _delete(self, writer: Writer, entry: Entry) -> dict[str, Any]:
        if entry.resource_id is not None:
            ids = [entry.resource_id]
        elif entry.query:
            criteria = parse_criteria(entry.query)
            ids = [match.id for match in self.gate.find(writer, entry.resource_type, criteria)]
        else:
            raise FhirError(400, "invalid", "a DELETE needs an id or search criteria in its url")
        entry.identities = tuple(f"{entry.resource_type}/{resource_id}" for resource_id in ids)
        deleted = [
            identity
            for resource_id, identity in zip(ids, entry.identities, strict=True)
            if delete_visible(
                writer,
                self.gate,
                entry.resource_type,
                resource_id,
                entry.if_match,
                entry.if_none_match,
            )
        ]
        response: dict[str, Any] = {"status": "204 No Content"}
        if self.returning == "OperationOutcome":
            response["outcome"] = self._deleted_outcome(entry, deleted)
        return {"response": response}

    @staticmethod
    def _deleted_outcome(entry: Entry, deleted: list[str]) -> dict[str, Any]:
        if deleted:
            return information(f"deleted: {', '.join(deleted)}")
        if entry.resource_id is not None:
            return nothing_deleted(entry.identities[0])
        return information(f"no {entry.resource_type} matched")

    def _search(self, writer: Writer, entry: Entry) -> dict[str, Any]:
        searchset, handed_out = self.search(writer, entry.resource_type, _pairs(entry))
        writer.log_access(LeafKind.SEARCH, handed_out)
        return {"resource": searchset, "response": {"status": "200 OK"}}

    def _get(self, writer: Writer, entry: Entry) -> dict[str, Any]:
        """A read or vread, as the same GET over REST answers it: its ``_summary`` and
        ``_elements``, and its conditions (``ifNoneMatch``, ``ifModifiedSince``)."""
        assert entry.resource_id is not None  # without one, a search
        shape = read_shape(_pairs(entry))
        if entry.history_version is not None:
            stored = self._version(
                writer, entry.resource_type, entry.resource_id, entry.history_version
            )
        else:
            current = writer.latest(entry.resource_type, entry.resource_id)
            if current is None:
                raise _missing(entry)
            self.gate.check(writer, "read", current, _missing(entry))
            if current.deleted:
                raise gone(entry.resource_type, entry.resource_id)
            stored = current
        writer.log_access(LeafKind.READ, [stored])  # a 304 too: see routes.read
        if not_modified(stored, entry.if_none_match, entry.if_modified_since):
            return {
                "fullUrl": self._full_url(stored),
                "response": self._response_of(stored, "304 Not Modified"),
            }
        return {
            "fullUrl": self._full_url(stored),
            "resource": shape.served(stored.body),
            "response": self._response_of(stored, "200 OK"),
        }

    def _version(
        self, writer: Writer, resource_type: str, resource_id: str, version: str
    ) -> Stored:
        """A version the requester may see; a hidden one, a deletion included, answers
        exactly as a version that does not exist."""
        missing = no_version(resource_type, resource_id, version)
        try:
            stored = writer.vread(resource_type, resource_id, version)
        except FhirError as error:
            if error.status == 410 and error.code == "deleted":
                deletion = writer.deletion(resource_type, resource_id, int(version))
                self.gate.check(writer, "vread", deletion, missing)
            raise
        self.gate.check(writer, "vread", stored, missing)
        return stored

    # -- batch ----------------------------------------------------------------------------

    def _batch_entry(self, writer: Writer, index: int, raw: Any) -> dict[str, Any]:
        """One entry, on its own: its conditional references are searched afresh, as an
        earlier entry may have changed what they match."""
        try:
            entry = _parse_entry(index, raw, self.base_url)
            if entry.resource is not None:
                validate(entry.resource, f"entry[{index}].resource")
            with writer.savepoint():
                self._target_of(writer, entry)
                if entry.resource is not None:
                    self._resolve_references(writer, entry.resource, {}, batch=True)
                return self._execute(writer, entry)
        except FhirError as error:
            return {"response": {"status": _status_line(error.status), "outcome": error.outcome()}}

    # -- rendering ------------------------------------------------------------------------

    def _full_url(self, stored: Stored) -> str:
        return f"{self.base_url}/{stored.reference}"

    def _response_of(self, stored: Stored, status: str) -> dict[str, Any]:
        return {
            "status": status,
            "location": f"{stored.reference}/_history/{stored.version}",
            "etag": stored.etag,
            "lastModified": stored.last_updated,
        }

    def _write_result(self, writer: Writer, outcome: Outcome) -> dict[str, Any]:
        """An entry's answer; one that wrote nothing is logged as a read (``answered``),
        but for an import (``logs_found``)."""
        stored = (answered(writer, outcome) if self.logs_found else outcome).stored
        result: dict[str, Any] = {
            "fullUrl": self._full_url(stored),
            "response": self._response_of(stored, "201 Created" if outcome.created else "200 OK"),
        }
        if self.returning == "representation":
            result["resource"] = json.embedded(stored.body)
        elif self.returning == "OperationOutcome":
            result["response"]["outcome"] = written_outcome(outcome)
        return result


STATUS_TEXT = {
    200: "OK",
    201: "Created",
    204: "No Content",
    304: "Not Modified",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    409: "Conflict",
    410: "Gone",
    412: "Precondition Failed",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Entity",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def _status_line(status: int) -> str:
    return f"{status} {STATUS_TEXT.get(status, '')}".strip()
