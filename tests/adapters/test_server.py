"""``shahrah adapter serve``'s HTTP face, as a gateway reaches it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from adapters.config import load_adapters
from adapters.legacy.synthetic import Person
from adapters.legacy.systems import config_path, create_nadra_database, write_district_codes
from adapters.server import build_app
from tests.adapters.test_rest import Upstream
from tests.adapters.test_rest import config as rest_config

Serve = Callable[[web.Application], Awaitable[str]]
BASE = "/PK/FED/NADRA/civil-registry/person/v1"
CLIENT = {"X-Road-Client": "PK/LG/LMC/property-tax", "X-Road-Id": "msg-42"}


@pytest.fixture
async def base(tmp_path: Path, serve: Serve, people: list[Person]) -> str:
    url = f"sqlite:///{tmp_path / 'nadra.db'}"
    create_nadra_database(url, people, seed=7)
    write_district_codes(tmp_path / "districts.csv")
    adapters = await load_adapters(
        config_path("nadra"), environ={"NADRA_DB_URL": url, "LEGACY_DIR": str(tmp_path)}
    )
    return await serve(build_app(adapters))


async def test_a_gateway_calls_the_adapter_as_a_rest_backend(
    base: str, http: aiohttp.ClientSession, people: list[Person]
) -> None:
    async with http.get(f"{base}{BASE}/persons/{people[0].dashed_cnic}", headers=CLIENT) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("application/json")
        assert (await r.json())["cnic"] == people[0].dashed_cnic
    async with http.get(f"{base}{BASE}/persons/99999-9999999-9", headers=CLIENT) as r:
        assert r.status == 404
        assert "X-Road-Error" not in r.headers  # the system's answer, not a refusal


@pytest.mark.parametrize(
    ("path", "headers", "status", "kind"),
    [
        (f"{BASE}/persons/1", {}, 400, "Client.BadRequest"),
        (
            f"{BASE}/persons/1",
            {"X-Road-Client": "not an id"},
            400,
            "Client.InvalidClientIdentifier",
        ),
        ("/PK/FED/NADRA/civil-registry/other/v1/x", CLIENT, 404, "Client.NotFound"),
        ("/nothing", CLIENT, 404, "Client.NotFound"),
    ],
)
async def test_refusals_are_x_road_errors(
    base: str,
    http: aiohttp.ClientSession,
    path: str,
    headers: dict[str, str],
    status: int,
    kind: str,
) -> None:
    async with http.get(base + path, headers=headers) as r:
        assert r.status == status
        assert r.headers["X-Road-Error"] == kind
        assert (await r.json())["type"] == kind


async def test_a_failing_backend_is_service_failed_with_a_traceable_detail(
    base: str, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    (tmp_path / "nadra.db").unlink()  # the legacy database is gone
    async with http.get(f"{base}{BASE}/persons/35202-1234567-1", headers=CLIENT) as r:
        body: Any = await r.json()
    assert r.status == 502
    assert r.headers["X-Road-Error"] == "Server.ServerProxy.ServiceFailed"
    assert body["detail"]["message_id"] == "msg-42"
    assert body["detail"]["route"] == "GET /persons/{cnic}"


async def test_metrics_and_health(
    base: str, http: aiohttp.ClientSession, people: list[Person]
) -> None:
    await (await http.get(f"{base}{BASE}/persons/{people[1].cnic}", headers=CLIENT)).read()
    async with http.get(f"{base}/metrics") as r:
        text = await r.text()
    assert (
        'shahrah_adapter_calls_total{outcome="ok",route="GET /persons/{cnic}",'
        'service="PK/FED/NADRA/civil-registry/person/v1"} 1.0'
    ) in text
    assert "shahrah_adapter_call_seconds_bucket" in text
    async with http.get(f"{base}/healthz") as r:
        assert await r.json() == {"status": "ok", "circuits": {BASE[1:]: "closed"}}


@pytest.mark.parametrize(
    ("query", "lang"),
    [("lang=%2541", "%41"), ("lang=a%26fields%3Dnone", "a&fields=none"), ("lang=100%25", "100%")],
)
async def test_the_query_string_is_decoded_once(
    tmp_path: Path, serve: Serve, http: aiohttp.ClientSession, query: str, lang: str
) -> None:
    # The server handed on aiohttp's decoded query string, which the route decoded again: a
    # client's literal "%41" reached the system as "A".
    upstream = Upstream()
    config = rest_config(tmp_path, await serve(upstream.app()))
    config.write_text(config.read_text().replace(', pattern: "en|ur"', ""))
    adapters = await load_adapters(config, environ={"API_KEY": "k"})
    base = await serve(build_app(adapters, watch=False))
    url = URL(f"{base}{BASE}/persons/3520212345671?{query}", encoded=True)
    async with http.get(url, headers=CLIENT) as r:
        assert r.status == 200
    assert upstream.queries == [{"fields": "all", "lang": lang}]
