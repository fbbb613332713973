"""Typed routes, strict JSON input, error rendering and the OpenAPI document."""

from __future__ import annotations

import enum
import json
from typing import Any, Literal

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from openapi_spec_validator import validate
from pydantic import BaseModel, Field

from core.canonical import MAX_INT_DIGITS
from core.errors import BadRequestError, ConflictError, UnauthorizedError
from core.web import (
    Api,
    bearer_token,
    error_middleware,
    parse_json,
    tokens_equal,
)


class Tone(enum.StrEnum):
    dark = "dark"
    light = "light"


class Thing(BaseModel):
    name: str = Field(min_length=1)
    count: int = Field(ge=0)


class Filter(BaseModel):
    limit: int = 10


api = Api(title="test", version="1", security_schemes={"t": {"type": "http", "scheme": "bearer"}})


async def check_token(request: web.Request) -> str:
    if not tokens_equal(bearer_token(request), "s3cret"):
        raise UnauthorizedError("bad token")
    return "tester"


@api.route("POST", "/things", summary="make", body=Thing, response=Thing, status=201, auth="t")
async def make(request: web.Request, principal: str, body: Thing) -> Thing:
    if body.name == "taken":
        raise ConflictError("name taken")
    return body


@api.route("GET", "/things", summary="list", query=Filter, response=list[Thing])
async def listing(request: web.Request, query: Filter) -> list[Thing]:
    return [Thing(name="a", count=query.limit)]


@api.route("GET", "/boom", summary="fails")
async def boom(request: web.Request) -> Any:
    raise RuntimeError("database password is hunter2")


@pytest.fixture
async def base(serve: Any) -> str:
    app = web.Application(client_max_size=8192, middlewares=[error_middleware()])
    api.register(app, {"t": check_token})
    return await serve(app)


AUTH = {"Authorization": "Bearer s3cret"}


