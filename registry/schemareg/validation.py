"""Validating records on the hot path: compiled validators cached by global schema id.

Gateways validate every request and response body against the schema the
global configuration names (``SchemaRef(subject, version)``). A
:class:`ValidatorCache` resolves the reference through a :class:`SchemaSource`
(over HTTP from the registry, or straight from its database), compiles the
schema once with ``jsonschema-rs`` (a Rust validator that passes the drafts
we accept, shown by tests/registry/schemareg/test_validators.py) and keeps
the compiled validator under the schema's global id, so every subject
version that is the same schema shares one validator.

Two helpers serve consents, whose released *fields* are JSON Pointers into
the response schema: :func:`defines_pointer` checks that a pointer names a
property the schema defines, and :func:`project` keeps only the consented
fields of a document.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp
import jsonschema
import jsonschema_rs
import referencing
from sqlalchemy.ext.asyncio import AsyncSession

from core.db import Sessions, transaction
from core.errors import BadRequestError, NotFoundError, ServerProxyError
from core.web import parse_json, read_up_to
from registry.globalconf import SchemaRef
from registry.schemareg import service
from registry.schemareg.documents import (
    DRAFT7,
    DRAFT202012,
    Bundle,
    Reference,
    draft_of,
    parse_schema_text,
    pointer,
    rebased,
    regex_search,
    subschemas,
)

__all__ = [
    "CompiledSchema",
    "DatabaseSchemaSource",
    "HttpSchemaSource",
    "SchemaSource",
    "SchemaUnavailableError",
    "SchemaViolationError",
    "ValidatorCache",
    "compile_bundle",
    "defines_pointer",
    "parse_pointer",
    "project",
    "reference_validator",
]

MAX_VIOLATIONS = 50  # listed in an error's detail; the count says if there were more
MAX_SCHEMA_BYTES = 1 * 2**20  # one registry answer
MAX_DOCUMENTS = 64  # a schema and its references, transitively
_SPEC = {
    DRAFT7: referencing.jsonschema.DRAFT7,
    DRAFT202012: referencing.jsonschema.DRAFT202012,
}


class SchemaViolationError(BadRequestError):
    """A body does not match its registered schema. ``detail`` lists every violation as
    ``{"pointer", "keyword", "message"}``; the message names the first."""

    xroad_type = "Client.SchemaViolation"


class SchemaUnavailableError(ServerProxyError):
    """The schema a service names cannot be had: nothing is validated, nothing passes."""

    status = 503
    xroad_type = "Server.ServerProxy.SchemaUnavailable"


def _refuse_retrieval(uri: str) -> Any:
    raise ValueError(f"refusing to fetch {uri}: schemas never load $refs from the network")


@dataclass(frozen=True)
class CompiledSchema:
    """A registered schema ready to validate: its global id, bundle and compiled validator."""

    id: int
    bundle: Bundle
    validator: jsonschema_rs.Validator

    def validate(self, instance: Any, *, what: str = "body", name: str | None = None) -> None:
        """Raise :class:`SchemaViolationError` listing each violation with its JSON pointer;
        ``name`` says which schema in the message (default: its global id)."""
        if self.validator.is_valid(instance):
            return
        problems: list[dict[str, str]] = []
        total = 0
        for error in self.validator.iter_errors(instance):
            total += 1
            if len(problems) < MAX_VIOLATIONS:
                problems.append(
                    {
                        "pointer": pointer(tuple(error.instance_path)),
                        "keyword": error.kind.name,
                        "schema_pointer": pointer(tuple(error.schema_path)),
                        "message": error.message,
                    }
                )
        first = problems[0]
        more = f" (and {total - 1} more)" if total > 1 else ""
        raise SchemaViolationError(
            f"{what} does not match {name or f'schema {self.id}'} at {first['pointer'] or '/'}: "
            f"{first['message']}{more}",
            detail=problems,
        )

    def defines(self, json_pointer: str) -> bool:
        """Whether ``json_pointer`` names a property (or item) this schema defines."""
        return defines_pointer(self.bundle, json_pointer)


def _declared(document: Any) -> Any:
    """``document`` naming the draft the registry reads it in: a copy with draft 7's
    ``$schema`` if it names none (:func:`draft_of`), else ``document`` itself.

    jsonschema-rs reads a document without ``$schema`` as 2020-12, and the ``draft`` of its
    ``Registry`` is forced on every document, even one naming another draft, so this is how
    each document of a bundle is compiled in its own draft, as the compatibility checker
    reads it. ``$schema`` at the top of a document changes no base URI, anchor or pointer.
    """
    if isinstance(document, dict) and "$schema" not in document:
        return {"$schema": DRAFT7, **document}
    return document


def compile_bundle(schema_id: int, bundle: Bundle) -> CompiledSchema:
    """Compile ``bundle``, each document in its own draft; ``$ref`` resolves inside it only,
    formats are asserted."""
    validator = jsonschema_rs.validator_for(
        _declared(bundle.root),
        registry=jsonschema_rs.Registry([(uri, _declared(doc)) for uri, doc in bundle.resources()]),
        base_uri=bundle.base_uri,
        validate_formats=True,
        retriever=_refuse_retrieval,
    )
    return CompiledSchema(schema_id, bundle, validator)


def reference_validator(bundle: Bundle) -> Any:
    """The same bundle on jsonschema, the pure-Python reference implementation (formats
    asserted too); tests and the benchmark compare the hot path against it."""
    cls = jsonschema.Draft7Validator if bundle.draft == DRAFT7 else jsonschema.Draft202012Validator
    registry: referencing.Registry[Any] = referencing.Registry().with_resources(
        (uri, referencing.Resource.from_contents(doc, default_specification=_SPEC[bundle.draft]))
        for uri, doc in bundle.resources()
    )
    root = (
        bundle.root
        if not isinstance(bundle.root, dict)
        else {"$id": bundle.base_uri, **bundle.root}
    )
    return cls(root, registry=registry, format_checker=cls.FORMAT_CHECKER)


# --- where schemas come from -------------------------------------------------------------------


class SchemaSource(Protocol):
    """Finds the global id and bundle of a subject version."""

    async def fetch(self, ref: SchemaRef) -> tuple[int, Bundle]: ...


class DatabaseSchemaSource:
    """Reads schemas straight from the registry's database (the registry itself, tests)."""

    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions

    async def fetch(self, ref: SchemaRef) -> tuple[int, Bundle]:
        async with transaction(self.sessions, write=False) as s:
            return await self._fetch(s, ref)

    @staticmethod
    async def _fetch(s: AsyncSession, ref: SchemaRef) -> tuple[int, Bundle]:
        try:
            info = await service.get_version(s, ref.subject, ref.version)
        except NotFoundError as e:
            raise SchemaUnavailableError(e.message, detail=ref.model_dump()) from e
        return info.id, await service.bundle_of(s, await service.get_schema(s, info.id))


