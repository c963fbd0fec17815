"""How FHIRPath function calls become Python: the complete compiler."""

from __future__ import annotations

from coffre.search.fhirpath.compiler import Branch, CoreCompiler, Frag, Scope, merge_code
from coffre.search.fhirpath.functions import FUNCTIONS
from coffre.search.fhirpath.parser import FhirPathTypeError, Node

_CONVERSIONS = {
    "Boolean": ("to_boolean", ()),
    "Integer": ("to_integer", ()),
    "Decimal": ("to_decimal", ()),
    "String": ("to_string", ()),
    "Quantity": ("to_quantity", ()),
    "Date": ("to_temporal", ("'date'",)),
    "DateTime": ("to_temporal", ("'datetime'",)),
    "Time": ("to_temporal", ("'time'",)),
}
_SLICES = {"first": "[:1]", "last": "[-1:]", "tail": "[1:]"}
_NOW = {"now": "now", "today": "today", "timeOfDay": "time_of_day"}


def _type_name(node: Node) -> str:
    """A type given as a function argument: ``Quantity``, ``FHIR.string``, ``System.Integer``."""
    if node.kind == "member" and not node.args:
        return str(node.value)
    if node.kind == "member":
        return f"{_type_name(node.args[0])}.{node.value}"
    raise FhirPathTypeError("a type name was expected")


def _referred_type(node: Node) -> str | None:
    """``T`` when a criterion is exactly ``resolve() is T``."""
    if node.kind == "type" and node.value == "is":
        operand = node.args[0]
        if operand.kind == "call" and operand.value == "resolve" and len(operand.args) == 1:
            return str(node.args[1].value) if operand.args[0].kind == "this" else None
    return None


