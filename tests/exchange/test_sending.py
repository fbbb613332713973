"""A request goes out once, and one slow provider cannot take every connection."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web

from core.db import transaction
from exchange import server
from exchange.passthrough import HttpBackend
from exchange.peers import PeerPool
from registry import service as ops
from registry.payloads import AccessRightCreate, ServiceCreate
from tests.exchange.harness import ECHO, LMC_TAX, PLRA_LAND, Federation

ECHO_PATH = f"/r1/{ECHO.to_path()}"
PARCELS = PLRA_LAND.service("parcels")


@pytest.mark.parametrize("method", ["DELETE", "PUT", "GET", "POST"])
async def test_a_backend_that_drops_the_connection_after_acting_is_not_sent_it_again(
    fed: Federation, serve: Any, method: str
) -> None:
    acted: list[str] = []

    async def act_then_drop(request: web.Request) -> web.StreamResponse:
        await request.read()
        acted.append(request.method)
        assert request.transport is not None
        request.transport.close()
        return web.Response()

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", act_then_drop)
    nadra = fed.nodes["nadra"].gateway
    backend = HttpBackend(await serve(app), timeout=5, max_body=2**20)
    nadra.backends = {**nadra.backends, ECHO: backend}
    try:
        resp = await fed.call("lmc", method, ECHO_PATH + "/account/1")
    finally:
        await backend.close()
    assert resp.headers["X-Road-Error"] == "Server.ServerProxy.NetworkError"
    assert acted == [method]


async def test_a_provider_answer_lost_on_the_way_is_not_asked_for_again(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The provider delivered; asking again would only get the envelope refused as a replay
    and hide what happened: the caller learns the exchange broke off."""
    real = server.provide
    provided = []

    async def answer_lost(gw: Any, request: web.Request) -> web.StreamResponse:
        response = await real(gw, request)
        provided.append(request.method)
        assert request.transport is not None
        request.transport.close()
        return response

    monkeypatch.setattr(server, "provide", answer_lost)
    resp = await fed.call("lmc", "DELETE", ECHO_PATH + "/account/7")
    assert resp.headers["X-Road-Error"] == "Server.ClientProxy.NetworkError"
    assert provided == ["DELETE"]
    assert len(fed.backend.seen) == 1


async def test_one_slow_provider_cannot_hold_every_connection(fed: Federation, serve: Any) -> None:
    async def parcels(request: web.Request) -> web.StreamResponse:
        return web.json_response({"parcel": request.path})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", parcels)
    async with transaction(fed.registry_db) as s:
        await ops.add_service(s, ServiceCreate(id=PARCELS, title="Parcels"))
        await ops.grant(s, AccessRightCreate(service=PARCELS, client=LMC_TAX))
    await fed.refresh()
    plra = fed.nodes["plra"].gateway
    land = HttpBackend(await serve(app), timeout=5, max_body=2**20)
    plra.backends = {PARCELS: land}
    lmc = fed.nodes["lmc"]
    await lmc.gateway.peers.close()
    lmc.gateway.peers = PeerPool(lmc.tls, connect_timeout=5, limit=4, per_peer=2)
    fed.backend.delay = 1.5  # NADRA answers slowly; it may hold two connections, not four
    slow = [asyncio.create_task(fed.call("lmc", "GET", ECHO_PATH + f"/slow/{n}")) for n in range(4)]
    try:
        while len(fed.backend.seen) < 2:  # noqa: ASYNC110 (the harness backend only records)
            await asyncio.sleep(0.05)
        resp = await fed.call("lmc", "GET", f"/r1/{PARCELS.to_path()}/p/1")
        assert resp.status == 200
        assert not any(task.done() for task in slow)  # answered while NADRA held its share
        assert all(r.status == 200 for r in await asyncio.gather(*slow))
    finally:
        for task in slow:
            task.cancel()
        await land.close()
