"""A running federation for audit tests: the real registry publishing a signed global
configuration over HTTP, the regulator's audit server on it, and a gateway's view of it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from audit.note import log_origin
from audit.regulators import authorization
from audit.server import AuditServerConfig, build_app
from audit.witness_client import WITNESS_SERVICE, WitnessClient
from audit.writer import AuditWriter
from core.db import Sessions, transaction
from core.ids import ClientId
from core.keys import KeySet, PrivateKey
from registry import publisher
from registry import service as ops
from registry.globalconf import Jwks
from registry.globalconf_client import GlobalConfClient
from registry.payloads import (
    CentralServiceSet,
    GroupCreate,
    KeyCreate,
    MemberCreate,
    SubsystemCreate,
)
from registry.server import RegistryConfig
from registry.server import build_app as registry_app
from tests.audit.events import GATEWAY, PSEUDONYMS
from tests.registry.federation import NADRA, NADRA_KEY, OPERATOR, seed
from tests.registry.test_globalconf import anchor_for

WITNESS_KEY = PrivateKey.generate()
REGULATOR_KEY = PrivateKey.generate()
REGULATOR = ClientId("PK", "FED", "PDPA", "audit-console")
NADRA_CLIENT = ClientId("PK", "FED", "NADRA")


@dataclass
class Federation:
    db: Sessions  # the registry's and NADRA's gateway's
    registry_url: str
    audit_url: str
    audit_conf: GlobalConfClient
    gateway_conf: GlobalConfClient
    http: aiohttp.ClientSession
    witness_db: Sessions  # the audit server's: ``db`` unless a test gives it its own

    async def publish(self) -> None:
        """Sign a new configuration now and let every node fetch it."""
        published = await publisher.publish(self.db, OPERATOR, force=True)
        for conf in (self.audit_conf, self.gateway_conf):
            await conf.refresh(self.http)
            assert conf.current().serial == published.serial

    async def move_witness(self, url: str, key: PrivateKey = WITNESS_KEY) -> None:
        """Publish the witness at ``url`` with ``key`` (a fake one, in tests of its clients)."""
        async with transaction(self.db) as s:
            await _set_witness(s, url, key)
        await self.publish()

    def witness_client(
        self, key: PrivateKey = NADRA_KEY, client: ClientId = NADRA_CLIENT
    ) -> WitnessClient:
        return WitnessClient(self.gateway_conf.current, self.http, key=key, client=client)

    def nadra_writer(self, *, checkpoint_every: int = 1000) -> AuditWriter:
        """NADRA's gateway's audit log writer, witnessed by this federation's witness."""
        log = str(GATEWAY)
        return AuditWriter(
            self.db,
            log,
            NADRA_KEY,
            origin=log_origin(log),
            checkpoint_every=checkpoint_every,
            witness=self.witness_client(),
        )

    async def regulator(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        base: str | None = None,
        audience: str = WITNESS_SERVICE,
        key: PrivateKey = REGULATOR_KEY,
        client: ClientId = REGULATOR,
    ) -> tuple[int, Any]:
        """A request signed by the regulator's console; returns (status, parsed body)."""
        data = json.dumps(body).encode() if body is not None else b""
        url = (base or self.audit_url) + path
        headers = {
            "Authorization": authorization(
                key, client, audience=audience, method=method, url=url, body=data
            )
        }
        if body is not None:
            headers["Content-Type"] = "application/json"
        async with self.http.request(method, url, data=data, headers=headers) as resp:
            text = await resp.text()
            try:
                return resp.status, json.loads(text)
            except ValueError:
                return resp.status, text


async def _set_witness(s: AsyncSession, url: str, key: PrivateKey) -> None:
    keys = Jwks.model_validate(KeySet([key.public()]).to_jwks())
    await ops.set_central_service(s, WITNESS_SERVICE, CentralServiceSet(url=url, keys=keys))


async def _regulator_agency(db: Sessions) -> None:
    async with transaction(db) as s:
        await ops.add_member(
            s,
            MemberCreate(member_class="FED", member_code="PDPA", name="Data Protection Authority"),
        )
        await ops.add_subsystem(s, SubsystemCreate(id=REGULATOR))
        await ops.add_key(
            s, KeyCreate(member=REGULATOR.member, jwk=REGULATOR_KEY.public().to_jwk())
        )
        await ops.add_global_group(s, GroupCreate(code="audit-regulators"))
        await ops.add_global_group_member(s, "audit-regulators", REGULATOR)


@pytest.fixture
async def federation(
    db: Sessions, db_url: str, serve: Any, http: aiohttp.ClientSession
) -> Federation:
    return await start_federation(db, db_url, serve, http)


async def start_federation(
    db: Sessions,
    db_url: str,
    serve: Any,
    http: aiohttp.ClientSession,
    witness: tuple[str, Sessions] | None = None,
) -> Federation:
    """The federation on ``db``; the audit server on ``witness`` (its URL and sessions) if
    given, else on ``db`` too."""
    witness_url, witness_db = witness or (db_url, db)
    await seed(db)
    await _regulator_agency(db)
    registry_url = await serve(
        registry_app(
            RegistryConfig(
                db_url=db_url, instance="PK", operator_key=OPERATOR, publish_interval=3600
            )
        )
    )
    anchor = anchor_for().model_copy(update={"url": registry_url + "/globalconf"})
    audit_conf = GlobalConfClient(anchor)
    audit_url = await serve(
        build_app(AuditServerConfig(witness_url, WITNESS_KEY, PSEUDONYMS), audit_conf)
    )
    async with transaction(db) as s:
        await _set_witness(s, audit_url, WITNESS_KEY)
    fed = Federation(
        db, registry_url, audit_url, audit_conf, GlobalConfClient(anchor), http, witness_db
    )
    await fed.publish()
    assert fed.gateway_conf.current().central_service(WITNESS_SERVICE).url == audit_url
    return fed


__all__ = ["NADRA", "Federation", "start_federation"]
