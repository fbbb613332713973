"""The audit server the regulator runs (``shahrah audit serve``): witness, mirror and search.

Routes:

* ``POST /witness/v1/add-checkpoint``: logs submit checkpoints (audit.witness);
* ``POST /witness/v1/read-back``: a gateway or the consent service reads back its
  mirrored log (audit.repair);
* ``POST /api/v1/search``: regulators search every mirrored entry (audit.mirror);
* ``GET /api/v1/alarms``: the evidence of every refused, contradicting checkpoint;
* ``POST /api/v1/timeline``: one citizen's exchanges, for the consent service's citizen
  portal only (audit.timeline);
* ``/mirror/...``: the RFC 6962 read API over the mirrored logs (audit.api);
* ``GET /metrics`` (Prometheus) and ``GET /healthz``;
* ``/console/``: the regulator console's web pages (audit.console.pages).

The server learns the federation from a GlobalConfClient started from the
anchor; until it holds a verified, unexpired configuration it refuses work
with ``Server.ClientProxy.OutdatedGlobalConf`` (503), so it fails closed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from argon2 import PasswordHasher
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select, true

from audit import mirror, store, timeline
from audit.api import register_read_api
from audit.console.accounts import RegulatorAccounts
from audit.console.pages import ConsoleDeps, build_console
from audit.errors import TimelineUnavailableError
from audit.models import AuditAlarm
from audit.note import witness_name
from audit.regulators import SECURITY_SCHEME, RegulatorAuthenticator
from audit.witness import MirroredEntries, ReadBack, Submission, Witness, WitnessMetrics
from audit.witness_client import ADD_CHECKPOINT, READ_BACK, WITNESS_SERVICE
from core.db import Sessions, create_engine, sessions, transaction
from core.fields import AwareDatetime
from core.ids import ClientId
from core.keys import PrivateKey
from core.pseudonym import Pseudonymizer
from core.web import Api, error_middleware, security_headers_middleware
from registry.globalconf_client import GlobalConfClient
from registry.memberauth import MemberRequestVerifier, nonce_ledger
from registry.serviceauth import SCHEME as SERVICE_SCHEME
from registry.serviceauth import ServiceRequestVerifier

__all__ = ["AuditServerConfig", "build_app", "server_api"]

# bytes: a submission carries at most 1024 entries of at most 16 KiB, JSON-escaped
MAX_BODY = 40 * 2**20
MAX_ALARMS = 1000  # per page: each keeps up to 64 KiB of evidence


@dataclass(frozen=True)
class AuditServerConfig:
    db_url: str
    witness_key: PrivateKey
    pseudonyms: Pseudonymizer | None = None
    # The console's password hashing; None is argon2-cffi's argon2id defaults (tests go cheaper).
    password_hasher: PasswordHasher | None = None
    secure_cookies: bool = True  # False only for tests that speak plain HTTP to a non-local host


class Cosignatures(BaseModel):
    cosignatures: list[str]


class AlarmQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(100, ge=1, le=MAX_ALARMS, description="alarms per page, newest first")
    before: int | None = Field(
        None, ge=1, le=2**63 - 1, description="only alarms older than this id (the last page's)"
    )


class AlarmView(BaseModel):
    id: int
    log_id: str
    reason: str
    message: str
    evidence: str
    time: AwareDatetime


@dataclass
class _State:
    sessions: Sessions
    witness: Witness
    members: MemberRequestVerifier
    regulator: RegulatorAuthenticator
    portal: ServiceRequestVerifier
    log_keepers: ServiceRequestVerifier
    pseudonyms: Pseudonymizer | None
    conf: GlobalConfClient
    metrics: CollectorRegistry
    witnessed_size: Gauge


STATE = web.AppKey("audit_server_state", _State)
REG = "regulator"
PORTAL = "consent-service"
#: The one central service that may read citizens' timelines (for its citizen portal).
TIMELINE_CALLERS = frozenset({"consent"})
#: Central services that keep a witnessed log, and may read back theirs (audit.repair).
LOG_KEEPERS = frozenset({"consent"})

server_api = Api(
    title="Shahrah audit server",
    version="1",
    description="Witness, mirror and search of the federation's audit logs (run by the regulator).",
    security_schemes={
        REG: SECURITY_SCHEME,
        PORTAL: {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": f"'{SERVICE_SCHEME} <JWS>': a request signed by the consent service "
            "with its key from the global configuration (registry.serviceauth)",
        },
    },
)


@server_api.route(
    "POST",
    ADD_CHECKPOINT,
    summary="Submit a checkpoint with its consistency proof and new entries (tlog-witness)",
    body=Submission,
    response=Cosignatures,
    errors=(401, 403, 404, 409, 413, 422, 503),
    tags=("witness",),
)
async def add_checkpoint(request: web.Request, body: Submission) -> Cosignatures:
    """A gateway signs the request as its member (``Authorization: Shahrah-Member``); a
    central service's log is authenticated by its checkpoint signature alone."""
    state = request.app[STATE]
    return Cosignatures(
        cosignatures=await state.witness.add_checkpoint(body, await _signer(request))
    )


