"""The service's response schema: where it comes from, and what is checked against it.

An adapter answers in the JSON a service has registered, so it needs that
schema twice: at start, to check that each mapping can only produce what the
schema allows (:func:`check_mapping`), and on every answer, to validate the
document (:class:`ResponseValidator`). Where the schema comes from is a
:data:`SchemaLookup`: a gateway passes one backed by the schema registry's
validator cache; on its own an adapter reads local JSON Schema files
(:class:`FileSchemas`). A lookup returns one self-contained schema: :func:`bundle` embeds the
documents a schema references by name (the canonical records reference
``pk.common.json``) under ``$defs``; nothing is ever fetched from the network.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from jsonschema import exceptions as js_exceptions
from jsonschema import validators

from adapters.mapping import CompiledField, CompiledMapping, json_pointer, pointer_tokens
from core.ids import ServiceId

__all__ = [
    "FileSchemas",
    "ResponseCheck",
    "ResponseValidator",
    "SchemaLookup",
    "ValidatorFactory",
    "bundle",
    "check_mapping",
]

#: Returns the response schema registered for a service, or None when there is none.
SchemaLookup = Callable[[ServiceId], Mapping[str, Any] | None]


class ResponseCheck(Protocol):
    """Validates answers against one schema (a gateway may plug in its cached validators)."""

    def problem(self, document: Any) -> tuple[str, str] | None:
        """``(JSON Pointer, reason)`` of the first violation, or None; the reason omits values."""
        ...


#: Builds the check for a schema; ValueError if the schema is unusable.
ValidatorFactory = Callable[[Mapping[str, Any]], ResponseCheck]

_JSON_TYPES: dict[str, set[str]] = {
    "string": {"string"},
    "integer": {"integer", "number"},
    "number": {"number"},
    "boolean": {"boolean"},
}


MAX_REFERENCED = 64  # documents one schema may pull in


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def bundle(schema: Mapping[str, Any], documents: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """``schema`` made self-contained: each ``NAME#/...`` reference to one of ``documents``
    (by its reference name, e.g. ``pk.common.json``) becomes ``#/$defs/NAME/...`` with the
    document embedded there, its own local references rewritten to match.

    ValueError for a reference to a document not given, or a fragment that is not a pointer.
    """
    embedded: dict[str, Any] = {}

    def ref(value: str, base: str) -> str:
        name, _, fragment = value.partition("#")
        if fragment and not fragment.startswith("/"):
            raise ValueError(f"$ref {value!r}: only JSON Pointer fragments are supported")
        if not name:
            return "#" + base + fragment
        if name not in documents:
            raise ValueError(f"$ref {value!r} names a schema that is not available")
        key = "/$defs/" + json_pointer([name])[1:]
        if name not in embedded:
            embedded[name] = {}  # placeholder: a document may refer back
            body = {k: v for k, v in documents[name].items() if k not in ("$schema", "$id")}
            embedded[name] = rewrite(body, key)
        return "#" + key + fragment

    def rewrite(node: Any, base: str) -> Any:
        if isinstance(node, dict):
            return {
                k: ref(v, base) if k == "$ref" and isinstance(v, str) else rewrite(v, base)
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [rewrite(item, base) for item in node]
        return node

    root: dict[str, Any] = rewrite(dict(schema), "")
    if embedded:
        defs = dict(root.get("$defs", {}))
        clash = set(defs) & set(embedded)
        if clash:
            raise ValueError(f"$defs already has an entry named {sorted(clash)[0]!r}")
        root["$defs"] = defs | embedded
    return root


def _read(path: Path) -> dict[str, Any]:
    try:
        schema = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read the JSON Schema {path}: {e}") from e
    if not isinstance(schema, dict):
        raise ValueError(f"{path} is not a JSON Schema object")
    return schema


class FileSchemas:
    """Response schemas read from local JSON Schema files, one per service.

    A reference ``NAME#/...`` is read from the file ``NAME`` beside the schema
    (as ``schemas/records/`` holds ``pk.common.json``) and bundled in.
    """

    def __init__(self, files: Mapping[ServiceId, Path]) -> None:
        self._files = dict(files)
        self._cache: dict[ServiceId, dict[str, Any]] = {}

    def __call__(self, service: ServiceId) -> Mapping[str, Any] | None:
        if service not in self._files:
            return None
        if service not in self._cache:
            path = self._files[service]
            schema = _read(path)
            documents: dict[str, dict[str, Any]] = {}
            pending = [schema]
            while pending:
                for value in _refs(pending.pop()):
                    name = value.partition("#")[0]
                    if not name or name in documents:
                        continue
                    if (
                        "/" in name
                        or "\\" in name
                        or name.startswith(".")
                        or len(documents) >= MAX_REFERENCED
                    ):
                        raise ValueError(f"{path}: $ref {value!r} is not a schema beside it")
                    documents[name] = _read(path.parent / name)
                    pending.append(documents[name])
            self._cache[service] = bundle(schema, documents)
        return self._cache[service]


# Drafts in which the keywords beside a $ref are ignored.
_SIBLINGS_IGNORED = (
    validators.Draft3Validator,
    validators.Draft4Validator,
    validators.Draft6Validator,
    validators.Draft7Validator,
)


def _inline(node: Any, root: Mapping[str, Any], siblings: bool, stack: tuple[str, ...] = ()) -> Any:
    """``node`` with each local ``$ref`` replaced by its target, where that is finite.

    Resolving references is most of jsonschema's time on the canonical records
    (they reference pk.common for every field); the inlined schema means the
    same and validates about 2.5 times faster. A recursive reference is kept
    as it is, and ``$defs`` stay, so it still resolves.
    """
    if isinstance(node, list):
        return [_inline(item, root, siblings, stack) for item in node]
    if not isinstance(node, Mapping):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/") and ref not in stack:
        try:
            target: Any = root
            for token in pointer_tokens(ref[1:]):
                target = target[token]
        except (KeyError, TypeError, ValueError):
            return dict(node)  # left for the validator to report
        inlined = _inline(target, root, siblings, (*stack, ref))
        rest = {k: _inline(v, root, siblings, stack) for k, v in node.items() if k != "$ref"}
        if not rest or not siblings:
            return inlined
        return {"allOf": [inlined], **rest}
    return {
        k: v if k in ("$defs", "definitions") else _inline(v, root, siblings, stack)
        for k, v in node.items()
    }


class ResponseValidator:
    """A compiled validator for one response schema (drafts jsonschema knows; default 2020-12)."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        cls = validators.validator_for(schema, default=validators.Draft202012Validator)
        try:
            cls.check_schema(dict(schema))
        except js_exceptions.SchemaError as e:
            raise ValueError(f"not a valid JSON Schema: {e.message}") from e
        flat = _inline(schema, schema, siblings=not issubclass(cls, _SIBLINGS_IGNORED))
        self._validator = cls(flat, format_checker=cls.FORMAT_CHECKER)

    def problem(self, document: Any) -> tuple[str, str] | None:
        """``(pointer, reason)`` of the first violation, or None. The reason omits the value."""
        error = js_exceptions.best_match(self._validator.iter_errors(document))
        if error is None:
            return None
        at = json_pointer([str(p) for p in error.absolute_path])
        rule = json_pointer([str(p) for p in error.absolute_schema_path])
        return at or "/", f"fails '{error.validator}' (schema {rule})"


