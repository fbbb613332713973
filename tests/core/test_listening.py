"""Requests that never reach an application: what aiohttp's HTTP parser refuses, and a failure
that escapes every middleware, answered in Shahrah's error shape and logged without their bytes."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from core.web import listening

CNIC = "3520212345671"


async def _exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``raw`` bytes, read the answer until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    return int(status_line.split()[1]), headers, body


def _request(line: str, *headers: str, body: bytes = b"") -> bytes:
    return "\r\n".join([line, "Host: gw", *headers, "", ""]).encode("utf-8") + body


MALFORMED = {
    "non-ASCII in the path": (
        f"GET /r1/PK/FED/NADRA/civil-registry/person/v1/{CNIC}\u00e9 HTTP/1.1",
        (),
        "malformed HTTP request",
    ),
    "a header name with a space": (
        "GET /r1/x HTTP/1.1",
        (f"X Road-UserId: PK{CNIC}",),
        "malformed HTTP request",
    ),
    "too many headers": (
        "GET /r1/x HTTP/1.1",
        tuple(f"X-Extra-{i}: {CNIC}" for i in range(200)),
        "malformed HTTP request",
    ),
    "an over-long header": (
        "GET /r1/x HTTP/1.1",
        (f"X-Road-UserId: PK{CNIC}" + "9" * 20_000,),
        "too long",
    ),
    "an over-long request line": (
        f"GET /r1/{CNIC}{'a' * 20_000} HTTP/1.1",
        (),
        "too long",
    ),
    "a Content-Length that is not a number": (
        "POST /r1/x HTTP/1.1",
        (f"Content-Length: {CNIC}x",),
        "malformed HTTP request",
    ),
    "an unknown method": (f"BR\u00c9W /r1/{CNIC} HTTP/1.1", (), "malformed HTTP request"),
}


@pytest.fixture
async def app_port() -> AsyncIterator[tuple[int, list[str]]]:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.path)
        if request.path == "/boom":
            raise RuntimeError(f"a bug with {CNIC} in its message")
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    async with listening(app, "127.0.0.1", 0, error_header="X-Road-Error") as port:
        yield port, seen


@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_a_malformed_request_gets_an_error_in_shahrahs_shape(
    app_port: tuple[int, list[str]], case: str, caplog: pytest.LogCaptureFixture
) -> None:
    port, seen = app_port
    line, headers, message = MALFORMED[case]
    with caplog.at_level(logging.DEBUG):
        status, response_headers, body = await _exchange(port, _request(line, *headers))
    assert status == 400
    assert response_headers["content-type"].startswith("application/json")
    assert response_headers["x-road-error"] == "Client.BadRequest"
    error = json.loads(body)
    assert error["type"] == "Client.BadRequest"
    assert message in error["message"]
    assert CNIC not in body.decode()  # the refusal quotes nothing the client sent
    assert CNIC not in caplog.text  # nor does the log
    assert seen == []  # and the application never saw it


async def test_the_listener_still_serves_well_formed_requests(
    app_port: tuple[int, list[str]],
) -> None:
    port, seen = app_port
    status, _, body = await _exchange(port, _request("GET /fine HTTP/1.1", "Connection: close"))
    assert (status, json.loads(body)) == (200, {"ok": True})
    assert seen == ["/fine"]


async def test_a_failure_escaping_the_application_is_an_opaque_internal_error(
    app_port: tuple[int, list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    port, _ = app_port
    with caplog.at_level(logging.ERROR):
        status, headers, body = await _exchange(port, _request("GET /boom HTTP/1.1"))
    assert status == 500
    assert headers["x-road-error"] == "Server.InternalError"
    error = json.loads(body)
    assert error == {"type": headers["x-road-error"], "message": "internal error", "detail": None}
    assert "RuntimeError" in caplog.text  # the operator gets the traceback; the client does not


async def test_without_an_error_header_the_body_still_names_the_type() -> None:
    app = web.Application()
    async with listening(app, "127.0.0.1", 0) as port:
        status, headers, body = await _exchange(port, _request("GET /\u00e9 HTTP/1.1"))
    assert status == 400
    assert "x-road-error" not in headers
    assert json.loads(body)["type"] == "Client.BadRequest"