class HttpSchemaSource:
    """Fetches schemas from a registry's Confluent-compatible API, references included.

    Answers are bounded in size and time; anything unexpected is a
    :class:`SchemaUnavailableError`, so a gateway fails closed.
    """

    def __init__(
        self,
        base_url: str,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 5.0,  # seconds for one request
        max_bytes: int = MAX_SCHEMA_BYTES,
    ) -> None:
        self.base_url = base_url.rstrip("/") + "/schema-registry"
        self._session = session
        self._own_session = session is None
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.max_bytes = max_bytes

    async def aclose(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def _get(self, subject: str, version: int) -> dict[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        url = f"{self.base_url}/subjects/{quote(subject, safe='')}/versions/{version}"
        try:
            async with self._session.get(url, timeout=self.timeout) as response:
                body = await read_up_to(response.content, self.max_bytes + 1)
                if len(body) > self.max_bytes:
                    raise SchemaUnavailableError(f"{url} answered more than {self.max_bytes} bytes")
                if response.status != 200:
                    raise SchemaUnavailableError(
                        f"schema {subject} version {version} is not available "
                        f"({url} answered {response.status})",
                        detail={"subject": subject, "version": version, "status": response.status},
                    )
        except (aiohttp.ClientError, TimeoutError) as e:
            raise SchemaUnavailableError(f"cannot reach the schema registry at {url}: {e}") from e
        try:
            answer = parse_json(body)
        except BadRequestError as e:
            raise SchemaUnavailableError(f"{url} answered invalid JSON: {e.message}") from e
        if not isinstance(answer, dict) or not isinstance(answer.get("id"), int):
            raise SchemaUnavailableError(f"{url} answered no schema id")
        return answer

    async def fetch(self, ref: SchemaRef) -> tuple[int, Bundle]:
        answer = await self._get(ref.subject, ref.version)
        root = self._schema(answer)
        documents: dict[str, Any] = {}
        pending = self._references(answer)
        while pending:
            reference = pending.pop()
            if reference.name in documents:
                continue
            if len(documents) >= MAX_DOCUMENTS:
                raise SchemaUnavailableError(f"schema {ref.subject} has too many references")
            referenced = await self._get(reference.subject, reference.version)
            documents[reference.name] = self._schema(referenced)
            pending.extend(self._references(referenced))
        return answer["id"], Bundle(root, draft_of(root), documents)

    @staticmethod
    def _schema(answer: dict[str, Any]) -> Any:
        text = answer.get("schema")
        if not isinstance(text, str):
            raise SchemaUnavailableError("the registry answered no schema text")
        try:
            return parse_schema_text(text)
        except BadRequestError as e:
            raise SchemaUnavailableError(f"the registry answered a bad schema: {e.message}") from e

    @staticmethod
    def _references(answer: dict[str, Any]) -> list[Reference]:
        try:
            return [Reference.model_validate(r) for r in answer.get("references", [])]
        except ValueError as e:
            raise SchemaUnavailableError("the registry answered malformed references") from e


# --- the cache ---------------------------------------------------------------------------------


class ValidatorCache:
    """Compiled validators by global schema id, and which id each subject version is.

    A subject version's id is looked up again after ``ref_ttl`` seconds (a
    version can be deleted and registered anew); compiled validators stay
    until ``max_validators`` newer ones push them out.
    """

    def __init__(
        self,
        source: SchemaSource,
        *,
        max_validators: int = 256,
        ref_ttl: float = 300.0,  # seconds
    ) -> None:
        self.source = source
        self.max_validators = max_validators
        self.ref_ttl = ref_ttl
        self._by_id: OrderedDict[int, CompiledSchema] = OrderedDict()
        self._ids: dict[SchemaRef, tuple[int, float]] = {}
        self._locks: dict[SchemaRef, asyncio.Lock] = {}

    async def get(self, ref: SchemaRef) -> CompiledSchema:
        """The compiled schema of ``ref`` (fetched and compiled at most once at a time)."""
        cached = self._cached(ref)
        if cached is not None:
            return cached
        lock = self._locks.setdefault(ref, asyncio.Lock())
        async with lock:
            cached = self._cached(ref)
            if cached is not None:
                return cached
            schema_id, bundle = await self.source.fetch(ref)
            compiled = self._by_id.get(schema_id)
            if compiled is None:
                try:
                    compiled = compile_bundle(schema_id, bundle)
                except (ValueError, jsonschema_rs.ReferencingError) as e:
                    raise SchemaUnavailableError(
                        f"schema {ref.subject} version {ref.version} does not compile: {e}"
                    ) from e
            self._remember(schema_id, compiled)
            self._ids[ref] = (schema_id, time.monotonic())
            return compiled

    def _cached(self, ref: SchemaRef) -> CompiledSchema | None:
        known = self._ids.get(ref)
        if known is None or time.monotonic() - known[1] > self.ref_ttl:
            return None
        compiled = self._by_id.get(known[0])
        if compiled is not None:
            self._by_id.move_to_end(known[0])
        return compiled

    def _remember(self, schema_id: int, compiled: CompiledSchema) -> None:
        self._by_id[schema_id] = compiled
        self._by_id.move_to_end(schema_id)
        while len(self._by_id) > self.max_validators:
            self._by_id.popitem(last=False)

    async def validate(self, ref: SchemaRef, instance: Any, *, what: str = "body") -> None:
        """Raise :class:`SchemaViolationError` unless ``instance`` matches ``ref``'s schema."""
        compiled = await self.get(ref)
        compiled.validate(instance, what=what, name=f"{ref.subject} version {ref.version}")


# --- JSON Pointers into schemas and documents ----------------------------------------------------


def parse_pointer(text: str) -> list[str]:
    """The reference tokens of an RFC 6901 JSON Pointer ("" is the whole document)."""
    if text == "":
        return []
    if not text.startswith("/"):
        raise BadRequestError(f"JSON Pointer {text!r} must start with '/'")
    tokens = []
    for raw in text[1:].split("/"):
        if "~" in raw.replace("~0", "").replace("~1", ""):
            raise BadRequestError(f"JSON Pointer {text!r} has an invalid '~' escape")
        tokens.append(raw.replace("~1", "/").replace("~0", "~"))
    return tokens


def member_at(document: Any, json_pointer: str) -> Any:
    """The value ``json_pointer`` names in ``document``; NotFoundError if there is none."""
    value = document
    for token in parse_pointer(json_pointer):
        if isinstance(value, dict) and token in value:
            value = value[token]
        elif isinstance(value, list) and token.isdigit() and int(token) < len(value):
            value = value[int(token)]
        else:
            raise NotFoundError(f"the document has no {json_pointer}")
    return value


#: Where a walk through a bundle stands: (document name, subschema, the base URI in it).
_Place = tuple[str, Any, str]


def _inside(doc: str, sub: Any, base: str, draft: str) -> _Place:
    """``sub``, met in ``doc`` (of ``draft``) where the base URI is ``base``: an ``$id`` of its
    own makes it a schema resource, which the ``$ref``s written in it resolve against."""
    return doc, sub, rebased(base, sub, draft)


def _expand(bundle: Bundle, place: _Place, seen: set[tuple[str, int]]) -> list[_Place]:
    """``place`` and every schema that applies with it: ``$ref`` targets and combinator branches."""
    found: list[_Place] = []
    stack: list[_Place] = [place]
    while stack:
        doc, current, base = stack.pop()
        key = (doc, id(current))
        if key in seen or not isinstance(current, dict):
            continue
        seen.add(key)
        found.append((doc, current, base))
        draft = draft_of(bundle.document(doc))
        # where it is written, as the validators resolve it; draft 7 has no $dynamicRef
        for keyword in ("$ref", "$dynamicRef") if draft == DRAFT202012 else ("$ref",):
            if isinstance(current.get(keyword), str):
                dynamic = keyword == "$dynamicRef"
                stack.append(bundle.locate(doc, base, current[keyword], dynamic=dynamic))
        for keyword in ("allOf", "anyOf", "oneOf"):
            if isinstance(current.get(keyword), list):
                stack.extend(_inside(doc, branch, base, draft) for branch in current[keyword])
        for keyword in ("then", "else"):
            if isinstance(current.get(keyword), dict):
                stack.append(_inside(doc, current[keyword], base, draft))
    return found


def _step(bundle: Bundle, place: _Place, token: str) -> list[_Place]:
    """The subschemas that describe member ``token`` of an instance of the schema at ``place``."""
    doc, node, base = place
    draft = draft_of(bundle.document(doc))
    nxt: list[Any] = []
    props = node.get("properties")
    if isinstance(props, dict) and token in props:
        nxt.append(props[token])
    for rel, sub in subschemas(node, draft):
        if rel[0] == "patternProperties" and regex_search(str(rel[1]), token):
            nxt.append(sub)
    if token.isdigit():
        if draft == DRAFT7:
            listed = node.get("items") if isinstance(node.get("items"), list) else None
            rest = node.get("additionalItems") if listed is not None else node.get("items")
        else:
            listed, rest = node.get("prefixItems"), node.get("items")
        if isinstance(listed, list) and int(token) < len(listed):
            nxt.append(listed[int(token)])
        elif isinstance(rest, dict):
            nxt.append(rest)
    return [_inside(doc, sub, base, draft) for sub in nxt]


def defines_pointer(bundle: Bundle, json_pointer: str) -> bool:
    """Whether the schema defines the property (or item) ``json_pointer`` names.

    The walk follows ``$ref`` (resolved where it is written, as the validators resolve it),
    ``properties``, ``patternProperties``, array items (``items``/``prefixItems``, by
    index) and every branch of ``allOf``/``anyOf``/``oneOf``: a pointer is defined if any
    branch defines it. Properties admitted only by ``additionalProperties`` are not defined:
    a consent names fields the schema describes.
    """
    frontier: list[_Place] = [("", bundle.root, bundle.base_of(""))]
    for token in parse_pointer(json_pointer):
        seen: set[tuple[str, int]] = set()
        nxt: list[_Place] = []
        for place in frontier:
            for expanded in _expand(bundle, place, seen):
                nxt.extend(_step(bundle, expanded, token))
        if not nxt:
            return False
        frontier = nxt
    return True


_ABSENT = object()


def project(document: Any, pointers: Iterable[str]) -> Any:
    """A copy of ``document`` with only the values the pointers name (and their parents).

    Pointers that name nothing in this document are skipped (an optional field
    was absent). The empty pointer keeps everything. Array elements kept keep
    their order; an array index names one element.
    """
    tokens = [parse_pointer(p) for p in pointers]
    if any(not t for t in tokens):
        return document
    result = _project(document, tokens)
    return {} if result is _ABSENT and isinstance(document, dict) else result


def _project(value: Any, paths: list[list[str]]) -> Any:
    whole = any(not p for p in paths)
    if whole:
        return value
    if isinstance(value, dict):
        kept: dict[str, Any] = {}
        for key, child in value.items():
            sub = [p[1:] for p in paths if p[0] == key]
            if sub:
                projected = _project(child, sub)
                if projected is not _ABSENT:
                    kept[key] = projected
        return kept if kept else _ABSENT
    if isinstance(value, list):
        items = []
        for index, child in enumerate(value):
            sub = [p[1:] for p in paths if p[0] == str(index)]
            if sub:
                projected = _project(child, sub)
                if projected is not _ABSENT:
                    items.append(projected)
        return items if items else _ABSENT
    return _ABSENT
