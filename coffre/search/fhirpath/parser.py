"""FHIRPath (N1, as FHIR R4 uses it): a lexer and a precedence-climbing parser to a small AST."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any


class FhirPathError(ValueError):
    """A FHIRPath expression that cannot be parsed, compiled or evaluated."""


class FhirPathSyntaxError(FhirPathError):
    """The text is not FHIRPath."""


class FhirPathTypeError(FhirPathError):
    """The expression is well formed but means nothing for the types it is applied to."""


@dataclass(frozen=True, slots=True)
class Node:
    """An AST node: ``kind`` says which, ``value`` holds a name or literal, ``args`` sub-nodes."""

    kind: str
    value: Any = None
    args: tuple[Node, ...] = ()


_TOKEN = re.compile(
    r"""
    (?P<ws>\s+|//[^\n]*|/\*.*?\*/)
  | (?P<datetime>@\d{4}(?:-\d{2}(?:-\d{2})?)?T(?:\d{2}(?::\d{2}(?::\d{2}(?:\.\d+)?)?)?)?(?:Z|[+-]\d{2}:\d{2})?)
  | (?P<date>@\d{4}(?:-\d{2}(?:-\d{2})?)?)
  | (?P<time>@T\d{2}(?::\d{2}(?::\d{2}(?:\.\d+)?)?)?)
  | (?P<number>\d+(?:\.\d+)?)
  | (?P<string>'(?:[^'\\]|\\.)*')
  | (?P<delimited>`(?:[^`\\]|\\.)*`)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<special>\$(?:this|index|total))
  | (?P<op><=|>=|!=|!~|[-+*/&|<>=~.,()\[\]{}%])
    """,
    re.VERBOSE | re.DOTALL,
)
_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}
CALENDAR_UNITS = {
    f"{unit}{plural}"
    for unit in ("year", "month", "week", "day", "hour", "minute", "second", "millisecond")
    for plural in ("", "s")
}
# Binary operators from the loosest to the tightest binding.
_LEVELS: tuple[frozenset[str], ...] = (
    frozenset({"implies"}),
    frozenset({"or", "xor"}),
    frozenset({"and"}),
    frozenset({"in", "contains"}),
    frozenset({"=", "~", "!=", "!~"}),
    frozenset({"<=", "<", ">", ">="}),
    frozenset({"|"}),
    frozenset({"is", "as"}),
    frozenset({"+", "-", "&"}),
    frozenset({"*", "/", "div", "mod"}),
)


def unescape(text: str) -> str:
    """The value of a quoted string or delimited identifier, without its quotes."""

    def one(match: re.Match[str]) -> str:
        char = match.group(1)
        if char.startswith("u"):
            return chr(int(char[1:], 16))
        return _ESCAPES.get(char, char)

    return re.sub(r"\\(u[0-9a-fA-F]{4}|.)", one, text[1:-1])


def tokenize(text: str) -> list[tuple[str, str]]:
    """``(kind, text)`` pairs; comments and white space dropped."""
    tokens, position = [], 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise FhirPathSyntaxError(f"unexpected character at {position}: {text[position]!r}")
        position = match.end()
        kind = match.lastgroup or ""
        if kind != "ws":
            tokens.append((kind, match.group()))
    tokens.append(("eof", ""))
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.position = 0

    def peek(self, offset: int = 0) -> tuple[str, str]:
        return self.tokens[min(self.position + offset, len(self.tokens) - 1)]

    def take(self) -> tuple[str, str]:
        token = self.tokens[self.position]
        self.position += 1
        return token

    def expect(self, text: str) -> None:
        kind, got = self.take()
        if got != text or kind in ("string", "delimited"):
            raise FhirPathSyntaxError(f"expected {text!r}, found {got or 'the end'!r}")

    def at(self, text: str) -> bool:
        kind, got = self.peek()
        return got == text and kind in ("op", "ident")

    def expression(self, level: int = 0) -> Node:
        if level == len(_LEVELS):
            return self.unary()
        left = self.expression(level + 1)
        while True:
            kind, text = self.peek()
            if kind not in ("op", "ident") or text not in _LEVELS[level]:
                return left
            self.take()
            if text in ("is", "as"):
                left = Node("type", text, (left, Node("name", self.type_name())))
            else:
                left = Node("binary", text, (left, self.expression(level + 1)))

    def unary(self) -> Node:
        if self.at("+") or self.at("-"):
            sign = self.take()[1]
            return Node("unary", sign, (self.unary(),))
        return self.postfix(self.term())

    def postfix(self, node: Node) -> Node:
        while True:
            if self.at("."):
                self.take()
                node = self.invocation(node)
            elif self.at("["):
                self.take()
                index = self.expression()
                self.expect("]")
                node = Node("index", None, (node, index))
            else:
                return node

    def identifier(self) -> str:
        kind, text = self.take()
        if kind == "ident":
            return text
        if kind == "delimited":
            return unescape(text)
        raise FhirPathSyntaxError(f"expected a name, found {text or 'the end'!r}")

    def type_name(self) -> str:
        name = self.identifier()
        while self.at("."):
            self.take()
            name += "." + self.identifier()
        return name

    def invocation(self, target: Node | None) -> Node:
        kind, text = self.peek()
        if kind == "special":
            self.take()
            return Node("var", text)
        name = self.identifier()
        if not self.at("("):
            return Node("member", name, (target,) if target is not None else ())
        self.take()
        args: list[Node] = []
        if not self.at(")"):
            args.append(self.expression())
            while self.at(","):
                self.take()
                args.append(self.expression())
        self.expect(")")
        return Node("call", name, (target or Node("this"), *args))

    def term(self) -> Node:
        kind, text = self.peek()
        if kind == "number":
            return self.number()
        if kind == "string":
            self.take()
            return Node("literal", unescape(text))
        if kind in ("date", "datetime", "time"):
            self.take()
            return Node(kind, text[1:])
        if kind == "op" and text == "(":
            self.take()
            inner = self.expression()
            self.expect(")")
            return Node("paren", None, (inner,))
        if kind == "op" and text == "{":
            self.take()
            self.expect("}")
            return Node("empty")
        if kind == "op" and text == "%":
            self.take()
            return Node("env", self.identifier())
        if kind == "ident" and text in ("true", "false"):
            self.take()
            return Node("literal", text == "true")
        return self.invocation(None)

    def number(self) -> Node:
        text = self.take()[1]
        value: int | Decimal = Decimal(text) if "." in text else int(text)
        kind, unit = self.peek()
        if kind == "string":
            self.take()
            return Node("quantity", (Decimal(text), unescape(unit)))
        if kind == "ident" and unit in CALENDAR_UNITS:
            self.take()
            return Node("quantity", (Decimal(text), unit))
        return Node("literal", value)


def parse(text: str) -> Node:
    """The AST of a FHIRPath expression."""
    parser = _Parser(text)
    node = parser.expression()
    kind, rest = parser.peek()
    if kind != "eof":
        raise FhirPathSyntaxError(f"unexpected {rest!r} after the expression")
    return node
