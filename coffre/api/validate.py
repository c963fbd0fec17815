"""``$validate`` (R4 resource-operation-validate): whether Coffre would take a resource's
content on a create or an update, checked by the rules those interactions apply, with
nothing written and nothing read. An integration team tries its messages here first.

The answer is 200 and an OperationOutcome whether the resource is valid or not, as the
operation defines; a 4xx means that the validation itself could not be made (a body that
is no resource, a resource of another type than the URL's, a profile Coffre does not
know).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from coffre.api.auth.enforce import guard_of
from coffre.api.auth.scopes import Interaction
from coffre.api.negotiation import check_format, query_pairs, read_json, refuse_parameters
from coffre.api.responses import fhir_response
from coffre.exceptions import FhirError, operation_outcome
from coffre.fhir.parameters import operation_parameters
from coffre.fhir.validation import check_url_type, resource_type_of, url_type, validate
from coffre.service.stored import check_id
from coffre.service.writer import check_body_id

MODES = {"create": Interaction.CREATE, "update": Interaction.UPDATE}
"""The modes Coffre validates for, and the interaction whose scope each needs."""
_TAKES = "a resource, or Parameters with resource and mode (create or update)"
_PARAMETERS = {"resource": "resource", "mode": "valueCode", "profile": "valueUri"}
_GENERAL = frozenset({"_format", "_pretty"})


def _asked(body: Any) -> tuple[Any, str | None, str | None]:
    """The resource to validate, the mode and the profile asked: the body itself, or the
    Parameters' ``resource``, ``mode`` and ``profile``."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        return body, None, None
    given = operation_parameters(body, "$validate", _PARAMETERS, _TAKES)
    names = [name for name, _ in given]
    if names.count("resource") != 1 or len(names) != len(set(names)):
        raise FhirError(400, "invalid", f"$validate takes {_TAKES}, each once, and one resource")
    parts = dict(given)
    return parts["resource"], parts.get("mode"), parts.get("profile")


def _mode(asked: str | None, resource_id: str | None) -> str:
    mode = asked or ("update" if resource_id is not None else "create")
    if mode not in MODES:
        raise FhirError(
            400,
            "not-supported",
            f"$validate checks a resource for a create or an update, not mode {mode[:40]!r}:"
            " Coffre refuses no deletion for what a record holds",
        )
    return mode


def _check_update_id(resource_type: str, resource: dict[str, Any], url_id: str | None) -> None:
    """An update carries the id it is made at: the URL's, or at type level its own."""
    if url_id is None and "id" not in resource:
        raise FhirError(
            400,
            "required",
            "the resource has no id, which an update carries",
            f"{resource_type}.id",
        )
    check_body_id(resource_type, resource["id"] if url_id is None else url_id, resource)


def _problems(
    resource: dict[str, Any], resource_type: str, mode: str, resource_id: str | None
) -> dict[str, Any]:
    """The OperationOutcome of one validation: the rule the resource breaks, or that it
    breaks none."""
    try:
        validate(resource, "the resource")
        if mode == "update":
            _check_update_id(resource_type, resource, resource_id)
    except FhirError as error:
        return error.outcome()
    return operation_outcome(
        "information",
        "informational",
        f"the {resource_type} breaks no rule Coffre checks of a resource's content on"
        f" {'an' if mode == 'update' else 'a'} {mode} (the R4 schema and element rules)",
    )


async def _validate(request: Request, resource_id: str | None) -> Response:
    check_format(request)
    resource_type = url_type(request.path_params["type"])
    if resource_id is not None:
        check_id(resource_type, resource_id)
    pairs = query_pairs(request)
    refuse_parameters(pairs, "$validate", _TAKES + " in its body", _GENERAL | {"mode"})
    body = await read_json(request, request.app.state.max_body_bytes)
    resource, mode, profile = _asked(body)
    if profile is not None:
        raise FhirError(
            400,
            "not-supported",
            "Coffre validates against the base FHIR R4 (4.0.1) specification only, not a profile",
        )
    mode = _mode(mode or dict(pairs).get("mode"), resource_id)
    guard_of(request).check_type(MODES[mode], resource_type)
    check_url_type(resource_type_of(resource, "the resource"), resource_type)
    return fhir_response(_problems(resource, resource_type, mode, resource_id))


async def validate_type(request: Request) -> Response:
    """``POST [type]/$validate``: for a create, unless the mode says update."""
    return await _validate(request, None)


async def validate_instance(request: Request) -> Response:
    """``POST [type]/[id]/$validate``: for an update of that record."""
    return await _validate(request, request.path_params["id"])
