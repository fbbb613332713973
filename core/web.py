"""HTTP plumbing shared by every Shahrah API: typed routes, errors, strict JSON, OpenAPI 3.1.

A package declares its operations on an :class:`Api`. The declaration is
both the route and its OpenAPI description, so the published document cannot
drift from what the server does: the request body, query and response models
named in the declaration are the ones used to parse and to serialize.

Errors are rendered by one middleware (:func:`error_middleware`); handlers
raise :class:`core.errors.ShahrahError` subclasses and never build error
bodies themselves.
"""

from __future__ import annotations

import contextlib
import copy
import hmac
import json
import logging
import os
import re
import ssl
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
from aiohttp import StreamReader, web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from pydantic import BaseModel, TypeAdapter, ValidationError

from core.canonical import parse_json
from core.errors import (
    BadRequestError,
    InternalError,
    NotFoundError,
    PayloadTooLargeError,
    ShahrahError,
    TooManyRequestsError,
    UnauthorizedError,
)

__all__ = [
    "RELAYED",
    "Api",
    "ErrorRenderer",
    "ListenError",
    "bearer_token",
    "cannot_listen",
    "describe_failure",
    "error_middleware",
    "json_response",
    "listening",
    "never_twice",
    "parse_json",
    "parse_model",
    "path_id",
    "read_up_to",
    "render_xroad",
    "security_headers_middleware",
    "tokens_equal",
]

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
Handler = Callable[..., Awaitable[Any]]
ErrorRenderer = Callable[[ShahrahError], tuple[int, dict[str, Any]]]

JSON_TYPES = ("application/json",)


def describe_failure(e: BaseException, seconds: float | None = None) -> str:
    """A failed HTTP call in words for a log line or a status page: aiohttp's message (which
    names the host and the cause), never a Python repr of its internals. ``seconds``, the
    call's time limit, is named when it ran out."""
    if isinstance(e, TimeoutError):
        return "no answer in time" if seconds is None else f"no answer within {seconds:g} s"
    return str(e) or type(e).__name__


