"""JSON Schema documents as the registry accepts them: drafts, meta-schemas, references.

A registered schema is a *bundle*: the root document plus every document its
references name, transitively, keyed by reference name. ``$ref`` resolves by
that name (``{"$ref": "pk.common.json#/$defs/cnic"}``), by a JSON Pointer into
the same document, or by an ``$id`` declared inside the bundle. Nothing is
ever fetched from the network: a ``$ref`` to anything else is refused when
the schema is registered (:func:`check_schema`), and the validators built
from a bundle have retrieval switched off as a second line.

Drafts 7 and 2020-12 are accepted; a schema without ``$schema`` is draft 7,
as in Confluent's JSON Schema provider.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any
from urllib.parse import unquote, urldefrag, urljoin

import jsonschema
import jsonschema_rs
from pydantic import BaseModel, ConfigDict, Field

from core.canonical import canonical_digest
from core.errors import BadRequestError
from core.web import parse_json
from registry.globalconf import SchemaVersion, SubjectName
from registry.schemareg.errors import InvalidSchemaError

__all__ = [
    "BASE_URI",
    "DRAFT7",
    "DRAFT202012",
    "Bundle",
    "PatternMatcher",
    "Reference",
    "check_schema",
    "compact_json",
    "draft_of",
    "fingerprint",
    "parse_schema_text",
    "pattern_matcher",
    "pointer",
    "regex_search",
    "subschemas",
]

DRAFT7 = "http://json-schema.org/draft-07/schema#"
DRAFT202012 = "https://json-schema.org/draft/2020-12/schema"
_DRAFTS = {
    "http://json-schema.org/draft-07/schema#": DRAFT7,
    "http://json-schema.org/draft-07/schema": DRAFT7,
    "https://json-schema.org/draft-07/schema#": DRAFT7,
    "https://json-schema.org/draft-07/schema": DRAFT7,
    "https://json-schema.org/draft/2020-12/schema": DRAFT202012,
    "https://json-schema.org/draft/2020-12/schema#": DRAFT202012,
}
#: The base URI a root document without ``$id`` is resolved against. ``.invalid`` is reserved
#: (RFC 2606): no resolver can reach it, and nothing here tries.
BASE_URI = "https://schemas.shahrah.invalid/"
MAX_SCHEMA_CHARS = 512 * 1024  # one schema document; a 200-property record is ~40 KiB
#: Distinct ``patternProperties`` regular expressions in one bundle; the canonical records have
#: none, and each may cost the compatibility checker tens of milliseconds to compile.
MAX_PATTERN_PROPERTIES = 32


class Reference(BaseModel):
    """A reference of a registered schema: ``$ref`` to ``name`` means ``subject`` at ``version``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=1024)
    subject: SubjectName
    version: SchemaVersion


def parse_schema_text(text: str) -> Any:
    """The schema string of a request, parsed strictly (no duplicate keys, no NaN)."""
    if len(text) > MAX_SCHEMA_CHARS:
        raise InvalidSchemaError(f"Invalid schema: longer than {MAX_SCHEMA_CHARS} characters")
    try:
        value = parse_json(text)
    except BadRequestError as e:
        raise InvalidSchemaError(f"Invalid schema: {e.message}") from e
    if not isinstance(value, dict | bool):
        raise InvalidSchemaError("Invalid schema: a JSON Schema is an object or a boolean")
    return value


def compact_json(value: Any) -> str:
    """Compact JSON that keeps the author's key order (the form the registry serves)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def fingerprint(schema: Any) -> str:
    """Hex SHA-256 of the RFC 8785 canonical schema: key order and spacing do not count."""
    return canonical_digest(schema)


def draft_of(schema: Any) -> str:
    """The draft URI of ``schema``: its ``$schema``, or draft 7 when it names none."""
    if not isinstance(schema, dict) or "$schema" not in schema:
        return DRAFT7
    named = schema["$schema"]
    if not isinstance(named, str) or named not in _DRAFTS:
        raise InvalidSchemaError(
            f"Invalid schema: unknown draft {named!r} in $schema; "
            f"accepted are {DRAFT7} and {DRAFT202012}"
        )
    return _DRAFTS[named]


def pointer(parts: tuple[str | int, ...]) -> str:
    """RFC 6901 JSON Pointer of ``parts``."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def regex_search(regex: str, text: str) -> bool:
    """Whether ``regex`` (as JSON Schema writes them) matches anywhere in ``text``, exactly as
    the validators match ``pattern`` and ``patternProperties``; a pattern they cannot compile
    matches nothing.

    Python's ``re`` is not used: a registered schema is a member's input, and a pattern such
    as ``^(a+)+$`` would backtrack for longer than the universe is old on a crafted property
    name, stalling the registry's compatibility checker or a gateway's projection. The
    validators' engine matches in linear time, or gives up after a bounded search.
    """
    matcher = pattern_matcher(regex)
    return matcher is not None and matcher.is_valid(text)


