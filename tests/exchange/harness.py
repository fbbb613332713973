"""A federation on loopback for end-to-end gateway tests.

Real parts throughout: the registry application publishing signed
configurations, gateways with their own TLS certificates (issued by a CA made
at test time — only the registered leaf is trusted, never the CA), real
sockets, a real backend application. The audit sink here keeps events in
memory so tests can read what each gateway recorded.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from argon2 import PasswordHasher
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509 import Certificate as X509
from sqlalchemy.ext.asyncio import AsyncEngine
from yarl import URL

from audit import store as audit_store
from audit.errors import AuditUnavailableError
from audit.events import AuditEvent
from audit.note import log_origin
from audit.writer import AuditWriter
from consent.client import ConsentClient
from consent.schemafields import RegistryFields
from consent.server import ConsentConfig
from consent.server import build_app as build_consent_app
from core.db import Sessions, create_engine, sessions, transaction, utcnow
from core.errors import NotFoundError
from core.ids import ClientId, MemberId
from core.keys import KeySet, PrivateKey
from core.pseudonym import Pseudonymizer
from core.tls import make_certificate, server_context
from exchange import provider
from exchange.context import Gateway, Limits
from exchange.metrics import GatewayMetrics
from exchange.passthrough import HttpBackend
from exchange.peers import PeerPool, TlsFiles
from exchange.r1 import ERROR_HEADER
from exchange.replay import ReplayGuard
from exchange.server import TrustSync, local_app, remote_app
from registry import publisher, tokens
from registry import service as ops
from registry.globalconf import Anchor, Jwks, SchemaRef
from registry.globalconf_client import GlobalConfClient
from registry.payloads import (
    AccessRightCreate,
    CentralServiceSet,
    GatewayCreate,
    KeyCreate,
    MemberCreate,
    PurposeCreate,
    ServiceCreate,
    SubsystemCreate,
)
from registry.schemareg.records import register_records
from registry.schemareg.validation import HttpSchemaSource, ValidatorCache
from registry.server import RegistryConfig, build_app

CONSENT_KEY = PrivateKey.generate()
PSEUDONYMS = Pseudonymizer(b"exchange-test-pseudonym-key-32by")
FAST_HASH = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)

PERSON_EXAMPLE = json.loads(
    (Path(__file__).resolve().parents[2] / "schemas/records/pk.nadra.person.json").read_text()
)["examples"][0]

NADRA = MemberId("PK", "FED", "NADRA")
CIVIL = NADRA.subsystem("civil-registry")
PERSON = CIVIL.service("person", "v1")
ECHO = CIVIL.service("echo")
RECORDS = CIVIL.service("records")  # no consent needed; bodies checked against pk.nadra.person
PERSON_SCHEMA = SchemaRef(subject="pk.nadra.person", version=1)
LMC = MemberId("PK", "LG", "LMC")
LMC_TAX = LMC.subsystem("property-tax")
PLRA = MemberId("PK", "PROV", "PLRA")
PLRA_LAND = PLRA.subsystem("land-records")


class FailingAudit:
    """Stands in for an audit log whose storage is gone (to show nothing is released then)."""

    async def append(self, event: AuditEvent) -> None:
        raise AuditUnavailableError("audit storage unavailable")

    def use_key(self, key: PrivateKey) -> None:
        pass  # it signs nothing


class Clock:
    def __init__(self) -> None:
        self.offset = dt.timedelta(0)

    def __call__(self) -> dt.datetime:
        return utcnow() + self.offset


@dataclass
class Backend:
    """A REST service behind NADRA's gateway that records what reached it."""

    seen: list[web.Request] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    delay: float = 0.0

    def app(self) -> web.Application:
        async def handle(request: web.Request) -> web.StreamResponse:
            self.seen.append(request)
            self.bodies.append(await request.read())
            if self.delay:
                await asyncio.sleep(self.delay)
            if request.path.startswith("/redirect"):
                raise web.HTTPFound("/elsewhere")
            if request.path.startswith("/sized/"):  # an answer of the bytes asked for
                size = min(int(request.path.rsplit("/", 1)[-1]), 1024 * 1024)
                return web.Response(body=b"x" * size, content_type="application/octet-stream")
            if request.path.startswith("/upload"):  # echo the body: large answers, too
                return web.Response(body=self.bodies[-1], content_type="application/octet-stream")
            if request.path.startswith("/persons/"):
                record = dict(PERSON_EXAMPLE, cnic=request.path.rsplit("/", 1)[-1])
                if request.path.endswith("/broken"):
                    record["gender"] = "unknown-value"
                if request.path.endswith("/gone"):  # a careless backend's error answer
                    return web.json_response(record, status=404, headers={"X-Name": "leak"})
                return web.json_response(record, headers={"X-Custom": "kept"})
            return web.json_response(
                {
                    "method": request.method,
                    "path": request.path,
                    "query": request.rel_url.raw_query_string,
                    "client": request.headers.get("X-Road-Client"),
                    "user": request.headers.get("X-Road-UserId"),
                },
                headers={
                    "X-Custom": "kept",
                    "Cache-Control": "private, max-age=60",
                    "Connection": "keep-alive, X-Hop-Out",
                    "X-Hop-Out": "for the next hop only",
                    "Server": "legacy/1.0",
                },
            )

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        return app


