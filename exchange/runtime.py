"""Running a configured gateway: everything it needs, started in order and stopped cleanly.

``shahrah gateway serve`` and the embedded federation both use :func:`running`;
``shahrah gateway repair-audit`` uses :func:`repair_audit`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp

from adapters.base import Backend
from adapters.config import Adapters, load_adapters
from adapters.metrics import AdapterMetrics
from audit.api import register_read_api
from audit.note import log_origin
from audit.regulators import RegulatorAuthenticator
from audit.repair import Progress, Repair, repair
from audit.witness_client import WitnessClient
from audit.writer import AuditWriter
from consent.client import ConsentClient
from core.db import create_engine, sessions, upgrade
from core.errors import BadRequestError
from core.ids import ClientId, ServiceId
from core.keys import PrivateKey
from core.tls import backend_context, local_context, read_pinned, server_context
from core.web import listening
from exchange.clients import LocalClients
from exchange.config import GatewayConfig
from exchange.context import Gateway, Limits
from exchange.metrics import GatewayMetrics
from exchange.passthrough import HttpBackend
from exchange.peers import PeerPool, TlsFiles
from exchange.r1 import ERROR_HEADER
from exchange.renewal import Renewal, finish_interrupted
from exchange.replay import ReplayGuard
from exchange.rotation import KeyRotation
from exchange.server import TrustSync, local_app, remote_app, run_background
from registry.globalconf import Anchor
from registry.globalconf_client import FetchIdentity, GlobalConfClient
from registry.memberauth import MemberRequestVerifier, nonce_ledger
from registry.schemareg.validation import HttpSchemaSource, ValidatorCache

__all__ = ["Running", "registry_base", "repair_audit", "running"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Running:
    gateway: Gateway
    local_url: str
    remote_url: str
    audit: AuditWriter


def registry_base(anchor: Anchor, configured: str = "") -> str:
    """The registry's base URL (for its schema API): configured, or the anchor's without
    ``/globalconf``."""
    if configured:
        return configured.rstrip("/")
    if not anchor.url.endswith("/globalconf"):
        raise BadRequestError(
            "cannot tell the schema registry's URL from the anchor: set schema_registry"
        )
    return anchor.url.removesuffix("/globalconf")


def _member(config: GatewayConfig) -> ClientId:
    return ClientId(config.id.instance, config.id.member_class, config.id.member_code)


def _globalconf(config: GatewayConfig, anchor: Anchor, key: PrivateKey) -> GlobalConfClient:
    # Signed fetches let the operator see which configuration this gateway holds.
    return GlobalConfClient(
        anchor,
        cache_file=config.globalconf_cache,
        identity=FetchIdentity(key, _member(config), config.id.gateway_code),
    )


async def repair_audit(
    config: GatewayConfig, *, passphrase: bytes | None, progress: Progress | None = None
) -> Repair | None:
    """Make the gateway's audit log extend what the witness cosigned again, from its mirror
    (audit.repair), after a restore from an older backup. Every process of the gateway must
    be stopped. None if the log needed no repair."""
    key = PrivateKey.load(config.signing_key, passphrase)
    await asyncio.to_thread(upgrade, config.database)
    engine = create_engine(config.database)
    conf = _globalconf(config, Anchor.load(config.anchor), key)
    try:
        async with aiohttp.ClientSession() as http:
            await conf.refresh(http)
            witness = WitnessClient(conf.current, http, key=key, client=_member(config))
            return await repair(sessions(engine), str(config.id), witness, progress=progress)
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def running(
    config: GatewayConfig,
    *,
    passphrase: bytes | None,
    consent_feed_bound: float = 10.0,
) -> AsyncIterator[Running]:
    """Start the gateway described by ``config``; stop it when the block ends.

    The consent service is found in the global configuration (central service
    ``consent``); while it cannot be reached, or its revocation feed has been
    lost for ``consent_feed_bound`` seconds, services that require consent are
    refused (fail closed).
    """
    key = PrivateKey.load(config.signing_key, passphrase)
    finish_interrupted(config.tls_certificate, config.tls_key, password=passphrase)
    # The TLS key too, before anything starts: a wrong passphrase or a missing file is
    # refused at once rather than after migrations and background tasks.
    tls = TlsFiles(str(config.tls_certificate), str(config.tls_key), passphrase)
    ctx = server_context(tls.cert, tls.key, [], password=passphrase)
    local_clients = LocalClients.from_config(config)
    backend_contexts = {
        sid: backend_context(
            str(config.local.certificate),
            str(config.local.key),
            dict(read_pinned(path, f"services.{sid}") for path in b.certificates),
            password=passphrase,
        )
        for sid, b in config.services.items()
        if b.url.startswith("https://")
    }
    local_ctx = (
        local_context(
            str(config.local.certificate),
            str(config.local.key),
            local_clients.certificates,
            password=passphrase,
        )
        if config.local.tls
        else None
    )
    anchor = Anchor.load(config.anchor)
    await asyncio.to_thread(upgrade, config.database)
    engine = create_engine(config.database)
    db = sessions(engine)
    limits = Limits(**config.limits.model_dump())
    member = _member(config)
    conf = _globalconf(config, anchor, key)
    stack = contextlib.AsyncExitStack()
    try:
        http = await stack.enter_async_context(aiohttp.ClientSession())
        await conf.refresh(http)
        witness = WitnessClient(conf.current, http, key=key, client=member)
        audit = AuditWriter(
            db, str(config.id), key, origin=log_origin(str(config.id)), witness=witness
        )
        await audit.start()
        stack.push_async_callback(audit.close)

        consent = ConsentClient.for_globalconf(
            conf, key=key, member=member, feed_bound=consent_feed_bound
        )
        await consent.start()
        stack.push_async_callback(consent.close)

        backends: dict[ServiceId, Backend] = {
            sid: HttpBackend(
                b.url,
                timeout=limits.backend_timeout,
                max_body=limits.max_body,
                ssl_context=backend_contexts.get(sid),
            )
            for sid, b in config.services.items()
        }
        metrics = GatewayMetrics(conf.age, lambda: conf.view.serial if conf.view else None)
        metrics.follow_audit(audit.status)
        adapter_metrics = AdapterMetrics(metrics.registry) if config.adapters else None
        for path in config.adapters:
            loaded: Adapters = await load_adapters(
                path, metrics=adapter_metrics, environ={**os.environ, **config.adapter_variables}
            )
            await loaded.scan()  # what already waits in the drop folders, before serving
            await loaded.start()
            stack.push_async_callback(loaded.close)
            clash = backends.keys() & loaded.backends.keys()
            if clash:
                raise BadRequestError(f"services configured twice: {sorted(map(str, clash))}")
            backends.update(loaded.backends)
        for backend in backends.values():
            stack.push_async_callback(backend.close)

        peers = PeerPool(tls, connect_timeout=limits.connect_timeout)
        stack.push_async_callback(peers.close)
        replay = ReplayGuard(db, window=dt.timedelta(seconds=limits.freshness))
        stack.push_async_callback(replay.close)
        gateway = Gateway(
            id=config.id,
            key=key,
            globalconf=conf,
            replay=replay,
            peers=peers,
            audit=audit,
            metrics=metrics,
            backends=backends,
            consent=consent,
            schemas=ValidatorCache(
                HttpSchemaSource(registry_base(anchor, config.schema_registry), session=http)
            ),
            limits=limits,
            local_clients=local_clients,
        )
        trust = TrustSync(ctx)
        renewal = Renewal(config.id, tls, listener=ctx, peers=peers)

        rotation = KeyRotation(
            config.id.member, config.signing_key, key, passphrase=passphrase, use=gateway.use_key
        )
        metrics.follow_credentials(lambda: renewal.registered, lambda: rotation.valid)
        metrics.follow_certificate(lambda: renewal.expires)
        if conf.view is not None:
            trust.sync(conf.view)
            try:
                renewal.sync(conf.view)
            except Exception:  # serve with the current pair; the next refresh tries again
                log.exception("moving to the renewed TLS certificate failed")
            try:
                rotation.sync(conf.view)
            except Exception:  # sign with the current key; the next refresh tries again
                log.exception("moving to the new signing key failed")
        local = local_app(gateway)
        nonces = nonce_ledger(db)
        stack.push_async_callback(nonces.close)
        regulators = MemberRequestVerifier(str(config.id), conf.current, nonces)
        register_read_api(local, db, RegulatorAuthenticator(regulators), prefix="/audit")
        stop = asyncio.Event()
        background = asyncio.create_task(run_background(gateway, trust, renewal, stop, rotation))
        try:
            async with (
                listening(
                    local,
                    config.local.host,
                    config.local.port,
                    local_ctx,
                    error_header=ERROR_HEADER,
                ) as local_port,
                listening(
                    remote_app(gateway),
                    config.remote.host,
                    config.remote.port,
                    ctx,
                    error_header=ERROR_HEADER,
                ) as remote_port,
            ):
                scheme = "https" if config.local.tls else "http"
                log.info(
                    "gateway %s: local %s://%s:%d, remote https://%s:%d",
                    config.id,
                    scheme,
                    config.local.host,
                    local_port,
                    config.remote.host,
                    remote_port,
                )
                yield Running(
                    gateway,
                    f"{scheme}://{config.local.host}:{local_port}",
                    f"https://{config.remote.host}:{remote_port}",
                    audit,
                )
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await background
    finally:
        await stack.aclose()
        await engine.dispose()