async def read_up_to(stream: StreamReader, n: int) -> bytes:
    """The body in ``stream`` up to ``n`` bytes: all of it if shorter, else its first ``n``.

    ``StreamReader.read(n)`` returns only what is buffered, which for a body arriving in
    several TCP segments is its first piece: a caller that reads ``limit + 1`` bytes to
    refuse oversized bodies would silently take a truncated one. This keeps reading.
    """
    chunks: list[bytes] = []
    size = 0
    while size < n:
        chunk = await stream.read(n - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


# --- errors --------------------------------------------------------------------------------


def render_xroad(error: ShahrahError) -> tuple[int, dict[str, Any]]:
    """X-Road style body ``{"type","message","detail"}`` with the class's HTTP status."""
    return error.status, error.to_json()


def _json_error(
    error: ShahrahError, render: ErrorRenderer = render_xroad, header: str | None = None
) -> web.Response:
    """``error`` as ``render`` shapes it, its type also in the ``header`` if one is named, and
    a 429's wait in ``Retry-After`` (RFC 9110) as well as in ``detail.retry_after``."""
    status, body = render(error)
    headers = {header: error.xroad_type} if header else {}
    if isinstance(error, TooManyRequestsError) and isinstance(error.detail, dict):
        wait = error.detail.get("retry_after")
        if isinstance(wait, int):
            headers["Retry-After"] = str(wait)
    return web.json_response(body, status=status, headers=headers)


def error_middleware(render: ErrorRenderer = render_xroad, *, header: str | None = None) -> Any:
    """Turn every failure into a JSON error; unexpected ones are logged with an id, not shown.

    ``header``, if given, names a response header that carries the error type
    (the gateway uses ``X-Road-Error``).
    """

    def respond(error: ShahrahError) -> web.Response:
        return _json_error(error, render, header)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except ShahrahError as e:
            return respond(e)
        except web.HTTPRequestEntityTooLarge as e:
            return respond(PayloadTooLargeError("request body is too large", detail=e.text))
        except web.HTTPException as e:
            if e.status < 400:
                raise
            return respond(_http_error(e))
        except Exception:
            error_id = str(uuid.uuid4())
            log.exception("unhandled error %s on %s %s", error_id, request.method, request.path)
            return respond(InternalError("internal error", detail={"error_id": error_id}))

    return middleware


def _http_error(e: web.HTTPException) -> ShahrahError:
    if e.status == 404:
        return NotFoundError("no such resource")
    # aiohttp's own refusals (405 and friends) keep their status under our error shape.
    error = BadRequestError(e.reason)
    error.status = e.status
    return error


# --- serving -------------------------------------------------------------------------------


def _refusal(status: int, exc: BaseException | None) -> ShahrahError:
    """What to tell a client whose request never reached a handler.

    aiohttp's parser quotes the offending bytes in its messages (a request line
    with a citizen's identifier, a header with a token); only the first clause,
    which names the fault, is kept.
    """
    if status == 504:
        return InternalError("the request took too long to handle")
    if not 400 <= status < 500:
        return InternalError("internal error")
    if isinstance(exc, LineTooLong):
        error = BadRequestError("the request line or a header field is too long")
    else:
        fault = exc.message.split(":", 1)[0].strip() if isinstance(exc, HttpProcessingError) else ""
        error = BadRequestError(
            f"malformed HTTP request: {fault}" if fault else "malformed HTTP request"
        )
    error.status = status
    return error


class _Connection(web.RequestHandler):
    """aiohttp's connection handler, answering what never reaches the application (a request
    its HTTP parser refuses, a handler's escaped failure) in Shahrah's error shape, and
    logging no part of the refused request."""

    def __init__(self, manager: web.Server, *, error_header: str | None, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.error_header = error_header

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # the answer has begun: only closing is left
            return super().handle_error(request, status, exc, message)
        error = _refusal(status, exc)
        if status >= 500 and exc is not None:
            log.error("unhandled error on a connection from %s", request.remote, exc_info=exc)
        else:
            log.info("refused a malformed request from %s: %s", request.remote, error.message)
        response = _json_error(error, header=self.error_header)
        response.force_close()
        return response


class _Server(web.Server):
    def __init__(self, made: web.Server, error_header: str | None) -> None:
        # aiohttp offers no hook for its connection handler's class; this copies the server
        # the application made (tests/core/test_listening.py fails if that ever changes).
        super().__init__(
            made.request_handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            loop=made._loop,
            **made._kwargs,
        )
        self.error_header = error_header

    def __call__(self) -> web.RequestHandler:
        return _Connection(self, loop=self._loop, error_header=self.error_header, **self._kwargs)


class _Runner(web.AppRunner):
    def __init__(self, app: web.Application, error_header: str | None) -> None:
        super().__init__(app, access_log=None, handle_signals=False)
        self.error_header = error_header

    async def _make_server(self) -> web.Server:
        return _Server(await super()._make_server(), self.error_header)


class ListenError(ShahrahError):
    """A listener could not be opened: its port is taken, or its address is not this host's."""


def cannot_listen(host: str, port: int, e: OSError) -> str:
    """Why ``host:port`` could not be bound, for an operator: asyncio's message repeats the
    address as a tuple; a host name that does not resolve has a negative errno."""
    reason = os.strerror(e.errno) if e.errno and e.errno > 0 else (e.strerror or str(e))
    return f"cannot listen on {host}:{port}: {reason}"


@contextlib.asynccontextmanager
async def listening(
    app: web.Application,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None = None,
    *,
    error_header: str | None = None,
) -> AsyncIterator[int]:
    """Serve ``app`` until the block ends; yields the bound port (``port=0`` picks one).

    Requests that never reach ``app`` (malformed HTTP) are answered like the
    ones it refuses, with ``error_header`` carrying the error type if given. A port
    that cannot be bound raises :class:`ListenError`, which names it.
    """
    runner = _Runner(app, error_header)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context, reuse_address=True)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise ListenError(cannot_listen(host, port, e)) from e
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


def never_twice(session: aiohttp.ClientSession) -> None:
    """Make ``session`` send each request once: aiohttp sends a PUT, DELETE or GET again when
    the connection drops before an answer, though the other side may have acted on it (a
    provider gateway refuses the repeat as a replay; a backend would act twice). aiohttp
    offers no public switch for this; its own attribute is in the session's declared ones."""
    session._retry_connection = False


#: Set on a response that relays another system's answer (a gateway's delivered answer):
#: its headers are that system's, cache headers included (PR-REST 4.3: passed as they are).
RELAYED = web.ResponseKey("relayed", bool)


@web.middleware
async def security_headers_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Headers every API response carries: no sniffing, no framing, no caching of secrets."""
    response: web.StreamResponse = await handler(request)
    if response.get(RELAYED):
        return response
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("Cache-Control", "no-store")
    return response


# --- input ---------------------------------------------------------------------------------


def refuse_nul(request: web.Request, value: Any = None) -> None:
    """Refuse NUL (U+0000) in the request's path parameters and query, and in any string of
    ``value`` (a parsed body or form): PostgreSQL's text cannot hold it, so a stored field
    with one failed as an internal error there and was kept on SQLite. No identifier,
    name, notice or schema of these APIs has a use for it."""
    texts: list[Any] = [*request.match_info.values(), *request.query.keys()]
    texts.extend(request.query.values())
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, dict):
            texts.extend(item)
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    if any("\x00" in text for text in texts):
        raise BadRequestError("text may not contain NUL (U+0000)")


def _location(loc: Sequence[int | str]) -> str:
    return ".".join(str(p) for p in loc) or "(body)"


def parse_model(model: type[M], value: Any, *, where: str = "body") -> M:
    """Validate ``value`` into ``model``; the error names every offending field."""
    try:
        return model.model_validate(value)
    except ValidationError as e:
        problems = [{"field": _location(err["loc"]), "message": err["msg"]} for err in e.errors()]
        first = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise BadRequestError(
            f"{where} field '{first['field']}': {first['message']}{more}", detail=problems
        ) from e


async def read_json(request: web.Request) -> Any:
    ctype = request.content_type
    if ctype not in JSON_TYPES and not ctype.endswith("+json"):
        raise BadRequestError(
            f"expected a JSON body (Content-Type application/json), got {ctype!r}"
        )
    return parse_json(await request.read())


def json_response(
    value: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """Serialize pydantic models (or lists of them) and plain JSON values."""
    if isinstance(value, BaseModel):
        body = value.model_dump_json(by_alias=True)
    elif isinstance(value, list) and value and isinstance(value[0], BaseModel):
        body = "[" + ",".join(v.model_dump_json(by_alias=True) for v in value) + "]"
    else:
        body = json.dumps(value, ensure_ascii=False)
    return web.Response(text=body, status=status, content_type="application/json", headers=headers)


#: The largest row id every database we run on can hold (PostgreSQL's INTEGER).
MAX_ROW_ID = 2**31 - 1
_ROW_ID = re.compile(r"[0-9]{1,10}")


def path_id(raw: str) -> int | None:
    """``raw`` (a path segment) as a row id, or None when it cannot name a row.

    Only ASCII digits, 1 to :data:`MAX_ROW_ID`: ``str.isdigit`` also accepts '²', which
    ``int`` refuses, and a number past the column's range fails in PostgreSQL rather than
    finding nothing. Callers answer None with their own "not found".
    """
    if _ROW_ID.fullmatch(raw) is None:
        return None
    value = int(raw)
    return value if 1 <= value <= MAX_ROW_ID else None


# --- authentication ------------------------------------------------------------------------


def bearer_token(request: web.Request) -> str:
    """The bearer token of the request, or UnauthorizedError."""
    value = request.headers.get("Authorization", "")
    scheme, _, token = value.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise UnauthorizedError("missing bearer token (Authorization: Bearer <token>)")
    # Tokens are printable ASCII (RFC 6750's b64token is a subset). Header bytes that are not
    # UTF-8 arrive as lone surrogates, which could be neither hashed nor compared.
    if not (token.isascii() and token.isprintable()):
        raise UnauthorizedError("the bearer token is not printable ASCII")
    return token


def tokens_equal(a: str, b: str) -> bool:
    """Constant-time comparison of two secrets."""
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


# --- typed routes and OpenAPI ------------------------------------------------------------------

_PATH_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::[^}]*)?\}")


@dataclass
class Operation:
    method: str
    path: str
    summary: str
    handler: Handler
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: Any = None
    status: int = 200
    auth: str | None = None
    tags: tuple[str, ...] = ()
    errors: tuple[int, ...] = ()
    content_type: str = "application/json"
    description: str = ""
    documented_body: type[BaseModel] | None = None


@dataclass
class Api:
    """A set of typed operations that becomes aiohttp routes and an OpenAPI 3.1 document.

    ``authenticators`` maps a security scheme name (as used in ``auth=``) to an
    async check that raises UnauthorizedError; ``security_schemes`` describes
    each scheme for OpenAPI.
    """

    title: str
    version: str
    description: str = ""
    security_schemes: dict[str, dict[str, Any]] = field(default_factory=dict)
    operations: list[Operation] = field(default_factory=list)
    #: JSON Schema of error bodies, for APIs that answer in another shape than X-Road's.
    error_schema: dict[str, Any] | None = None
    #: Media types errors come in, as ``Accept`` chooses (the gateway's also XML, as X-Road).
    error_types: tuple[str, ...] = ("application/json",)
    # The document for the operations declared so far: generating the models' JSON Schemas
    # was most of what building an application cost (tens of milliseconds an API).
    _document: dict[str, Any] | None = field(default=None, init=False, repr=False, compare=False)
    _documented: int = field(default=-1, init=False, repr=False, compare=False)

    def route(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        response: Any = None,
        status: int = 200,
        auth: str | None = None,
        tags: Iterable[str] = (),
        errors: Iterable[int] = (),
        content_type: str = "application/json",
        documented_body: type[BaseModel] | None = None,
    ) -> Callable[[Handler], Handler]:
        """Declare an operation. The handler gets ``body=`` and ``query=`` already parsed
        and may return a model, a list of models, plain JSON, or a StreamResponse.

        ``documented_body`` describes a body the handler parses itself (for APIs whose
        error statuses for bad bodies differ from ours, such as Confluent's)."""

        def decorate(handler: Handler) -> Handler:
            self.operations.append(
                Operation(
                    method=method.upper(),
                    path=path,
                    summary=summary,
                    handler=handler,
                    body=body,
                    query=query,
                    response=response,
                    status=status,
                    auth=auth,
                    tags=tuple(tags),
                    errors=tuple(errors),
                    content_type=content_type,
                    description=(handler.__doc__ or "").strip(),
                    documented_body=documented_body,
                )
            )
            return handler

        return decorate

    def register(
        self,
        app: web.Application,
        authenticators: dict[str, Callable[[web.Request], Awaitable[Any]]] | None = None,
        *,
        openapi_path: str = "/openapi.json",
    ) -> None:
        """Add every operation (and the OpenAPI document) to ``app``."""
        checks = authenticators or {}
        for op in self.operations:
            if op.auth and op.auth not in checks:
                raise RuntimeError(f"no authenticator for scheme {op.auth!r}")
            app.router.add_route(op.method, op.path, _bind(op, checks.get(op.auth or "")))
        document = self.document()

        async def openapi(_: web.Request) -> web.Response:
            return web.json_response(document)

        app.router.add_get(openapi_path, openapi)

    def document(self) -> dict[str, Any]:
        """The OpenAPI 3.1 description of every declared operation (a copy: change it at
        will)."""
        if self._document is None or self._documented != len(self.operations):
            self._document = self._describe()
            self._documented = len(self.operations)
        return copy.deepcopy(self._document)

    def _describe(self) -> dict[str, Any]:
        components: dict[str, Any] = {}
        paths: dict[str, dict[str, Any]] = {}
        for op in self.operations:
            path = _PATH_PARAM.sub(r"{\1}", op.path)
            item = paths.setdefault(path, {})
            entry: dict[str, Any] = {
                "operationId": op.handler.__name__,
                "summary": op.summary,
                "tags": list(op.tags),
                "parameters": [
                    {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                    for name in _PATH_PARAM.findall(op.path)
                ],
                "responses": {},
            }
            if op.description:
                entry["description"] = op.description
            if op.query is not None:
                entry["parameters"].extend(_query_parameters(op.query))
            body_model = op.body or op.documented_body
            if body_model is not None:
                entry["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": _schema(body_model, components)}},
                }
            ok: dict[str, Any] = {"description": "success"}
            if op.response is not None:
                ok["content"] = {op.content_type: {"schema": _schema(op.response, components)}}
            entry["responses"][str(op.status)] = ok
            codes = set(op.errors) | ({400} if op.body or op.query else set())
            if op.auth:
                codes.add(401)
                entry["security"] = [{op.auth: []}]
            for code in sorted(codes):
                entry["responses"][str(code)] = {"$ref": "#/components/responses/Error"}
            item[op.method.lower()] = entry
        components.setdefault("schemas", {})
        components["schemas"]["Error"] = self.error_schema or {
            "type": "object",
            "required": ["type", "message"],
            "properties": {
                "type": {"type": "string", "description": "X-Road style error type"},
                "message": {"type": "string"},
                "detail": {},
            },
            # The element name where errors are also written in XML.
            "xml": {"name": "error"},
        }
        error_ref = {"schema": {"$ref": "#/components/schemas/Error"}}
        components["responses"] = {
            "Error": {
                "description": "error",
                "content": dict.fromkeys(self.error_types, error_ref),
            }
        }
        components["securitySchemes"] = self.security_schemes
        return {
            "openapi": "3.1.0",
            "info": {"title": self.title, "version": self.version, "description": self.description},
            "paths": paths,
            "components": components,
        }


def _schema(model: Any, components: dict[str, Any]) -> dict[str, Any]:
    """JSON Schema (2020-12, as OpenAPI 3.1 uses) for a model or type, refs into components."""
    if isinstance(model, dict):
        return model
    adapter = TypeAdapter(model)
    schema = adapter.json_schema(ref_template="#/components/schemas/{model}", mode="serialization")
    defs = schema.pop("$defs", {})
    components.setdefault("schemas", {}).update(defs)
    if isinstance(model, type) and issubclass(model, BaseModel):
        components["schemas"][model.__name__] = schema
        return {"$ref": f"#/components/schemas/{model.__name__}"}
    return schema


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(mode="validation")
    defs = schema.get("$defs", {})
    required = set(schema.get("required", []))
    return [
        {"name": name, "in": "query", "required": name in required, "schema": _inline(prop, defs)}
        for name, prop in schema.get("properties", {}).items()
    ]


def _inline(schema: Any, defs: dict[str, Any]) -> Any:
    """Replace ``#/$defs/...`` references (an enum, say) by their definitions: a parameter's
    schema has no ``$defs`` of its own to point into."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inline(v, defs) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_inline(v, defs) for v in schema]
    return schema


def _bind(op: Operation, authenticate: Callable[[web.Request], Awaitable[Any]] | None) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        kwargs: dict[str, Any] = {}
        if authenticate is not None:
            kwargs["principal"] = await authenticate(request)
        body = await read_json(request) if op.body is not None else None
        refuse_nul(request, body)
        if op.query is not None:
            kwargs["query"] = parse_model(op.query, dict(request.query), where="query")
        if op.body is not None:
            kwargs["body"] = parse_model(op.body, body)
        result = await op.handler(request, **kwargs)
        if isinstance(result, web.StreamResponse):
            return result
        return json_response(result, status=op.status)

    handler.__name__ = op.handler.__name__
    return handler
