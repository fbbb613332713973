"""``shahrah adapter serve``: the adapters of one configuration file behind HTTP.

A gateway reaches a service's adapter as an ordinary REST backend whose base
URL ends with the service id: ``http://HOST:PORT/PK/FED/NADRA/civil-registry/person/v1``
(each part percent-encoded as in r1 URLs), so one adapter server can serve
several services. The request carries ``X-Road-Client`` (required) and
``X-Road-Id`` (the message id, for tracing; one is made up if absent), as a
provider gateway sends them.

Failures are answered in X-Road's shape with an ``X-Road-Error`` header
(``Server.ServerProxy.ServiceFailed``, status 502, when the system behind
fails). ``/metrics`` serves the Prometheus metrics and ``/healthz`` each
backend's circuit state. Bind it to a private address: the adapter trusts
its gateway, as a backend does.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from adapters.base import BackendRequest
from adapters.config import Adapters
from core.errors import BadRequestError, NotFoundError
from core.ids import ClientId, ServiceId
from core.web import error_middleware, security_headers_middleware

__all__ = ["ADAPTERS", "build_app"]

ADAPTERS = web.AppKey("adapters", Adapters)
MAX_BODY = 1 * 2**20  # bytes
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
    "host",
    "content-length",
}


def _find(adapters: Adapters, raw_path: str) -> tuple[ServiceId, str]:
    """Split ``/INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE[/VERSION]/rest`` into service and rest."""
    parts = raw_path.lstrip("/").split("/")
    for n in (6, 5):  # a versioned id is the longer match
        if len(parts) < n:
            continue
        try:
            sid = ServiceId.parse("/".join(parts[:n]), encoded=True)
        except BadRequestError:
            continue
        if sid in adapters.backends:
            return sid, "/" + "/".join(parts[n:])
    raise NotFoundError("no adapter serves a service at this path")


async def _call(request: web.Request) -> web.StreamResponse:
    adapters = request.app[ADAPTERS]
    service, rest = _find(adapters, request.raw_path.split("?", 1)[0])
    header = request.headers.get("X-Road-Client")
    if not header:
        raise BadRequestError(
            "the X-Road-Client header is required", detail={"header": "X-Road-Client"}
        )
    client = ClientId.parse(header)
    body = await request.read()
    answer = await adapters.backends[service].call(
        BackendRequest(
            service=service,
            client=client,
            message_id=request.headers.get("X-Road-Id") or str(uuid.uuid4()),
            method=request.method,
            path=rest,
            # As sent: the route decodes it once (aiohttp's query_string is decoded already).
            query=request.rel_url.raw_query_string,
            headers={k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP},
            body=body,
        )
    )
    return web.Response(status=answer.status, body=answer.body, headers=dict(answer.headers))


async def _metrics(request: web.Request) -> web.Response:
    data = generate_latest(request.app[ADAPTERS].registry)
    return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _health(request: web.Request) -> web.Response:
    adapters = request.app[ADAPTERS]
    states = {str(s): b.breaker.state.name.lower() for s, b in adapters.backends.items()}
    return web.json_response({"status": "ok", "circuits": states})


def build_app(adapters: Adapters, *, watch: bool = True) -> web.Application:
    """The HTTP app for ``adapters``; with ``watch``, drop directories are ingested as it runs."""
    app = web.Application(
        client_max_size=MAX_BODY,
        middlewares=[security_headers_middleware, error_middleware(header="X-Road-Error")],
    )
    app[ADAPTERS] = adapters

    async def lifecycle(_: web.Application) -> AsyncIterator[None]:
        if watch:
            await adapters.start()
        yield
        await adapters.close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _health)
    app.router.add_route("*", "/{tail:.+}", _call)
    return app
