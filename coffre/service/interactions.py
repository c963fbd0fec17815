"""The rules of the writing interactions that a REST request and a Bundle entry share:
update, conditional update, patch and delete, each as the requester may see the records
(FHIR R4 http.html#update, #cond-update, #patch, #delete). ``coffre/api/routes.py`` brings
them the HTTP headers, ``coffre/service/bundles.py`` an entry's ``request`` fields; what
they decide is written once, here, so that a Bundle's entries answer as the REST API
would.

A record the requester may not see is answered as one that does not exist: it is never
matched, replaced or deleted, and the answer is the same as for an id with nothing stored.
"""

from __future__ import annotations

from typing import Any, Protocol

from coffre.exceptions import FhirError
from coffre.fhir import json
from coffre.fhir.json_patch import JsonPatch
from coffre.fhir.references import localise_standalone, references_in
from coffre.ledger.leaf import LeafKind
from coffre.search import Criterion
from coffre.service.conditions import ANY_VERSION, check_if_match, check_none_match
from coffre.service.indexing import OwnTokens
from coffre.service.stored import Outcome, Stored, gone, not_found
from coffre.service.writer import Writer


class Gate(Protocol):
    """The requester's authorisation, which each interaction is checked against."""

    def check(
        self,
        writer: Writer,
        interaction: str,
        what: Stored | dict[str, Any] | str,
        missing: FhirError | None = None,
    ) -> bool:
        """Raise the refusal of ``interaction`` on ``what`` (a stored version, a resource
        as sent, or a type): 403, or ``missing`` for a hidden record; without
        ``missing``, answer False for a hidden record."""

    def find(
        self, writer: Writer, resource_type: str, criteria: tuple[Criterion, ...]
    ) -> list[Stored]:
        """The matches of ``criteria`` the requester may see, its chains and ``_has``
        resolved among what it may see too: a match must say nothing of the rest."""


class Open:
    """No authorisation: imports, and the API when no token is enforced."""

    def check(
        self,
        writer: Writer,
        interaction: str,
        what: Stored | dict[str, Any] | str,
        missing: FhirError | None = None,
    ) -> bool:
        return True

    def find(
        self, writer: Writer, resource_type: str, criteria: tuple[Criterion, ...]
    ) -> list[Stored]:
        return writer.find(resource_type, criteria)


def one_match(matches: list[Stored], resource_type: str, what: str) -> Stored | None:
    """The one match of a conditional interaction's criteria; 412 when several match."""
    if len(matches) > 1:
        raise FhirError(
            412,
            "multiple-matches",
            f"the {what} matches {len(matches)} {resource_type} resources; it must match one at most",
        )
    return matches[0] if matches else None


def visible_match(
    writer: Writer, gate: Gate, resource_type: str, criteria: tuple[Criterion, ...], what: str
) -> Stored | None:
    """The one match of a conditional interaction's criteria among what the requester may
    see (``what`` names the condition in the 412 of several matches)."""
    return one_match(gate.find(writer, resource_type, criteria), resource_type, what)


def answered(writer: Writer, outcome: Outcome) -> Outcome:
    """A write's outcome, as the client is answered with it. One that wrote nothing (a
    conditional create that found its match, an update or a patch that changed nothing)
    hands out the record all the same, its body or at least its id and version: it is
    logged as the read it is, or whoever may write would read any record unseen."""
    if not outcome.changed:
        writer.log_access(LeafKind.READ, [outcome.stored])
    return outcome


def update_visible(
    writer: Writer,
    gate: Gate,
    resource_type: str,
    resource_id: str,
    resource: dict[str, Any],
    expected: int | None,
    none_match: str | None,
    own_tokens: OwnTokens | None,
) -> Outcome:
    """An update of a validated resource (update-as-create where nothing is stored), once
    the requester may update the version it replaces and its If-None-Match holds;
    ``expected``: its If-Match version."""
    current = writer.latest(resource_type, resource_id)
    if current is not None:  # a deletion is judged by the version it deleted
        gate.check(writer, "update", current, not_found(resource_type, resource_id))
    check_none_match(current, none_match)
    return writer.update(
        resource_type, resource_id, resource, expected, validated=True, own_tokens=own_tokens
    )


