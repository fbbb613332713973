"""REST adapters, and the resilience every kind shares: retries, deadlines, breaker, metrics."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import generate_latest

from adapters.base import BackendRequest
from adapters.config import Adapters, load_adapters
from adapters.errors import BackendFailure
from core.ids import ClientId, ServiceId
from tests.adapters.conftest import PERSON_SCHEMA, write

PERSON = ServiceId.parse("PK/FED/NADRA/civil-registry/person/v1")
CLIENT = ClientId.parse("PK/LG/LMC/property-tax")
Serve = Callable[[web.Application], Awaitable[str]]

CITIZEN = {
    "data": {
        "nic": "3520212345671",
        "fullName": "  muhammad bilal  ",
        "sex": "M",
        "birth": "12-04-1990",
        "father": "tariq qureshi",
        "location": {"street": "12 Shadman", "dist": "Lahore", "prov": "Punjab"},
    }
}


class Upstream:
    """A modern-but-different citizen API, scripted per test: statuses to answer, delays."""

    def __init__(self) -> None:
        self.script: list[int] = []  # statuses to answer first, then 200
        self.delay = 0.0
        self.hits = 0
        self.queries: list[dict[str, str]] = []
        self.piece = 0  # when set, answers go out in pieces of this many bytes, apart in time
        self.drop = False  # when set, the connection drops after the request is taken in

    def app(self) -> web.Application:
        async def citizen(request: web.Request) -> web.StreamResponse:
            self.hits += 1
            self.queries.append(dict(request.query))
            if self.drop and request.transport is not None:
                request.transport.close()
                return web.Response()
            await asyncio.sleep(self.delay)
            status = self.script.pop(0) if self.script else 200
            if status != 200:
                return web.json_response({"error": "unavailable"}, status=status)
            if request.match_info["nic"] != "3520212345671":
                return web.json_response({"error": "no such citizen"}, status=404)
            if self.piece:
                return await self._in_pieces(request, json.dumps(CITIZEN).encode())
            return web.json_response(CITIZEN)

        app = web.Application()
        app.router.add_route("*", "/api/v2/citizens/{nic}", citizen)
        return app

    async def _in_pieces(self, request: web.Request, body: bytes) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for start in range(0, len(body), self.piece):
            await response.write(body[start : start + self.piece])
            await asyncio.sleep(0.005)  # so the adapter sees several reads, not one
        await response.write_eof()
        return response


# The same mapping serves both routes (a flow mapping, so it fits one line of the file).
MAPPING = (
    "{/cnic: {from: /data/nic, transforms: [cnic], required: true},"
    " /name/en: {from: /data/fullName, transforms: [collapse, title], required: true},"
    " /gender: {from: /data/sex, transforms: [{map: {M: male, F: female}}], required: true},"
    " /date_of_birth: {from: /data/birth, transforms: [{date: DD-MM-YYYY}], required: true},"
    " /guardian/relation: {value: father},"
    " /guardian/name/en: {from: /data/father, transforms: [title], required: true},"
    " /permanent_address/line1: {from: /data/location/street, required: true},"
    " /permanent_address/district: {from: /data/location/dist, required: true},"
    " /permanent_address/province: {from: /data/location/prov, required: true}}"
)


def config(tmp_path: Path, url: str, resilience: str = "{retries: 2, backoff: 0.01}") -> Path:
    return write(
        tmp_path / "rest.yaml",
        f"""
        adapter: 1
        services:
          PK/FED/NADRA/civil-registry/person/v1:
            kind: rest
            url: "{url}/api/v2"
            headers: {{X-Api-Key: "${{API_KEY}}"}}
            response_schema: {PERSON_SCHEMA}
            resilience: {resilience}
            routes:
              GET /persons/{{cnic}}:
                params:
                  cnic: {{transforms: [cnic_digits]}}
                  lang: {{required: false, default: en, pattern: "en|ur"}}
                path: /citizens/{{cnic}}
                query: {{fields: all, lang: "{{lang}}"}}
                mapping: {MAPPING}
              POST /persons/{{cnic}}/refresh:
                path: /citizens/{{cnic}}
                method: POST
                mapping: {MAPPING}
        """,
    )


def call(path: str, method: str = "GET", query: str = "") -> BackendRequest:
    return BackendRequest(
        service=PERSON, client=CLIENT, message_id="m-1", method=method, path=path, query=query
    )


@pytest.fixture
def upstream() -> Upstream:
    return Upstream()


@pytest.fixture
async def start(upstream: Upstream, serve: Serve, tmp_path: Path) -> Any:
    """``await start(resilience)``: the adapters in front of the upstream, closed afterwards."""
    base = await serve(upstream.app())
    opened: list[Adapters] = []

    async def go(resilience: str = "{retries: 2, backoff: 0.01}") -> Adapters:
        loaded = await load_adapters(config(tmp_path, base, resilience), environ={"API_KEY": "k"})
        opened.append(loaded)
        return loaded

    yield go
    for loaded in opened:
        await loaded.close()


@pytest.fixture
async def adapters(start: Any) -> Adapters:
    loaded: Adapters = await start()
    return loaded


def metric(adapters: Adapters, text: str) -> float:
    for line in generate_latest(adapters.registry).decode().splitlines():
        if line.startswith(text + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_another_shape_is_mapped_to_the_service_json(
    adapters: Adapters, upstream: Upstream
) -> None:
    answer = await adapters.backends[PERSON].call(call("/persons/35202-1234567-1", query="lang=ur"))
    assert answer.status == 200
    assert json.loads(answer.body) == {
        "cnic": "35202-1234567-1",
        "name": {"en": "Muhammad Bilal"},
        "gender": "male",
        "date_of_birth": "1990-04-12",
        "guardian": {"relation": "father", "name": {"en": "Tariq Qureshi"}},
        "permanent_address": {"line1": "12 Shadman", "district": "Lahore", "province": "Punjab"},
    }
    assert upstream.queries == [{"fields": "all", "lang": "ur"}]
    assert (await adapters.backends[PERSON].call(call("/persons/35202-7654321-2"))).status == 404
    bad = await adapters.backends[PERSON].call(call("/persons/35202-1234567-1", query="lang=fr"))
    assert bad.status == 400
    assert (await adapters.backends[PERSON].call(call("/people"))).status == 404
    assert (
        await adapters.backends[PERSON].call(call("/persons/35202-1234567-1", "DELETE"))
    ).status == 405


async def test_an_answer_arriving_in_pieces_is_read_whole(
    adapters: Adapters, upstream: Upstream
) -> None:
    upstream.piece = 16
    answer = await adapters.backends[PERSON].call(call("/persons/35202-1234567-1"))
    assert answer.status == 200
    assert json.loads(answer.body)["permanent_address"]["province"] == "Punjab"


async def test_a_passing_failure_is_retried_for_reads(
    adapters: Adapters, upstream: Upstream
) -> None:
    upstream.script = [503, 502]
    answer = await adapters.backends[PERSON].call(call("/persons/3520212345671"))
    assert answer.status == 200
    assert upstream.hits == 3
    assert metric(adapters, f'shahrah_adapter_retries_total{{service="{PERSON}"}}') == 2


async def test_a_lasting_failure_is_not_retried(adapters: Adapters, upstream: Upstream) -> None:
    upstream.script = [500]
    with pytest.raises(BackendFailure) as e:
        await adapters.backends[PERSON].call(call("/persons/3520212345671"))
    assert upstream.hits == 1
    assert e.value.message == "the upstream API answered HTTP 500"
    assert e.value.detail["status"] == 500
    assert e.value.detail["attempts"] == 1


async def test_writes_are_never_retried(adapters: Adapters, upstream: Upstream) -> None:
    upstream.script = [503]
    with pytest.raises(BackendFailure):
        await adapters.backends[PERSON].call(call("/persons/3520212345671/refresh", "POST"))
    assert upstream.hits == 1


async def test_the_http_client_repeats_nothing_the_policy_does_not(
    start: Any, upstream: Upstream
) -> None:
    """aiohttp would send a GET again on its own when the connection drops before the
    answer; only the resilience policy decides what is tried again."""
    adapters = await start("{retries: 0}")
    upstream.drop = True
    with pytest.raises(BackendFailure):
        await adapters.backends[PERSON].call(call("/persons/3520212345671"))
    assert upstream.hits == 1


async def test_the_deadline_bounds_every_attempt_and_the_whole_call(
    start: Any, upstream: Upstream
) -> None:
    adapters = await start("{timeout: 0.6, attempt_timeout: 0.2, retries: 5, backoff: 0.01}")
    upstream.delay = 1.0
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(BackendFailure, match=r"did not answer within 0\.2 s"):
        await adapters.backends[PERSON].call(call("/persons/3520212345671"))
    assert loop.time() - started < 0.9
    assert 2 <= upstream.hits <= 3


async def test_the_breaker_opens_then_lets_one_trial_through(
    start: Any, upstream: Upstream
) -> None:
    adapters = await start("{retries: 0, breaker_failures: 2, breaker_reset: 0.3}")
    backend = adapters.backends[PERSON]
    state = f'shahrah_adapter_circuit_state{{service="{PERSON}"}}'
    upstream.script = [503, 503]
    for _ in range(2):
        with pytest.raises(BackendFailure, match="HTTP 503"):
            await backend.call(call("/persons/3520212345671"))
    assert metric(adapters, state) == 2
    with pytest.raises(BackendFailure, match="circuit breaker is open") as e:
        await backend.call(call("/persons/3520212345671"))
    assert e.value.detail["circuit"] == "open"
    assert upstream.hits == 2  # refused without calling the backend
    await asyncio.sleep(0.35)
    assert (await backend.call(call("/persons/3520212345671"))).status == 200
    assert metric(adapters, state) == 0
    assert metric(adapters, f'shahrah_adapter_circuit_opened_total{{service="{PERSON}"}}') == 1
    route = 'route="GET /persons/{cnic}"'
    assert (
        metric(
            adapters,
            f'shahrah_adapter_calls_total{{outcome="rejected",{route},service="{PERSON}"}}',
        )
        == 1
    )
    assert (
        metric(
            adapters, f'shahrah_adapter_calls_total{{outcome="failed",{route},service="{PERSON}"}}'
        )
        == 2
    )


async def test_an_unreachable_upstream_is_a_retryable_failure(tmp_path: Path) -> None:
    loaded = await load_adapters(
        config(tmp_path, "http://127.0.0.1:9", "{retries: 1, backoff: 0.01}"),
        environ={"API_KEY": "k"},
    )
    try:
        with pytest.raises(BackendFailure, match="cannot reach the upstream API") as e:
            await loaded.backends[PERSON].call(call("/persons/3520212345671"))
        assert e.value.detail["attempts"] == 2
    finally:
        await loaded.close()


async def test_answers_that_break_the_schema_are_refused(
    adapters: Adapters, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(CITIZEN["data"], "sex", "Q")
    with pytest.raises(BackendFailure, match="cannot map field /gender") as e:
        await adapters.backends[PERSON].call(call("/persons/3520212345671"))
    assert e.value.detail["record"] == "the answer to GET /persons/{cnic}"
    assert (
        metric(
            adapters,
            "shahrah_adapter_mapping_errors_total"
            f'{{route="GET /persons/{{cnic}}",service="{PERSON}"}}',
        )
        == 1
    )


class Refuse:
    """A plugged-in validator, as a gateway passes its compiled ones."""

    def problem(self, document: Any) -> tuple[str, str]:
        return "/gender", "fails 'enum' (schema /properties/gender/enum)"


async def test_a_plugged_in_validator_checks_every_answer(
    upstream: Upstream, serve: Serve, tmp_path: Path
) -> None:
    base = await serve(upstream.app())
    schemas: list[Any] = []

    def factory(schema: Any) -> Refuse:
        schemas.append(schema)
        return Refuse()

    loaded = await load_adapters(
        config(tmp_path, base), environ={"API_KEY": "k"}, validator=factory
    )
    try:
        with pytest.raises(BackendFailure, match="the service's schema refuses it") as e:
            await loaded.backends[PERSON].call(call("/persons/3520212345671"))
    finally:
        await loaded.close()
    assert e.value.detail["field"] == "/gender"
    assert schemas[0]["title"] == "Person (CNIC identity)"
    assert "pk.common.json" in schemas[0]["$defs"]  # bundled with what it references


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def behind(serve: Serve, tmp_path: Path, handler: Handler) -> Adapters:
    """Adapters for GET /persons/{ref} in front of ``handler``, which answers every path."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    base = await serve(app)
    path = write(
        tmp_path / "refs.yaml",
        f"""
        adapter: 1
        services:
          PK/FED/NADRA/civil-registry/person/v1:
            kind: rest
            url: "{base}/api/v2"
            response_schema: {PERSON_SCHEMA}
            routes:
              GET /persons/{{ref}}:
                path: /citizens/{{ref}}
                mapping: {MAPPING}
        """,
    )
    return await load_adapters(path)