async def test_valid_body_is_parsed_and_serialized(base: str, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{base}/things", json={"name": "x", "count": 2}, headers=AUTH) as r:
        assert r.status == 201
        assert await r.json() == {"name": "x", "count": 2}


async def test_invalid_field_is_named(base: str, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{base}/things", json={"name": "x", "count": -1}, headers=AUTH) as r:
        body = await r.json()
    assert r.status == 400
    assert body["type"] == "Client.BadRequest"
    assert "'count'" in body["message"]
    assert body["detail"] == [
        {"field": "count", "message": "Input should be greater than or equal to 0"}
    ]


@pytest.mark.parametrize(
    ("data", "ctype", "message"),
    [
        (b'{"name": "x", "name": "y", "count": 1}', "application/json", "duplicate key"),
        (b'{"name": "x", "count": NaN}', "application/json", "NaN"),
        (b'{"name": "x", "count": ', "application/json", "invalid JSON at line 1"),
        (b"\xff\xfe", "application/json", "not UTF-8"),
        (b'{"name": "x", "count": 1}', "text/plain", "expected a JSON body"),
        (b"[" * 100 + b"]" * 100, "application/json", "deeper"),
        (b'{"name": "x", "count": 1e999}', "application/json", "out of range"),
        (b'{"name": "x", "count": ' + b"7" * 5000 + b"}", "application/json", "too long"),
    ],
)
async def test_malformed_json_is_refused_precisely(
    base: str, http: aiohttp.ClientSession, data: bytes, ctype: str, message: str
) -> None:
    async with http.post(f"{base}/things", data=data, headers={**AUTH, "Content-Type": ctype}) as r:
        assert r.status == 400
        assert message in (await r.json())["message"]


async def test_oversized_body_is_413(base: str, http: aiohttp.ClientSession) -> None:
    big = {"name": "x" * 9000, "count": 1}
    async with http.post(f"{base}/things", json=big, headers=AUTH) as r:
        assert r.status == 413
        assert (await r.json())["type"] == "Client.PayloadTooLarge"


async def test_missing_or_wrong_token_is_401(base: str, http: aiohttp.ClientSession) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic s3cret"}):
        async with http.post(
            f"{base}/things", json={"name": "x", "count": 1}, headers=headers
        ) as r:
            assert r.status == 401
            assert (await r.json())["type"] == "Client.Unauthorized"


async def test_domain_errors_keep_their_status(base: str, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{base}/things", json={"name": "taken", "count": 1}, headers=AUTH) as r:
        assert r.status == 409
        assert await r.json() == {
            "type": "Client.Conflict",
            "message": "name taken",
            "detail": None,
        }


async def test_query_is_parsed(base: str, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{base}/things?limit=3") as r:
        assert await r.json() == [{"name": "a", "count": 3}]
    async with http.get(f"{base}/things?limit=many") as r:
        assert r.status == 400
        assert "query field 'limit'" in (await r.json())["message"]


async def test_unknown_route_and_method_are_json(base: str, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{base}/nothing") as r:
        assert r.status == 404
        assert (await r.json())["type"] == "Client.NotFound"
    async with http.delete(f"{base}/things") as r:
        assert r.status == 405
        assert "type" in await r.json()


async def test_unexpected_failure_hides_internals(
    base: str, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    async with http.get(f"{base}/boom") as r:
        body = await r.json()
    assert r.status == 500
    assert "hunter2" not in str(body)
    assert body["detail"]["error_id"] in caplog.text


async def test_openapi_document_is_valid_31(base: str, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{base}/openapi.json") as r:
        doc = await r.json()
    validate(doc)
    assert doc["openapi"] == "3.1.0"
    post = doc["paths"]["/things"]["post"]
    assert post["security"] == [{"t": []}]
    assert set(post["responses"]) == {"201", "400", "401"}
    assert doc["paths"]["/things"]["get"]["parameters"][0]["name"] == "limit"


def test_parse_json_is_strict() -> None:
    assert parse_json(b'{"a": [1, 2.5, "x"]}') == {"a": [1, 2.5, "x"]}
    with pytest.raises(BadRequestError, match="Infinity"):
        parse_json("[Infinity]")


@given(st.text(), st.integers(0xD800, 0xDFFF), st.booleans())
def test_a_lone_surrogate_is_refused_wherever_it_stands(text: str, code: int, as_key: bool) -> None:
    # Escaped, as a client can send it: such a string has no UTF-8 form, so nothing
    # downstream could store, sign or hash it.
    escaped = json.dumps(text)[1:-1] + f"\\u{code:04x}"
    document = f'{{"{escaped}": 1}}' if as_key else f'[1, "{escaped}"]'
    with pytest.raises(BadRequestError, match="lone UTF-16 surrogate"):
        parse_json(document.encode())
    with pytest.raises(BadRequestError, match="lone UTF-16 surrogate"):
        parse_json(f'["{chr(code)}"]')  # and raw, in a str


@given(st.floats(allow_nan=False, allow_infinity=False) | st.integers())
def test_every_finite_number_survives_a_round_trip(number: float) -> None:
    assert parse_json(json.dumps([number])) == [number]


@given(
    st.sampled_from(["", "-"]),
    st.integers(1, 9),
    st.sampled_from(["", ".5", ".0001"]),
    st.sampled_from(["e", "E", "e+"]),
    st.integers(309, 100_000),
)
def test_a_number_that_overflows_a_double_is_refused(
    sign: str, lead: int, fraction: str, e: str, exponent: int
) -> None:
    # json.loads alone would read these as infinity, which no canonical form can write.
    with pytest.raises(BadRequestError, match="out of range"):
        parse_json(f'{{"n": {sign}{lead}{fraction}{e}{exponent}}}')


def test_integers_are_bounded_in_length_not_in_value() -> None:
    longest = "9" * MAX_INT_DIGITS
    assert parse_json(f"[-{longest}]") == [-int(longest)]
    with pytest.raises(BadRequestError, match=f"{MAX_INT_DIGITS + 1} digits is too long"):
        parse_json(f"[-{longest}1]")


def test_escaped_surrogate_pairs_are_characters() -> None:
    assert parse_json(json.dumps(["\U0001f600", {"\U00010348": "a"}]).encode()) == [
        "\U0001f600",
        {"\U00010348": "a"},
    ]


class Colour(BaseModel):
    shade: Literal["red", "green"] | None = None
    tone: Tone = Tone.dark


async def test_enum_query_parameters_give_a_valid_document() -> None:
    local = Api(title="t", version="1")

    @local.route("GET", "/paint", summary="paint", query=Colour)
    async def paint(request: web.Request, query: Colour) -> dict[str, str]:
        return {}

    doc = local.document()
    validate(doc)
    params = {p["name"]: p["schema"] for p in doc["paths"]["/paint"]["get"]["parameters"]}
    assert "$ref" not in str(params)
    assert params["tone"]["enum"] == ["dark", "light"]
