"""JSON Patch (RFC 6902) applied to a FHIR resource, as R4's patch interaction takes it
(http.html#patch), by the ``jsonpatch`` package.

The package's own messages quote the values of the document they were applied to (a
failed ``test`` prints the record's value, or the whole object around a missing member):
a health record's. So every refusal here is written anew, from what the client sent
alone: the operation's index, its kind and its paths.

What fails, and how (RFC 5789 §2.2): a document that is no JSON Patch is a 400; one that
does not fit the record as it stands (a path that is not there, a ``test`` that fails) a
409, the conflicting state the RFC names; one whose result is no valid resource, or
another resource (its ``resourceType`` or ``id`` changed), a 422.
"""

from __future__ import annotations

import copy
from base64 import b64decode
from binascii import Error as Base64Error
from dataclasses import dataclass
from typing import Any

import jsonpatch
import jsonpointer

from coffre.exceptions import FhirError, bounded
from coffre.fhir import json
from coffre.fhir.validation import validate

MEDIA_TYPE = "application/json-patch+json"
_MEMBER_NEEDED = {
    "add": "value",
    "replace": "value",
    "test": "value",
    "move": "from",
    "copy": "from",
}
MAX_OPERATIONS = 1_000
"""A patch is a small change (a status, a field): a larger one is a PUT of the resource."""
MAX_COPIED = 100_000
"""How many JSON values a patch's ``copy`` operations may add in all: each may copy what
the ones before it copied, so that twenty of them would make a record a million times
larger, under the write lock."""
_MALFORMED = "is no JSON Patch (RFC 6902): send an array of operations such as"
_EXAMPLE = '[{"op": "replace", "path": "/status", "value": "final"}]'


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation of a JSON Patch document, checked: its index, and the package's own."""

    index: int
    op: str
    path: str
    source: str | None
    """A ``move``'s or ``copy``'s ``from``."""
    applied: jsonpatch.JsonPatch

    @property
    def label(self) -> str:
        return f"operation {self.index} ({self.op} {bounded(repr(self.path))})"


@dataclass(frozen=True, slots=True)
class JsonPatch:
    """A JSON Patch document whose every operation is well formed."""

    operations: tuple[Operation, ...]

    def applied(self, resource: dict[str, Any], reference: str) -> dict[str, Any]:
        """``resource`` (the record ``reference`` as it stands) patched, the result the
        same resource and valid against R4; ``resource`` is left as it was."""
        document = self.applied_to(resource, reference)
        if not json.nests_within(document, json.MAX_DEPTH):  # as no body sent may
            raise FhirError(
                422,
                "structure",
                f"the patched resource would nest arrays and objects more than {json.MAX_DEPTH}"
                f" deep, which no resource may: {reference} is unchanged",
            )
        _check_same_resource(document, resource, reference)
        validate(document, "the patched resource")
        result: dict[str, Any] = document
        return result

    def applied_to(self, document: Any, reference: str) -> Any:
        """A copy of the JSON value ``document`` with the operations applied in turn, all
        or none (RFC 6902 §5): a 409 naming the first that does not fit, in
        ``reference``."""
        patched = copy.deepcopy(document)
        copied = 0
        for operation in self.operations:
            if operation.op == "copy":
                copied += _copied_size(operation, patched, MAX_COPIED - copied)
            patched = _apply(operation, patched, reference)
        return patched


def parse_json_patch(body: bytes) -> JsonPatch:
    """The JSON Patch document ``body`` holds; a 400 naming the first operation that is
    not well formed."""
    document = json.loads(body, "the JSON Patch document", json.MAX_DEPTH)
    if not isinstance(document, list):
        raise FhirError(400, "structure", f"the body {_MALFORMED} {_EXAMPLE}")
    if len(document) > MAX_OPERATIONS:
        raise FhirError(
            400,
            "too-costly",
            f"the patch has {len(document):,} operations, more than the {MAX_OPERATIONS:,} a"
            " patch may have: send the resource whole with PUT",
        )
    return JsonPatch(tuple(_operation(index, item) for index, item in enumerate(document)))


