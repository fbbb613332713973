"""The gateway's configuration client against real HTTP servers: it keeps the last good
configuration, refuses bad ones, and fails closed once what it holds has expired."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from core import jws
from core.canonical import b64url_decode
from core.db import Sessions, transaction
from core.errors import OutdatedGlobalConfError
from registry import publisher
from registry import service as ops
from registry.globalconf import GLOBALCONF_TYP
from registry.globalconf_client import GlobalConfClient
from tests.registry.federation import LMC_TAX, OPERATOR
from tests.registry.test_globalconf import T0, anchor_for


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


class Server:
    """Serves whatever document a test puts up, with an ETag, like the registry does."""

    def __init__(self) -> None:
        self.body = ""
        self.status = 200
        self.requests = 0
        self.piece = 0  # when set, the body goes out in pieces of this many bytes, apart in time

    def app(self) -> web.Application:
        async def handler(request: web.Request) -> web.StreamResponse:
            self.requests += 1
            etag = f'"{hash(self.body)}"'
            if request.headers.get("If-None-Match") == etag:
                return web.Response(status=304, headers={"ETag": etag})
            if self.piece:
                return await self._in_pieces(request, etag)
            return web.Response(
                text=self.body,
                status=self.status,
                headers={"ETag": etag},
                content_type="application/jose",
            )

        app = web.Application()
        app.router.add_get("/globalconf", handler)
        return app

    async def _in_pieces(self, request: web.Request, etag: str) -> web.StreamResponse:
        response = web.StreamResponse(headers={"ETag": etag, "Content-Type": "application/jose"})
        await response.prepare(request)
        data = self.body.encode()
        for start in range(0, len(data), self.piece):
            await response.write(data[start : start + self.piece])
            await asyncio.sleep(0.005)  # so the client sees several reads, not one
        await response.write_eof()
        return response


@pytest.fixture
async def served(serve: Any) -> tuple[Server, str]:
    server = Server()
    base = await serve(server.app())
    return server, f"{base}/globalconf"


def client_for(url: str, clock: Clock, cache: Path | None = None) -> GlobalConfClient:
    anchor = anchor_for().model_copy(update={"url": url})
    return GlobalConfClient(anchor, clock=clock, cache_file=cache)


def _resign(signed: str, **changes: Any) -> str:
    doc = json.loads(b64url_decode(signed.split(".")[1]))
    doc.update(changes)
    return jws.sign_json(doc, OPERATOR, typ=GLOBALCONF_TYP)


async def _serve_serial_2(seeded: Sessions, server: Server) -> None:
    """Change the registry and serve the configuration that publishes it (serial 2)."""
    async with transaction(seeded) as s:
        await ops.add_global_group_member(s, "local-governments", LMC_TAX)
    server.body = (
        await publisher.publish(seeded, OPERATOR, now=T0 + dt.timedelta(seconds=10))
    ).signed


async def test_fetch_verify_and_conditional_refresh(
    seeded: Sessions, served: tuple[Server, str], http: aiohttp.ClientSession
) -> None:
    server, url = served
    server.body = (await publisher.publish(seeded, OPERATOR, now=T0)).signed
    clock = Clock(T0 + dt.timedelta(seconds=5))
    client = client_for(url, clock)
    with pytest.raises(OutdatedGlobalConfError, match="no verified"):
        client.current()
    assert await client.refresh(http) is True
    assert client.current().serial == 1
    assert client.age() == 5
    assert await client.refresh(http) is False  # 304: nothing new
    await _serve_serial_2(seeded, server)
    assert await client.refresh(http) is True
    assert client.current().serial == 2


async def test_a_configuration_arriving_in_pieces_is_read_whole(
    seeded: Sessions, served: tuple[Server, str], http: aiohttp.ClientSession
) -> None:
    server, url = served
    server.body = (await publisher.publish(seeded, OPERATOR, now=T0)).signed
    server.piece = 256
    assert len(server.body) > 4 * server.piece
    client = client_for(url, Clock(T0 + dt.timedelta(seconds=5)))
    assert await client.refresh(http) is True
    assert client.current().serial == 1


async def test_bad_documents_are_refused_and_the_last_good_one_kept(
    seeded: Sessions, served: tuple[Server, str], http: aiohttp.ClientSession
) -> None:
    server, url = served
    good = (await publisher.publish(seeded, OPERATOR, now=T0)).signed
    newer = _resign(good, serial=5)
    server.body = newer
    client = client_for(url, Clock(T0))
    await client.refresh(http)
    for bad, reason in [
        (newer[:-4] + ("AAAA" if not newer.endswith("AAAA") else "BBBB"), "signature"),
        (good, "rollback"),
        (_resign(good, serial=5, refresh_interval=1), "two different"),
        ("not a jws", "signature"),
    ]:
        server.body = bad
        assert await client.refresh(http) is False
        assert reason in (client.last_error or "")
        assert client.current().serial == 5
    server.status = 500
    server.body = "oops"
    assert await client.refresh(http) is False
    assert "HTTP 500" in (client.last_error or "")


async def test_an_expired_configuration_fails_closed(
    seeded: Sessions, served: tuple[Server, str], http: aiohttp.ClientSession
) -> None:
    server, url = served
    server.body = (await publisher.publish(seeded, OPERATOR, now=T0)).signed
    clock = Clock(T0)
    client = client_for(url, clock)
    await client.refresh(http)
    clock.now = T0 + dt.timedelta(seconds=599)
    assert client.current().serial == 1
    clock.now = T0 + dt.timedelta(seconds=600)
    with pytest.raises(OutdatedGlobalConfError, match="expired"):
        client.current()
    # The registry is unreachable: still closed, and the reason is reported.
    client.anchor = client.anchor.model_copy(update={"url": "http://127.0.0.1:1/globalconf"})
    assert await client.refresh(http) is False
    with pytest.raises(OutdatedGlobalConfError, match="cannot fetch"):
        client.current()


async def test_the_last_good_configuration_survives_a_restart(
    seeded: Sessions, served: tuple[Server, str], http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    server, url = served
    server.body = (await publisher.publish(seeded, OPERATOR, now=T0)).signed
    cache = tmp_path / "globalconf.jws"
    first = client_for(url, Clock(T0), cache)
    await first.refresh(http)
    assert client_for(url, Clock(T0), cache).current().serial == 1
    cache.write_text(cache.read_text()[:-3] + "abc")
    with pytest.raises(OutdatedGlobalConfError):
        client_for(url, Clock(T0), cache).current()


async def test_an_expired_cache_still_forbids_rolling_back_after_a_restart(
    seeded: Sessions, served: tuple[Server, str], http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    server, url = served
    good = (await publisher.publish(seeded, OPERATOR, now=T0)).signed
    server.body = _resign(good, serial=5)
    cache = tmp_path / "globalconf.jws"
    assert await client_for(url, Clock(T0), cache).refresh(http) is True
    # Restarted after the cached serial 5 expired: nothing to act on, but 5 is the floor.
    later = T0 + dt.timedelta(minutes=30)
    fresh = {
        "issued_at": later.isoformat(),
        "expires_at": (later + dt.timedelta(minutes=10)).isoformat(),
    }
    restarted = client_for(url, Clock(later), cache)
    with pytest.raises(OutdatedGlobalConfError):
        restarted.current()
    server.body = _resign(good, serial=3, **fresh)
    assert await restarted.refresh(http) is False
    assert "rollback" in (restarted.last_error or "")
    server.body = _resign(good, serial=6, **fresh)
    assert await restarted.refresh(http) is True
    assert restarted.current().serial == 6


async def test_a_cache_that_cannot_be_written_does_not_stop_the_client(
    seeded: Sessions,
    served: tuple[Server, str],
    http: aiohttp.ClientSession,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, url = served
    server.body = (await publisher.publish(seeded, OPERATOR, now=T0)).signed
    blocked = tmp_path / "a-file"
    blocked.write_text("in the way")
    client = client_for(url, Clock(T0 + dt.timedelta(seconds=5)), blocked / "globalconf.jws")
    assert await client.refresh(http) is True  # held and used, only not cached
    assert client.current().serial == 1
    assert "cannot cache the global configuration" in caplog.text
    await _serve_serial_2(seeded, server)
    assert await client.refresh(http) is True
    assert client.current().serial == 2


async def test_an_unexpected_failure_is_reported_not_raised(
    served: tuple[Server, str], http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refresh loops call refresh() bare: an error escaping it would end them for good."""
    server, url = served
    server.body = "irrelevant"
    client = client_for(url, Clock(T0))

    def broken(signed: str) -> bool:
        raise RuntimeError("a bug")

    monkeypatch.setattr(client, "accept", broken)
    assert await client.refresh(http) is False
    assert client.last_error == "refreshing failed: RuntimeError"


def test_fetches_are_retried_sooner_after_failures() -> None:
    client = client_for("http://127.0.0.1:1/globalconf", Clock(T0))
    assert client.next_wait(0) == 60.0
    assert [client.next_wait(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert client.next_wait(30) == 60.0


async def test_an_unreachable_registry_is_reported_in_words(http: aiohttp.ClientSession) -> None:
    """The reason lands in the log and in /healthz: an operator reads it, not a Python repr."""
    client = client_for("http://127.0.0.1:1/globalconf", Clock(T0))
    assert await client.refresh(http) is False
    error = client.last_error or ""
    assert error.startswith("cannot fetch http://127.0.0.1:1/globalconf: Cannot connect")
    assert "ConnectionKey(" not in error
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        client = client_for(f"http://127.0.0.1:{silent.getsockname()[1]}/globalconf", Clock(T0))
        client.timeout = 0.2
        assert await client.refresh(http) is False
    assert (client.last_error or "").endswith(": no answer within 0.2 s")
