"""The FHIR R4 type model the compiler needs: each type's elements, their types and
cardinality, choice elements (``value[x]``), and which type specialises which.

Built from the official JSON schema (``fhir.schema.json``) at compile time only: compiled
code never consults it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

# FHIR primitive types and the FHIRPath System type each one is compared as.
PRIMITIVES: dict[str, str] = {
    "boolean": "Boolean",
    "string": "String",
    "code": "String",
    "id": "String",
    "markdown": "String",
    "uri": "String",
    "url": "String",
    "canonical": "String",
    "oid": "String",
    "uuid": "String",
    "base64Binary": "String",
    "xhtml": "String",
    "integer": "Integer",
    "positiveInt": "Integer",
    "unsignedInt": "Integer",
    "decimal": "Decimal",
    "date": "Date",
    "dateTime": "DateTime",
    "instant": "DateTime",
    "time": "Time",
}
SYSTEM_TYPES = frozenset(
    {"Boolean", "String", "Integer", "Decimal", "Date", "DateTime", "Time", "Quantity"}
)
_PARENTS: dict[str, str] = {
    "code": "string",
    "id": "string",
    "markdown": "string",
    "url": "uri",
    "canonical": "uri",
    "oid": "uri",
    "uuid": "uri",
    "positiveInt": "integer",
    "unsignedInt": "integer",
    "Age": "Quantity",
    "Count": "Quantity",
    "Distance": "Quantity",
    "Duration": "Quantity",
    "MoneyQuantity": "Quantity",
    "SimpleQuantity": "Quantity",
    "DomainResource": "Resource",
}
# Resources that are not DomainResources.
_PLAIN_RESOURCES = frozenset({"Bundle", "Binary", "Parameters"})
_RESOURCE_ELEMENTS = ("id", "meta", "implicitRules", "language")
_DOMAIN_ELEMENTS = (*_RESOURCE_ELEMENTS, "text", "contained", "extension", "modifierExtension")
ANY_RESOURCE = "Resource"


@dataclass(frozen=True, slots=True)
class Element:
    """One JSON property an element is stored under (a choice element has several)."""

    key: str
    type: str
    many: bool


def _capitalised(type_name: str) -> str:
    return type_name[0].upper() + type_name[1:]


class Model:
    """Element lookup by type name; types are the schema's definition names
    (``Observation``, ``Observation_Component``, ``Quantity``, ``dateTime``)."""

    def __init__(self, schema: dict[str, Any]) -> None:
        definitions: dict[str, Any] = schema["definitions"]
        self.resources = frozenset(schema["discriminator"]["mapping"])
        patterns: dict[str, list[str]] = defaultdict(list)
        for name, definition in definitions.items():
            if name in PRIMITIVES and "pattern" in definition:
                patterns[definition["pattern"]].append(name)
        self.elements: dict[str, dict[str, tuple[Element, ...]]] = {}
        self.parents = dict(_PARENTS)
        for name, definition in definitions.items():
            properties = definition.get("properties")
            if properties is None:
                continue
            self.elements[name] = self._elements(properties, patterns)
            if name in self.resources:
                self.parents[name] = "Resource" if name in _PLAIN_RESOURCES else "DomainResource"
            elif "_" in name:
                self.parents[name] = "BackboneElement"
        basic = self.elements["Basic"]
        self.elements["Resource"] = {key: basic[key] for key in _RESOURCE_ELEMENTS}
        self.elements["DomainResource"] = {key: basic[key] for key in _DOMAIN_ELEMENTS}
        self.elements["BackboneElement"] = self.elements["Element"] | {
            "modifierExtension": basic["modifierExtension"]
        }

    @staticmethod
    def _type_of(key: str, spec: dict[str, Any], patterns: dict[str, list[str]]) -> str | None:
        if "$ref" in spec:
            name: str = spec["$ref"].rsplit("/", 1)[1]
            return ANY_RESOURCE if name == "ResourceList" else name
        if "enum" in spec:
            return "code"
        if "const" in spec:
            return None
        found = patterns.get(str(spec.get("pattern")))
        if not found:
            return "boolean" if spec.get("type") == "boolean" else "string"
        # uri and canonical (and others) share a pattern: a choice member's name tells which.
        return next((name for name in found if key.endswith(_capitalised(name))), found[0])

    def _elements(
        self, properties: dict[str, Any], patterns: dict[str, list[str]]
    ) -> dict[str, tuple[Element, ...]]:
        plain: dict[str, Element] = {}
        descriptions: dict[str, str] = {}
        for key, spec in properties.items():
            if key.startswith("_"):
                continue
            many = spec.get("type") == "array"
            type_name = self._type_of(key, spec["items"] if many else spec, patterns)
            if type_name is not None:
                plain[key] = Element(key, type_name, many)
                descriptions[key] = spec.get("description", "")
        choices: dict[str, list[Element]] = defaultdict(list)
        for key, element in plain.items():
            suffix = _capitalised(element.type)
            if key.endswith(suffix) and len(key) > len(suffix) and not element.many:
                prefix = key[: -len(suffix)]
                if prefix not in plain:
                    choices[prefix].append(element)
        result: dict[str, tuple[Element, ...]] = {key: (e,) for key, e in plain.items()}
        for prefix, members in choices.items():
            # Members of a choice share one description; that tells them from look-alikes
            # such as Task.instantiatesCanonical and Task.instantiatesUri.
            if len(members) > 1 and len({descriptions[m.key] for m in members}) == 1:
                for member in members:
                    del result[member.key]
                result[prefix] = tuple(members)
        return result

    def element(self, type_name: str, name: str) -> tuple[Element, ...] | None:
        """The properties an element is stored under, or None if the type has no such element."""
        for candidate in self.lineage(type_name):
            found = self.elements.get(candidate, {}).get(name)
            if found is not None:
                return found
        return None

    def lineage(self, type_name: str) -> list[str]:
        """The type and the types it specialises, the most specific first."""
        chain = [type_name]
        while chain[-1] in self.parents:
            chain.append(self.parents[chain[-1]])
        if chain[-1] not in PRIMITIVES and chain[-1] not in ("Resource", "Element"):
            chain.append("Element")
        return chain

    def is_type(self, name: str) -> bool:
        return name in self.elements or name in PRIMITIVES or name in self.parents