@dataclass
class Node:
    gateway: Gateway
    local_url: str
    remote_url: str
    audit: AuditWriter
    consent: ConsentClient
    sessions: Sessions
    tls: TlsFiles
    cert: X509
    clock: Clock
    trust: TrustSync


@dataclass
class Federation:
    registry_url: str
    registry_db: Sessions
    operator: PrivateKey
    token: str
    anchor: Anchor
    nodes: dict[str, Node]
    member_keys: dict[MemberId, PrivateKey]
    ca: tuple[X509, ec.EllipticCurvePrivateKey]
    backend: Backend
    engines: list[AsyncEngine]
    consent_url: str
    consent_app: web.Application
    consent_conf: GlobalConfClient
    tmp: Path
    http: aiohttp.ClientSession

    async def events(self, node: str) -> list[AuditEvent]:
        """What gateway ``node`` durably recorded, in log order."""
        n = self.nodes[node]
        async with transaction(n.sessions, write=False) as s:
            try:
                head = await audit_store.get_log(s, str(n.gateway.id))
            except NotFoundError:
                return []
            return [
                AuditEvent.model_validate_json(e)
                for _, e in await audit_store.entries(s, head, 0, head.size)
            ]

    async def refresh(self, *, issued: dt.datetime | None = None) -> None:
        """Publish the registry's current state now (as issued at ``issued``, if given: a
        configuration of a later second) and have every gateway fetch it."""
        await publisher.publish(self.registry_db, self.operator, force=True, now=issued)
        await self.consent_conf.refresh(self.http)
        for node in self.nodes.values():
            await node.gateway.globalconf.refresh(self.http)
            assert node.gateway.globalconf.view is not None
            node.trust.sync(node.gateway.globalconf.view)

    async def call(
        self,
        node: str,
        method: str,
        path: str,
        *,
        client: ClientId = LMC_TAX,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
    ) -> aiohttp.ClientResponse:
        url = self.nodes[node].local_url + path
        hdrs = {"X-Road-Client": str(client), **(headers or {})}
        # encoded=True: send the URL exactly as written, as a careful local system would.
        resp = await self.http.request(
            method, URL(url, encoded=True), headers=hdrs, data=data, allow_redirects=False
        )
        await resp.read()
        return resp


def _write_tls(
    tmp: Path, name: str, ca: tuple[X509, ec.EllipticCurvePrivateKey]
) -> tuple[TlsFiles, X509]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = make_certificate(name, key, issuer=ca)
    cert_file, key_file = tmp / f"{name}.crt", tmp / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(Encoding.PEM))
    key_file.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    return TlsFiles(str(cert_file), str(key_file)), cert


