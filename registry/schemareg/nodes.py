"""A schema as the compatibility checker sees it: one typed node per constraint group.

Confluent's JSON Schema provider compares schemas after loading them into
typed objects (string, number, object, array, enum, combined, ...), and its
rules are phrased in terms of those types: a ``{"type": "string", "enum":
[...]}`` is an *all-of* of a string and an enum, a ``{"type": ["string",
"null"]}`` is an *any-of* of a string and a null. To decide as it does, the
checker loads schemas the same way; this module is that loader.

``$ref`` becomes a :class:`Ref` node whose target is loaded on first use and
cached by location, so a recursive schema is a finite graph of nodes and the
checker can recognise a pair it is already comparing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core.canonical import canonical_json
from registry.schemareg.documents import DRAFT7, Bundle, check_draft, draft_of, rebased
from registry.schemareg.errors import InvalidSchemaError

__all__ = [
    "MISSING",
    "Array",
    "Boolean",
    "Combined",
    "Conditional",
    "Const",
    "Enum",
    "FalseNode",
    "Node",
    "Not",
    "Null",
    "Number",
    "Object",
    "Ref",
    "String",
    "TrueNode",
    "json_key",
    "load",
]

MISSING: Any = object()  # "keyword absent", distinct from a JSON null

_ANNOTATIONS = {
    "$schema", "$id", "id", "$comment", "title", "description", "default", "examples",
    "definitions", "$defs", "readOnly", "writeOnly", "deprecated", "$anchor",
    "$dynamicAnchor", "$vocabulary", "contentEncoding", "contentMediaType",
}  # fmt: skip
_OBJECT = {
    "properties", "additionalProperties", "required", "minProperties", "maxProperties",
    "dependencies", "dependentRequired", "dependentSchemas", "patternProperties",
    "propertyNames", "unevaluatedProperties",
}  # fmt: skip
_ARRAY = {
    "items", "additionalItems", "prefixItems", "minItems", "maxItems", "uniqueItems",
    "contains", "minContains", "maxContains", "unevaluatedItems",
}  # fmt: skip
#: Keywords 2020-12 added: draft 7 validators ignore them, so the checker must too.
_NOT_DRAFT7 = {"minContains", "maxContains", "unevaluatedProperties", "unevaluatedItems"}
#: Keywords beside ``unevaluatedProperties`` / ``unevaluatedItems`` whose subschemas may
#: evaluate properties (items) in place, so that the "unevaluated" ones depend on them.
IN_PLACE = (
    "allOf", "anyOf", "oneOf", "if", "then", "else", "$ref", "$dynamicRef", "dependentSchemas",
)  # fmt: skip
_NUMBER = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"}
_STRING = {"minLength", "maxLength", "pattern", "format"}


def json_key(value: Any) -> bytes:
    """A hashable key under which JSON-equal values (``1`` and ``1.0``) meet and others
    (``true`` and ``1``) do not."""
    return canonical_json(value)


@dataclass(eq=False)
class Node:
    """Common annotations; subclasses add their constraints. Identity is the node's place."""

    raw: Any = None
    id: Any = MISSING
    title: Any = MISSING
    description: Any = MISSING
    default: Any = MISSING

    @property
    def has_default(self) -> bool:
        return self.default is not MISSING


@dataclass(eq=False)
class TrueNode(Node):
    """Accepts everything (``true``, ``{}``, or only annotations)."""


@dataclass(eq=False)
class FalseNode(Node):
    """Accepts nothing (``false``)."""


@dataclass(eq=False)
class Boolean(Node):
    pass


@dataclass(eq=False)
class Null(Node):
    pass


@dataclass(eq=False)
class String(Node):
    # False when built from string keywords without "type": other types pass then.
    requires_type: bool = True
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    format: str | None = None  # asserted by the validators (a "date" must be a real date)


@dataclass(eq=False)
class Number(Node):
    requires_type: bool = True  # as for String
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None
    exclusive_maximum: float | None = None
    multiple_of: float | None = None
    requires_integer: bool = False