@server_api.route(
    "POST",
    READ_BACK,
    summary="Read back entries of the caller's own mirrored log, with its newest cosigned "
    "checkpoint (to repair a gateway restored from a backup)",
    body=ReadBack,
    response=MirroredEntries,
    errors=(400, 401, 403, 404, 503),
    tags=("witness",),
)
async def read_back(request: web.Request, body: ReadBack) -> MirroredEntries:
    """Signed by the gateway's own member (``Authorization: Shahrah-Member``), or by the
    central service whose log it is (``Shahrah-Service``); a POST, so the signature covers
    the query."""
    return await request.app[STATE].witness.read_back(body, await _signer(request))


async def _signer(request: web.Request) -> ClientId | str | None:
    """Who signed the request: a member's client, a central service's name, or nobody."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    state = request.app[STATE]
    if header.startswith(SERVICE_SCHEME + " "):
        return await state.log_keepers.authenticate(request)
    return await state.members.authenticate(request)


async def _regulator(request: web.Request) -> ClientId:
    return await request.config_dict[STATE].regulator(request)


@server_api.route(
    "POST",
    "/api/v1/search",
    summary="Search every mirrored audit event",
    body=mirror.SearchQuery,
    response=mirror.SearchPage,
    auth=REG,
    tags=("search",),
)
async def search(
    request: web.Request, principal: ClientId, body: mirror.SearchQuery
) -> mirror.SearchPage:
    """A POST, so a CNIC never appears in a URL or an access log."""
    state = request.app[STATE]
    async with transaction(state.sessions, write=False) as s:
        return await mirror.search(s, body, state.pseudonyms)


async def _consent_service(request: web.Request) -> str:
    return await request.config_dict[STATE].portal.authenticate(request)


@server_api.route(
    "POST",
    "/api/v1/timeline",
    summary="One citizen's exchanges, newest first, for the citizen portal",
    body=timeline.TimelineQuery,
    response=timeline.Timeline,
    auth=PORTAL,
    errors=(503,),
    tags=("search",),
)
async def citizen_timeline(
    request: web.Request, principal: str, body: timeline.TimelineQuery
) -> timeline.Timeline:
    """Only the consent service may ask, for a citizen signed in to its portal; a POST, so
    the CNIC never appears in a URL or an access log."""
    state = request.app[STATE]
    if state.pseudonyms is None:
        raise TimelineUnavailableError("this audit server holds no pseudonym key")
    async with transaction(state.sessions, write=False) as s:
        return await timeline.timeline(s, body, state.pseudonyms)


@server_api.route(
    "GET",
    "/api/v1/alarms",
    summary="Checkpoints the witness refused as evidence of a misbehaving log",
    query=AlarmQuery,
    response=list[AlarmView],
    auth=REG,
    tags=("witness",),
)
async def alarms(request: web.Request, principal: ClientId, query: AlarmQuery) -> list[AlarmView]:
    """Newest first; each alarm keeps up to 64 KiB of evidence, so a page is bounded by
    ``limit`` and the next one asked for with ``before`` = the last id."""
    older = AuditAlarm.id < query.before if query.before is not None else true()
    async with transaction(request.app[STATE].sessions, write=False) as s:
        rows = await s.scalars(
            select(AuditAlarm).where(older).order_by(AuditAlarm.id.desc()).limit(query.limit)
        )
        return [
            AlarmView(
                id=r.id,
                log_id=r.log_name,
                reason=r.reason,
                message=r.message,
                evidence=r.evidence,
                time=r.created_at,
            )
            for r in rows
        ]


@server_api.route("GET", "/healthz", summary="Liveness", response={"type": "object"})
async def healthz(request: web.Request) -> dict[str, Any]:
    conf = request.app[STATE].conf
    view = conf.view
    return {
        "status": "ok" if view is not None else "no-globalconf",
        "globalconf_serial": view.serial if view else None,
        "globalconf_age": conf.age(),
        "globalconf_error": conf.last_error,
    }


@server_api.route(
    "GET",
    "/metrics",
    summary="Prometheus metrics",
    response={"type": "string"},
    content_type="text/plain",
)
async def metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    async with transaction(state.sessions, write=False) as s:
        heads = await store.logs(s, store.MIRROR)
    for head in heads:
        state.witnessed_size.labels(head.name).set(head.size)
    return web.Response(
        body=generate_latest(state.metrics), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


def build_app(config: AuditServerConfig, conf: GlobalConfClient) -> web.Application:
    """The audit server's application; ``conf`` (started from the anchor) is refreshed in
    the background while it runs."""
    app = web.Application(
        client_max_size=MAX_BODY,
        middlewares=[security_headers_middleware, error_middleware()],
    )
    engine = create_engine(config.db_url)
    factory = sessions(engine)
    registry = CollectorRegistry()
    # One nonce ledger for every signed-request scheme of the server (rows are per caller).
    nonces = nonce_ledger(factory)
    members = MemberRequestVerifier(WITNESS_SERVICE, conf.current, nonces)
    app[STATE] = _State(
        sessions=factory,
        witness=Witness(
            factory,
            config.witness_key,
            witness_name(conf.anchor.instance),
            conf.current,
            WitnessMetrics(registry),
        ),
        members=members,
        regulator=RegulatorAuthenticator(members),
        portal=ServiceRequestVerifier(WITNESS_SERVICE, conf.current, TIMELINE_CALLERS, nonces),
        log_keepers=ServiceRequestVerifier(WITNESS_SERVICE, conf.current, LOG_KEEPERS, nonces),
        pseudonyms=config.pseudonyms,
        conf=conf,
        metrics=registry,
        witnessed_size=Gauge(
            "shahrah_audit_witnessed_size",
            "Entries of each log up to its newest cosigned checkpoint",
            ["log"],
            registry=registry,
        ),
    )
    server_api.register(app, {REG: _regulator, PORTAL: _consent_service})
    register_read_api(app, factory, _regulator, prefix="/mirror", kind=store.MIRROR)
    build_console(
        ConsoleDeps(
            sessions=factory,
            accounts=RegulatorAccounts(factory, hasher=config.password_hasher),
            conf=conf,
            pseudonyms=config.pseudonyms,
            witness_key=config.witness_key,
            witness_name=witness_name(conf.anchor.instance),
            secure_cookies=config.secure_cookies,
        )
    ).mount(app)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        stop = asyncio.Event()
        async with aiohttp.ClientSession() as http:
            task = asyncio.create_task(conf.run(http, stop))
            yield
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await nonces.close()
        await engine.dispose()

    app.cleanup_ctx.append(lifecycle)
    return app
