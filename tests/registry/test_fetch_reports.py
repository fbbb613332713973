"""Gateways' signed configuration fetches over real HTTP: verified ones are recorded with the
serial served, and every fetch, signed well, badly or not at all, is still served."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from core.db import Sessions, transaction
from core.ids import ClientId
from core.keys import PrivateKey
from registry import fetch_reports, publisher
from registry import service as ops
from registry.globalconf_client import FetchIdentity, GlobalConfClient
from registry.payloads import KeyCreate, PurposeCreate
from registry.server import RegistryConfig, build_app
from tests.registry.federation import NADRA, NADRA_KEY, OPERATOR
from tests.registry.test_globalconf import anchor_for

NADRA_CLIENT = ClientId(NADRA.instance, NADRA.member_class, NADRA.member_code)


@pytest.fixture
async def registry(seeded: Sessions, db_url: str, serve: Any) -> str:
    app = build_app(
        RegistryConfig(db_url=db_url, instance="PK", operator_key=OPERATOR, publish_interval=3600)
    )
    return await serve(app)


def client(base: str, identity: FetchIdentity | None) -> GlobalConfClient:
    anchor = anchor_for().model_copy(update={"url": f"{base}/globalconf"})
    return GlobalConfClient(anchor, identity=identity)


async def test_a_signed_fetch_is_recorded_with_the_serial_served(
    registry: str, seeded: Sessions, http: aiohttp.ClientSession
) -> None:
    conf = client(registry, FetchIdentity(NADRA_KEY, NADRA_CLIENT, "gw1"))
    assert await conf.refresh(http)
    assert conf.view is not None
    [report] = await fetch_reports.reports(seeded)
    assert (report.member, report.gateway, report.serial) == ("PK/FED/NADRA", "gw1", 1)
    first_seen = report.fetched_at

    # A change publishes serial 2; the next fetch reports it, replacing the row.
    async with transaction(seeded) as s:
        await ops.add_purpose(s, PurposeCreate(code="audit", name="Audit"))
    await publisher.publish(seeded, OPERATOR)
    assert await conf.refresh(http)
    [report] = await fetch_reports.reports(seeded)
    assert report.serial == 2
    assert report.fetched_at >= first_seen

    # An unchanged configuration (304) still counts as a fetch.
    assert not await conf.refresh(http)
    [again] = await fetch_reports.reports(seeded)
    assert again.serial == 2
    assert again.fetched_at >= report.fetched_at


async def test_a_member_without_a_gateway_code_is_recorded_as_the_member(
    registry: str, seeded: Sessions, http: aiohttp.ClientSession
) -> None:
    assert await client(registry, FetchIdentity(NADRA_KEY, NADRA_CLIENT)).refresh(http)
    [report] = await fetch_reports.reports(seeded)
    assert (report.member, report.gateway) == ("PK/FED/NADRA", "")


@pytest.mark.parametrize(
    "identity",
    [
        None,  # anonymous, as before gateways signed
        FetchIdentity(PrivateKey.generate(), NADRA_CLIENT, "gw1"),  # a key NADRA never registered
        FetchIdentity(NADRA_KEY, NADRA_CLIENT, "gw9"),  # not one of NADRA's gateways
        FetchIdentity(NADRA_KEY, ClientId("PK", "LG", "LMC"), None),  # NADRA's key, LMC's name
    ],
    ids=["anonymous", "unregistered-key", "unknown-gateway", "other-member"],
)
async def test_unverified_fetches_are_served_but_not_recorded(
    registry: str, seeded: Sessions, http: aiohttp.ClientSession, identity: FetchIdentity | None
) -> None:
    conf = client(registry, identity)
    assert await conf.refresh(http)
    assert conf.view is not None
    assert conf.view.serial == 1
    assert await fetch_reports.reports(seeded) == []


async def test_a_replayed_assertion_is_not_recorded_twice(
    registry: str, seeded: Sessions, http: aiohttp.ClientSession
) -> None:
    conf = client(registry, FetchIdentity(NADRA_KEY, NADRA_CLIENT, "gw1"))
    headers: dict[str, str] = {}
    target = conf._target(headers)
    async with http.get(target, headers=headers) as r:
        assert r.status == 200
    [first] = await fetch_reports.reports(seeded)
    async with http.get(target, headers=headers) as r:
        assert r.status == 200  # the configuration is public; only the report is refused
    assert await fetch_reports.reports(seeded) == [first]


async def test_a_gateway_that_moved_to_a_new_key_is_still_recorded(
    registry: str, seeded: Sessions, http: aiohttp.ClientSession
) -> None:
    """After a key rotation (exchange.rotation) the fetches are signed with the new key, so
    the registry goes on recording them once the old one is revoked."""
    conf = client(registry, FetchIdentity(NADRA_KEY, NADRA_CLIENT, "gw1"))
    assert await conf.refresh(http)
    new = PrivateKey.generate()
    async with transaction(seeded) as s:
        await ops.add_key(s, KeyCreate(member=NADRA, jwk=new.public().to_jwk()))
        await ops.revoke_key(s, NADRA_KEY.kid)
    await publisher.publish(seeded, OPERATOR)
    conf.use_key(new)
    assert await conf.refresh(http)
    [report] = await fetch_reports.reports(seeded)
    assert (report.gateway, report.serial) == ("gw1", 2)
