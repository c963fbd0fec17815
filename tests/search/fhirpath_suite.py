"""Runs the official FHIRPath R4 test suite (tests-fhir-r4.xml) through Coffre's compiler.

``python tests/search/fhirpath_suite.py [DATA_DIR]`` prints each failure and the count.
"""

from __future__ import annotations

import functools
import json
import sys
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from coffre.search.fhirpath import FhirPathError, Model, Quantity, Temporal, evaluate
from coffre.search.fhirpath.runtime import Prim


@dataclass(frozen=True)
class Case:
    name: str
    group: str
    input_file: str | None
    expression: str
    invalid: str | None
    predicate: bool
    strict: bool
    outputs: tuple[tuple[str, str], ...]


def load_cases(suite: Path) -> list[Case]:
    cases = []
    for group in ElementTree.parse(suite).getroot().iter("group"):
        for test in group.iter("test"):
            expression = test.find("expression")
            assert expression is not None
            cases.append(
                Case(
                    name=test.get("name", ""),
                    group=group.get("name", ""),
                    input_file=test.get("inputfile"),
                    expression=expression.text or "",
                    invalid=expression.get("invalid"),
                    predicate=test.get("predicate") == "true",
                    strict=(test.get("mode") or expression.get("mode")) == "strict",
                    outputs=tuple(
                        (output.get("type", ""), output.text or "")
                        for output in test.iter("output")
                    ),
                )
            )
    return cases


def _matches(actual: Any, kind: str, expected: str) -> bool:
    if type(actual) is Prim:
        actual = actual.value
    if type(actual) is float:
        actual = Decimal(repr(actual))
    if kind == "":
        kind = {bool: "boolean", int: "integer", Decimal: "decimal", Quantity: "Quantity"}.get(
            type(actual), "date" if isinstance(actual, Temporal) else "string"
        )
    if kind == "boolean":
        return actual is (expected == "true")
    if kind in ("integer", "decimal"):
        return (
            type(actual) is not bool
            and isinstance(actual, int | Decimal)
            and Decimal(expected) == actual
        )
    if kind in ("date", "dateTime", "time"):
        return isinstance(actual, Temporal) and repr(actual) == expected
    if kind == "Quantity":
        return isinstance(actual, Quantity) and str(actual) == expected
    return isinstance(actual, str) and actual == expected


def run_case(case: Case, data: Path, model: Model) -> str | None:
    """None if the case passes, else what went wrong."""
    resource: Any = {}
    if case.input_file:
        path = data / "input-json" / case.input_file.replace(".xml", ".json")
        resource = json.loads(path.read_text(), parse_float=Decimal)
    try:
        result = evaluate(case.expression, resource, model, strict=case.strict)
    except (FhirPathError, ArithmeticError, ValueError, TypeError, KeyError) as error:
        return None if case.invalid else f"raised {type(error).__name__}: {error}"
    if case.invalid:
        return f"expected an error, got {result!r}"
    if case.predicate:
        result = [bool(result)]
    if len(result) != len(case.outputs):
        return f"expected {len(case.outputs)} items {case.outputs}, got {result!r}"
    for actual, (kind, expected) in zip(result, case.outputs, strict=True):
        if not _matches(actual, kind, expected):
            return f"expected {kind} {expected!r}, got {actual!r}"
    return None


def run_suite(data: Path, model: Model) -> tuple[int, dict[str, str]]:
    """The number of passing cases, and the failures by name."""
    failures = {}
    passed = 0
    for case in load_cases(data / "tests-fhir-r4.xml"):
        problem = run_case(case, data, model)
        if problem is None:
            passed += 1
        else:
            failures[f"{case.group}/{case.name}: {case.expression}"] = problem
    return passed, failures


@functools.cache
def load_model(schema: Path) -> Model:
    """The type model from the official JSON schema, built once per test session."""
    return Model(json.loads(schema.read_text()))


def main() -> None:
    shared = (
        Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parents[3] / "shared" / "data"
    )
    model = load_model(shared / "schema" / "fhir.schema.json")
    passed, failures = run_suite(shared / "fhirpath-tests", model)
    for name, problem in failures.items():
        print(f"FAIL {name}\n     {problem}")
    print(f"{passed} passed, {len(failures)} failed")


if __name__ == "__main__":
    main()