PatternMatcher = jsonschema_rs.Validator


@lru_cache(maxsize=1024)
def pattern_matcher(regex: str) -> PatternMatcher | None:
    """A validator that accepts the strings ``regex`` matches, or None if the validators
    cannot compile it (cached: compiling can take tens of milliseconds)."""
    try:
        return jsonschema_rs.validator_for({"type": "string", "pattern": regex})
    except ValueError:  # jsonschema_rs.ValidationError: not a regex it accepts
        return None


_ONE = ("additionalProperties", "contains", "propertyNames", "not", "if", "then", "else")
_ONE_2020 = ("unevaluatedProperties", "unevaluatedItems", "contentSchema")
_MAPS = ("properties", "patternProperties", "definitions", "$defs", "dependentSchemas")
_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")


def subschemas(node: Any, draft: str) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    """Each immediate subschema of ``node`` with its path relative to ``node``."""
    if not isinstance(node, dict):
        return
    single = _ONE + (_ONE_2020 if draft == DRAFT202012 else ("additionalItems",))
    for key in single:
        if isinstance(node.get(key), dict | bool):
            yield (key,), node[key]
    items = node.get("items")
    if isinstance(items, dict | bool):
        yield ("items",), items
    elif isinstance(items, list) and draft == DRAFT7:
        for i, sub in enumerate(items):
            yield ("items", i), sub
    for key in _MAPS:
        value = node.get(key)
        if isinstance(value, dict):
            for name, sub in value.items():
                if isinstance(sub, dict | bool):
                    yield (key, name), sub
    deps = node.get("dependencies")
    if draft == DRAFT7 and isinstance(deps, dict):
        for name, sub in deps.items():
            if isinstance(sub, dict | bool):
                yield ("dependencies", name), sub
    for key in _LISTS:
        value = node.get(key)
        if isinstance(value, list):
            for i, sub in enumerate(value):
                yield (key, i), sub


def _walk(node: Any, draft: str) -> Iterator[tuple[Any, Any]]:
    for path, current, _ in _scoped_walk(node, draft):
        yield path, current


def _scoped_walk(node: Any, draft: str) -> Iterator[tuple[tuple[str | int, ...], Any, Any]]:
    """(path, subschema, scope) for ``node`` and every subschema in it, where the scope is the
    innermost enclosing schema resource (one with an ``$id`` naming a URI, else ``node``):
    what a ``$ref`` of a bare fragment, ``#/...`` or ``#name``, points into."""
    stack: list[tuple[tuple[str | int, ...], Any, Any]] = [((), node, node)]
    while stack:
        path, current, scope = stack.pop()
        own = current.get("$id") if isinstance(current, dict) else None
        if isinstance(own, str) and urldefrag(own)[0]:
            scope = current
        yield path, current, scope
        stack.extend((path + rel, sub, scope) for rel, sub in subschemas(current, draft))


@dataclass(frozen=True)
class Bundle:
    """A root schema with the documents of its references (name → schema), all resolved."""

    root: Any
    draft: str
    references: Mapping[str, Any] = field(default_factory=dict)

    @property
    def base_uri(self) -> str:
        """Where relative ``$ref`` names resolve from: the root's ``$id``, else :data:`BASE_URI`."""
        own = self.root.get("$id") if isinstance(self.root, dict) else None
        return urljoin(BASE_URI, own) if isinstance(own, str) else BASE_URI + "root.json"

    def resources(self) -> list[tuple[str, Any]]:
        """(URI, document) for every reference, as validators' registries want them."""
        base = self.base_uri
        return [(urljoin(base, name), doc) for name, doc in sorted(self.references.items())]

    def document(self, name: str) -> Any:
        """The root (``""``) or the reference called ``name``."""
        return self.root if name == "" else self.references[name]

    @cached_property
    def _id_index(self) -> dict[str, tuple[str, Any]]:
        found: dict[str, tuple[str, Any]] = {}
        for name in ("", *self.references):
            for _, node in _walk(self.document(name), self.draft):
                if isinstance(node, dict) and isinstance(node.get("$id"), str):
                    uri = urljoin(self.base_uri, urldefrag(node["$id"])[0])
                    found.setdefault(uri, (name, node))
        return found

    @cached_property
    def _by_uri(self) -> dict[str, tuple[str, Any]]:
        """Every document by the URI validators know it by, then every ``$id`` in them."""
        documents = {urljoin(self.base_uri, n): (n, doc) for n, doc in self.references.items()}
        return {**self._id_index, **documents, self.base_uri: ("", self.root)}

    def resolve(self, document: str, ref: str) -> tuple[str, Any]:
        """(document name, subschema) that ``ref``, written in ``document``, points at."""
        target, fragment = urldefrag(ref)
        name, node = document, self.document(document)
        if target:
            found = self._by_uri.get(urljoin(self.base_uri, target))
            if found is None:
                raise InvalidSchemaError(f"Invalid schema: cannot resolve $ref {ref!r}")
            name, node = found
        return name, _follow(node, fragment, ref)


