"""Validation of resources against the official FHIR R4 4.0.1 JSON schema.

The schema is compiled ahead of time (``scripts/generate_fhir_modules.py``). Nested
resources (``contained``, Bundle entries, Parameters) are validated here, each against
its own definition, so that no validation goes through the schema's slow root ``oneOf``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from typing import Any

from fastjsonschema import JsonSchemaValueException

from coffre.exceptions import FhirError
from coffre.fhir import _schema_r4
from coffre.fhir._definitions_r4 import RESOURCE_TYPES
from coffre.fhir.elements import ElementError, LocalReferences, check_elements
from coffre.fhir.primitives import CALENDAR_DATE, is_calendar_date

Formats = dict[str, Callable[[str], bool]]
Validator = Callable[[Any, Formats], Any]
_FUNCTION_PREFIX = "validate_http___hl7_org_fhir_json_schema_4_0__definitions_"
_PATH_PREFIX = re.compile(r"^data\.?")
_FORMATS: Formats = {CALENDAR_DATE: is_calendar_date}
_MISSING = re.compile(r"must contain (\w+)(, .*)?")


@cache
def _validator(resource_type: str) -> Validator:
    function: Validator = getattr(_schema_r4, _FUNCTION_PREFIX + resource_type.lower())
    return function


def _fhirpath(resource_type: str, error_path: str) -> str:
    """``data.code.coding[0]`` in the validator's words is ``Observation.code.coding[0]``."""
    rest = _PATH_PREFIX.sub("", error_path)
    return f"{resource_type}.{rest}" if rest else resource_type


NO_ENDPOINT = frozenset({"Parameters"})
"""What R4 gives no RESTful endpoint: a Parameters resource carries an operation's input
and output, and is not stored (parameters.html)."""
REST_TYPES = RESOURCE_TYPES - NO_ENDPOINT


def url_type(resource_type: str) -> str:
    """The resource type a URL names, or a 404 (a URL of no resource Coffre has)."""
    if resource_type in NO_ENDPOINT:
        raise FhirError(
            404,
            "not-found",
            f"{resource_type} has no RESTful endpoint in FHIR R4: it carries an operation's"
            " input and output, and is not stored",
        )
    if resource_type not in RESOURCE_TYPES:
        raise FhirError(
            404,
            "not-found",
            f"Coffre knows no resource type {resource_type!r} (FHIR R4 names, such as Patient or Observation)",
        )
    return resource_type


def check_url_type(body_type: str, resource_type: str) -> None:
    """A 400 unless a body of ``body_type`` goes where a URL naming ``resource_type`` puts it
    (a create, an update, a Bundle entry's ``request.url``)."""
    if body_type != resource_type:
        message = f"the body's resourceType is {body_type}, but the URL names {resource_type}"
        raise FhirError(400, "invalid", message, "resourceType")


def resource_type_of(resource: Any, where: str = "the body") -> str:
    """The resourceType of a JSON value, or a 400 that says what is wrong with it."""
    if not isinstance(resource, dict):
        raise FhirError(400, "structure", f"{where} must be a JSON object holding a FHIR resource")
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str):
        raise FhirError(400, "required", f"{where} has no resourceType", "resourceType")
    if resource_type not in RESOURCE_TYPES:
        raise FhirError(
            400,
            "not-supported",
            f"{resource_type!r} is not a FHIR R4 resource type",
            "resourceType",
        )
    return resource_type


def validate(resource: Any, where: str = "the body") -> str:
    """Check a resource and every resource nested in it; return its type.

    Raises FhirError 400 for a value that is no resource at all and 422 for a resource
    that breaks a rule of the R4 schema, naming the element at fault.
    """
    resource_type, local = _validate(resource, where)
    if local:
        _check_local_references(resource, local, where)
    return resource_type


def _validate(resource: Any, where: str) -> tuple[str, LocalReferences]:
    """Check a resource and what it nests; return its type and its local references and
    its contained resources' (which a contained resource has its container resolve)."""
    resource_type = resource_type_of(resource, where)
    try:
        _validator(resource_type)(resource, _FORMATS)
    except JsonSchemaValueException as error:
        # The compiled validator names the element at fault first: "data.status must be ...".
        element, _, rule = error.message.partition(" ")
        path = _fhirpath(resource_type, element)
        missing = _MISSING.fullmatch(rule)
        if missing:  # the schema's "required" names the object: name the element
            path = f"{path}.{missing[1]}"
            also = f"; so are {missing[2].removeprefix(', ')}" if missing[2] else ""
            rule = f"is missing: the element is mandatory (cardinality 1..){also}"
        message = f"{path} {rule}"
        raise FhirError(
            422, "structure", f"{where} is not a valid {resource_type}: {message}", path
        ) from None
    try:
        local = check_elements(resource, resource_type)
    except ElementError as error:
        message = f"{where} is not a valid {resource_type}: {error}"
        raise FhirError(422, error.code, message, error.path) from None
    for i, item in enumerate(resource.get("contained", [])):
        item_type, item_local = _validate(item, f"{where}, contained[{i}]")
        inside = f"{resource_type}.contained[{i}]"
        local.extend((inside + path.removeprefix(item_type), ref) for path, ref in item_local)
    for nested_where, nested in _nested_resources(resource, resource_type):
        validate(nested, f"{where}, {nested_where}")
    if resource.get("contained"):
        _check_contained(resource, resource_type, where)
    return resource_type, local


