"""Running the registry: the aiohttp application and its background publisher."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from core.db import create_engine, sessions
from core.keys import KeySet, PrivateKey
from core.web import error_middleware, security_headers_middleware
from registry import publisher
from registry.api import STATE, RegistryState, api, operator
from registry.console import mount_console
from registry.fetch_reports import FetchReports
from registry.schemareg.api import MOUNT, build_schema_app

log = logging.getLogger(__name__)

MAX_BODY = 1 * 2**20  # bytes; operator requests are small


@dataclass(frozen=True)
class RegistryConfig:
    db_url: str
    instance: str
    operator_key: PrivateKey
    admin_token: str | None = None
    publish_interval: float = 30.0  # seconds between checks for expiry-driven re-publishing
    # The consent service's operator token, for the console's guardianship pages (they live
    # in the consent service); without it those pages say it is not configured.
    consent_operator_token: str | None = None


def build_app(config: RegistryConfig) -> web.Application:
    app = web.Application(
        client_max_size=MAX_BODY,
        middlewares=[security_headers_middleware, error_middleware()],
    )
    api.register(app, {"operator": operator})
    app.add_subapp(MOUNT, build_schema_app())
    mount_console(app, consent_token=config.consent_operator_token)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        engine = create_engine(config.db_url)
        factory = sessions(engine)
        wake = asyncio.Event()
        fetches = FetchReports(factory, KeySet([config.operator_key.public()]))
        app[STATE] = RegistryState(factory, config.instance, wake, config.admin_token, fetches)
        # Publish before serving, so the first gateway fetch finds a configuration.
        await publisher.publish(factory, config.operator_key)
        task = asyncio.create_task(
            publisher.run(factory, config.operator_key, wake, interval=config.publish_interval)
        )
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await fetches.close()
        await engine.dispose()

    app.cleanup_ctx.append(lifecycle)
    return app
