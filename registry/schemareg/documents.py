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


def _based_walk(
    node: Any, base: str, draft: str
) -> Iterator[tuple[tuple[str | int, ...], Any, str]]:
    """(path, subschema, base URI) for ``node``, met where the base URI is ``base``, and for
    every subschema in it."""
    stack: list[tuple[tuple[str | int, ...], Any, str]] = [((), node, base)]
    while stack:
        path, current, outer = stack.pop()
        inner = rebased(outer, current, draft)
        yield path, current, inner
        stack.extend((path + rel, sub, inner) for rel, sub in subschemas(current, draft))


def rebased(base: str, node: Any, draft: str) -> str:
    """The base URI inside ``node``, a subschema met where the base URI is ``base``."""
    own = _own_uri(node, draft)
    return urljoin(base, own) if own else base


def _own_uri(node: Any, draft: str) -> str | None:
    """The URI ``node``'s ``$id`` names, if it has one.

    Such an ``$id`` makes ``node`` a schema resource of its own: a relative ``$ref`` in it
    resolves against that ``$id``, and ``#/...`` or ``#name`` points into it. Draft 7's
    ``"$id": "#name"`` is an anchor instead, and an ``$id`` beside a draft 7 ``$ref`` is
    ignored like every other keyword there.
    """
    own = node.get("$id") if isinstance(node, dict) else None
    if not isinstance(own, str) or (draft == DRAFT7 and "$ref" in node):
        return None
    return urldefrag(own)[0] or None


def _anchors(node: Any, draft: str) -> list[str]:
    """The names ``node`` answers to as ``#name``: ``$anchor`` and ``$dynamicAnchor`` in
    2020-12, ``"$id": "#name"`` in draft 7 (which knows no ``$anchor``)."""
    if not isinstance(node, dict):
        return []
    if draft == DRAFT7:
        own = node.get("$id")
        return [own[1:]] if isinstance(own, str) and own.startswith("#") and own[1:] else []
    return [node[k] for k in ("$anchor", "$dynamicAnchor") if isinstance(node.get(k), str)]


def check_draft(node: Any, draft: str, *, root: bool) -> None:
    """Refuse a subschema the validators read in another draft than its document's.

    The compatibility checker reads a document in one draft: where a validator reads
    otherwise, it would compare something else. Both switch drafts at a subschema's own
    ``$schema`` (in some cases only one of them does); and jsonschema-rs, which gateways
    run, enforces draft 7's ``dependencies`` in a 2020-12 schema, where the reference
    validator and the checker ignore it.
    """
    if not isinstance(node, dict):
        return
    if not root and "$schema" in node and draft_of(node) != draft:
        raise InvalidSchemaError(
            f"Invalid schema: a subschema names the draft {node['$schema']!r} inside a "
            f"{draft} document; register it as a schema of its own and reference it"
        )
    if draft == DRAFT202012 and "dependencies" in node:
        raise InvalidSchemaError(
            "Invalid schema: 'dependencies' is draft 7's keyword, which validators read "
            "differently in a 2020-12 schema; use dependentRequired or dependentSchemas"
        )


