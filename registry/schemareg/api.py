"""The Confluent-compatible REST API of the schema registry (JSON Schema only).

Mounted at ``/schema-registry`` on the registry server, it speaks Confluent
Schema Registry's paths, bodies, status codes and ``{"error_code",
"message"}`` errors, so Confluent's clients, serializers and Maven plugin work
against it. Reads need no credentials: schemas are public contracts, not
secrets, and gateways fetch them. Writes (register, delete, config) need the
operator's bearer token, as every other registry write does.

Its own OpenAPI 3.1 document is at ``/schema-registry/openapi.json``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.db import transaction
from core.errors import BadRequestError
from core.web import Api, error_middleware, parse_json, path_id
from registry.api import STATE, operator
from registry.schemareg import service, store
from registry.schemareg.errors import SchemaNotFoundError, SchemaRegistryError, confluent_body
from registry.schemareg.payloads import ConfigRequest, SchemaRequest, parse_request

__all__ = ["CONTENT_TYPE", "MOUNT", "api", "build_schema_app"]

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

MOUNT = "/schema-registry"
CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
_ACCEPTED = ("application/json", "application/octet-stream")
OP = "operator"
WRITE_RETRIES = 3  # concurrent registrations may race for a version number; the loser retries

api = Api(
    title="Shahrah schema registry",
    version="1",
    description=(
        "Confluent Schema Registry compatible API for JSON Schema: subjects, versions, global "
        "ids, references, compatibility checks and configuration. Reads are open; writes need "
        "the operator token. Errors are {error_code, message} with Confluent's codes."
    ),
    security_schemes={OP: {"type": "http", "scheme": "bearer"}},
    error_schema={
        "type": "object",
        "required": ["error_code", "message"],
        "properties": {
            "error_code": {"type": "integer", "description": "Confluent's code, e.g. 40401"},
            "message": {"type": "string"},
        },
    },
)


class _UnsupportedMediaError(SchemaRegistryError, BadRequestError):
    status = 415
    error_code = 415


class Deleted(BaseModel):
    model_config = ConfigDict(extra="ignore")
    deleted: bool = False


class Permanent(BaseModel):
    model_config = ConfigDict(extra="ignore")
    permanent: bool = False


class Verbose(BaseModel):
    model_config = ConfigDict(extra="ignore")
    verbose: bool = False


class DefaultToGlobal(BaseModel):
    model_config = ConfigDict(extra="ignore")
    defaultToGlobal: bool = False


def _respond(value: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(value, ensure_ascii=False), status=status, content_type=CONTENT_TYPE
    )


async def _body(request: web.Request, model: type[M]) -> M:
    ctype = request.content_type
    if ctype not in _ACCEPTED and not ctype.endswith("+json"):
        raise _UnsupportedMediaError(
            f"HTTP 415 Unsupported Media Type: send {CONTENT_TYPE} or application/json"
        )
    return parse_request(model, parse_json(await request.read()))


async def read(request: web.Request, action: Callable[[AsyncSession], Awaitable[T]]) -> T:
    async with transaction(request.config_dict[STATE].sessions, write=False) as s:
        return await action(s)


async def write(request: web.Request, action: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """One schema registry action in one transaction, retried when a concurrent registration
    took the same version number (shared with the operator console)."""
    sessions = request.config_dict[STATE].sessions
    for attempt in range(WRITE_RETRIES):
        try:
            async with transaction(sessions) as s:
                return await action(s)
        except IntegrityError:
            if attempt == WRITE_RETRIES - 1:
                raise
    raise AssertionError("unreachable")


def _subject(request: web.Request) -> str:
    return request.match_info["subject"]


def _version(request: web.Request) -> service.VersionSpec:
    return service.parse_version(request.match_info["version"])


def _schema_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    found = path_id(raw)
    if found is None:
        raise SchemaNotFoundError(f"Schema {raw} not found", detail={"id": raw})
    return found


_SCHEMA_RESPONSE = {"type": "object", "properties": {"id": {"type": "integer"}}}
_STRINGS = {"type": "array", "items": {"type": "string"}}
_INTS = {"type": "array", "items": {"type": "integer"}}
_VERSION = {
    "type": "object",
    "properties": {
        "subject": {"type": "string"},
        "version": {"type": "integer"},
        "id": {"type": "integer"},
        "schemaType": {"const": "JSON"},
        "schema": {"type": "string"},
        "references": {"type": "array"},
    },
}
_COMPAT = {
    "type": "object",
    "properties": {"is_compatible": {"type": "boolean"}, "messages": _STRINGS},
}
_CONFIG = {
    "type": "object",
    "properties": {
        "compatibilityLevel": {"type": "string"},
        "compatibilityPolicy": {"type": "string"},
    },
}

# --- schemas by id -----------------------------------------------------------------------------


@api.route("GET", "/", summary="Root (Confluent answers {})", response={"type": "object"})
async def root(request: web.Request) -> web.StreamResponse:
    return _respond({})


@api.route("GET", "/schemas/types", summary="Schema types held here", response=_STRINGS)
async def schema_types(request: web.Request) -> web.StreamResponse:
    return _respond(["JSON"])


@api.route(
    "GET", "/schemas/ids/{id}", summary="A schema by global id", response=_VERSION, errors=(404,)
)
async def schema_by_id(request: web.Request) -> web.StreamResponse:
    row = await read(request, lambda s: service.get_schema(s, _schema_id(request)))
    body: dict[str, Any] = {"schemaType": "JSON", "schema": row.schema_text}
    refs = store.references_of(row)
    if refs:
        body["references"] = [r.model_dump() for r in refs]
    return _respond(body)


@api.route(
    "GET",
    "/schemas/ids/{id}/schema",
    summary="The schema document of a global id",
    response={"type": "object"},
    errors=(404,),
)
async def raw_schema_by_id(request: web.Request) -> web.StreamResponse:
    row = await read(request, lambda s: service.get_schema(s, _schema_id(request)))
    return web.Response(text=row.schema_text, content_type=CONTENT_TYPE)


@api.route(
    "GET",
    "/schemas/ids/{id}/versions",
    summary="Subjects and versions that are this schema",
    response={"type": "array"},
    errors=(404,),
)
async def versions_of_id(request: web.Request) -> web.StreamResponse:
    found = await read(request, lambda s: service.schema_versions(s, _schema_id(request)))
    return _respond([{"subject": subj, "version": v} for subj, v in found])


# --- subjects ----------------------------------------------------------------------------------


@api.route("GET", "/subjects", summary="All subjects", query=Deleted, response=_STRINGS)
async def subjects(request: web.Request, query: Deleted) -> web.StreamResponse:
    return _respond(await read(request, lambda s: service.list_subjects(s, deleted=query.deleted)))


@api.route(
    "GET",
    "/subjects/{subject}/versions",
    summary="Versions of a subject",
    query=Deleted,
    response=_INTS,
    errors=(404,),
)
async def versions(request: web.Request, query: Deleted) -> web.StreamResponse:
    subject = _subject(request)
    found = await read(request, lambda s: service.list_versions(s, subject, deleted=query.deleted))
    return _respond(found)


@api.route(
    "GET",
    "/subjects/{subject}/versions/{version}",
    summary="One version (a number, or latest)",
    query=Deleted,
    response=_VERSION,
    errors=(404, 422),
)
async def get_version(request: web.Request, query: Deleted) -> web.StreamResponse:
    subject, spec = _subject(request), _version(request)
    info = await read(
        request, lambda s: service.get_version(s, subject, spec, deleted=query.deleted)
    )
    return _respond(info.to_json())


@api.route(
    "GET",
    "/subjects/{subject}/versions/{version}/schema",
    summary="The schema document of one version",
    response={"type": "object"},
    errors=(404, 422),
)
async def get_version_schema(request: web.Request) -> web.StreamResponse:
    subject, spec = _subject(request), _version(request)
    info = await read(request, lambda s: service.get_version(s, subject, spec))
    return web.Response(text=info.schema, content_type=CONTENT_TYPE)


@api.route(
    "GET",
    "/subjects/{subject}/versions/{version}/referencedby",
    summary="Ids of schemas that reference this version",
    response=_INTS,
    errors=(404, 422),
)
async def referenced_by(request: web.Request) -> web.StreamResponse:
    subject, spec = _subject(request), _version(request)
    return _respond(await read(request, lambda s: service.referenced_by(s, subject, spec)))


@api.route(
    "POST",
    "/subjects/{subject}/versions",
    summary="Register a schema under a subject",
    documented_body=SchemaRequest,
    response=_SCHEMA_RESPONSE,
    auth=OP,
    errors=(400, 409, 415, 422),
)
async def register(request: web.Request, principal: str) -> web.StreamResponse:
    """Returns the global id; registering a schema the subject already has returns its id.
    409 with the reasons when the subject's compatibility level refuses it."""
    subject = _subject(request)
    body = await _body(request, SchemaRequest)
    done = await write(request, lambda s: service.register(s, subject, body))
    return _respond({"id": done.id})


