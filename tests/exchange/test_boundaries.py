"""The gateways' boundaries: what a signed envelope may say, and what the HTTP layer lets in.

A consumer member holds its own signing key, so the provider gateway cannot take its
envelope's word for anything it passes on to a backend; and the local side must answer
every malformed request with a precise r1 error, never a bare 400 or a 500.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import json
import logging
import unicodedata
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from core.errors import BadRequestError
from core.tls import client_context
from exchange import envelope as env_
from exchange.envelope import MAX_TEXT
from exchange.passthrough import HttpBackend
from exchange.provider import service_path
from exchange.r1 import check_target
from tests.exchange.harness import (
    ECHO,
    LMC,
    LMC_TAX,
    PERSON_EXAMPLE,
    PLRA_LAND,
    RECORDS,
    Federation,
)
from tests.exchange.test_refusals import ECHO_PATH, _envelope, _error, _raw, wire


async def _send(
    fed: Federation,
    path: str,
    *,
    query: str = "",
    headers: dict[str, str] | None = None,
    wire: bool = True,
) -> aiohttp.ClientResponse:
    """An envelope for ``path``, signed with LMC's own key, sent over LMC's pinned TLS; with
    ``wire`` the signed headers are sent too, else they are only in the envelope."""
    env = _envelope(fed, path=path, query=query, headers=headers or {})
    token = env_.seal(env, fed.member_keys[LMC])
    nadra = fed.nodes["nadra"]
    tls = fed.nodes["lmc"].tls
    ctx = client_context(tls.cert, tls.key, nadra.cert.public_bytes(Encoding.PEM).decode())
    target = nadra.remote_url + service_path(ECHO) + path + (f"?{query}" if query else "")
    resp = await fed.http.get(
        URL(target, encoded=True),
        headers={**((headers or {}) if wire else {}), env_.ENVELOPE_HEADER: token},
        ssl=ctx,
    )
    await resp.read()
    return resp


async def test_the_provider_holds_a_signed_path_to_the_r1_rules(
    fed: Federation, serve: Any
) -> None:
    elsewhere: list[str] = []

    async def other_host(request: web.Request) -> web.Response:
        elsewhere.append(request.path)
        return web.json_response({})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", other_host)
    port = URL(await serve(app)).port
    for path, message in (
        # Joined to the backend's URL, this would name another host as its authority.
        (f"@127.0.0.1:{port}/internal", "must start with '/'"),
        ("x", "must start with '/'"),
        ("/public/x%2F..%2Fadmin", "%2F"),
        ("/public/../admin", "'..'"),
        ("/public/%252e%252e/admin", "'..'"),
        ("/public/%E2%80%A5/admin", "'..'"),
        ("/public/./a", "'.'"),
        ("//public/a", "empty segment"),
        ("/public/a%zz", "percent"),
    ):
        status, kind, text = await _error(await _send(fed, path))
        assert (status, kind) == (400, "Client.BadRequest"), path
        assert message in text, (path, text)
    assert elsewhere == []
    assert fed.backend.seen == []
    # The rules are the r1 rules: what a consumer gateway sends still passes.
    assert (await _send(fed, "/public/a%20b/", query="q=1&r=%2F")).status == 200
    assert fed.backend.seen[-1].rel_url.raw_path == "/public/a%20b/"
    assert fed.backend.seen[-1].rel_url.raw_query_string == "q=1&r=%2F"


_PIECES = st.sampled_from(
    [
        "a",
        ".",
        "%2e",
        "%2E",
        "%25",
        "%2F",
        "%252F",
        "/",
        ";",
        " ",
        "%20",
        "~",
        "\u2025",
        "%E2%80%A5",
        "\uff0f",
        "%EF%BC%8F",
        "\uff0e",
        "%2500",
        "%2501",
        "%257F",
        "%253f",
        "%2523",
        "%EF%BC%85",  # '％', which NFKC folds to '%'
        "%EF%BC%92",  # '２'
        "%EF%BD%85",  # 'ｅ'
        "\u3000",  # ideographic space, which str.strip trims
    ]
)


def _java_trim(text: str) -> str:
    """As Java's String.trim: every character up to U+0020 off both ends."""
    return text.strip("".join(chr(c) for c in range(0x21)))