@dataclass(eq=False)
class Object(Node):
    requires_type: bool = True  # as for String
    properties: dict[str, Node] = field(default_factory=dict)
    required: list[str] = field(default_factory=list)
    permits_additional: bool = True
    additional: Node | None = None
    pattern_properties: dict[str, Node] = field(default_factory=dict)
    property_dependencies: dict[str, list[str]] = field(default_factory=dict)
    schema_dependencies: dict[str, Node] = field(default_factory=dict)
    min_properties: int | None = None
    max_properties: int | None = None
    property_names: Node | None = None
    unevaluated: Node | None = None
    keywords: Mapping[str, str] = field(default_factory=dict)  # draft spelling of keywords
    # The other parts of the same JSON object (its allOf, $ref, ...): an in-place applicator
    # among them may evaluate properties, which "unevaluatedProperties" then leaves alone.
    siblings: list[Node] = field(default_factory=list)


@dataclass(eq=False)
class Array(Node):
    requires_type: bool = True  # as for String
    all_items: Node | None = None
    item_list: list[Node] | None = None
    permits_additional: bool = True
    additional: Node | None = None
    min_items: int | None = None
    max_items: int | None = None
    unique_items: bool = False
    contains: Node | None = None
    min_contains: int | None = None
    max_contains: int | None = None
    unevaluated: Node | None = None
    keywords: Mapping[str, str] = field(default_factory=dict)
    siblings: list[Node] = field(default_factory=list)  # as for Object


@dataclass(eq=False)
class Enum(Node):
    values: list[Any] = field(default_factory=list)


@dataclass(eq=False)
class Const(Node):
    value: Any = None


@dataclass(eq=False)
class Combined(Node):
    criterion: str = "allOf"  # allOf, anyOf or oneOf
    subschemas: list[Node] = field(default_factory=list)


@dataclass(eq=False)
class Not(Node):
    schema: Node | None = None


@dataclass(eq=False)
class Conditional(Node):
    """``if``/``then``/``else``; an absent ``then`` or ``else`` accepts everything."""

    condition: Node | None = None
    then: Node | None = None
    otherwise: Node | None = None


@dataclass(eq=False)
class Ref(Node):
    """A ``$ref`` (or a ``$dynamicRef``); :meth:`target` loads what it points at (once)."""

    loader: Loader | None = None
    document: str = ""
    base: str = ""  # the base URI where it is written, which a relative ref resolves against
    ref: str = ""
    dynamic: bool = False
    _target: Node | None = None

    def target(self) -> Node:
        if self._target is None:
            assert self.loader is not None
            self._target = self.loader.resolve(self.document, self.base, self.ref, self.dynamic)
        return self._target


_KEYWORDS_7 = {
    "dependencies": "dependencies",
    "dependentSchemas": "dependencies",
    "items": "items",
    "additionalItems": "additionalItems",
}
_KEYWORDS_2020 = {
    "dependencies": "dependentRequired",
    "dependentSchemas": "dependentSchemas",
    "items": "prefixItems",
    "additionalItems": "items",
}