def _check_local_references(resource: dict[str, Any], local: LocalReferences, where: str) -> None:
    """A local reference names a resource its container holds (R4's ref-1)."""
    held = {item.get("id") for item in resource.get("contained", [])}
    for path, reference in local:
        if reference[1:] not in held:
            message = (
                f"{where} is not a valid {resource['resourceType']}: {path} refers to"
                f" {reference!r}, but no resource contained in it has the id"
                f" {reference[1:]!r} (ref-1: a local reference names a contained resource)"
            )
            raise FhirError(422, "invariant", message, path)


def _check_contained(resource: dict[str, Any], resource_type: str, where: str) -> None:
    """The rules R4 sets on contained resources, which the JSON schema leaves out
    (DomainResource invariants dom-2 to dom-5): none holds resources of its own, none
    carries a version, a time or security labels of its own (the container's apply), and
    each is referred to from elsewhere in the container (``#id``) or refers to it (``#``).
    References are recognised as any string of that form, canonical and uri ones too."""
    contained: list[dict[str, Any]] = resource["contained"]
    pointers = [_pointers(item) for item in contained]
    outside = _pointers({key: value for key, value in resource.items() if key != "contained"})
    for i, item in enumerate(contained):
        path = f"{resource_type}.contained[{i}]"
        meta = item.get("meta", {})
        if "contained" in item:
            broken = "holds contained resources of its own (dom-2: they belong to the container)"
        elif "versionId" in meta or "lastUpdated" in meta:
            broken = "has a meta.versionId or meta.lastUpdated (dom-4: it has the container's)"
        elif "security" in meta:
            broken = "has meta.security labels (dom-5: the container's labels apply to it)"
        elif _part_of_container(i, pointers, outside, item.get("id")):
            continue
        else:
            referred = (
                f"is referred to nowhere in the {resource_type} as '#{item['id']}'"
                if "id" in item
                else "has no id, so nothing can refer to it,"
            )
            broken = (
                f"{referred} and does not refer to its container as '#' "
                "(dom-3: a contained resource is part of its container)"
            )
        raise FhirError(
            422, "invariant", f"{where} is not a valid {resource_type}: {path} {broken}", path
        )


def _part_of_container(i: int, pointers: list[set[str]], outside: set[str], item_id: Any) -> bool:
    """Whether the i-th contained resource refers to its container (``#``), or is referred
    to by it (``outside``: the container's local references) or by another contained one."""
    if "#" in pointers[i]:
        return True
    others = (outside, *pointers[:i], *pointers[i + 1 :])
    return item_id is not None and any(f"#{item_id}" in found for found in others)


def _pointers(value: Any) -> set[str]:
    """The local references (``#...``) anywhere in a JSON value."""
    if isinstance(value, str):
        return {value} if value.startswith("#") else set()
    parts = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return set().union(*map(_pointers, parts))


def _nested_resources(resource: dict[str, Any], resource_type: str) -> list[tuple[str, Any]]:
    """The resources nested in a resource that are roots of their own: a Bundle's entries,
    a Parameters' resources (a contained resource is part of its container)."""
    nested: list[tuple[str, Any]] = []
    if resource_type == "Bundle":
        for i, entry in enumerate(resource.get("entry", [])):
            if "resource" in entry:
                nested.append((f"entry[{i}].resource", entry["resource"]))
            outcome = entry.get("response", {}).get("outcome")
            if outcome is not None:
                nested.append((f"entry[{i}].response.outcome", outcome))
    elif resource_type == "Parameters":
        nested.extend(_parameter_resources(resource.get("parameter", []), "parameter"))
    return nested


def _parameter_resources(parameters: list[dict[str, Any]], path: str) -> list[tuple[str, Any]]:
    found = []
    for i, parameter in enumerate(parameters):
        if "resource" in parameter:
            found.append((f"{path}[{i}].resource", parameter["resource"]))
        found.extend(_parameter_resources(parameter.get("part", []), f"{path}[{i}].part"))
    return found