@given(st.lists(st.lists(_PIECES, max_size=6).map("".join), min_size=1, max_size=5))
def test_an_accepted_path_has_the_same_segments_to_every_backend(segments: list[str]) -> None:
    """Whatever a backend does to a path the gateways accept (decode it once or twice, fold
    Unicode look-alikes before or after, trim controls and spaces, cut at NUL, strip ';'
    parameters), it finds the same segments, no dot segment among them, and no end of the
    path ('?', '#') that the first decoding did not show."""
    path = "/" + "/".join(segments)
    try:
        check_target(path, "")
    except BadRequestError:
        return

    def nfkc(text: str) -> str:
        return unicodedata.normalize("NFKC", text)

    once = unquote(path)
    backends = (
        once,
        nfkc(once),
        unquote(once),
        nfkc(unquote(once)),
        unquote(nfkc(once)),
    )
    for text in backends:
        parts = text.split("/")
        assert len(parts) == len(path.split("/")), (path, text)
        for part in parts:
            cut = part.split("\x00", 1)[0].split(";", 1)[0]
            assert _java_trim(cut).strip() not in (".", ".."), (path, text)
        if text not in (once, nfkc(once)):
            assert not {"?", "#"} & set(text) - set(once), (path, text)


async def test_signed_headers_a_gateway_never_forwards_do_not_reach_the_backend(
    fed: Federation,
) -> None:
    for name, value in (
        ("host", "admin.internal"),
        ("x-road-client", "PK/FED/NADRA/civil-registry"),
        ("shahrah-data-subject", "PK3520212345671"),
        ("x-road-request-id", "00000000-0000-0000-0000-000000000000"),
        ("transfer-encoding", "chunked"),
        ("connection", "close"),
        ("x-http-method-override", "DELETE"),
        ("x-original-url", "/admin"),
        ("forwarded", "for=10.0.0.1"),
    ):
        status, kind, text = await _error(
            await _send(fed, "/public/a", headers={name: value}, wire=False)
        )
        assert (status, kind) == (400, "Client.BadRequest"), name
        assert f"header {name}, which no gateway forwards" in text
    assert fed.backend.seen == []
    assert (await _send(fed, "/public/a", headers={"x-custom": "v"})).status == 200
    assert fed.backend.seen[-1].headers.getall("X-Custom") == ["v"]


async def test_headers_that_would_reroute_a_request_at_the_backend_are_not_passed_on(
    fed: Federation,
) -> None:
    """The access right is checked for the envelope's method and path; a backend honouring
    a method override or a rewrite proxy's original URL must not be told another."""
    overrides = {
        "X-HTTP-Method-Override": "DELETE",
        "X-HTTP-Method": "DELETE",
        "X-Method-Override": "DELETE",
        "X-Original-URL": "/admin/users",
        "X-Original-URI": "/admin/users",
        "X-Rewrite-URL": "/admin/users",
        "Forwarded": "for=10.0.0.1;host=admin.internal",
        "X-Forwarded-For": "10.0.0.1",
        "X-Forwarded-Host": "admin.internal",
        "X-Forwarded-Proto": "http",
        "X-Forwarded-Port": "8443",
        "X-Forwarded-Prefix": "/admin",
        "X-Real-IP": "10.0.0.1",
    }
    resp = await fed.call(
        "plra", "GET", ECHO_PATH + "/public/a", client=PLRA_LAND, headers=overrides
    )
    assert resp.status == 200
    seen = fed.backend.seen[-1]
    assert (seen.method, seen.path) == ("GET", "/public/a")
    assert [name for name in overrides if name in seen.headers] == []


async def test_envelope_text_that_would_break_a_header_line_is_malformed(
    fed: Federation,
) -> None:
    # The provider hands the message id and the signed headers to its backend as headers.
    for changes in (
        {"message_id": "m-1\r\nX-Injected: 1"},
        {"message_id": "m-\u00e9"},
        {"headers": {"x-custom": "a\r\nX-Injected: 1"}},
        {"headers": {"x-custom": "a\x00b"}},
    ):
        # Signed as a careless or hostile member's software would: without the model's checks.
        forged = _envelope(fed).model_copy(update=changes)
        token = env_.seal(forged, fed.member_keys[LMC])
        status, kind, text = await _error(await _raw(fed, token, path="/x"))
        assert (status, kind) == (500, "Server.ServerProxy.InvalidSignature"), changes
        assert "envelope is malformed" in text
    assert fed.backend.seen == []