@api.route(
    "POST",
    "/subjects/{subject}",
    summary="Look a schema up in a subject",
    documented_body=SchemaRequest,
    response=_VERSION,
    errors=(400, 404, 415, 422),
)
async def lookup(request: web.Request) -> web.StreamResponse:
    subject = _subject(request)
    body = await _body(request, SchemaRequest)
    info = await read(request, lambda s: service.lookup(s, subject, body))
    return _respond(info.to_json())


@api.route(
    "DELETE",
    "/subjects/{subject}",
    summary="Delete a subject (soft, or permanent after soft)",
    query=Permanent,
    response=_INTS,
    auth=OP,
    errors=(404, 422),
)
async def delete_subject(request: web.Request, principal: str, query: Permanent) -> Any:
    subject = _subject(request)
    done = await write(
        request, lambda s: service.delete_subject(s, subject, permanent=query.permanent)
    )
    return _respond(done)


@api.route(
    "DELETE",
    "/subjects/{subject}/versions/{version}",
    summary="Delete one version (soft, or permanent after soft)",
    query=Permanent,
    response={"type": "integer"},
    auth=OP,
    errors=(404, 422),
)
async def delete_version(request: web.Request, principal: str, query: Permanent) -> Any:
    subject, spec = _subject(request), _version(request)
    done = await write(
        request, lambda s: service.delete_version(s, subject, spec, permanent=query.permanent)
    )
    return _respond(done)