def _follow(node: Any, fragment: str, ref: str) -> Any:
    """The part of ``node`` that ``fragment`` (of ``ref``) names: an anchor or a JSON Pointer."""
    if fragment and not fragment.startswith("/"):
        return _anchor(node, fragment, ref)
    for token in fragment.split("/")[1:]:
        token = unquote(token).replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            raise InvalidSchemaError(f"Invalid schema: $ref {ref!r} points at nothing")
    return node


def _anchor(document: Any, name: str, ref: str) -> Any:
    stack = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("$anchor") == name or node.get("$dynamicAnchor") == name:
                return node
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    raise InvalidSchemaError(f"Invalid schema: no $anchor for $ref {ref!r}")


def _check_refs(bundle: Bundle) -> None:
    """Refuse every ``$ref`` that could only be satisfied from the network, or that names a
    part of the bundle that is not there: the validators refuse to compile either, so every
    gateway would fail on the schema."""
    for doc_name, doc in (("", bundle.root), *bundle.references.items()):
        for path, node, scope in _scoped_walk(doc, bundle.draft):
            if not isinstance(node, dict):
                continue
            for keyword in ("$ref", "$dynamicRef", "$recursiveRef"):
                ref = node.get(keyword)
                if not isinstance(ref, str):
                    continue
                target, fragment = urldefrag(ref)
                where = (f"reference {doc_name!r} " if doc_name else "") + pointer((*path, keyword))
                if target and urljoin(bundle.base_uri, target) not in bundle._by_uri:
                    raise InvalidSchemaError(
                        f"Invalid schema: {keyword} {ref!r} at {where} names neither a part of "
                        "this schema nor one of its references; Shahrah never fetches a $ref "
                        "from the network, so declare it as a reference {name, subject, version}",
                        detail={"pointer": where, "ref": ref},
                    )
                try:
                    if target:
                        bundle.resolve(doc_name, ref)
                    else:
                        _follow(scope, fragment, ref)
                except InvalidSchemaError as e:
                    raise InvalidSchemaError(
                        f"{e.message} (at {where}); validators could not compile the schema",
                        detail={"pointer": where, "ref": ref},
                    ) from e


def _check_patterns(bundle: Bundle) -> None:
    """Refuse more distinct ``patternProperties`` than :data:`MAX_PATTERN_PROPERTIES`.

    The compatibility checker compiles each to test property names against it, and one with
    lookarounds can take 40 ms to compile: a thousand of them in an anonymous compatibility
    check held the registry for minutes.
    """
    found: set[str] = set()
    for doc in (bundle.root, *bundle.references.values()):
        for _, node in _walk(doc, bundle.draft):
            if isinstance(node, dict) and isinstance(node.get("patternProperties"), dict):
                found.update(node["patternProperties"])
    if len(found) > MAX_PATTERN_PROPERTIES:
        raise InvalidSchemaError(
            f"Invalid schema: {len(found)} distinct patternProperties regular expressions, "
            f"with its references; at most {MAX_PATTERN_PROPERTIES} are accepted",
            detail={"patterns": len(found), "limit": MAX_PATTERN_PROPERTIES},
        )


def check_schema(bundle: Bundle) -> None:
    """Raise :class:`InvalidSchemaError` unless every document of ``bundle`` passes its
    draft's meta-schema, every ``$ref`` points at a part of the bundle that is there, and the
    bundle declares at most :data:`MAX_PATTERN_PROPERTIES` ``patternProperties``."""
    for name, doc in (("", bundle.root), *bundle.references.items()):
        failure = _meta_failure(json.dumps(doc, sort_keys=True), draft_of(doc) == DRAFT7)
        if failure is not None:
            where, message = failure
            prefix = f"reference {name!r} " if name else ""
            raise InvalidSchemaError(
                f"Invalid schema: {prefix}fails the meta-schema at {where}: {message}",
                detail={"pointer": where, "reference": name or None},
            )
    _check_refs(bundle)
    _check_patterns(bundle)


@lru_cache(maxsize=256)
def _meta_failure(text: str, draft7: bool) -> tuple[str, str] | None:
    """Where and how the document ``text`` fails its draft's meta-schema, or None. Cached by
    the document's text: the registry checks the same documents again and again (the
    canonical records at every start, a reference with every schema that uses it), and
    this check is most of what registering one costs."""
    validator_class = jsonschema.Draft7Validator if draft7 else jsonschema.Draft202012Validator
    checker = validator_class(
        validator_class.META_SCHEMA, format_checker=validator_class.FORMAT_CHECKER
    )
    error = jsonschema.exceptions.best_match(checker.iter_errors(json.loads(text)))
    if error is None:
        return None
    return pointer(tuple(error.absolute_path)) or "/", error.message