async def test_header_values_up_to_the_documented_limit_cross_both_ways(
    fed: Federation, serve: Any
) -> None:
    # The envelope describing them must fit through the provider's and the consumer's HTTP
    # parsers, whose defaults (8,190 bytes a header line) it outgrows long before that.
    async def answer(request: web.Request) -> web.Response:
        # Cut to what the test's own client reads (aiohttp's default limit).
        return web.json_response({}, headers={"X-Echo": request.headers["X-Big"][:7000]})

    app = web.Application(handler_args={"max_field_size": 4 * MAX_TEXT})
    app.router.add_route("*", "/{tail:.*}", answer)
    url = await serve(app)
    fed.nodes["nadra"].gateway.backends = {
        ECHO: HttpBackend(url, timeout=5, max_body=fed.nodes["nadra"].gateway.limits.max_body)
    }
    try:
        for size in (6000, MAX_TEXT):
            big = "b" * size
            resp = await fed.call("lmc", "GET", ECHO_PATH + "/public/a", headers={"X-Big": big})
            assert resp.status == 200, await resp.text()
            assert resp.headers["X-Echo"] == big[:7000]
        # One character more is the caller's error, said in r1's words.
        big = "b" * (MAX_TEXT + 1)
        resp = await fed.call("lmc", "GET", ECHO_PATH + "/public/a", headers={"X-Big": big})
        assert (await _error(resp))[:2] == (400, "Client.BadRequest")
        resp = await fed.call("lmc", "GET", ECHO_PATH, headers={"X-Road-Client": "PK/" * 3000})
        assert (await _error(resp))[:2] == (400, "Client.InvalidClientIdentifier")
    finally:
        await fed.nodes["nadra"].gateway.backends[ECHO].close()


async def test_end_to_end_headers_cross_up_to_their_total_bound_and_no_further(
    fed: Federation,
) -> None:
    """64 KiB of end-to-end headers in all cross (their envelope, about 86 KiB, goes through
    the provider's parser); a byte more is the caller's error, and nothing is sent."""
    wide = {f"X-Wide-{i}": "w" * (8000 - 8) for i in range(8)}
    assert env_.header_bytes(wide) <= env_.MAX_HEADER_BYTES
    resp = await fed.call("lmc", "GET", ECHO_PATH + "/public/a", headers=wide)
    assert resp.status == 200, await resp.text()
    seen = fed.backend.seen[-1].headers
    assert all(seen[name] == value for name, value in wide.items())

    wide["X-One-More"] = "w" * 2000
    resp = await fed.call("lmc", "GET", ECHO_PATH + "/public/a", headers=wide)
    status, kind, text = await _error(resp)
    assert (status, kind) == (400, "Client.BadRequest")
    assert f"total more than {env_.MAX_HEADER_BYTES} bytes" in text
    assert len(fed.backend.seen) == 1


async def _stalling() -> AsyncIterator[bytes]:
    yield b"{"
    await asyncio.sleep(30)
    yield b"}"


async def test_a_body_that_stalls_is_refused_on_both_listeners(fed: Federation) -> None:
    for node in ("lmc", "nadra"):
        gw = fed.nodes[node].gateway
        gw.limits = dataclasses.replace(gw.limits, body_timeout=0.3)
    async with asyncio.timeout(10):
        resp = await fed.call("lmc", "POST", ECHO_PATH, data=_stalling())  # type: ignore[arg-type]
        assert (await _error(resp))[:2] == (400, "Client.BadRequest")
        assert "did not arrive within 0.3 s" in (await resp.json())["message"]
        # A peer gateway that announces a body and stalls is refused the same way.
        token = env_.seal(_envelope(fed, method="POST"), fed.member_keys[LMC])
        nadra = fed.nodes["nadra"]
        tls = fed.nodes["lmc"].tls
        ctx = client_context(tls.cert, tls.key, nadra.cert.public_bytes(Encoding.PEM).decode())
        resp = await fed.http.post(
            URL(nadra.remote_url + service_path(ECHO) + "/x", encoded=True),
            headers={env_.ENVELOPE_HEADER: token},
            data=_stalling(),
            ssl=ctx,
        )
        assert (await _error(resp))[:2] == (400, "Client.BadRequest")
    assert fed.backend.seen == []