async def build(
    db_url: str,
    tmp: Path,
    serve: Callable[..., Awaitable[str]],
    http: aiohttp.ClientSession,
    *,
    limits: Limits | None = None,
    gateway_db: Callable[[str], str] | None = None,
) -> Federation:
    """Start the registry, three gateways and NADRA's backend; register and publish them."""
    limits = limits or Limits()
    engine = create_engine(db_url)
    engines = [engine]
    registry_db = sessions(engine)
    operator = PrivateKey.generate()
    async with transaction(registry_db) as s:
        await ops.init_federation(s, "PK")
        token = await tokens.create(s, "tests")
        await register_records(s)
    registry_url = await serve(
        build_app(
            RegistryConfig(
                db_url=db_url, instance="PK", operator_key=operator, publish_interval=3600
            )
        )
    )
    anchor = Anchor(
        instance="PK",
        url=f"{registry_url}/globalconf",
        keys=Jwks.model_validate(KeySet([operator.public()]).to_jwks()),
        generated_at=utcnow(),
    )
    schema_source = HttpSchemaSource(registry_url, session=http)
    # The consent service, a central service found by gateways in the configuration.
    consent_conf = GlobalConfClient(anchor)
    consent_app = build_consent_app(
        ConsentConfig(
            db_url=db_url,
            signing_key=CONSENT_KEY,
            pseudonymizer=PSEUDONYMS,
            globalconf=consent_conf,
            fields=RegistryFields(ValidatorCache(schema_source)),
            hasher=FAST_HASH,
            refresh_globalconf=False,
            heartbeat=0.1,
            poll_interval=0.1,
        )
    )
    consent_url = await serve(consent_app)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (make_certificate("shahrah test CA", ca_key, ca=True), ca_key)
    backend = Backend()
    backend_url = await serve(backend.app())

    member_keys = {m: PrivateKey.generate() for m in (NADRA, LMC, PLRA)}
    nodes: dict[str, Node] = {}
    for name, member in (("nadra", NADRA), ("lmc", LMC), ("plra", PLRA)):
        gid = member.gateway("gw1")
        tls, cert = _write_tls(tmp, name, ca)
        clock = Clock()
        gw_db_url = gateway_db(name) if gateway_db else db_url
        engines.append(create_engine(gw_db_url))
        gw_sessions = sessions(engines[-1])
        audit = AuditWriter(gw_sessions, str(gid), member_keys[member], origin=log_origin(str(gid)))
        await audit.start()
        client = GlobalConfClient(anchor, clock=clock)
        # The production feed bound: the whole federation shares this one event loop, and on
        # a loaded 2-core CI machine a 2 s bound was once outlived between heartbeats, failing
        # a test closed. Failing closed itself is tested with short bounds in tests/consent.
        consent = ConsentClient.for_globalconf(
            client, key=member_keys[member], member=ClientId(*member.parts())
        )
        gw = Gateway(
            id=gid,
            key=member_keys[member],
            consent=consent,
            globalconf=client,
            replay=ReplayGuard(gw_sessions, window=dt.timedelta(seconds=limits.freshness)),
            peers=PeerPool(tls, connect_timeout=limits.connect_timeout),
            audit=audit,
            metrics=GatewayMetrics(client.age, lambda c=client: c.view.serial if c.view else None),
            backends={
                sid: HttpBackend(
                    backend_url, timeout=limits.backend_timeout, max_body=limits.max_body
                )
                for sid in (PERSON, ECHO, RECORDS)
            }
            if member == NADRA
            else {},
            schemas=ValidatorCache(schema_source),
            limits=limits,
            clock=clock,
        )
        ctx = server_context(tls.cert, tls.key, [])
        remote = await serve(remote_app(gw), ssl_context=ctx, error_header=ERROR_HEADER)
        local = await serve(local_app(gw), error_header=ERROR_HEADER)
        nodes[name] = Node(
            gw, local, remote, audit, consent, gw_sessions, tls, cert, clock, TrustSync(ctx)
        )

    async with transaction(registry_db) as s:
        for member, name in (
            (NADRA, "NADRA"),
            (LMC, "Lahore Metropolitan Corporation"),
            (PLRA, "PLRA"),
        ):
            await ops.add_member(
                s,
                MemberCreate(
                    member_class=member.member_class, member_code=member.member_code, name=name
                ),
            )
            await ops.add_key(
                s,
                KeyCreate(
                    member=member,
                    jwk=member_keys[member].public().to_jwk(),
                    not_before=utcnow() - dt.timedelta(hours=1),
                ),
            )
        for sub, title in ((CIVIL, ""), (LMC_TAX, "Property tax office"), (PLRA_LAND, "")):
            await ops.add_subsystem(s, SubsystemCreate(id=sub, name=title))
        for name, sub in (("nadra", CIVIL), ("lmc", LMC_TAX), ("plra", PLRA_LAND)):
            node = nodes[name]
            await ops.add_gateway(
                s,
                GatewayCreate(
                    id=node.gateway.id,
                    address=node.remote_url,
                    tls_certificate=node.cert.public_bytes(Encoding.PEM).decode(),
                    clients=[sub],
                ),
            )
        await ops.set_central_service(
            s,
            "consent",
            CentralServiceSet(
                url=consent_url, keys=Jwks.model_validate(KeySet([CONSENT_KEY.public()]).to_jwks())
            ),
        )
        await ops.add_purpose(
            s, PurposeCreate(code="identity-verification", name="Identity verification")
        )
        await ops.add_service(
            s,
            ServiceCreate(
                id=PERSON,
                title="Person record",
                requires_consent=True,
                subject_field="/cnic",
                purposes=["identity-verification"],
                response_schema=PERSON_SCHEMA,
            ),
        )
        await ops.add_service(
            s,
            ServiceCreate(
                id=RECORDS,
                title="Person records (no consent)",
                request_schema=PERSON_SCHEMA,
                response_schema=PERSON_SCHEMA,
            ),
        )
        await ops.grant(s, AccessRightCreate(service=RECORDS, client=LMC_TAX))
        await ops.add_service(s, ServiceCreate(id=ECHO, title="Echo"))
        await ops.grant(s, AccessRightCreate(service=ECHO, client=LMC_TAX))
        await ops.grant(
            s, AccessRightCreate(service=PERSON, client=LMC_TAX, method="GET", path="/persons/*")
        )
        await ops.grant(
            s, AccessRightCreate(service=ECHO, client=PLRA_LAND, method="GET", path="/public/**")
        )
    fed = Federation(
        registry_url=registry_url,
        registry_db=registry_db,
        operator=operator,
        token=token,
        anchor=anchor,
        nodes=nodes,
        member_keys=member_keys,
        ca=ca,
        backend=backend,
        engines=engines,
        consent_url=consent_url,
        consent_app=consent_app,
        consent_conf=consent_conf,
        tmp=tmp,
        http=http,
    )
    await fed.refresh()
    await _follow_consent_feeds(nodes)
    return fed