class Loader:
    """Loads the documents of one bundle into nodes, caching each location's node."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        self._cache: dict[tuple[str, str, int], Node] = {}

    def root(self) -> Node:
        return self.load("", self.bundle.root, self.bundle.base_of(""))

    def load(self, document: str, raw: Any, base: str) -> Node:
        """The node of ``raw`` (a part of ``document`` whose base URI is ``base``), built once
        per location: the same subschema reached twice, directly or through ``$ref``, is one
        node, which is what the checker's cycle guard relies on."""
        key = (document, base, id(raw))
        node = self._cache.get(key)
        if node is None:
            node = self._build(document, raw, base)
            self._cache[key] = node
        return node

    def resolve(self, document: str, base: str, ref: str, dynamic: bool) -> Node:
        """The node ``ref`` (written in ``document`` where the base URI is ``base``) points
        at, found as the validators find it (:meth:`Bundle.locate`)."""
        return self.load(*self.bundle.locate(document, base, ref, dynamic=dynamic))

    def _build(self, document: str, raw: Any, base: str) -> Node:
        if raw is True:
            return TrueNode(raw=raw)
        if raw is False:
            return FalseNode(raw=raw)
        if not isinstance(raw, dict):
            raise InvalidSchemaError(f"Invalid schema: {raw!r} is not a schema")
        top = self.bundle.document(document)
        draft = draft_of(top)
        check_draft(raw, draft, root=raw is top)
        if draft == DRAFT7 and not _NOT_DRAFT7.isdisjoint(raw):
            raw = {k: v for k, v in raw.items() if k not in _NOT_DRAFT7}  # not draft 7's
        child = _Children(self, document, draft, base)
        parts: list[Node] = []
        if isinstance(raw.get("$ref"), str):
            ref = raw["$ref"]
            parts.append(Ref(raw=raw, loader=self, document=document, base=base, ref=ref))
            if draft == DRAFT7:  # draft 7 ignores every keyword beside $ref
                return _annotate(parts[0], raw)
        if draft != DRAFT7 and isinstance(raw.get("$dynamicRef"), str):  # not a draft 7 keyword
            ref = raw["$dynamicRef"]
            parts.append(
                Ref(raw=raw, loader=self, document=document, base=base, ref=ref, dynamic=True)
            )
        if isinstance(raw.get("enum"), list):
            parts.append(Enum(raw=raw, values=list(raw["enum"])))
        for criterion in ("allOf", "anyOf", "oneOf"):
            if isinstance(raw.get(criterion), list):
                subs = [child.at(sub) for sub in raw[criterion]]
                parts.append(Combined(raw=raw, criterion=criterion, subschemas=subs))
        if "not" in raw:
            parts.append(Not(raw=raw, schema=child.at(raw["not"])))
        if "const" in raw:
            parts.append(Const(raw=raw, value=raw["const"]))
        if any(k in raw for k in ("if", "then", "else")):
            parts.append(
                Conditional(
                    raw=raw,
                    condition=child.at(raw["if"]) if "if" in raw else None,
                    then=child.at(raw["then"]) if "then" in raw else None,
                    otherwise=child.at(raw["else"]) if "else" in raw else None,
                )
            )
        typed = self._typed(raw, child)
        for leaf in _leaves(typed):
            if isinstance(leaf, Object | Array):
                leaf.siblings = parts[:]  # what evaluates properties (items) beside it
        parts.extend(typed)
        if not parts:
            node: Node = TrueNode(raw=raw)
        elif len(parts) == 1:
            node = parts[0]
        else:
            node = Combined(raw=raw, criterion="allOf", subschemas=parts)
        return _annotate(node, raw)

    def _typed(self, raw: dict[str, Any], child: _Children) -> list[Node]:
        declared = raw.get("type", MISSING)
        if declared is MISSING:
            groups = [
                name
                for name, keys in (
                    ("object", _OBJECT),
                    ("array", _ARRAY),
                    ("number", _NUMBER),
                    ("string", _STRING),
                )
                if keys & raw.keys()
            ]
            built = [_untyped(_TYPED[name](raw, child)) for name in groups]
            if len(built) > 1:
                return [Combined(raw=raw, criterion="allOf", subschemas=built)]
            return built
        types = declared if isinstance(declared, list) else [declared]
        built = [_TYPED[t](raw, child) for t in types if t in _TYPED]
        if isinstance(declared, list) and len(built) > 1:
            return [Combined(raw=raw, criterion="anyOf", subschemas=built)]
        return built


def _leaves(built: list[Node]) -> list[Node]:
    """The typed nodes of :meth:`Loader._typed`, out of the all-of or any-of they may be in."""
    return [
        s for node in built for s in (node.subschemas if isinstance(node, Combined) else [node])
    ]


def _untyped(node: Node) -> Node:
    """Keywords of one type without ``"type"`` constrain only values of that type
    (``{"minimum": 1}`` accepts ``"ab"``), so the node must not demand the type."""
    if isinstance(node, String | Number | Object | Array):
        node.requires_type = False
    return node


@dataclass
class _Children:
    loader: Loader
    document: str
    draft: str
    base: str  # of the parent: an $id in the child starts a resource of its own

    def at(self, raw: Any) -> Node:
        return self.loader.load(self.document, raw, rebased(self.base, raw, self.draft))