class Compiler(CoreCompiler):
    """The FHIRPath compiler: ``fn_<name>`` methods compile one function each; the other
    functions go through tables."""

    def _call(self, node: Node, scope: Scope) -> Frag:
        name, target_node, args = node.value, node.args[0], node.args[1:]
        target = self.node(target_node, scope)
        method = getattr(self, f"fn_{name}", None)
        if method is not None:
            result: Frag = method(target, args, scope, target_node)
            return result
        if name in FUNCTIONS:
            helper, least, most = FUNCTIONS[name]
            if not least <= len(args) <= most:
                raise FhirPathTypeError(f"{name}() takes {least} to {most} arguments")
            values = [self.value_of(self.node(arg, scope)) for arg in args]
            source = (
                self.value_of(target)
                if name in _NUMERIC
                else self.call("values", self.merge(target).code)
            )
            return (Branch(self.call(helper, source, *values), None),)
        for prefix in ("to", "convertsTo"):
            kind = name[len(prefix) :]
            if name.startswith(prefix) and kind in _CONVERSIONS:
                converter, extra = _CONVERSIONS[kind]
                extra += tuple(self.value_of(self.node(arg, scope)) + "[0]" for arg in args)
                outer = "convert" if prefix == "to" else "converts"
                code = self.call(outer, self.value_of(target), self.call_name(converter), *extra)
                return (Branch(code, f"System.{kind}" if prefix == "to" else "System.Boolean"),)
        if name in _NOW:
            return (Branch(f"[{self.call(_NOW[name])}]", None),)
        raise FhirPathTypeError(f"unknown function {name}()")

    def call_name(self, helper: str) -> str:
        self.helpers.add(helper)
        return helper

    def lambda_scope(self, branch: Branch, scope: Scope, code: str) -> tuple[str, Scope, str]:
        """A loop variable over ``branch`` and the scope its criterion is compiled in."""

        item, index = self.fresh(), self.fresh("i")
        return item, Scope((Branch(f"[{item}]", branch.type),), index, scope.total), index

    def _loop(self, item: str, index: str, source: str, body: str) -> str:
        if index in body:
            return f"for {index}, {item} in enumerate({source})"
        return f"for {item} in {source}"

    # ---- filtering and projection --------------------------------------------------------

    def fn_where(self, target: Frag, args: tuple[Node, ...], scope: Scope, _: Node) -> Frag:
        referred = _referred_type(args[0])
        if referred is not None:  # where(resolve() is T), in most reference parameters
            self.resolve_type(referred)
            return tuple(
                Branch(self.call("refers_to", b.code, repr(referred), self.resource.code), b.type)
                for b in target
            )
        out = []
        for branch in target:
            item, inner, index = self.lambda_scope(branch, scope, branch.code)
            test = self.call("test", merge_code(self.node(args[0], inner)))
            loop = self._loop(item, index, branch.code, test)
            out.append(Branch(f"[{item} {loop} if {test}]", branch.type))
        return tuple(out)

    def fn_select(self, target: Frag, args: tuple[Node, ...], scope: Scope, _: Node) -> Frag:
        out = []
        for branch in target:
            item, inner, index = self.lambda_scope(branch, scope, branch.code)
            projected = self.merge(self.node(args[0], inner))
            out_item = self.fresh("y")
            loop = self._loop(item, index, branch.code, projected.code)
            out.append(
                Branch(f"[{out_item} {loop} for {out_item} in {projected.code}]", projected.type)
            )
        return tuple(out)

    def _quantified(self, target: Frag, args: tuple[Node, ...], scope: Scope, how: str) -> str:

        parts = []
        for branch in target:
            item, inner, index = self.lambda_scope(branch, scope, branch.code)
            test = self.call("test", merge_code(self.node(args[0], inner)))
            parts.append(f"{how}({test} {self._loop(item, index, branch.code, test)})")
        joiner = " or " if how == "any" else " and "
        return joiner.join(parts) or ("False" if how == "any" else "True")

    def fn_exists(self, target: Frag, args: tuple[Node, ...], scope: Scope, _: Node) -> Frag:
        if not args:
            return (Branch(f"[len({self.merge(target).code}) > 0]", "System.Boolean"),)
        return (Branch(f"[{self._quantified(target, args, scope, 'any')}]", "System.Boolean"),)

    def fn_all(self, target: Frag, args: tuple[Node, ...], scope: Scope, _: Node) -> Frag:
        return (Branch(f"[{self._quantified(target, args, scope, 'all')}]", "System.Boolean"),)

    def fn_repeat(self, target: Frag, args: tuple[Node, ...], scope: Scope, _: Node) -> Frag:
        merged = self.merge(target)
        item = self.fresh()
        projected = self.merge(self.node(args[0], Scope((Branch(f"[{item}]", None),))))
        return (Branch(self.call("repeat", merged.code, f"lambda {item}: {projected.code}"), None),)

    def fn_aggregate(self, target: Frag, args: tuple[Node, ...], scope: Scope, _: Node) -> Frag:
        merged = self.merge(target)
        item, index, total = self.fresh(), self.fresh("i"), self.fresh("t")
        inner = Scope((Branch(f"[{item}]", merged.type),), index, total)
        step = merge_code(self.node(args[0], inner))
        start = merge_code(self.node(args[1], scope)) if len(args) > 1 else "[]"
        code = self.call(
            "aggregate", merged.code, f"lambda {item}, {index}, {total}: {step}", start
        )
        return (Branch(code, None),)

    def fn_sort(self, target: Frag, args: tuple[Node, ...], scope: Scope, _: Node) -> Frag:
        merged = self.merge(target)
        keys = []
        for arg in args:
            descending = arg.kind == "unary" and arg.value == "-"
            item = self.fresh()
            expression = arg.args[0] if descending else arg
            key = merge_code(self.node(expression, Scope((Branch(f"[{item}]", merged.type),))))
            keys.append(f"(lambda {item}: {self.call('values', key)}, {descending})")
        code = self.call("sort_items", merged.code, f"[{', '.join(keys)}]")
        return (Branch(code, merged.type),)

    def fn_iif(self, target: Frag, args: tuple[Node, ...], scope: Scope, node: Node) -> Frag:
        explicit = node.kind != "this"
        inner = Scope(target, scope.index, scope.total) if explicit else scope
        condition = merge_code(self.node(args[0], inner))
        then = self.merge(self.node(args[1], inner))
        otherwise = (
            self.merge(self.node(args[2], inner)) if len(args) > 2 else Branch("[]", then.type)
        )
        code = self.call(
            "iif",
            merge_code(target) if explicit else "None",
            f"lambda: {condition}",
            f"lambda: {then.code}",
            f"lambda: {otherwise.code}",
        )
        return (Branch(code, then.type if then.type == otherwise.type else None),)

    def fn_trace(self, target: Frag, args: tuple[Node, ...], scope: Scope, _: Node) -> Frag:
        return target

    # ---- types ---------------------------------------------------------------------------

    def fn_ofType(self, target: Frag, args: tuple[Node, ...], scope: Scope, _: Node) -> Frag:
        return self.as_type(target, _type_name(args[0]), filtering=True)

    def fn_as(self, target: Frag, args: tuple[Node, ...], scope: Scope, _: Node) -> Frag:
        return self.as_type(target, _type_name(args[0]))

    def fn_is(self, target: Frag, args: tuple[Node, ...], scope: Scope, _: Node) -> Frag:
        return self.is_type(target, _type_name(args[0]))

    def fn_type(self, target: Frag, args: tuple[Node, ...], scope: Scope, node: Node) -> Frag:
        out = []
        for branch in target:
            if branch.type is None:
                out.append(Branch(self.call("type_info", branch.code), None))
                continue
            namespace, _dot, name = branch.type.rpartition(".")
            info = {"namespace": namespace or "FHIR", "name": name}
            out.append(Branch(f"[{info!r} for _ in {branch.code}]", None))
        return tuple(out)

    # ---- existence and subsetting --------------------------------------------------------

    def _on_merged(self, template: str, target: Frag, kind: str | None = "") -> Frag:
        """``template`` around the merged input; the item type kept unless ``kind`` is given."""

        merged = self.merge(target)
        return (Branch(template.format(merged.code), merged.type if kind == "" else kind),)

    def fn_empty(self, target: Frag, args: tuple[Node, ...], scope: Scope, _: Node) -> Frag:
        return self._on_merged("[not {}]", target, "System.Boolean")

    def fn_count(self, target: Frag, args: tuple[Node, ...], scope: Scope, _: Node) -> Frag:
        return self._on_merged("[len({})]", target, "System.Integer")

    def fn_not(self, target: Frag, args: tuple[Node, ...], scope: Scope, _: Node) -> Frag:
        return self._on_merged(self.call("not_", "{}"), target, "System.Boolean")

    def fn_single(self, target: Frag, args: tuple[Node, ...], scope: Scope, _: Node) -> Frag:
        return self._on_merged(self.call("single", "{}"), target)

    def fn_distinct(self, target: Frag, args: tuple[Node, ...], scope: Scope, _: Node) -> Frag:
        return self._on_merged(self.call("distinct", "{}"), target)

    def fn_isDistinct(self, target: Frag, args: tuple[Node, ...], scope: Scope, _: Node) -> Frag:
        merged = self.merge(target).code
        return self._on_merged(
            f"[len({self.call('distinct', merged)}) == len({{}})]", target, "System.Boolean"
        )

    def fn_children(self, target: Frag, args: tuple[Node, ...], scope: Scope, _: Node) -> Frag:
        return self._on_merged(self.call("children", "{}"), target, None)

    def fn_descendants(self, target: Frag, args: tuple[Node, ...], scope: Scope, _: Node) -> Frag:
        return self._on_merged(self.call("descendants", "{}"), target, None)

    def fn_resolve(self, target: Frag, args: tuple[Node, ...], scope: Scope, _: Node) -> Frag:
        return (Branch(self.call("resolve", self.merge(target).code, self.resource.code), None),)

    def fn_hasValue(self, target: Frag, args: tuple[Node, ...], scope: Scope, _: Node) -> Frag:
        return self._on_merged(self.call("has_value", "{}"), target, "System.Boolean")

    def fn_getValue(self, target: Frag, args: tuple[Node, ...], scope: Scope, _: Node) -> Frag:
        return self._on_merged(self.call("values", "{}"), target)

    def fn_extension(self, target: Frag, args: tuple[Node, ...], scope: Scope, _: Node) -> Frag:
        url = self.value_of(self.node(args[0], scope))
        return (Branch(self.call("extension", self.merge(target).code, url), "Extension"),)

    def fn_conformsTo(self, target: Frag, args: tuple[Node, ...], scope: Scope, _: Node) -> Frag:
        url = self.value_of(self.node(args[0], scope))
        return (Branch(self.call("conforms_to", self.merge(target).code, url), "System.Boolean"),)

    def fn_htmlChecks(self, target: Frag, args: tuple[Node, ...], scope: Scope, _: Node) -> Frag:
        return self._on_merged("[True]", target, "System.Boolean")

    def fn_lowBoundary(self, target: Frag, args: tuple[Node, ...], scope: Scope, _: Node) -> Frag:
        return self._boundary(target, args, scope, high=False)

    def fn_highBoundary(self, target: Frag, args: tuple[Node, ...], scope: Scope, _: Node) -> Frag:
        return self._boundary(target, args, scope, high=True)

    def _boundary(self, target: Frag, args: tuple[Node, ...], scope: Scope, high: bool) -> Frag:
        extra = [self.value_of(self.node(arg, scope)) for arg in args]
        return (Branch(self.call("fn_boundary", self.value_of(target), str(high), *extra), None),)

    def _pair(
        self: Compiler,
        helper: str,
        target: Frag,
        args: tuple[Node, ...],
        scope: Scope,
        kind: str | None = None,
    ) -> Frag:
        other = self.node(args[0], scope)
        types = {branch.type for branch in target + other}
        code = self.call(helper, self.merge(target).code, self.merge(other).code)
        return (Branch(code, kind or (types.pop() if len(types) == 1 else None)),)

    def fn_union(self, target: Frag, args: tuple[Node, ...], scope: Scope, _: Node) -> Frag:
        return self._pair("union", target, args, scope)

    def fn_combine(self, target: Frag, args: tuple[Node, ...], scope: Scope, _: Node) -> Frag:
        return self._pair("combine", target, args, scope)

    def fn_intersect(self, target: Frag, args: tuple[Node, ...], scope: Scope, _: Node) -> Frag:
        return self._pair("intersect", target, args, scope)

    def fn_exclude(self, target: Frag, args: tuple[Node, ...], scope: Scope, _: Node) -> Frag:
        return self._pair("exclude", target, args, scope)

    def fn_subsetOf(self, target: Frag, args: tuple[Node, ...], scope: Scope, _: Node) -> Frag:
        return self._pair("subset_of", target, args, scope, "System.Boolean")

    def fn_supersetOf(self, target: Frag, args: tuple[Node, ...], scope: Scope, _: Node) -> Frag:
        return self._pair("superset_of", target, args, scope, "System.Boolean")

    def _slice(self, target: Frag, args: tuple[Node, ...], scope: Scope, template: str) -> Frag:
        count = self.call("first_int", self.value_of(self.node(args[0], scope)))
        return self._on_merged("{}" + template.replace("N", count), target)

    def fn_skip(self, target: Frag, args: tuple[Node, ...], scope: Scope, _: Node) -> Frag:
        return self._slice(target, args, scope, "[max(N, 0):]")

    def fn_take(self, target: Frag, args: tuple[Node, ...], scope: Scope, _: Node) -> Frag:
        return self._slice(target, args, scope, "[:max(N, 0)]")

    def fn_first(self, target: Frag, args: tuple[Node, ...], scope: Scope, _: Node) -> Frag:
        return self._on_merged("{}" + _SLICES["first"], target)

    def fn_last(self, target: Frag, args: tuple[Node, ...], scope: Scope, _: Node) -> Frag:
        return self._on_merged("{}" + _SLICES["last"], target)

    def fn_tail(self, target: Frag, args: tuple[Node, ...], scope: Scope, _: Node) -> Frag:
        return self._on_merged("{}" + _SLICES["tail"], target)

    def _truths(self, target: Frag, helper: str, wanted: bool) -> Frag:
        return self._on_merged(self.call(helper, "{}", str(wanted)), target, "System.Boolean")

    def fn_allTrue(self, target: Frag, args: tuple[Node, ...], scope: Scope, _: Node) -> Frag:
        return self._truths(target, "all_true", True)

    def fn_allFalse(self, target: Frag, args: tuple[Node, ...], scope: Scope, _: Node) -> Frag:
        return self._truths(target, "all_true", False)

    def fn_anyTrue(self, target: Frag, args: tuple[Node, ...], scope: Scope, _: Node) -> Frag:
        return self._truths(target, "any_true", True)

    def fn_anyFalse(self, target: Frag, args: tuple[Node, ...], scope: Scope, _: Node) -> Frag:
        return self._truths(target, "any_true", False)


_NUMERIC = frozenset(
    {
        "abs",
        "ceiling",
        "floor",
        "truncate",
        "exp",
        "ln",
        "log",
        "power",
        "round",
        "sqrt",
        "precision",
        "comparable",
    }
)
