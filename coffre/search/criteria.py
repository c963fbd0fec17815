"""Search criteria parsed into immutable values before any look-up is planned.

A query's names carry a modifier (``name:exact``), a chain (``subject:Patient.name``) or a
reverse chain (``_has:Observation:patient:code``); parsing here is syntax only. Which
parameters a resource type has is checked by :func:`check_criteria`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

from coffre.exceptions import FhirError, bounded
from coffre.fhir._definitions_r4 import RESOURCE_TYPES
from coffre.search.normalise import PHONETIC, phonetic
from coffre.search.parameters import SearchParameter, parameters_for

# Result parameters say how to answer, not what to find; ``_snapshot`` and ``_offset`` are
# Coffre's paging cursor, ``_totalMethod`` what fhirpy's count() adds to ``_count=0``.
RESULT_PARAMETERS = frozenset(
    {
        "_count",
        "_format",
        "_pretty",
        "_summary",
        "_elements",
        "_total",
        "_totalMethod",
        "_snapshot",
        "_offset",
        "_after",
        "_sort",
        "_include",
        "_revinclude",
        "_include:iterate",
        "_revinclude:iterate",
    }
)

# Modifiers each parameter type accepts (``missing`` goes with every type).
MODIFIERS: dict[str, frozenset[str]] = {
    "token": frozenset({"not", "text", "of-type"}),
    "string": frozenset({"exact", "contains"}),
    "reference": frozenset({"identifier"}),
    "uri": frozenset({"below", "above"}),
    "date": frozenset(),
    "number": frozenset(),
    "quantity": frozenset(),
    "composite": frozenset(),
}

# The token modifiers that read some element types only, and what they read there: on a
# parameter indexing none of them (a code, a boolean), they would match nothing.
READ_FROM: dict[str, tuple[frozenset[str], str]] = {
    "of-type": (frozenset({"Identifier"}), "an Identifier's type"),
    "text": (
        frozenset({"CodeableConcept", "Coding", "Identifier"}),
        "the text of a CodeableConcept, a Coding's display or an Identifier's type",
    ),
}


@dataclass(frozen=True, slots=True)
class Criterion:
    """One search parameter; a match needs any of ``values`` (a comma is an OR).

    ``chain`` is the rest of a chained name (``name`` in ``subject:Patient.name``), a
    search on the referenced resources; ``has`` is ``(type, reference parameter)`` of a
    ``_has``, whose ``chain`` is the criterion on those resources.
    """

    parameter: str
    values: tuple[str, ...]
    modifier: str | None = None
    chain: str | None = None
    has: tuple[str, str] | None = None

    @property
    def name(self) -> str:
        """The name as the query wrote it, for messages."""
        name = self.parameter if self.modifier is None else f"{self.parameter}:{self.modifier}"
        if self.has is not None:
            name = f"_has:{self.has[0]}:{self.has[1]}"
        if self.chain is None:
            return name
        return f"{name}{':' if self.has is not None else '.'}{self.chain}"


def split_or(raw: str, separator: str = ",") -> tuple[str, ...]:
    """Split on commas (or ``separator``) that are not escaped as ``\\,``; other escapes
    are kept, for each part's type to read."""
    parts, current, escaped = [], [], False
    for char in raw:
        if escaped:
            current.append(char if char == separator else "\\" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return tuple(parts)


def split_escaped(raw: str, separator: str) -> list[str]:
    """Split on ``separator`` unless escaped with a backslash; escapes are removed."""
    parts, current, escaped = [], [], False
    for char in raw:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


_ESCAPED = re.compile(r"\\(.)", re.DOTALL)


_TO_ESCAPE = re.compile(r"([\\,$|])")


def escape_value(value: str) -> str:
    """A value as a search parameter carries it, whatever it holds: its backslashes,
    commas, dollar signs and bars escaped (``unescape`` gives it back)."""
    return _TO_ESCAPE.sub(r"\\\1", value)


def unescape(raw: str) -> str:
    """A value once its escapes are removed (``a\\|b`` is ``a|b``), for the types that
    split nothing out of it: a string, a uri, a reference."""
    return _ESCAPED.sub(r"\1", raw)


# References a chained or _has criterion may follow: each is a search of every type its
# parameter may name (145 for a Task's subject), and a deep name would nest them.
MAX_LINKS = 4


def criterion(name: str, raw: str) -> Criterion:
    """One query parameter as a criterion (syntax only)."""
    if raw == "":
        raise FhirError(400, "invalid", f"the search parameter {name!r} has no value")
    links = name.count(".") + name.count("_has:")
    if links > MAX_LINKS:
        raise FhirError(
            400,
            "too-costly",
            f"the search parameter {name[:100]!r} follows {links} references;"
            f" Coffre follows {MAX_LINKS} at most",
        )
    if name == "_has" or not all(name.split(".")):  # leniently ignored, it would match all
        raise FhirError(
            400,
            "invalid",
            f"{name!r} is not the name of a search parameter: a chain joins names with single"
            " dots (general-practitioner.name), a reverse chain is _has:Type:reference:parameter",
        )
    values = split_or(raw)
    if any(not value.strip() for value in values):
        raise FhirError(
            400,
            "invalid",
            f"the search parameter {name!r} has an empty value in {raw!r}: give a value"
            " between each two commas, or leave the parameter out",
        )
    if name.startswith("_has:"):
        parts = name.split(":", 3)
        if len(parts) != 4 or not all(parts[1:]):
            raise FhirError(
                400, "invalid", f"{name!r} is not a _has:Type:reference:parameter criterion"
            )
        return Criterion("_has", values, has=(parts[1], parts[2]), chain=parts[3])
    head, dot, chain = name.partition(".")
    parameter, colon, modifier = head.partition(":")
    if parameter == PHONETIC and not dot:  # a name as it sounds: its words' codes
        values = tuple(phonetic(value) or value for value in values)
    return Criterion(parameter, values, modifier if colon else None, chain if dot else None)


NOT_UTF8 = (
    "has %-escapes that are not UTF-8: escape each character's UTF-8 bytes (é is %C3%A9, not %E9)"
)


def query_pairs(query: str) -> list[tuple[str, str]]:
    """The decoded parameters of a query string (``identifier=sys%7Cval&_id=a``): a 400 when
    its %-escapes are not UTF-8, which decoded leniently would search for a replacement
    character, match nothing, and let a conditional create create a duplicate."""
    try:
        return parse_qsl(query, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise FhirError(400, "structure", f"the query '{bounded(query)}' {NOT_UTF8}") from None


def same_criteria(query: str) -> str:
    """A query's criteria written one way (decoded, sorted, escaped again): two
    conditional creates of one transaction whose criteria differ only in how they are
    escaped or ordered (``identifier=urn:a|1``, ``identifier=urn:a%7C1``) are the same."""
    return urlencode(sorted(query_pairs(query)))


def parse_criteria(pairs: str | list[tuple[str, str]]) -> tuple[Criterion, ...]:
    """Parse ``identifier=sys|val&_id=a,b`` (or decoded pairs); repeated parameters are ANDed.
    The parameters are checked against a type later (``check_criteria``)."""
    items = query_pairs(pairs) if isinstance(pairs, str) else pairs
    return tuple(criterion(name, raw) for name, raw in items if name not in RESULT_PARAMETERS)


def parameter_of(resource_type: str, name: str) -> SearchParameter | None:
    """A parameter Coffre can search on, or None: it has an expression, and a type whose
    values Coffre compares (not ``special``: Location's ``near`` would match nothing)."""
    param = parameters_for(resource_type).get(name)
    searchable = param is not None and param.extract is not None and param.type in MODIFIERS
    return param if searchable else None


@dataclass(frozen=True, slots=True)
class Problem:
    """Why Coffre cannot answer a criterion. ``unknown``: it names a parameter Coffre does
    not know, which a lenient search ignores; otherwise it asks a known parameter for what
    it cannot be (a modifier, a target type), always a 400 as R4 demands: ignored, it
    would hand out every record."""

    reason: str
    unknown: bool


def problem(resource_type: str, found: Criterion) -> Problem | None:
    """Why Coffre cannot answer a criterion on a type, or None when it can."""
    if found.has is not None:
        return _has_problem(resource_type, found)
    param = parameter_of(resource_type, found.parameter)
    if param is None:
        reason = f"{resource_type} has no search parameter {found.parameter!r} Coffre supports"
        return Problem(reason, unknown=True)
    if found.chain is not None:
        return _chain_problem(found, param)
    modifier = found.modifier
    if modifier is None or modifier == "missing":
        return None
    if found.parameter == PHONETIC:
        reason = f"Coffre does not support the modifier :{modifier} on {PHONETIC!r}, a code"
        return Problem(reason, unknown=False)
    if param.type == "reference" and modifier[:1].isupper():
        return None if modifier in param.targets or not param.targets else _bad(found, param)
    if modifier in READ_FROM and not READ_FROM[modifier][0] & param.element_types:
        kinds = ", ".join(sorted(param.element_types))
        reason = f":{modifier} reads {READ_FROM[modifier][1]}; {found.parameter!r} indexes {kinds}"
        return Problem(reason, unknown=False)
    return None if modifier in MODIFIERS.get(param.type, ()) else _bad(found, param)


def _has_problem(resource_type: str, found: Criterion) -> Problem | None:
    """``_has:Target:reference:...``: a reference of the target that can point to the type
    searched (one that never does would match nothing, saying nothing)."""
    assert found.has is not None
    target, reference = found.has
    param = parameter_of(target, reference)
    if param is None or param.type != "reference":
        return Problem(
            f"{target} has no reference search parameter {reference!r}", unknown=param is None
        )
    if param.targets and resource_type not in param.targets:
        only = ", ".join(param.targets)
        reason = f"{target}'s {reference!r} never refers to a {resource_type}, only to {only}"
        return Problem(reason, unknown=False)
    return None if found.chain is None else problem(target, criterion(found.chain, "x"))


def _chain_problem(found: Criterion, param: SearchParameter) -> Problem | None:
    """``reference[:Type].parameter``: answerable on at least one of the types it may
    reach; a misuse of a parameter one of them knows is said rather than ignored."""
    if param.type != "reference":
        reason = f"{found.parameter!r} is not a reference: it cannot be chained"
        return Problem(reason, unknown=False)
    modifier = found.modifier
    if modifier and not (
        modifier[:1].isupper() and (modifier in param.targets or not param.targets)
    ):
        return _bad(found, param)  # a chain goes through a type its reference may name
    inner = criterion(found.chain or "", "x")
    problems = [problem(target, inner) for target in ((modifier,) if modifier else param.targets)]
    if any(found_problem is None for found_problem in problems):
        return None
    misuse = next((p for p in problems if p is not None and not p.unknown), None)
    reason = f"no target of {found.parameter!r} has a search parameter {found.chain!r}"
    return misuse or Problem(reason, unknown=True)


def _bad(found: Criterion, param: SearchParameter) -> Problem:
    reason = f"Coffre does not support the modifier :{found.modifier} on the {param.type} parameter {found.parameter!r}"
    return Problem(reason, unknown=False)


def _unknown_type(found: Criterion) -> str | None:
    """A resource type a ``_has`` or a chain's ``:Type`` names, at any depth, that does not
    exist: the client's typo, refused even where unknown parameters are ignored."""
    named = found.has[0] if found.has is not None else None
    modifier = found.modifier
    if found.chain is not None and modifier and modifier[:1].isupper():
        named = modifier
    if named is not None and named not in RESOURCE_TYPES:
        return named
    return None if found.chain is None else _unknown_type(criterion(found.chain, "x"))


def _check_values(resource_type: str, found: Criterion) -> None:
    """Refuse a value whose parts a parameter of its type cannot read: it would match
    nothing, or more than the client meant, without saying why."""
    for raw in found.values:
        reason = _reading_problem(resource_type, found, raw)
        if reason is not None:
            raise FhirError(400, "invalid", f"{found.name}={raw}: {reason}")


def _reading_problem(resource_type: str, found: Criterion, raw: str) -> str | None:
    """Why ``raw`` cannot be read by the parameter a criterion ends at, past its chains
    and ``_has`` (on the first target type that has it), or None."""
    if found.has is not None or found.chain is not None:
        inner = criterion(found.chain or "", "x")
        if found.has is not None:
            return _reading_problem(found.has[0], inner, raw)
        param = parameter_of(resource_type, found.parameter)
        targets = (found.modifier,) if found.modifier else param.targets if param else ()
        readable = (t for t in targets if problem(t, inner) is None)
        return next((r for t in readable if (r := _reading_problem(t, inner, raw))), None)
    param = parameter_of(resource_type, found.parameter)
    if param is None or found.modifier == "missing":
        return None
    return _value_problem(param, param.type, found.modifier, raw)


def _value_problem(param: SearchParameter, kind: str, modifier: str | None, raw: str) -> str | None:
    if kind == "composite":
        parts = split_or(raw, "$")
        types = "$".join(component.type for component in param.components)
        if len(parts) != len(param.components):
            return f"{param.code} takes {len(param.components)} values joined by $ ({types})"
        for component, part in zip(param.components, parts, strict=True):
            if not part:
                return f"{param.code} has an empty part in {raw!r}: give each of {types}"
            reason = _value_problem(param, component.type, None, part)
            if reason is not None:
                return reason
        return None
    fields = split_escaped(raw, "|")
    if kind == "quantity" and (len(fields) not in (1, 3) or _system_without_code(fields)):
        return "a quantity is number, number|system|code, or number||code (any system)"
    if kind == "token" and modifier not in ("of-type", "text") and len(fields) > 2:
        return (
            "a token is code, system|code, |code or system| (a | within a system or code is"
            " escaped as \\|)"
        )
    if kind == "token" and modifier == "of-type" and (len(fields) != 3 or not all(fields[1:])):
        return (
            ":of-type takes system|code|value (the identifier type's system and code, then"
            " its value; only the system may be empty)"
        )
    return None


def _system_without_code(fields: list[str]) -> bool:
    """``number|system|``: the system alone would be ignored and any unit match."""
    return len(fields) == 3 and bool(fields[1]) and not fields[2]


def check_criteria(
    resource_type: str,
    criteria: tuple[Criterion, ...],
    *,
    strict: bool = True,
    what: str = "search",
) -> tuple[tuple[Criterion, ...], list[str]]:
    """The criteria Coffre answers, and why each other one is ignored.

    An unknown parameter is an error when ``strict`` (and always a bad modifier or target
    on a known one, at any depth of a chain or ``_has``, as the specification demands);
    leniently it is ignored and reported.
    """
    kept, ignored = [], []
    for found in criteria:
        if (named := _unknown_type(found)) is not None:
            raise FhirError(400, "invalid", f"{found.name}: {named} is not an R4 resource type")
        found_problem = problem(resource_type, found)
        if found_problem is None:
            _check_values(resource_type, found)
            kept.append(found)
            continue
        if strict or not found_problem.unknown:
            message = f"the {what} cannot be answered: {found_problem.reason}"
            raise FhirError(400, "not-supported", message)
        ignored.append(found_problem.reason)
    return tuple(kept), ignored
