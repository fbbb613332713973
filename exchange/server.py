"""Running a gateway: its two listeners and the background work that keeps it current.

* The **local** listener speaks r1 to the member's own systems and serves
  ``/listClients``, ``/metrics``, ``/healthz`` and ``/readyz``.
* The **remote** listener accepts other gateways over mutual TLS; it completes
  a handshake only with a registered gateway certificate, following the global
  configuration as gateways are registered, removed or given new certificates.

Readiness is false (503) while the gateway holds no valid global
configuration, in which case every exchange is refused anyway (fail closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from core.errors import OutdatedGlobalConfError
from core.tls import PinnedContext
from core.web import Api, error_middleware, security_headers_middleware
from exchange import envelope
from exchange.consumer import consume
from exchange.context import Gateway
from exchange.metadata import XML_TYPE, client_list_xml, list_clients
from exchange.peers import pinnable
from exchange.provider import provide
from exchange.r1 import ERROR_HEADER, ERROR_TYPES, error_format_middleware, methods_middleware
from exchange.renewal import Renewal
from exchange.rotation import KeyRotation
from registry.globalconf import GlobalConfView

__all__ = ["TrustSync", "local_app", "remote_app", "run_background"]

log = logging.getLogger(__name__)

GATEWAY = web.AppKey("gateway", Gateway)

ops = Api(
    title="Shahrah gateway (local side)",
    version="1",
    description=(
        "X-Road Message Protocol for REST (r1) towards the member's own systems, "
        "X-Road's REST metaservices, and operations endpoints."
    ),
    error_types=ERROR_TYPES,
)


@ops.route(
    "GET",
    "/healthz",
    summary="Liveness, with the configuration's state",
    response={"type": "object"},
    tags=("operations",),
)
async def healthz(request: web.Request) -> dict[str, Any]:
    gw = request.app[GATEWAY]
    view = gw.globalconf.view
    return {
        "status": "ok",
        "gateway": str(gw.id),
        "ready": _ready(gw),
        "globalconf_serial": view.serial if view else None,
        "globalconf_age_seconds": gw.globalconf.age(),
        "globalconf_error": gw.globalconf.last_error,
    }


def _ready(gw: Gateway) -> bool:
    try:
        gw.globalconf.current()
    except OutdatedGlobalConfError:
        return False
    return True


@ops.route(
    "GET",
    "/readyz",
    summary="Ready: a valid global configuration is held",
    response={"type": "object"},
    errors=(503,),
    tags=("operations",),
)
async def readyz(request: web.Request) -> web.StreamResponse:
    ready = _ready(request.app[GATEWAY])
    return web.json_response({"ready": ready}, status=200 if ready else 503)


@ops.route(
    "GET",
    "/metrics",
    summary="Prometheus metrics",
    response={"type": "string"},
    content_type="text/plain",
    tags=("operations",),
)
async def metrics(request: web.Request) -> web.StreamResponse:
    body = generate_latest(request.app[GATEWAY].metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@ops.route(
    "GET",
    "/listClients",
    summary="Members and subsystems of the federation (X-Road listClients)",
    response={"type": "object"},
    errors=(503,),
    tags=("metaservices",),
)
async def list_clients_route(request: web.Request) -> web.StreamResponse:
    """As X-Road answers it (PR-META 2): JSON when `Accept` names `application/json`,
    otherwise the `clientList` XML element (`text/xml`). `xRoadInstance` limits the list to
    one instance."""
    gw = request.app[GATEWAY]
    clients = list_clients(gw.globalconf.current(), request.query.get("xRoadInstance"))
    if _accepts_json(request.headers.get("Accept", "")):
        return web.json_response(clients)
    return web.Response(body=client_list_xml(clients), headers={"Content-Type": XML_TYPE})


def _accepts_json(accept: str) -> bool:
    return any(r.split(";", 1)[0].strip().lower() == "application/json" for r in accept.split(","))


async def _r1(request: web.Request) -> web.StreamResponse:
    return await consume(request.app[GATEWAY], request)


#: Bodies are read as they came: each is compared with its signed digest and checked against
#: its service's schema, so a compressed one is refused (r1.check_request), never inflated.
_RAW_BODIES = {"auto_decompress": False}


def local_app(gw: Gateway) -> web.Application:
    app = web.Application(
        client_max_size=gw.limits.max_body,
        # A header value over the limit must reach parse_local, which refuses it in r1's words.
        handler_args={"max_field_size": envelope.HEADER_FIELD_SIZE, **_RAW_BODIES},
        middlewares=[
            error_format_middleware,
            security_headers_middleware,
            error_middleware(header=ERROR_HEADER),
            methods_middleware,
        ],
    )
    app[GATEWAY] = gw
    ops.register(app)
    # Any protocol version reaches the r1 parser, which answers others with an X-Road error.
    app.router.add_route("*", r"/{version:r[0-9]+}/{tail:.*}", _r1)
    app.router.add_route("*", r"/{version:r[0-9]+}", _r1)
    return app


async def _remote(request: web.Request) -> web.StreamResponse:
    return await provide(request.app[GATEWAY], request)


def remote_app(gw: Gateway) -> web.Application:
    app = web.Application(
        client_max_size=gw.limits.max_body,
        handler_args={"max_field_size": envelope.ENVELOPE_FIELD_SIZE, **_RAW_BODIES},
        # The pipeline answers every request it is handed, signed; these answer, unsigned but
        # in r1's words, what never reaches it (a CONNECT, an ``OPTIONS *``).
        middlewares=[error_middleware(header=ERROR_HEADER), methods_middleware],
    )
    app[GATEWAY] = gw
    app.router.add_route("*", "/{tail:.*}", _remote)
    return app


@dataclass
class TrustSync:
    """Keeps the remote listener accepting exactly the registered gateway certificates.

    A gateway added, removed, given a new certificate or a renewed one beside it is
    accepted or refused at the handshake from the next sync on, without restarting the
    listener. A registered certificate that could sign others (a configuration made by an
    older registry may hold one) is never trusted, and which one is logged once.
    """

    context: PinnedContext
    refused: set[str] = field(default_factory=set, init=False)  # pins never to trust
    _checked: set[str] = field(default_factory=set, init=False, repr=False)

    def sync(self, view: GlobalConfView) -> int:
        """Trust the configuration's gateway certificates; returns how many are new."""
        registered = {
            pin: (g, pem) for g in view.conf.gateways for pin, pem in g.certificates().items()
        }
        for pin, (g, _) in registered.items():
            if pin in self._checked:
                continue
            self._checked.add(pin)
            if not pinnable(g, pin, "accepting"):
                self.refused.add(pin)
        added, removed = self.context.trust_exactly(
            {pin: pem for pin, (_, pem) in registered.items() if pin not in self.refused}
        )
        if added:
            log.info("trusting %d more gateway certificate(s)", added)
        if removed:
            log.info("no longer trusting %d gateway certificate(s)", removed)
        return added


async def run_background(
    gw: Gateway,
    trust: TrustSync,
    renewal: Renewal,
    stop: asyncio.Event,
    rotation: KeyRotation | None = None,
) -> None:
    """Refresh the configuration on its interval, keep the trust store in step, move to a
    renewed certificate and a new signing key when it may, purge the replay cache; until
    ``stop``."""
    failures = 0
    async with aiohttp.ClientSession() as http:
        while not stop.is_set():
            await gw.globalconf.refresh(http)
            failures = failures + 1 if gw.globalconf.last_error else 0
            if gw.globalconf.view is not None:
                try:
                    trust.sync(gw.globalconf.view)
                except Exception:
                    log.exception("updating the TLS trust store failed; trying again next round")
                try:
                    renewal.sync(gw.globalconf.view)
                except Exception:
                    log.exception(
                        "moving to the renewed TLS certificate failed; trying again next round"
                    )
                try:
                    if rotation is not None:
                        rotation.sync(gw.globalconf.view)
                except Exception:
                    log.exception("moving to the new signing key failed; trying again next round")
            try:
                await gw.replay.purge()
            except Exception:
                log.exception("purging the replay cache failed; trying again next round")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=gw.globalconf.next_wait(failures))
