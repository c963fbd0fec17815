"""The Parameters resource an operation takes as its body (R4 parameters.html): what each
of Coffre's operations reads of it the same way, whatever it then makes of the values."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from coffre.exceptions import FhirError

_BESIDES_THE_VALUE = frozenset({"name", "id", "extension"})
"""What a parameter may carry besides its value: a modifierExtension, whose rule Coffre
does not know, could change what the value means."""
_NOT_TEXT = {"valueBoolean": bool, "valueReference": dict, "resource": dict}
"""The value elements Coffre's operations take that are no JSON string."""


def read_parameters(
    body: Any, operation: str, takes: Mapping[str, str], shape: str
) -> tuple[list[tuple[str, Any]], list[str]]:
    """The ``(name, value)`` of each parameter of ``body`` that ``operation`` takes (``takes``:
    each name and the one element its value is in, ``valueString``, ``resource``...), in
    order, and the names of the others. A 400 that shows the ``shape`` to send for a body
    that is no Parameters, a parameter without a name, or one that does not carry its one
    value alone."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise FhirError(400, "invalid", f"{operation} takes a Parameters resource: {shape}")
    given = body.get("parameter", [])
    if not isinstance(given, list) or not all(isinstance(p, dict) for p in given):
        raise FhirError(400, "invalid", f"Parameters.parameter is a list of objects: {shape}")
    names = [parameter.get("name") for parameter in given]
    if not all(isinstance(name, str) and name for name in names):
        raise FhirError(400, "invalid", f"each of {operation}'s parameters has a name: {shape}")
    taken = []
    for name, parameter in zip(names, given, strict=True):
        if name in takes:
            taken.append((name, _value(operation, name, takes[name], parameter, shape)))
    return taken, sorted({name for name in names if name not in takes})


def operation_parameters(
    body: Any, operation: str, takes: Mapping[str, str], shape: str
) -> list[tuple[str, Any]]:
    """``read_parameters``, where a parameter ``operation`` does not take is a 400: ignored,
    it could have changed what the client meant."""
    taken, others = read_parameters(body, operation, takes, shape)
    if others:
        message = f"{operation} does not take {', '.join(others)}: {shape}"
        raise FhirError(400, "not-supported", message)
    return taken


def _value(operation: str, name: str, element: str, parameter: dict[str, Any], shape: str) -> Any:
    value = parameter.get(element)
    alone = set(parameter) - _BESIDES_THE_VALUE == {element}
    if not (alone and isinstance(value, _NOT_TEXT.get(element, str))):
        raise FhirError(400, "invalid", f"{operation}'s {name} is one {element} alone: {shape}")
    return value