def patch_visible(
    writer: Writer,
    gate: Gate,
    resource_type: str,
    resource_id: str,
    patch: JsonPatch,
    conditions: tuple[int | None, str | None],
    base_url: str,
) -> Outcome:
    """A patch of the record as it stands (http.html#patch), written as an update of it:
    the requester may update the record and the result, and ``conditions`` (If-Match,
    If-None-Match) hold. No other write can come between the version the patch is applied
    to and the one it writes: both are in this transaction, under the write lock, and the
    write expects that version still.

    A patch reads the record too, so the requester must also be one who may read it: its
    ``test`` operations compare the record's values with the client's, its 409s tell
    which elements the record has, and ``Prefer: return=representation`` hands the whole
    record back, none of which an update's body, the client's own, discloses."""
    current = writer.latest(resource_type, resource_id)
    missing = not_found(resource_type, resource_id)
    if current is None:
        raise missing
    gate.check(writer, "update", current, missing)
    gate.check(writer, "read", current, missing)
    if current.deleted:
        raise gone(resource_type, resource_id)
    expected, none_match = conditions
    check_if_match(current.reference, current, expected)
    check_none_match(current, none_match)
    stored = json.loads(current.body)
    kept = frozenset(node["reference"] for node in references_in(stored))
    resource = patch.applied(stored, current.reference)
    localise_standalone(resource, base_url, kept)
    gate.check(writer, "update", resource)
    return writer.update(resource_type, resource_id, resource, current.version, validated=True)


def patched_id(
    writer: Writer, gate: Gate, resource_type: str, criteria: tuple[Criterion, ...]
) -> str:
    """The id of the one record a conditional patch's criteria match among what the
    requester may see: 404 when none does, 412 when several (http.html#patch)."""
    match = visible_match(writer, gate, resource_type, criteria, "conditional patch")
    if match is None:
        raise FhirError(
            404, "not-found", f"no {resource_type} matches the conditional patch's criteria"
        )
    return match.id


def conditional_update_id(
    writer: Writer,
    gate: Gate,
    resource_type: str,
    match: Stored | None,
    body_id: object,
    expected: int | None,
) -> str:
    """The id a conditional update writes to: its criteria's one visible ``match``, else
    the body's id, else a new one (http.html#cond-update)."""
    if match is not None:
        return matched_id(match, body_id)
    if isinstance(body_id, str) and body_id:
        return unmatched_id(writer, gate, resource_type, body_id)
    return new_id_unless_expected(writer, resource_type, expected)


def matched_id(match: Stored, body_id: object) -> str:
    """The id a conditional update that matched ``match`` writes to; 400 when its body
    names another (http.html#cond-update)."""
    if body_id not in (None, match.id):
        raise FhirError(
            400,
            "invalid",
            f"the body's id {body_id!r} differs from the matching resource's {match.id!r}",
        )
    return match.id


def new_id_unless_expected(writer: Writer, resource_type: str, expected: int | None) -> str:
    """The id a conditional update that matched nothing and names none creates; 412 when
    its If-Match expects a version of a resource that is not there."""
    if expected is not None:
        which = "exists" if expected == ANY_VERSION else f"is at version {expected}"
        raise FhirError(
            412,
            "conflict",
            f"no {resource_type} matches the criteria, so none {which} as If-Match expects:"
            " search again, or send the update without If-Match to create it",
        )
    return writer.new_id(resource_type)


def unmatched_id(writer: Writer, gate: Gate, resource_type: str, body_id: str) -> str:
    """The id a conditional update that matched nothing writes to: its body's, unless a
    record lives there already, which the criteria did not select and the update would
    replace (409, as R5's http.html#cond-update says; a record the requester may not
    see is answered as missing, as a plain update would be)."""
    current = writer.latest(resource_type, body_id)
    if current is None:
        return body_id
    gate.check(writer, "update", current, not_found(resource_type, body_id))
    if current.deleted:
        return body_id
    raise FhirError(
        409,
        "conflict",
        f"no {resource_type} matches the criteria, but {resource_type}/{body_id}, the body's"
        " id, exists without matching them: the update would replace it. Update it by its id"
        f" (PUT {resource_type}/{body_id}), or correct the criteria",
    )


def delete_visible(
    writer: Writer,
    gate: Gate,
    resource_type: str,
    resource_id: str,
    expected: int | None,
    none_match: str | None,
) -> Outcome | None:
    """Delete one record (history kept); None when there was none to delete, or none the
    requester may see, answered alike."""
    current = writer.latest(resource_type, resource_id)
    if current is not None and not gate.check(writer, "delete", current):
        return None  # a deletion too: its version number would tell of the record
    check_none_match(current, none_match)
    return writer.delete(resource_type, resource_id, expected)