async def _follow_consent_feeds(nodes: dict[str, Node], within: float = 15.0) -> None:
    """Start every gateway's consent client and wait until each has heard a heartbeat.

    As ``exchange.runtime`` does, the clients start only once their gateway holds a
    configuration naming the consent service: the feed bound counts from start, and setting
    up the federation under load can take longer than a tight bound. Waiting
    for the first heartbeat means no test begins on a gateway that is still failing closed.
    """
    for node in nodes.values():
        await node.consent.start()
    deadline = time.monotonic() + within
    while not all(node.consent.status().feed_live for node in nodes.values()):
        assert time.monotonic() < deadline, {
            name: node.consent.status() for name, node in nodes.items()
        }
        await asyncio.sleep(0.01)


async def close(fed: Federation) -> None:
    for node in fed.nodes.values():
        await node.consent.close()
        await node.audit.close()
        await node.gateway.peers.close()
        await node.gateway.replay.close()
        for backend in node.gateway.backends.values():
            await backend.close()
    for engine in fed.engines:
        await engine.dispose()


def sqlite_copy(template: Path, tmp: Path) -> Callable[[str], str]:
    def make(name: str) -> str:
        path = tmp / f"{name}.db"
        shutil.copyfile(template, path)
        return f"sqlite:///{path}"

    return make


def provider_signs_error_type(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """Make every provider gateway sign ``X-Road-Error: kind`` into its answers, delivered
    ones included: what a provider of another release, or a rogue one, could send."""
    real = provider.forwardable_headers
    monkeypatch.setattr(
        provider, "forwardable_headers", lambda headers: {**real(headers), "X-Road-Error": kind}
    )