# --- compatibility -----------------------------------------------------------------------------


async def _compatibility(
    request: web.Request, spec: service.VersionSpec | None, verbose: bool
) -> web.StreamResponse:
    subject = _subject(request)
    body = await _body(request, SchemaRequest)
    verdict = await read(request, lambda s: service.check_compatibility(s, subject, spec, body))
    answer: dict[str, Any] = {"is_compatible": verdict.compatible}
    if verbose:
        answer["messages"] = list(verdict.messages)
    return _respond(answer)


@api.route(
    "POST",
    "/compatibility/subjects/{subject}/versions/{version}",
    summary="Is a schema compatible with one version?",
    documented_body=SchemaRequest,
    query=Verbose,
    response=_COMPAT,
    errors=(404, 415, 422),
)
async def compatibility_with_version(request: web.Request, query: Verbose) -> Any:
    """With ``verbose=true`` the answer lists each incompatible change and its JSON pointer."""
    return await _compatibility(request, _version(request), query.verbose)


@api.route(
    "POST",
    "/compatibility/subjects/{subject}/versions",
    summary="Is a schema compatible with the versions its level names?",
    documented_body=SchemaRequest,
    query=Verbose,
    response=_COMPAT,
    errors=(415, 422),
)
async def compatibility_with_subject(request: web.Request, query: Verbose) -> Any:
    """Transitive levels check every earlier version, the others the latest one."""
    return await _compatibility(request, None, query.verbose)


# --- config ------------------------------------------------------------------------------------


def _config_json(view: service.ConfigView, *, key: str = "compatibilityLevel") -> dict[str, str]:
    return {key: view.compatibility, "compatibilityPolicy": view.policy}


@api.route("GET", "/config", summary="Global compatibility level and policy", response=_CONFIG)
async def get_global_config(request: web.Request) -> web.StreamResponse:
    return _respond(_config_json(await read(request, lambda s: service.get_config(s))))


@api.route(
    "PUT",
    "/config",
    summary="Set the global compatibility level and/or policy",
    documented_body=ConfigRequest,
    response=_CONFIG,
    auth=OP,
    errors=(415, 422),
)
async def put_global_config(request: web.Request, principal: str) -> web.StreamResponse:
    body = await _body(request, ConfigRequest)
    view = await write(request, lambda s: service.set_config(s, None, body))
    return _respond(_config_json(view, key="compatibility"))


@api.route(
    "DELETE",
    "/config",
    summary="Reset the global config to BACKWARD / STRICT",
    response=_CONFIG,
    auth=OP,
)
async def delete_global_config(request: web.Request, principal: str) -> web.StreamResponse:
    view = await write(request, lambda s: service.delete_config(s, None))
    return _respond(_config_json(view))


@api.route(
    "GET",
    "/config/{subject}",
    summary="A subject's own level and policy",
    query=DefaultToGlobal,
    response=_CONFIG,
    errors=(404,),
)
async def get_subject_config(request: web.Request, query: DefaultToGlobal) -> Any:
    """40408 when the subject has no config of its own, unless ``defaultToGlobal=true``."""
    subject = _subject(request)
    view = await read(
        request,
        lambda s: service.get_config(s, subject, default_to_global=query.defaultToGlobal),
    )
    return _respond(_config_json(view))


@api.route(
    "PUT",
    "/config/{subject}",
    summary="Set a subject's level and/or policy",
    documented_body=ConfigRequest,
    response=_CONFIG,
    auth=OP,
    errors=(415, 422),
)
async def put_subject_config(request: web.Request, principal: str) -> web.StreamResponse:
    subject = _subject(request)
    body = await _body(request, ConfigRequest)
    view = await write(request, lambda s: service.set_config(s, subject, body))
    return _respond(_config_json(view, key="compatibility"))


@api.route(
    "DELETE",
    "/config/{subject}",
    summary="Drop a subject's own config (it follows the global one again)",
    response=_CONFIG,
    auth=OP,
    errors=(404,),
)
async def delete_subject_config(request: web.Request, principal: str) -> web.StreamResponse:
    subject = _subject(request)
    view = await write(request, lambda s: service.delete_config(s, subject))
    return _respond(_config_json(view))


def build_schema_app() -> web.Application:
    """The sub-application to mount at :data:`MOUNT`; it reads the registry's shared state."""
    app = web.Application(middlewares=[error_middleware(confluent_body)])
    api.register(app, {OP: operator})
    return app