def _annotate(node: Node, raw: dict[str, Any]) -> Node:
    node.raw = raw
    node.id = raw.get("$id", raw.get("id", MISSING))
    node.title = raw.get("title", MISSING)
    node.description = raw.get("description", MISSING)
    node.default = raw.get("default", MISSING)
    return node


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _num(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    return None


def _string(raw: dict[str, Any], child: _Children) -> Node:
    pattern, format_ = raw.get("pattern"), raw.get("format")
    return String(
        raw=raw,
        min_length=_int(raw.get("minLength")),
        max_length=_int(raw.get("maxLength")),
        pattern=pattern if isinstance(pattern, str) else None,
        format=format_ if isinstance(format_, str) else None,
    )


def _number(raw: dict[str, Any], child: _Children, integer: bool) -> Node:
    return Number(
        raw=raw,
        minimum=_num(raw.get("minimum")),
        maximum=_num(raw.get("maximum")),
        exclusive_minimum=_num(raw.get("exclusiveMinimum")),
        exclusive_maximum=_num(raw.get("exclusiveMaximum")),
        multiple_of=_num(raw.get("multipleOf")),
        requires_integer=integer,
    )


def _object(raw: dict[str, Any], child: _Children) -> Node:
    words = _KEYWORDS_7 if child.draft == DRAFT7 else _KEYWORDS_2020
    props: dict[str, Any] = raw["properties"] if isinstance(raw.get("properties"), dict) else {}
    additional = raw.get("additionalProperties", True)
    patterns = raw.get("patternProperties")
    node = Object(
        raw=raw,
        properties={k: child.at(v) for k, v in props.items()},
        required=[r for r in raw.get("required", []) if isinstance(r, str)]
        if isinstance(raw.get("required"), list)
        else [],
        permits_additional=additional is not False,
        additional=None if isinstance(additional, bool) else child.at(additional),
        pattern_properties={k: child.at(v) for k, v in patterns.items()}
        if isinstance(patterns, dict)
        else {},
        min_properties=_int(raw.get("minProperties")),
        max_properties=_int(raw.get("maxProperties")),
        property_names=child.at(raw["propertyNames"]) if "propertyNames" in raw else None,
        unevaluated=child.at(raw["unevaluatedProperties"])
        if "unevaluatedProperties" in raw
        else None,
        keywords=words,
    )
    dep_arrays = raw.get(words["dependencies"])
    dep_schemas = raw.get(words["dependentSchemas"])
    for name, value in (dep_arrays if isinstance(dep_arrays, dict) else {}).items():
        if isinstance(value, list):
            node.property_dependencies[name] = [v for v in value if isinstance(v, str)]
    for name, value in (dep_schemas if isinstance(dep_schemas, dict) else {}).items():
        if isinstance(value, dict | bool):
            node.schema_dependencies[name] = child.at(value)
    return node


def _array(raw: dict[str, Any], child: _Children) -> Node:
    words = _KEYWORDS_7 if child.draft == DRAFT7 else _KEYWORDS_2020
    listed = raw.get(words["items"])
    extra = raw.get(words["additionalItems"], True)
    all_items = raw.get("items") if child.draft == DRAFT7 else None
    if child.draft != DRAFT7 and "prefixItems" not in raw:
        all_items, extra = raw.get("items"), True
    return Array(
        raw=raw,
        all_items=child.at(all_items) if isinstance(all_items, dict | bool) else None,
        item_list=[child.at(s) for s in listed] if isinstance(listed, list) else None,
        permits_additional=extra is not False,
        additional=None if isinstance(extra, bool) else child.at(extra),
        min_items=_int(raw.get("minItems")),
        max_items=_int(raw.get("maxItems")),
        unique_items=raw.get("uniqueItems") is True,
        contains=child.at(raw["contains"]) if "contains" in raw else None,
        min_contains=_int(raw.get("minContains")),
        max_contains=_int(raw.get("maxContains")),
        unevaluated=child.at(raw["unevaluatedItems"]) if "unevaluatedItems" in raw else None,
        keywords=words,
    )


_TYPED: dict[str, Any] = {
    "string": _string,
    "number": lambda raw, child: _number(raw, child, False),
    "integer": lambda raw, child: _number(raw, child, True),
    "boolean": lambda raw, child: Boolean(raw=raw),
    "null": lambda raw, child: Null(raw=raw),
    "object": _object,
    "array": _array,
}


def load(bundle: Bundle) -> Node:
    """The root node of ``bundle``; ``$ref`` targets load lazily as the checker reaches them."""
    return Loader(bundle).root()