async def test_a_backend_answer_no_envelope_can_describe_is_a_service_failure(
    fed: Federation, serve: Any
) -> None:
    async def answer(request: web.Request) -> web.Response:
        if request.path == "/long":
            return web.json_response({}, headers={"X-Long": "l" * (MAX_TEXT + 1)})
        if request.path == "/wide":  # each within its limit, more than 64 KiB in all
            return web.json_response({}, headers={f"X-Wide-{i}": "w" * 8000 for i in range(9)})
        return web.json_response({}, headers={f"X-Many-{i}": "v" for i in range(110)})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    url = await serve(app)
    nadra = fed.nodes["nadra"].gateway
    nadra.backends = {ECHO: HttpBackend(url, timeout=5, max_body=nadra.limits.max_body)}
    try:
        for path in ("/long", "/wide", "/many"):
            resp = await fed.call("lmc", "GET", ECHO_PATH + path)
            status, kind, text = await _error(resp)
            assert (status, kind) == (500, "Server.ServerProxy.ServiceFailed"), text
            assert "cannot be described" in text
    finally:
        await nadra.backends[ECHO].close()


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(200)) + b"\r\n",
        b"HTTP/1.1 two hundred\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{}",  # then the connection closes
    ],
    ids=["too-many-headers", "bad-status-line", "truncated-body"],
)
async def test_a_backend_answering_malformed_http_failed_the_network_did_not(
    fed: Federation, raw: bytes
) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(raw)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    nadra = fed.nodes["nadra"].gateway
    nadra.backends = {
        ECHO: HttpBackend(f"http://127.0.0.1:{port}", timeout=5, max_body=nadra.limits.max_body)
    }
    try:
        status, kind, text = await _error(await fed.call("lmc", "GET", ECHO_PATH + "/x"))
        assert (status, kind) == (500, "Server.ServerProxy.ServiceFailed"), text
        assert "answered malformed HTTP" in text
    finally:
        await nadra.backends[ECHO].close()
        server.close()
        await server.wait_closed()


async def test_a_backend_answer_outside_its_schema_leaks_none_of_its_values(
    fed: Federation, serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # The first violation's text would quote the value: under consent, perhaps a field the
    # citizen never released; in any case a part of the record that was not checked.
    async def answer(request: web.Request) -> web.Response:
        return web.json_response(dict(PERSON_EXAMPLE, gender="secret-value"))

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    url = await serve(app)
    nadra = fed.nodes["nadra"].gateway
    nadra.backends = {RECORDS: HttpBackend(url, timeout=5, max_body=nadra.limits.max_body)}
    caplog.set_level(logging.DEBUG)
    try:
        resp = await fed.call("lmc", "GET", "/r1/PK/FED/NADRA/civil-registry/records/persons/1")
        status, kind, text = await _error(resp)
        assert (status, kind) == (500, "Server.ServerProxy.ServiceFailed")
        assert "violates pk.nadra.person v1 at /gender" in text
        assert b"secret-value" not in await resp.read()
        assert "secret-value" not in caplog.text
    finally:
        await nadra.backends[RECORDS].close()


# --- bodies, methods and targets no gateway passes on -------------------------------------------


def _no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    """A caller's fault is a refusal, logged as one: never an error with a traceback."""
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.parametrize(
    "body",
    [
        gzip.compress(b'{"a": 1}'),
        gzip.compress(gzip.compress(b'{"a": 1}')),
        b"not gzip at all",
    ],
    ids=["gzip", "gzip twice", "not gzip"],
)
async def test_a_compressed_request_body_is_refused_not_inflated(
    fed: Federation, caplog: pytest.LogCaptureFixture, body: bytes
) -> None:
    """A body is compared with its signed digest and checked against its service's schema
    as it came; inflated on the way it was a crash (not gzip), a false charge of tampering
    (inflated twice) or a 500 from the provider (inflated by each gateway)."""
    resp = await fed.call(
        "lmc", "POST", ECHO_PATH + "/public/a", headers={"Content-Encoding": "gzip"}, data=body
    )
    status, kind, message = await _error(resp)
    assert (status, kind) == (400, "Client.BadRequest")
    assert "request bodies are taken uncompressed" in message
    # A signed envelope describing one is refused by the provider the same way.
    headers = {"content-encoding": "gzip"}
    env = _envelope(
        fed,
        method="POST",
        headers=headers,
        body_sha256=env_.body_digest(body),
        body_length=len(body),
    )
    resp = await _raw(fed, env_.seal(env, fed.member_keys[LMC]), body=body, method="POST")
    assert (await _error(resp))[:2] == (400, "Client.BadRequest")
    assert fed.backend.seen == []
    _no_tracebacks(caplog)


async def test_an_unsigned_content_encoding_on_the_hop_changes_nothing(
    fed: Federation, caplog: pytest.LogCaptureFixture
) -> None:
    """Between gateways the body is the signed bytes whatever a hop header says: the
    provider does not inflate it, so it matches its digest and reaches the backend as sent."""
    body = b'{"a": 1}'
    env = _envelope(fed, method="POST", body_sha256=env_.body_digest(body), body_length=len(body))
    nadra, tls = fed.nodes["nadra"], fed.nodes["lmc"].tls
    ctx = client_context(tls.cert, tls.key, nadra.cert.public_bytes(Encoding.PEM).decode())
    resp = await fed.http.post(
        URL(nadra.remote_url + service_path(ECHO) + "/x", encoded=True),
        headers={
            env_.ENVELOPE_HEADER: env_.seal(env, fed.member_keys[LMC]),
            "Content-Encoding": "gzip",
        },
        data=body,
        ssl=ctx,
    )
    assert resp.status == 200, await resp.text()
    assert fed.backend.bodies == [body]
    _no_tracebacks(caplog)


async def test_a_body_cut_short_is_the_callers_error(
    fed: Federation, caplog: pytest.LogCaptureFixture
) -> None:
    port = URL(fed.nodes["lmc"].local_url).port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            f"POST {ECHO_PATH}/public/a HTTP/1.1\r\nHost: gw\r\nX-Road-Client: {LMC_TAX}\r\n"
            "Content-Length: 100\r\n\r\n0123456789".encode()
        )
        await writer.drain()
        writer.write_eof()  # the caller gives up after 10 of the 100 bytes it announced
        head, _, text = (await asyncio.wait_for(reader.read(), 10)).partition(b"\r\n\r\n")
    finally:
        writer.close()
    # The caller has gone, and is answered (if at all) with a refusal; the record says so.
    assert head == b"" or head.split(b" ", 2)[1] == b"400", head
    assert text == b"" or json.loads(text)["type"] == "Client.BadRequest"
    # The connection may end before the refusal is recorded: wait (up to 10 s) for the record.
    for _ in range(200):
        if events := await fed.events("lmc"):
            break
        await asyncio.sleep(0.05)
    assert [(e.outcome, e.error_type) for e in events] == [("denied", "Client.BadRequest")]
    assert fed.backend.seen == []
    _no_tracebacks(caplog)


