"""Running the consent service: the aiohttp application and its background tasks.

It also serves the citizen portal's pages under ``/portal/`` (consent.portal).

Background tasks: the global configuration client's refresh loop (the
service learns members, their keys, services, purposes and schemas from
it, and refuses member requests once what it holds has expired), the
revocation feed's hub, and the expiry sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from argon2 import PasswordHasher

from audit.api import register_read_api
from audit.regulators import RegulatorAuthenticator
from audit.timeline_client import TimelineClient
from audit.witness_client import WitnessClient
from audit.writer import AuditWriter
from consent import api as _member_api  # noqa: F401  (declares the member routes)
from consent import citizen_api as _citizen_api  # noqa: F401  (declares the citizen routes)
from consent.citizens import SESSION_TTL, Accounts
from consent.feed import MAX_STREAMS_PER_MEMBER, FeedHub
from consent.history import LOG_ID, MerkleConsentLog
from consent.portal import TIMELINE, build_console
from consent.schemafields import FieldChecker
from consent.service import ConsentService
from consent.state import (
    AUDIENCE,
    AUTHENTICATORS,
    SIGNIN_LIMITER,
    STATE,
    ConsentState,
    Metrics,
    api,
)
from core.db import create_engine, sessions, utcnow
from core.keys import PrivateKey
from core.pseudonym import Pseudonymizer
from core.ratelimit import RateLimiter
from core.web import error_middleware, security_headers_middleware
from registry.globalconf_client import GlobalConfClient
from registry.memberauth import (
    MAX_NONCES,
    MAX_NONCES_PER_CALLER,
    MemberRequestVerifier,
    nonce_ledger,
)

__all__ = ["LOG_WRITER", "ConsentConfig", "build_app"]

log = logging.getLogger(__name__)

MAX_BODY = 256 * 1024  # bytes; a consent request with 20 services of 200 fields fits
STARTUP_RETRY = 1.0  # seconds between configuration fetches until the first succeeds
JOB_GRACE = 10.0  # seconds a running sweep or checkpoint may take to finish at shutdown
LOG_PREFIX = "/v1/log"  # the consent log's read API (audit.api) for regulators
LOG_WRITER = web.AppKey("consent_log_writer", AuditWriter)


@dataclass(frozen=True)
class ConsentConfig:
    db_url: str
    signing_key: PrivateKey
    pseudonymizer: Pseudonymizer
    globalconf: GlobalConfClient
    fields: FieldChecker  # normally RegistryFields over the schema registry's HTTP API
    heartbeat: float = 0.25  # seconds between feed heartbeats
    feed_streams_per_member: int = MAX_STREAMS_PER_MEMBER  # open at once; more are refused
    poll_interval: float = 0.2  # seconds between feed reads of changes made by other processes
    sweep_interval: float = 60.0  # seconds between expiry sweeps
    # Pseudonym lookups per member (a token bucket; see docs/consent.md for the numbers).
    pseudonym_rate: float = 20.0  # lookups a second, sustained
    pseudonym_burst: int = 2_000  # lookups at once
    # Member-signed requests remembered against replay within an assertion's 90 s: each
    # member's share, and the whole (registry.memberauth.RequestChecks).
    signed_requests_per_member: int = MAX_NONCES_PER_CALLER
    signed_requests: int = MAX_NONCES
    checkpoint_interval: float = 10.0  # seconds between consent log checkpoints (if it grew)
    session_ttl: dt.timedelta = SESSION_TTL
    hasher: PasswordHasher | None = None  # default: argon2id with argon2-cffi's parameters
    refresh_globalconf: bool = True  # run the configuration client's refresh loop
    clock: Callable[[], dt.datetime] = utcnow


def build_app(config: ConsentConfig) -> web.Application:
    app = web.Application(
        client_max_size=MAX_BODY,
        middlewares=[security_headers_middleware, error_middleware()],
    )
    api.register(app, AUTHENTICATORS)
    portal = build_console()
    portal.mount(app)
    app[SIGNIN_LIMITER] = portal.limiter
    # The engine connects lazily; it exists now so the log's read API can be mounted.
    engine = create_engine(config.db_url)
    factory = sessions(engine)
    consent_log = MerkleConsentLog()
    nonces = nonce_ledger(factory)
    verifier = MemberRequestVerifier(
        AUDIENCE,
        config.globalconf.current,
        nonces,
        max_nonces=config.signed_requests,
        max_nonces_per_caller=config.signed_requests_per_member,
    )
    # Regulators read the consent log (pseudonymous entries, proofs, checkpoints) as they read
    # gateways' logs; one nonce memory serves every member-signed request of this server.
    register_read_api(
        app,
        factory,
        RegulatorAuthenticator(verifier),
        prefix=LOG_PREFIX,
    )
    hub = FeedHub(
        factory,
        poll_interval=config.poll_interval,
        streams_per_member=config.feed_streams_per_member,
    )
    service = ConsentService(
        sessions=factory,
        log=consent_log,
        pseudonymize=config.pseudonymizer,
        conf=config.globalconf.current,
        fields=config.fields,
        clock=config.clock,
        on_change=hub.wake,
    )
    app[STATE] = ConsentState(
        sessions=factory,
        service=service,
        accounts=Accounts(factory, hasher=config.hasher, session_ttl=config.session_ttl),
        hub=hub,
        key=config.signing_key,
        conf=config.globalconf.current,
        verifier=verifier,
        heartbeat=config.heartbeat,
        metrics=Metrics(),
        pseudonym_limiter=RateLimiter(
            rate=config.pseudonym_rate, burst=config.pseudonym_burst, what="pseudonym lookups"
        ),
    )

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await hub.start()
        stop = asyncio.Event()
        async with aiohttp.ClientSession() as http:
            # Checkpoints of the consent log, cosigned by the federation's audit witness (when
            # the configuration names one); the entries are appended by the changes themselves.
            writer = AuditWriter(
                factory,
                LOG_ID,
                config.signing_key,
                origin=consent_log.origin,
                checkpoint_interval=config.checkpoint_interval,
                witness=WitnessClient(config.globalconf.current, http),
            )
            await writer.start()
            app[LOG_WRITER] = writer
            # The portal reads citizens' timelines from the audit server, signed as this service.
            app[TIMELINE] = TimelineClient(config.globalconf.current, http, config.signing_key)
            # Jobs that write stop between runs, never inside one: a transaction cut off by
            # cancellation can leave SQLite's write lock held, and the final checkpoint below
            # then finds the database locked.
            jobs = [
                asyncio.create_task(
                    _every(config.sweep_interval, "expiry sweep", service.sweep, stop)
                ),
                asyncio.create_task(
                    _every(
                        config.checkpoint_interval,
                        "consent log checkpoint",
                        writer.checkpoint,
                        stop,
                    )
                ),
            ]
            tasks = [asyncio.create_task(hub.run())]
            if config.refresh_globalconf:
                tasks.append(asyncio.create_task(_follow(config.globalconf, http, stop)))
            yield
            stop.set()
            _, late = await asyncio.wait(jobs, timeout=JOB_GRACE)
            for task in [*tasks, *late]:
                task.cancel()
            for task in [*tasks, *jobs]:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await writer.close()
        await nonces.close()
        await engine.dispose()

    async def end_streams(app: web.Application) -> None:
        hub.close()

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(end_streams)
    return app


async def _follow(conf: GlobalConfClient, http: aiohttp.ClientSession, stop: asyncio.Event) -> None:
    """Keep the configuration fresh. Until a first one is held, retry every second rather than
    once a refresh interval: the service may start before the registry."""
    while conf.view is None and not stop.is_set():
        if not await conf.refresh(http):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=STARTUP_RETRY)
    await conf.run(http, stop)


async def _every(
    interval: float, what: str, job: Callable[[], Awaitable[object]], stop: asyncio.Event
) -> None:
    """Run ``job`` every ``interval`` seconds until ``stop`` (a run in progress finishes); a
    failure is logged and retried next time."""
    while not stop.is_set():
        try:
            await job()
        except Exception:
            log.exception("%s failed; retrying in %s s", what, interval)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