@dataclass(frozen=True)
class _Index:
    """Every URI and anchor a ``$ref`` in the bundle can name, as the validators see them."""

    resources: dict[str, tuple[str, Any, str]]  # URI → (document name, resource, its base)
    anchors: dict[tuple[str, str], Any]  # (resource URI, name) → subschema
    dynamic: dict[str, set[str]]  # $dynamicAnchor name → URIs of the resources declaring it


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

    def _uri(self, name: str) -> str:
        """The URI the validators know the root (``""``) or a reference by."""
        return self.base_uri if name == "" else urljoin(self.base_uri, name)

    def base_of(self, name: str) -> str:
        """The base URI at the top of the root (``""``) or of the reference ``name``."""
        doc = self.document(name)
        return rebased(self._uri(name), doc, draft_of(doc))

    def walk(self, name: str) -> Iterator[tuple[tuple[str | int, ...], Any, str]]:
        """(path, subschema, base URI) for every subschema of the document ``name``."""
        doc = self.document(name)
        return _based_walk(doc, self._uri(name), draft_of(doc))

    @cached_property
    def _index(self) -> _Index:
        """Refuses what the validators do not agree on: one URI or one anchor of a resource
        naming two subschemas (jsonschema-rs takes the last, jsonschema the first), and a
        subschema in another draft than its document."""
        index = _Index({}, {}, {})

        def claim(uri: str, name: str, node: Any, base: str) -> None:
            if index.resources.setdefault(uri, (name, node, base))[1] is not node:
                raise InvalidSchemaError(
                    f"Invalid schema: {uri!r} names two different subschemas (an $id given "
                    "twice, or the URI of the schema or of one of its references); validators "
                    "disagree on which one a $ref to it means",
                    detail={"uri": uri},
                )

        for name in ("", *self.references):
            draft = draft_of(self.document(name))
            claim(self._uri(name), name, self.document(name), self.base_of(name))
            for path, node, base in self.walk(name):
                check_draft(node, draft, root=not path)
                if not path or _own_uri(node, draft):
                    claim(base, name, node, base)
                for anchor in _anchors(node, draft):
                    if index.anchors.setdefault((base, anchor), node) is not node:
                        raise InvalidSchemaError(
                            f"Invalid schema: two subschemas of {base!r} declare the anchor "
                            f"{anchor!r}; validators disagree on which one #{anchor} means",
                            detail={"uri": base, "anchor": anchor},
                        )
                if draft == DRAFT202012 and isinstance(node, dict):
                    dynamic = node.get("$dynamicAnchor")
                    if isinstance(dynamic, str):
                        index.dynamic.setdefault(dynamic, set()).add(base)
        return index

    def resolve(self, document: str, ref: str) -> tuple[str, Any]:
        """(document name, subschema) that ``ref``, written in ``document`` outside any
        nested schema resource, points at (:meth:`locate` knows where it is written)."""
        name, node, _ = self.locate(document, self.base_of(document), ref)
        return name, node

    def locate(
        self, document: str, base: str, ref: str, *, dynamic: bool = False
    ) -> tuple[str, Any, str]:
        """(document name, subschema, its base URI) that ``ref``, written in ``document``
        where the base URI is ``base``, points at; ``dynamic`` for a 2020-12 ``$dynamicRef``.

        A ``$dynamicRef`` to a ``$dynamicAnchor`` means the one of the outermost resource
        that declares it on the path that reached it: one subschema only when one resource
        declares it. Otherwise it is refused, as the checker compares one subschema per
        ``$ref``.
        """
        uri, fragment = urldefrag(urljoin(base, ref))
        found = self._index.resources.get(uri)
        if found is None:
            raise InvalidSchemaError(
                f"Invalid schema: $ref {ref!r} names nothing in the bundle, so validators could "
                "not compile it"
            )
        name, resource, base = found
        if fragment.startswith("/") or not fragment:
            node, base = _follow(resource, base, draft_of(self.document(name)), fragment, ref)
            return name, node, base
        node = self._index.anchors.get((base, fragment))
        if node is None:
            raise InvalidSchemaError(
                f"Invalid schema: no anchor for $ref {ref!r}, so validators could not compile it"
            )
        declaring = self._index.dynamic.get(fragment, set())
        if dynamic and node.get("$dynamicAnchor") == fragment and len(declaring) > 1:
            raise InvalidSchemaError(
                f"Invalid schema: $dynamicRef {ref!r} means the $dynamicAnchor {fragment!r} "
                f"of any of {len(declaring)} schema resources, depending on how it is reached; "
                "the compatibility checker cannot compare that, so declare the anchor once"
            )
        return name, node, base


def _follow(node: Any, base: str, draft: str, fragment: str, ref: str) -> tuple[Any, str]:
    """The part of ``node`` (a resource at ``base``) that the JSON Pointer ``fragment`` (of
    ``ref``) names, and its base URI: each schema resource the pointer enters on the way
    changes it, as in the validators. Past a keyword that holds no subschema (``examples``,
    ``enum``, ...) an ``$id`` is data and changes nothing."""
    schema: Any = node  # the last subschema passed, None once past one
    since: tuple[str, ...] = ()  # the tokens followed from it
    for token in fragment.split("/")[1:]:
        token = unquote(token).replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            raise InvalidSchemaError(
                f"Invalid schema: $ref {ref!r} points at nothing, so validators could not "
                "compile it"
            )
        if schema is None:
            continue
        since += (token,)
        if any(tuple(map(str, rel)) == since for rel, _ in subschemas(schema, draft)):
            schema, since, base = node, (), rebased(base, node, draft)
        elif len(since) == 2:  # longer than any keyword's path to a subschema
            schema = None
    return node, base