def json_patch_of_binary(binary: dict[str, Any]) -> JsonPatch:
    """The JSON Patch a Bundle entry carries as a Binary (http.html#patch): its
    contentType application/json-patch+json, its data the document in base64."""
    if binary.get("resourceType") != "Binary" or binary.get("contentType") != MEDIA_TYPE:
        raise FhirError(
            400,
            "invalid",
            f"a PATCH entry's resource is a Binary whose contentType is {MEDIA_TYPE} and whose"
            " data is the JSON Patch document in base64",
        )
    data = binary.get("data")
    try:  # base64Binary may be wrapped in lines (R4 datatypes.html#base64Binary)
        body = b64decode("".join(data.split()), validate=True) if isinstance(data, str) else b""
    except (Base64Error, ValueError):
        body = b""
    if not body:
        raise FhirError(
            400, "invalid", "the PATCH entry's Binary holds no data: give the JSON Patch in base64"
        )
    return parse_json_patch(body)


def _operation(index: int, item: Any) -> Operation:
    if not isinstance(item, dict):
        raise FhirError(400, "structure", f"operation {index} {_MALFORMED} {_EXAMPLE}")
    op, path = item.get("op"), item.get("path")
    if op not in ("add", "remove", "replace", "move", "copy", "test"):
        raise FhirError(
            400,
            "structure",
            f"operation {index} has no op among add, remove, replace, move, copy and test",
        )
    needed = _MEMBER_NEEDED.get(op)
    if needed is not None and needed not in item:
        raise FhirError(400, "structure", f"operation {index} ({op}) has no {needed!r} member")
    path = _pointer(index, "path", path)
    source = _pointer(index, "from", item["from"]) if needed == "from" else None
    return Operation(index, op, path, source, jsonpatch.JsonPatch([item]))


def _pointer(index: int, member: str, pointer: Any) -> str:
    """``pointer``, once it is a JSON Pointer (RFC 6901): empty, or ``/`` then its
    reference tokens."""
    try:
        if not isinstance(pointer, str):
            raise jsonpointer.JsonPointerException("not a string")
        return str(jsonpointer.JsonPointer(pointer).path)
    except jsonpointer.JsonPointerException:
        raise FhirError(
            400,
            "structure",
            f"operation {index}'s {member!r} is no JSON Pointer: give one such as '/name/0/family'",
        ) from None


def _apply(operation: Operation, document: Any, reference: str) -> Any:
    """``document`` with ``operation`` applied in place; a 409 when it does not fit, which
    never says what the record holds."""
    try:
        return operation.applied.apply(document, in_place=True)
    except jsonpatch.JsonPatchTestFailed:
        why = "failed: the record holds another value there, or none"
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException):
        why = "does not fit the record: a path it names is not there, or cannot be"
    raise FhirError(
        409,
        "conflict",
        f"the patch's {operation.label} {why} in {reference} as it stands: read it again,"
        " and send a patch for its current version (If-Match)",
    )


def _copied_size(operation: Operation, document: Any, budget: int) -> int:
    """How many JSON values ``operation`` (a copy) adds to ``document``; a 422 past
    ``budget``, counted no further than it."""
    assert operation.source is not None  # a copy has its from, checked when parsed
    try:
        pending = [jsonpointer.resolve_pointer(document, operation.source)]
    except jsonpointer.JsonPointerException:
        return 0  # nothing there: _apply says so
    size = 0
    while pending and size <= budget:
        value = pending.pop()
        size += 1
        if isinstance(value, dict):
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    if size > budget:
        raise FhirError(
            422,
            "too-costly",
            f"the patch's {operation.label} would make its copies add more than"
            f" {MAX_COPIED:,} values to the resource: send the resource whole with PUT",
        )
    return size


def _check_same_resource(document: Any, resource: dict[str, Any], reference: str) -> None:
    """A patch changes a resource, never which one it is: its type and id stay."""
    kept = isinstance(document, dict) and all(
        document.get(key) == resource.get(key) for key in ("resourceType", "id")
    )
    if not kept:
        raise FhirError(
            422,
            "processing",
            f"the patch changes the resourceType or id of {reference}: a patch changes a"
            " resource's content, never which resource it is",
        )