# --- static check of a mapping against a schema ---------------------------------------------


class _Unknown(Exception):
    """The schema position cannot be followed statically (remote $ref, anyOf...)."""


def _resolve(node: Any, root: Mapping[str, Any]) -> Mapping[str, Any]:
    seen = 0
    while isinstance(node, Mapping) and "$ref" in node:
        ref = node["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise _Unknown
        here: Any = root
        for t in pointer_tokens(ref[1:]):
            if not isinstance(here, Mapping) or t not in here:
                raise _Unknown
            here = here[t]
        node = here
        seen += 1
        if seen > 32:
            raise _Unknown
    if node is True or node == {}:
        return {}
    if not isinstance(node, Mapping):
        raise _Unknown
    return node


def _branches(node: Mapping[str, Any], root: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    yield node
    for sub in node.get("allOf", []):
        yield from _branches(_resolve(sub, root), root)


def _property(
    node: Mapping[str, Any], name: str, root: Mapping[str, Any]
) -> Mapping[str, Any] | None:
    """The schema of property ``name``; None if the object does not allow it."""
    declared = False
    for branch in _branches(node, root):
        props = branch.get("properties", {})
        if name in props:
            return _resolve(props[name], root)
        declared = declared or "properties" in branch or "additionalProperties" in branch
        extra = branch.get("additionalProperties")
        if isinstance(extra, Mapping):
            return _resolve(extra, root)
    if any("patternProperties" in b for b in _branches(node, root)):
        raise _Unknown
    return None if declared else {}


def _required(node: Mapping[str, Any], root: Mapping[str, Any]) -> set[str]:
    return {r for b in _branches(node, root) for r in b.get("required", [])}


def _types(node: Mapping[str, Any], root: Mapping[str, Any]) -> set[str] | None:
    for b in _branches(node, root):
        t = b.get("type")
        if t is not None:
            return {t} if isinstance(t, str) else set(t)
    return None


def check_mapping(mapping: CompiledMapping, schema: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every way ``mapping`` could produce a document ``schema`` refuses: ``(pointer, problem)``.

    Checked: each output pointer names a property the schema has; ``each``
    writes where the schema wants an array; a declared ``as`` type fits the
    schema's type; and every property the schema requires is written by an
    entry that always writes (``required``, a ``default`` or a constant).
    Positions the schema does not spell out statically (remote references,
    ``anyOf``) are left to the validation of each answer.
    """
    problems: list[tuple[str, str]] = []
    _check_object(mapping.fields, (), _resolve(schema, schema), schema, problems)
    return problems


def _check_object(
    fields: tuple[CompiledField, ...],
    prefix: tuple[str, ...],
    node: Mapping[str, Any],
    root: Mapping[str, Any],
    problems: list[tuple[str, str]],
) -> None:
    depth = len(prefix)
    for name in sorted(_required(node, root)):
        writers = [f for f in fields if f.target[depth] == name]
        if not any(f.guaranteed for f in writers):
            problems.append(
                (
                    json_pointer((*prefix, name)),
                    "the schema requires it, but no mapping entry always writes it "
                    "(mark one 'required: true' or give a 'default')",
                )
            )
    children: dict[str, list[CompiledField]] = {}
    for f in fields:
        children.setdefault(f.target[depth], []).append(f)
    for name, group in children.items():
        pointer = json_pointer((*prefix, name))
        try:
            sub = _property(node, name, root)
        except _Unknown:
            continue
        if sub is None:
            problems.append((pointer, "the schema has no such property"))
            continue
        leaf = [f for f in group if len(f.target) == depth + 1]
        if leaf:
            _check_leaf(leaf[0], sub, root, problems)
            continue
        types = _types(sub, root)
        if types is not None and "object" not in types:
            problems.append((pointer, f"the schema wants {'/'.join(sorted(types))} here"))
            continue
        _check_object(tuple(group), (*prefix, name), sub, root, problems)


def _check_leaf(
    f: CompiledField,
    sub: Mapping[str, Any],
    root: Mapping[str, Any],
    problems: list[tuple[str, str]],
) -> None:
    types = _types(sub, root)
    if f.each is not None:
        if types is not None and "array" not in types:
            problems.append((f.pointer, "'each' writes an array, the schema wants another type"))
            return
        if f.children is None:
            return  # an array of values: each value is validated with the answer
        try:
            items = _resolve(sub.get("items", {}), root)
        except _Unknown:
            return
        inner: list[tuple[str, str]] = []
        _check_object(f.children.fields, (), items, root, inner)
        problems.extend((f"{f.pointer}[]{p}", m) for p, m in inner)
        return
    produced: str | None = f.type
    if produced is None and f.constant is not None:
        produced = {bool: "boolean", int: "integer", float: "number", str: "string"}[
            type(f.constant)
        ]
    if produced is not None and types is not None and not (_JSON_TYPES[produced] & types):
        problems.append(
            (
                f.pointer,
                f"the mapping writes a {produced}, the schema wants {'/'.join(sorted(types))}",
            )
        )
