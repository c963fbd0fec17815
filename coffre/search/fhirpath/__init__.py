"""FHIRPath compiled to plain Python: the engine behind search parameter extraction.

``Compiler`` turns an expression into Python source over JSON, which
``scripts/generate_search_parameters.py`` writes into the generated module (with the
helper modules it names, ``helper_modules``), so that it runs with no FHIRPath work at
import; ``evaluate`` compiles and runs one expression (tests, tools), never on the write
path.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from coffre.search.fhirpath import functions, operations, runtime
from coffre.search.fhirpath.calls import Compiler
from coffre.search.fhirpath.compiler import Branch, Compiled
from coffre.search.fhirpath.model import Model
from coffre.search.fhirpath.parser import (
    FhirPathError,
    FhirPathSyntaxError,
    FhirPathTypeError,
    parse,
)
from coffre.search.fhirpath.quantity import Quantity
from coffre.search.fhirpath.runtime import FhirPathEvaluationError, Prim
from coffre.search.fhirpath.temporal import Temporal, now, time_of_day, today

__all__ = [
    "Branch",
    "Compiled",
    "Compiler",
    "FhirPathError",
    "FhirPathEvaluationError",
    "FhirPathSyntaxError",
    "FhirPathTypeError",
    "Model",
    "Prim",
    "Quantity",
    "Temporal",
    "evaluate",
    "helper_modules",
    "parse",
]

_EXTRA = {
    "Decimal": "decimal",
    "Temporal": "coffre.search.fhirpath.temporal",
    "Quantity": "coffre.search.fhirpath.quantity",
    "now": "coffre.search.fhirpath.temporal",
    "today": "coffre.search.fhirpath.temporal",
    "time_of_day": "coffre.search.fhirpath.temporal",
}


def _namespace() -> dict[str, Any]:
    names: dict[str, Any] = {"Decimal": Decimal, "Temporal": Temporal, "Quantity": Quantity}
    names.update(now=now, today=today, time_of_day=time_of_day)
    for module in (runtime, operations, functions):
        names.update({k: v for k, v in vars(module).items() if not k.startswith("_")})
    return names


NAMESPACE = _namespace()


def helper_modules(helpers: set[str]) -> dict[str, list[str]]:
    """The module each helper a compiled expression calls is imported from."""
    found: dict[str, list[str]] = {}
    for name in sorted(helpers):
        if name in _EXTRA:
            module = _EXTRA[name]
        else:
            module = next(m.__name__ for m in (runtime, operations, functions) if hasattr(m, name))
        found.setdefault(module, []).append(name)
    return found


def evaluate(
    expression: str, resource: Any, model: Model, root_type: str | None = None, strict: bool = False
) -> list[Any]:
    """Compile and run one expression on a resource; the result as FHIRPath values."""
    if root_type is None:
        root_type = resource.get("resourceType") if isinstance(resource, dict) else None
    compiler = Compiler(model, root_type or "Resource", strict=strict)
    compiled = compiler.compile(expression)
    frag = tuple(compiler.coerce(branch) for branch in compiled.branches)
    code = compiler.merge(frag).code
    namespace = dict(NAMESPACE)
    for name, source in compiler.constants.items():
        namespace[name] = eval(source, namespace)  # constants the compiler wrote itself
    function = eval(f"lambda r: {code}", namespace)
    result: list[Any] = function(resource)
    return result