@pytest.mark.parametrize("value", ["..", "%2E%2E", "."])
async def test_a_parameter_cannot_climb_out_of_the_upstream_path(
    value: str, serve: Serve, tmp_path: Path
) -> None:
    # aiohttp removes "." and ".." segments from a URL before sending it, so a record
    # reference of ".." would ask the upstream for /api/v2/ instead of one citizen.
    paths: list[str] = []

    async def anything(request: web.Request) -> web.Response:
        paths.append(request.raw_path)
        return web.json_response(CITIZEN)

    loaded = await behind(serve, tmp_path, anything)
    try:
        answer = await loaded.backends[PERSON].call(call(f"/persons/{value}"))
        assert answer.status == 400, paths
        assert json.loads(answer.body)["detail"] == {"parameter": "ref"}
        assert paths == []
        assert (
            metric(
                loaded,
                "shahrah_adapter_calls_total"
                f'{{outcome="bad_request",route="GET /persons/{{ref}}",service="{PERSON}"}}',
            )
            == 1
        )
    finally:
        await loaded.close()


async def test_an_answer_with_a_number_python_cannot_read_is_a_failure(
    serve: Serve, tmp_path: Path
) -> None:
    # json.loads raises a bare ValueError for an integer of more than 4,300 digits: it
    # escaped as an unexpected error (a 500 from serve) instead of a backend failure.
    async def huge(request: web.Request) -> web.Response:
        body = json.dumps(CITIZEN)[:-1] + ', "extra": ' + "9" * 5000 + "}"
        return web.Response(text=body, content_type="application/json")

    loaded = await behind(serve, tmp_path, huge)
    try:
        with pytest.raises(BackendFailure, match="the upstream answer is not valid JSON") as e:
            await loaded.backends[PERSON].call(call("/persons/3520212345671"))
        assert e.value.detail["backend"] == "rest"
    finally:
        await loaded.close()
