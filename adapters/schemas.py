"""The service's response schema: where it comes from, and what is checked against it.

An adapter answers in the JSON a service has registered, so it needs that
schema twice: at start, to check that each mapping can only produce what the
schema allows (:func:`check_mapping`), and on every answer, to validate the
document (:class:`ResponseValidator`). Where the schema comes from is a
:data:`SchemaLookup`: a gateway passes one backed by the schema registry's
validator cache; on its own an adapter reads local JSON Schema files
(:class:`FileSchemas`). A lookup returns one self-contained schema (bundled
``$ref`` targets under ``$defs``); nothing is ever fetched from the network.
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


class FileSchemas:
    """Response schemas read from local JSON Schema files, one per service."""

    def __init__(self, files: Mapping[ServiceId, Path]) -> None:
        self._files = dict(files)
        self._cache: dict[ServiceId, dict[str, Any]] = {}

    def __call__(self, service: ServiceId) -> Mapping[str, Any] | None:
        if service not in self._files:
            return None
        if service not in self._cache:
            path = self._files[service]
            try:
                schema = json.loads(path.read_text("utf-8"))
            except (OSError, ValueError) as e:
                raise ValueError(f"cannot read the JSON Schema {path}: {e}") from e
            if not isinstance(schema, dict):
                raise ValueError(f"{path} is not a JSON Schema object")
            self._cache[service] = schema
        return self._cache[service]


class ResponseValidator:
    """A compiled validator for one response schema (drafts jsonschema knows; default 2020-12)."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        cls = validators.validator_for(schema, default=validators.Draft202012Validator)
        try:
            cls.check_schema(dict(schema))
        except js_exceptions.SchemaError as e:
            raise ValueError(f"not a valid JSON Schema: {e.message}") from e
        self._validator = cls(dict(schema), format_checker=cls.FORMAT_CHECKER)

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