@pytest.mark.parametrize("node", ["lmc", "nadra"])
@pytest.mark.parametrize(
    ("request_line", "status", "kind"),
    [
        (f"CONNECT {ECHO_PATH}/public/a", 400, "Client.BadRequest"),
        ("CONNECT nadra.gov.pk:443", 400, "Client.BadRequest"),
        (f"TRACE {ECHO_PATH}/public/a", 400, "Client.BadRequest"),
        ("OPTIONS *", 404, "Client.NotFound"),
    ],
)
async def test_requests_no_route_takes_are_answered_in_r1_words_on_both_listeners(
    fed: Federation, node: str, request_line: str, status: int, kind: str
) -> None:
    head, body = await wire(
        fed,
        node,
        f"{request_line} HTTP/1.1\r\nHost: gw\r\nX-Road-Client: {LMC_TAX}\r\n"
        "Connection: close\r\n\r\n",
    )
    assert head.split(b" ", 2)[1] == str(status).encode()
    assert f"\r\nX-Road-Error: {kind}".encode() in head
    assert json.loads(body)["type"] == kind
    assert fed.backend.seen == []


async def test_a_query_with_a_malformed_percent_encoding_is_refused(fed: Federation) -> None:
    """The query is passed on as sent (PR-REST 4.5), but only if it is a URI's query."""
    resp = await fed.call("lmc", "GET", ECHO_PATH + "/public/a?q=%zz")
    status, kind, message = await _error(resp)
    assert (status, kind) == (400, "Client.BadRequest")
    assert "malformed percent-encoding" in message
    with pytest.raises(BadRequestError, match="malformed percent-encoding"):
        check_target("/public/a", "q=100%")
    # Well formed, it goes as sent, encoded control characters and all.
    assert (await fed.call("lmc", "GET", ECHO_PATH + "/public/a?q=a%0Ab&r=%FF")).status == 200
    assert fed.backend.seen[-1].raw_path.endswith("?q=a%0Ab&r=%FF")


async def test_a_metaservice_named_with_a_version_is_no_metaservice(fed: Federation) -> None:
    """A metaservice has no version; with one, the envelope names a service, which must be
    registered. Before, it was answered, and its version became a metric label."""
    version = "35202-1234567-1"
    sid = ECHO.provider.service("listMethods", version)
    token = env_.seal(_envelope(fed, service=sid, path=""), fed.member_keys[LMC])
    resp = await _raw(fed, token, service=sid, path="")
    assert (await _error(resp))[:2] == (500, "Server.ServerProxy.UnknownService")
    metrics = await (await fed.http.get(fed.nodes["nadra"].local_url + "/metrics")).text()
    assert version not in metrics
