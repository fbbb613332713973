"""Running the consent service: the aiohttp application and its background tasks.

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
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from argon2 import PasswordHasher

from consent import api as _member_api  # noqa: F401  (declares the member routes)
from consent import citizen_api as _citizen_api  # noqa: F401  (declares the citizen routes)
from consent.citizens import SESSION_TTL, Accounts
from consent.feed import FeedHub
from consent.history import ConsentLog
from consent.schemafields import FieldChecker
from consent.service import ConsentService
from consent.state import AUDIENCE, AUTHENTICATORS, STATE, ConsentState, Metrics, api
from core.db import create_engine, sessions, utcnow
from core.keys import PrivateKey
from core.pseudonym import Pseudonymizer
from core.web import error_middleware, security_headers_middleware
from registry.globalconf_client import GlobalConfClient
from registry.memberauth import MemberRequestVerifier

__all__ = ["ConsentConfig", "build_app"]

log = logging.getLogger(__name__)

MAX_BODY = 256 * 1024  # bytes; a consent request with 20 services of 200 fields fits


@dataclass(frozen=True)
class ConsentConfig:
    db_url: str
    signing_key: PrivateKey
    pseudonymizer: Pseudonymizer
    globalconf: GlobalConfClient
    fields: FieldChecker
    log: ConsentLog
    heartbeat: float = 0.25  # seconds between feed heartbeats
    poll_interval: float = 0.2  # seconds between feed reads of changes made by other processes
    sweep_interval: float = 60.0  # seconds between expiry sweeps
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

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        engine = create_engine(config.db_url)
        factory = sessions(engine)
        hub = FeedHub(factory, poll_interval=config.poll_interval)
        await hub.start()
        service = ConsentService(
            sessions=factory,
            log=config.log,
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
            verifier=MemberRequestVerifier(AUDIENCE, config.globalconf.current),
            heartbeat=config.heartbeat,
            metrics=Metrics(),
        )
        stop = asyncio.Event()
        async with aiohttp.ClientSession() as http:
            tasks = [
                asyncio.create_task(hub.run()),
                asyncio.create_task(_sweep(service, config.sweep_interval)),
            ]
            if config.refresh_globalconf:
                tasks.append(asyncio.create_task(config.globalconf.run(http, stop)))
            yield
            stop.set()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await engine.dispose()

    async def end_streams(app: web.Application) -> None:
        if STATE in app:
            app[STATE].hub.close()

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(end_streams)
    return app


async def _sweep(service: ConsentService, interval: float) -> None:
    while True:
        try:
            expired = await service.sweep()
            if expired:
                log.info("expired %d consents", expired)
        except Exception:
            log.exception("expiry sweep failed; retrying in %s s", interval)
        await asyncio.sleep(interval)
