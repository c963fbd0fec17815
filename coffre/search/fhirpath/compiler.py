"""FHIRPath AST to Python source, with static types.

A compiled fragment is a tuple of branches, each a Python expression that evaluates to a
list, and the FHIR type of its items when the compiler knows it. Knowing types at compile
time is what resolves choice elements (``Observation.value as Quantity`` reads
``valueQuantity`` and nothing else), drops the parts of ``Patient.name | Practitioner.name``
that cannot apply, and catches ``name.given1`` before any data is seen. Where a type is not
known (after ``resolve()``, in contained resources) the code falls back to run-time checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from coffre.search.fhirpath.model import PRIMITIVES, SYSTEM_TYPES, Model
from coffre.search.fhirpath.parser import FhirPathTypeError, Node, parse
from coffre.search.fhirpath.temporal import Temporal

_QUANTITY_TYPES = frozenset(
    {"Quantity", "Age", "Count", "Distance", "Duration", "MoneyQuantity", "SimpleQuantity"}
)
_TEMPORAL_KINDS = {"date": "date", "dateTime": "datetime", "instant": "datetime", "time": "time"}
_BINARY = {
    "=": "eq",
    "!=": "ne",
    "~": "equiv",
    "!~": "nequiv",
    "<": "lt",
    "<=": "le",
    ">": "gt",
    ">=": "ge",
    "in": "in_",
    "contains": "contains",
    "+": "add",
    "-": "sub",
    "*": "mul",
    "/": "div",
    "div": "idiv",
    "mod": "mod",
    "&": "concat",
}
_LOGIC = {"and": "and_", "or": "or_", "xor": "xor", "implies": "implies"}
_CONSTANTS = {
    "sct": "http://snomed.info/sct",
    "loinc": "http://loinc.org",
    "ucum": "http://unitsofmeasure.org",
}


@dataclass(frozen=True, slots=True)
class Branch:
    """Python source of a list, and the FHIR (or ``System.X``) type of its items if known."""

    code: str
    type: str | None


Frag = tuple[Branch, ...]


@dataclass(frozen=True, slots=True)
class Scope:
    """What ``$this``, ``$index`` and ``$total`` stand for where an expression is compiled."""

    this: Frag
    index: str | None = None
    total: str | None = None


@dataclass
class Compiled:
    """The branches of an expression, the constants they use and the helpers they call."""

    branches: Frag
    constants: dict[str, str] = field(default_factory=dict)
    helpers: set[str] = field(default_factory=set)

    def merged(self) -> str:
        return merge_code(self.branches)


def merge_code(frag: Frag) -> str:
    if not frag:
        return "[]"
    if len(frag) == 1:
        return frag[0].code
    return "[" + ", ".join(f"*{branch.code}" for branch in frag) + "]"


class CoreCompiler:
    """Compiles expressions evaluated on a resource of ``root_type`` (bound to ``r``):
    terms, paths, operators and types; :mod:`calls` adds the functions."""

    def __init__(
        self,
        model: Model,
        root_type: str,
        strict: bool = False,
        lenient: bool = False,
        resource: Branch | None = None,
    ) -> None:
        """``strict`` refuses a leading type name that cannot match the context; ``lenient``
        accepts what the official search expressions do: ``as`` on several items, and elements
        a type does not have (which select nothing, recorded in ``slips``). ``resource`` is
        what ``%resource`` stands for when it is not the context ``r``: a composite's
        component is evaluated on an element, its ``%resource`` is the resource, ``root``."""
        self.resource = resource or Branch("[r]", root_type)
        self.model = model
        self.root_type = root_type
        self.strict = strict
        self.lenient = lenient
        self.slips: list[str] = []
        self.constants: dict[str, str] = {}
        self.helpers: set[str] = set()
        self.counter = 0

    # ---- bookkeeping -------------------------------------------------------------------

    def call(self, helper: str, *args: str) -> str:
        self.helpers.add(helper)
        return f"{helper}({', '.join(args)})"

    def constant(self, source: str) -> str:
        for name, existing in self.constants.items():
            if existing == source:
                return name
        name = f"_K{len(self.constants)}"
        self.constants[name] = source
        return name

    def fresh(self, prefix: str = "v") -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def merge(self, frag: Frag) -> Branch:
        types = {branch.type for branch in frag}
        return Branch(merge_code(frag), types.pop() if len(types) == 1 else None)

    def coerce(self, branch: Branch) -> Branch:
        """Items as FHIRPath System values: dates parsed, Quantity elements converted."""
        kind = branch.type
        if kind in _TEMPORAL_KINDS:
            return Branch(self.call("temporals", branch.code, repr(_TEMPORAL_KINDS[kind])), None)
        if kind is not None and (kind in _QUANTITY_TYPES or "Quantity" in self.model.lineage(kind)):
            return Branch(self.call("quantities", branch.code), None)
        if kind in PRIMITIVES:
            return Branch(self.call("values", branch.code), None)
        return branch

    def value_of(self, frag: Frag) -> str:
        return merge_code(tuple(self.coerce(branch) for branch in frag))

    # ---- entry point -------------------------------------------------------------------

    def compile(self, text: str, split_union: bool = False) -> Compiled:
        tree = parse(text)
        scope = Scope((Branch("[r]", self.root_type),))
        parts = _union_parts(tree) if split_union else [tree]
        branches: Frag = ()
        for part in parts:
            branches += self.node(part, scope)
        return Compiled(branches, dict(self.constants), set(self.helpers))

    def node(self, node: Node, scope: Scope) -> Frag:
        method = getattr(self, f"_{node.kind}")
        result: Frag = method(node, scope)
        return result

    # ---- terms ---------------------------------------------------------------------------

    def _literal(self, node: Node, scope: Scope) -> Frag:
        value = node.value
        if isinstance(value, bool):
            return (Branch(f"[{value}]", "System.Boolean"),)
        if isinstance(value, int):
            return (Branch(f"[{value}]", "System.Integer"),)
        if isinstance(value, str):
            return (Branch(f"[{value!r}]", "System.String"),)
        return (Branch(f"[{self.constant(f'Decimal({str(value)!r})')}]", "System.Decimal"),)

    def _temporal(self, node: Node, kind: str) -> Frag:
        if Temporal.parse(node.value) is None:
            raise FhirPathTypeError(f"not a valid {kind}: @{node.value}")
        self.helpers.add("Temporal")
        return (Branch(f"[{self.constant(f'Temporal.parse({node.value!r})')}]", f"System.{kind}"),)

    def _date(self, node: Node, scope: Scope) -> Frag:
        return self._temporal(node, "Date")

    def _datetime(self, node: Node, scope: Scope) -> Frag:
        return self._temporal(node, "DateTime")

    def _time(self, node: Node, scope: Scope) -> Frag:
        return self._temporal(node, "Time")

    def _quantity(self, node: Node, scope: Scope) -> Frag:
        value, unit = node.value
        self.helpers.update({"Quantity", "Decimal"})
        source = f"Quantity(Decimal({str(value)!r}), {unit!r})"
        return (Branch(f"[{self.constant(source)}]", "System.Quantity"),)

    def _empty(self, node: Node, scope: Scope) -> Frag:
        return ()

    def _paren(self, node: Node, scope: Scope) -> Frag:
        return self.node(node.args[0], scope)

    def _this(self, node: Node, scope: Scope) -> Frag:
        return scope.this

    def _var(self, node: Node, scope: Scope) -> Frag:
        if node.value == "$this":
            return scope.this
        name = scope.index if node.value == "$index" else scope.total
        if name is None:
            raise FhirPathTypeError(f"{node.value} is not defined here")
        if node.value == "$index":
            return (Branch(f"[{name}]", "System.Integer"),)
        return (Branch(name, None),)

    def _env(self, node: Node, scope: Scope) -> Frag:
        name = node.value
        if name in ("resource", "rootResource"):
            return (self.resource,)
        if name == "context":
            return (Branch("[r]", self.root_type),)
        if name in _CONSTANTS:
            return (Branch(f"[{_CONSTANTS[name]!r}]", "System.String"),)
        for prefix, base in (("vs-", "ValueSet"), ("ext-", "StructureDefinition")):
            if name.startswith(prefix):
                url = f"http://hl7.org/fhir/{base}/{name[len(prefix) :]}"
                return (Branch(f"[{url!r}]", "System.String"),)
        raise FhirPathTypeError(f"unknown variable %{name}")

    # ---- paths ---------------------------------------------------------------------------

    def _member(self, node: Node, scope: Scope) -> Frag:
        name = node.value
        if not node.args:
            if name[:1].isupper() and (self.model.is_type(name) or name in self.model.resources):
                return self.type_filter(scope.this, name)
            return self.navigate(scope.this, name)
        return self.navigate(self.node(node.args[0], scope), name)

    def type_filter(self, frag: Frag, name: str) -> Frag:
        """A leading type name: ``Patient.name`` keeps the context only if it is a Patient."""
        out = []
        for branch in frag:
            if branch.type is None:
                out.append(Branch(self.call("of_type", branch.code, "'FHIR'", repr(name)), name))
            elif name in self.model.lineage(branch.type):
                out.append(branch)
        if not out and self.strict:
            raise FhirPathTypeError(f"the context is not a {name}")
        return tuple(out)

    def navigate(self, frag: Frag, name: str) -> Frag:
        out: list[Branch] = []
        known = True
        for branch in frag:
            kind = branch.type
            if kind is None:
                out.append(Branch(self.call("navd", branch.code, repr(name)), None))
                known = False
            elif kind.startswith("System."):
                continue
            elif kind in PRIMITIVES:
                if name in ("extension", "id"):
                    type_name = "Extension" if name == "extension" else "string"
                    out.append(Branch(self.call("navd", branch.code, repr(name)), type_name))
            else:
                out.extend(self._elements(branch, name))
        if not out and known and frag and not self.lenient:
            raise FhirPathTypeError(
                f"no element {name!r} in {sorted({b.type or '' for b in frag})}"
            )
        return tuple(out)

    def _elements(self, branch: Branch, name: str) -> list[Branch]:
        assert branch.type is not None
        elements = self.model.element(branch.type, name)
        if elements is None and self.lenient:
            self.slips.append(f"{branch.type}.{name}")
        out = []
        for element in elements or ():
            helper = "navp" if element.type in PRIMITIVES else "nav"
            code = self.call(helper, branch.code, repr(element.key))
            out.append(Branch(code, None if element.type == "Resource" else element.type))
        return out

    def _index(self, node: Node, scope: Scope) -> Frag:
        target = self.merge(self.node(node.args[0], scope))
        index = merge_code(self.node(node.args[1], scope))
        return (Branch(self.call("at", target.code, index), target.type),)

    # ---- operators -----------------------------------------------------------------------

    def _unary(self, node: Node, scope: Scope) -> Frag:
        operand = self.node(node.args[0], scope)
        if node.value == "+":
            return operand
        return (Branch(self.call("neg", self.value_of(operand)), None),)

    def _binary(self, node: Node, scope: Scope) -> Frag:
        operator = node.value
        left, right = (self.node(arg, scope) for arg in node.args)
        if operator == "|":
            types = {branch.type for branch in left + right}
            code = self.call("union", merge_code(left), merge_code(right))
            return (Branch(code, types.pop() if len(types) == 1 else None),)
        if operator in _LOGIC:
            truths = (self.call("truth", merge_code(side)) for side in (left, right))
            return (Branch(self.call(_LOGIC[operator], *truths), "System.Boolean"),)
        helper = _BINARY[operator]
        result_type = (
            "System.Boolean"
            if helper in ("eq", "ne", "equiv", "nequiv", "lt", "le", "gt", "ge", "in_", "contains")
            else None
        )
        return (Branch(self.call(helper, self.value_of(left), self.value_of(right)), result_type),)

    def _type(self, node: Node, scope: Scope) -> Frag:
        operand = self.node(node.args[0], scope)
        if node.value == "is":
            return self.is_type(operand, node.args[1].value)
        return self.as_type(operand, node.args[1].value)

    # ---- types ---------------------------------------------------------------------------

    def resolve_type(self, name: str) -> tuple[str, str]:
        namespace, _, local = name.rpartition(".")
        if namespace == "System":
            return "System", local
        known = self.model.is_type(local) or local in self.model.resources
        if namespace == "FHIR" or known:
            if not known:
                raise FhirPathTypeError(f"unknown type {name}")
            return "FHIR", local
        if namespace == "" and local in SYSTEM_TYPES:
            return "System", local
        raise FhirPathTypeError(f"unknown type {name}")

    def static_match(
        self, kind: str | None, namespace: str, name: str, exact: bool = False
    ) -> bool | None:
        """Whether items of type ``kind`` are ``namespace.name`` (None: only known at run time).
        ``as`` and ``ofType`` take a primitive only as its own type (a code is no string)."""
        if kind is None:
            return None
        if kind.startswith("System."):
            return namespace == "System" and kind == f"System.{name}"
        if exact and kind in PRIMITIVES:
            return namespace == "FHIR" and kind == name
        return namespace == "FHIR" and name in self.model.lineage(kind)

    def is_type(self, frag: Frag, name: str) -> Frag:
        namespace, local = self.resolve_type(name)
        pairs = ", ".join(
            f"({branch.code}, {self.static_match(branch.type, namespace, local)})"
            for branch in frag
        )
        code = self.call("is_branches", f"[{pairs}]", repr(namespace), repr(local))
        return (Branch(code, "System.Boolean"),)

    def as_type(self, frag: Frag, name: str, filtering: bool = False) -> Frag:
        """``as`` (one item at most, unless lenient: R4 search uses it as a filter) and,
        with ``filtering``, ``ofType``."""
        namespace, local = self.resolve_type(name)
        out = []
        for branch in frag:
            match = self.static_match(branch.type, namespace, local, exact=True)
            if match:
                out.append(branch)
            elif match is None:
                code = self.call("of_type", branch.code, repr(namespace), repr(local))
                out.append(Branch(code, local if namespace == "FHIR" else f"System.{local}"))
        if not (filtering or self.lenient) and frag:
            whole = merge_code(frag)
            out = [replace(b, code=self.call("only_if_single", b.code, whole)) for b in out]
        return tuple(out)


def _union_parts(node: Node) -> list[Node]:
    """The operands of a top-level ``a | b | c`` (search indexes them all; order is moot)."""
    while node.kind == "paren" and node.args[0].kind == "binary" and node.args[0].value == "|":
        node = node.args[0]
    if node.kind == "binary" and node.value == "|":
        return _union_parts(node.args[0]) + _union_parts(node.args[1])
    return [node]