def _check_refs(bundle: Bundle) -> None:
    """Refuse every ``$ref`` that could only be satisfied from the network, or that names a
    part of the bundle that is not there: the validators refuse to compile either, so every
    gateway would fail on the schema. Refuse too what the checker cannot resolve as the
    validators do (:meth:`Bundle.locate`), or where they disagree (:attr:`Bundle._index`)."""
    known = bundle._index.resources
    for doc_name in ("", *bundle.references):
        draft = draft_of(bundle.document(doc_name))
        for path, node, base in bundle.walk(doc_name):
            if not isinstance(node, dict):
                continue
            for keyword in ("$ref", "$dynamicRef", "$recursiveRef"):
                ref = node.get(keyword)
                if not isinstance(ref, str):
                    continue
                where = (f"reference {doc_name!r} " if doc_name else "") + pointer((*path, keyword))
                if urldefrag(urljoin(base, ref))[0] not in known:
                    raise InvalidSchemaError(
                        f"Invalid schema: {keyword} {ref!r} at {where} names neither a part of "
                        "this schema nor one of its references; Shahrah never fetches a $ref "
                        "from the network, so declare it as a reference {name, subject, version}",
                        detail={"pointer": where, "ref": ref},
                    )
                dynamic = keyword == "$dynamicRef" and draft == DRAFT202012
                try:
                    bundle.locate(doc_name, base, ref, dynamic=dynamic)
                except InvalidSchemaError as e:
                    raise InvalidSchemaError(
                        f"{e.message} (at {where})",
                        detail={"pointer": where, "ref": ref},
                    ) from e


def _check_patterns(bundle: Bundle) -> None:
    """Refuse more distinct ``patternProperties`` than :data:`MAX_PATTERN_PROPERTIES`.

    The compatibility checker compiles each to test property names against it, and one with
    lookarounds can take 40 ms to compile: a thousand of them in an anonymous compatibility
    check held the registry for minutes.
    """
    found: set[str] = set()
    for name in ("", *bundle.references):
        for _, node, _ in bundle.walk(name):
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
    draft's meta-schema, every ``$ref`` points at a part of the bundle that is there and no
    ``$ref`` loop stays on one instance, and the bundle declares at most
    :data:`MAX_PATTERN_PROPERTIES` ``patternProperties``."""
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
    check_comparable(bundle)


def check_comparable(bundle: Bundle) -> None:
    """What the compatibility checker needs of every version it compares, one registered
    before the registry asked it too: no ``$ref`` loop on one instance
    (:func:`check_ref_loops`) and at most :data:`MAX_PATTERN_PROPERTIES` regexes."""
    check_ref_loops(bundle)
    _check_patterns(bundle)


#: Keywords whose subschemas apply to the same instance as the schema holding them.
_IN_PLACE = frozenset(
    {"allOf", "anyOf", "oneOf", "not", "if", "then", "else", "dependentSchemas", "dependencies"}
)


def check_ref_loops(bundle: Bundle) -> None:
    """Refuse a ``$ref`` loop that never steps into the instance: from a subschema, through
    references and keywords that apply in place (``allOf``, ``not``, ``if``, ...), back to it.

    Validators disagree on it (jsonschema-rs takes whatever reaches it, the reference
    validator recurses without end), and the compatibility checker, meeting a pair of
    subschemas again, takes it as compatible: a change behind such a loop would pass unseen.
    Recursion through ``properties``, ``items`` and the like steps into the instance and ends
    with it.
    """
    finished: set[int] = set()
    for name in ("", *bundle.references):
        for _, node, base in bundle.walk(name):
            if isinstance(node, dict) and id(node) not in finished:
                _follow_in_place(bundle, name, node, base, finished)


def _follow_in_place(bundle: Bundle, name: str, node: Any, base: str, finished: set[int]) -> None:
    """Depth first from ``node`` along :func:`_in_place` edges; raise on meeting the path."""
    path = {id(node)}
    stack = [(node, _in_place(bundle, name, node, base))]
    while stack:
        current, edges = stack[-1]
        step = next(edges, None)
        if step is None:
            stack.pop()
            path.discard(id(current))
            finished.add(id(current))
            continue
        child_name, child, child_base = step
        if not isinstance(child, dict) or id(child) in finished:
            continue
        if id(child) in path:
            raise InvalidSchemaError(
                "Invalid schema: a $ref loop never steps into the instance (from a subschema "
                "back to it through references, allOf, anyOf, oneOf, not or if/then/else "
                "alone); validators disagree on what it accepts"
            )
        path.add(id(child))
        stack.append((child, _in_place(bundle, child_name, child, child_base)))


def _in_place(bundle: Bundle, name: str, node: Any, base: str) -> Iterator[tuple[str, Any, str]]:
    """(document, subschema, its base URI) for what applies to ``node``'s instance itself:
    its in-place subschemas and what its ``$ref`` (and 2020-12 ``$dynamicRef``) name."""
    draft = draft_of(bundle.document(name))
    ref = node.get("$ref")
    if isinstance(ref, str):
        yield bundle.locate(name, base, ref)
        if draft == DRAFT7:
            return  # draft 7 ignores every keyword beside $ref
    dynamic = node.get("$dynamicRef")
    if isinstance(dynamic, str) and draft == DRAFT202012:
        yield bundle.locate(name, base, dynamic, dynamic=True)
    for rel, sub in subschemas(node, draft):
        if rel[0] in _IN_PLACE:
            yield name, sub, rebased(base, sub, draft)


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
