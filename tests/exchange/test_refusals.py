"""Every refusal in the pipeline: precise r1 error, nothing reaches the backend, recorded."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from yarl import URL

from adapters.base import BackendRequest, BackendResponse
from core import jws
from core.canonical import b64url
from core.db import transaction, utcnow
from core.ids import ClientId, ServiceId
from core.keys import PrivateKey
from core.tls import client_context, make_certificate, server_context
from core.web import listening
from exchange import envelope as env_
from exchange.context import Limits
from exchange.envelope import RequestEnvelope
from exchange.provider import service_path
from exchange.r1 import MAX_HEADERS
from exchange.replay import ReplayGuard
from registry import service as ops
from registry.globalconf import GatewayInfo, GlobalConfView
from registry.payloads import GatewayUpdate, MemberUpdate
from tests.exchange.harness import (
    ECHO,
    LMC,
    LMC_TAX,
    PERSON_EXAMPLE,
    PLRA,
    PLRA_LAND,
    FailingAudit,
    Federation,
    build,
    close,
    provider_signs_error_type,
    sqlite_copy,
)

ECHO_PATH = "/r1/PK/FED/NADRA/civil-registry/echo"
PERSON_PATH = "/r1/PK/FED/NADRA/civil-registry/person/v1"


async def _error(resp: aiohttp.ClientResponse) -> tuple[int, str, str]:
    body = await resp.json()
    assert resp.headers["X-Road-Error"] == body["type"]
    assert set(body) == {"type", "message", "detail"}
    return resp.status, body["type"], body["message"]


# --- the local side ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "headers", "status", "kind", "message"),
    [
        (
            ECHO_PATH,
            {"X-Road-Client": ""},
            400,
            "Client.InvalidClientIdentifier",
            "INSTANCE/CLASS/MEMBER",
        ),
        ("/r2/PK/FED/NADRA/civil-registry/echo", {}, 400, "Client.BadRequest", "/r1/"),
        ("/r1/PK/FED/NADRA/civil-registry", {}, 400, "Client.InvalidServiceIdentifier", "SERVICE"),
        (
            "/r1/PK/FED/NA%20DRA/civil-registry/echo",
            {},
            400,
            "Client.InvalidServiceIdentifier",
            "does not allow",
        ),
        (ECHO_PATH + "/a/../../etc", {}, 400, "Client.BadRequest", "'..'"),
        # What a backend that strips ';' parameters reads as '..', the access check as a name.
        (ECHO_PATH + "/public/..;/admin", {}, 400, "Client.BadRequest", "'..'"),
        (ECHO_PATH + "/public/%2E%2E;x=1/admin", {}, 400, "Client.BadRequest", "'..'"),
        (ECHO_PATH + "/public/.;/admin", {}, 400, "Client.BadRequest", "'..'"),
        # What backends that decode twice, fold Unicode look-alikes or trim read as '..'.
        (ECHO_PATH + "/public/%252e%252e/admin", {}, 400, "Client.BadRequest", "'..'"),
        (ECHO_PATH + "/public/%E2%80%A5/admin", {}, 400, "Client.BadRequest", "'..'"),
        (ECHO_PATH + "/public/..%20/admin", {}, 400, "Client.BadRequest", "'..'"),
        (ECHO_PATH + "/public/x%252F..%252Fadmin", {}, 400, "Client.BadRequest", "%2F"),
        (ECHO_PATH + "/public/x%EF%BC%8Fadmin", {}, 400, "Client.BadRequest", "%2F"),
        (ECHO_PATH + "/a//b", {}, 400, "Client.BadRequest", "empty segment"),
        (ECHO_PATH + "/a%2", {}, 400, "Client.BadRequest", "percent"),
        # One segment to the access-right check, three to a backend that decodes first.
        (ECHO_PATH + "/public/x%2F..%2F..%2Fadmin", {}, 400, "Client.BadRequest", "%2F"),
        (ECHO_PATH + "?q=" + "a" * 5000, {}, 400, "Client.BadRequest", "longer than 4096"),
        (
            ECHO_PATH,
            {"X-Road-Client": "PK/FED/%FF/x"},
            400,
            "Client.InvalidClientIdentifier",
            "percent-encoded UTF-8",
        ),
        (ECHO_PATH, {"Shahrah-Data-Subject": "35202-1234567-1"}, 400, "Client.BadRequest", "'PK'"),
        (ECHO_PATH, {"Shahrah-Purpose": "Not A Code"}, 400, "Client.BadRequest", "Shahrah-Purpose"),
        (ECHO_PATH, {"X-Road-Id": "msg\u00e9"}, 400, "Client.BadRequest", "X-Road-Id"),
        (ECHO_PATH, {"X-Road-Id": "m" * 256}, 400, "Client.BadRequest", "X-Road-Id"),
        (
            ECHO_PATH,
            {"X-Road-Client": "PK/PROV/PLRA/land-records"},
            400,
            "Client.InvalidClientIdentifier",
            "not a client of gateway",
        ),
        (
            "/r1/PK/FED/NADRA/civil-registry/nothing",
            {},
            500,
            "Server.ServerProxy.UnknownService",
            "not registered",
        ),
        (
            PERSON_PATH.replace("/v1", "/v9") + "/persons/1",
            {},
            500,
            "Server.ServerProxy.UnknownService",
            "not registered",
        ),
    ],
)
async def test_malformed_local_requests_are_refused_before_leaving(
    fed: Federation, path: str, headers: dict[str, str], status: int, kind: str, message: str
) -> None:
    all_headers = {"X-Road-Client": str(LMC_TAX), **headers}
    resp = await fed.http.get(
        URL(fed.nodes["lmc"].local_url + path, encoded=True), headers=all_headers
    )
    got = await _error(resp)
    assert got[:2] == (status, kind)
    assert message in got[2]
    assert await fed.events("nadra") == []  # it never left the consumer gateway
    recorded = await fed.events("lmc")
    # A request that names a client and a service is an exchange refused, and is recorded;
    # one too malformed to name them is only logged.
    if (
        "X-Road-Client" not in headers
        and not path.startswith("/r2")
        and "InvalidService" not in kind
        and kind != "Client.BadRequest"
    ):
        assert recorded[-1].outcome == "denied"
        assert recorded[-1].error_type == kind
    assert fed.backend.seen == []


@pytest.mark.parametrize("subject", ["35202-1234567-1", "3520212345671", "PK 3520212345671"])
async def test_a_subject_in_another_form_is_refused_without_being_logged(
    fed: Federation, subject: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A local system writing the citizen's number as people do gets a precise refusal, and
    the number appears in no log line and no answer."""
    caplog.set_level(logging.DEBUG)
    resp = await fed.call("lmc", "GET", ECHO_PATH + "/x", headers={"Shahrah-Data-Subject": subject})
    status, kind, message = await _error(resp)
    assert (status, kind) == (400, "Client.BadRequest")
    assert "'PK' followed by the 13 CNIC digits" in message
    assert "1234567" not in await resp.text()
    assert [r.getMessage() for r in caplog.records if "1234567" in r.getMessage()] == []


@pytest.mark.parametrize(
    ("path", "client", "kind"),
    [
        # A member-level service's URL read as INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE: the
        # record's number lands where the service code goes.
        ("/r1/PK/FED/NADRA/persons/3520212345671", str(LMC_TAX), "UnknownService"),
        (ECHO_PATH, "PK/LG/LMC/3520212345671", "Client.InvalidClientIdentifier"),
        (ECHO_PATH, "PK/LG/LMC/3520212345671 x", "Client.InvalidClientIdentifier"),
    ],
)
async def test_a_refusal_quoting_the_request_is_logged_without_it(
    fed: Federation, path: str, client: str, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The caller is told what was wrong, in its own words; the log keeps the type and the
    error id, never what a request put anywhere."""
    caplog.set_level(logging.DEBUG)
    resp = await fed.http.get(
        URL(fed.nodes["lmc"].local_url + path, encoded=True), headers={"X-Road-Client": client}
    )
    _status, got, message = await _error(resp)
    assert kind in got
    assert "3520212345671" in message
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert got in logged
    assert "1234567" not in logged


@pytest.mark.parametrize(
    ("server", "status", "kind", "message"),
    [
        # LMC's own gateway exists but does not serve NADRA's subsystem.
        ("PK/LG/LMC/gw1", 500, "Server.ClientProxy.InvalidSecurityServer", "does not serve"),
        ("PK/FED/NADRA/gw9", 500, "Server.ClientProxy.InvalidSecurityServer", "no active gateway"),
        ("PK/FED/NADRA", 400, "Client.BadRequest", "INSTANCE/CLASS/MEMBER/GATEWAYCODE"),
    ],
)
async def test_a_security_server_the_provider_cannot_be_reached_at_is_refused(
    fed: Federation, server: str, status: int, kind: str, message: str
) -> None:
    """PR-REST 4.3: X-Road-Security-Server sends the request to that server only; one that
    does not serve the provider is refused rather than quietly ignored."""
    resp = await fed.call(
        "lmc", "GET", ECHO_PATH + "/public/a", headers={"X-Road-Security-Server": server}
    )
    got = await _error(resp)
    assert got[:2] == (status, kind)
    assert message in got[2]
    assert fed.backend.seen == []
    assert await fed.events("nadra") == []


@pytest.mark.parametrize(
    ("method", "headers", "message"),
    [
        ("PROPFIND", {}, "method PROPFIND is not supported"),
        # A backend would echo the request, headers and all, to whoever made a browser ask.
        ("TRACE", {}, "method TRACE is not supported"),
        # A body is checked as sent (its digest, its schema), never inflated first.
        ("POST", {"Content-Encoding": "gzip"}, "request bodies are taken uncompressed"),
        (
            "GET",
            {f"X-Extra-{i}": "v" for i in range(MAX_HEADERS + 1)},
            f"more than {MAX_HEADERS} end-to-end headers",
        ),
        ("GET", {"X-" + "n" * 130: "v"}, "longer than 128 characters"),
    ],
)
async def test_requests_an_envelope_cannot_describe_are_the_callers_error(
    fed: Federation, method: str, headers: dict[str, str], message: str
) -> None:
    resp = await fed.call("lmc", method, ECHO_PATH + "/public/a", client=LMC_TAX, headers=headers)
    status, kind, text = await _error(resp)
    assert (status, kind) == (400, "Client.BadRequest")
    assert message in text
    assert fed.backend.seen == []
    assert await fed.events("nadra") == []


async def wire(fed: Federation, node: str, request: str) -> tuple[bytes, bytes]:
    """Send ``request`` as written to LMC's local listener (``node`` "lmc") or, over LMC's
    pinned mutual TLS, to NADRA's remote one ("nadra"); the answer's head and body."""
    if node == "lmc":
        url, ssl_context = fed.nodes["lmc"].local_url, None
    else:
        tls, nadra = fed.nodes["lmc"].tls, fed.nodes["nadra"]
        url = nadra.remote_url
        ssl_context = client_context(
            tls.cert, tls.key, nadra.cert.public_bytes(Encoding.PEM).decode()
        )
    reader, writer = await asyncio.open_connection("127.0.0.1", URL(url).port, ssl=ssl_context)
    try:
        writer.write(request.encode())
        head, _, body = (await asyncio.wait_for(reader.read(), 10)).partition(b"\r\n\r\n")
    finally:
        writer.close()
    return head, body


@pytest.mark.parametrize("node", ["lmc", "nadra"])
async def test_what_the_http_parser_refuses_is_an_r1_error_on_both_listeners(
    fed: Federation, node: str
) -> None:
    """Below the r1 parser too: a non-ASCII path, to the local listener and (over mutual TLS)
    to the remote one, is refused as X-Road refuses, and reaches nothing."""
    request = f"GET {ECHO_PATH}/public/\u00e9 HTTP/1.1\r\nHost: gw\r\n\r\n"
    head, body = await wire(fed, node, request)
    assert head.split(b" ", 2)[1] == b"400"
    assert b"\r\nX-Road-Error: Client.BadRequest" in head
    assert json.loads(body)["type"] == "Client.BadRequest"
    assert fed.backend.seen == []
    assert await fed.events("nadra") == []


async def test_missing_access_right_and_endpoint_rights(fed: Federation) -> None:
    resp = await fed.call("plra", "GET", ECHO_PATH + "/private/1", client=PLRA_LAND)
    status, kind, message = await _error(resp)
    assert (status, kind) == (500, "Server.ServerProxy.AccessDenied")
    assert "no access right to GET on this path" in message
    assert "/private/1" not in message  # logged too, and a path can hold a CNIC
    assert fed.backend.seen == []
    assert (await fed.events("nadra"))[-1].error_type == "Server.ServerProxy.AccessDenied"
    assert (
        await fed.call("plra", "GET", ECHO_PATH + "/public/a/b", client=PLRA_LAND)
    ).status == 200
    denied = await fed.call("plra", "POST", ECHO_PATH + "/public/a", client=PLRA_LAND)
    assert (await _error(denied))[1] == "Server.ServerProxy.AccessDenied"


async def test_suspended_client_member_is_refused(fed: Federation) -> None:
    async with transaction(fed.registry_db) as s:
        await ops.update_member(s, LMC, MemberUpdate(status="suspended"))
    await fed.refresh()
    resp = await fed.call("lmc", "GET", ECHO_PATH)
    assert "suspended" in (await _error(resp))[2]
    assert fed.backend.seen == []


async def test_expired_configuration_fails_closed_on_both_sides(fed: Federation) -> None:
    fed.nodes["lmc"].clock.offset = dt.timedelta(minutes=11)
    resp = await fed.call("lmc", "GET", ECHO_PATH)
    assert (await _error(resp))[:2] == (500, "Server.ClientProxy.OutdatedGlobalConf")
    ready = await fed.http.get(fed.nodes["lmc"].local_url + "/readyz")
    assert ready.status == 503
    fed.nodes["lmc"].clock.offset = dt.timedelta(0)
    fed.nodes["nadra"].clock.offset = dt.timedelta(minutes=11)
    resp = await fed.call("lmc", "GET", ECHO_PATH)
    assert (await _error(resp))[1] == "Server.ServerProxy.OutdatedGlobalConf"
    assert fed.backend.seen == []


async def test_a_revoked_key_stops_at_the_next_configuration(fed: Federation) -> None:
    assert (await fed.call("lmc", "GET", ECHO_PATH)).status == 200
    async with transaction(fed.registry_db) as s:
        await ops.revoke_key(s, fed.member_keys[LMC].kid)
    await fed.refresh()
    resp = await fed.call("lmc", "GET", ECHO_PATH)
    _status, kind, message = await _error(resp)
    assert kind == "Server.ServerProxy.InvalidSignature"
    assert "revoked" in message
    assert len(fed.backend.seen) == 1


async def test_an_answer_dated_outside_the_window_is_refused(fed: Federation) -> None:
    # The provider checks the request with its own window; only the consumer's is narrowed,
    # so every answer now lies outside it.
    lmc = fed.nodes["lmc"].gateway
    lmc.limits = dataclasses.replace(lmc.limits, freshness=1e-9)
    resp = await fed.call("lmc", "GET", ECHO_PATH + "/public/a")
    status, kind, message = await _error(resp)
    assert (status, kind) == (500, "Server.ClientProxy.InvalidSignature")
    assert "outside the 1e-09 s freshness window" in message
    assert len(fed.backend.seen) == 1  # it was answered, and the answer was not believed


async def test_only_a_real_refusal_may_be_dated_outside_the_window(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A provider (or a key of it rotated out) signing a delivered answer with an error
    header does not make it a refusal: the exemption from freshness is for refusals only."""
    lmc = fed.nodes["lmc"].gateway
    lmc.limits = dataclasses.replace(lmc.limits, freshness=1e-9)
    provider_signs_error_type(monkeypatch, "Server.ServerProxy.AccessDenied")
    resp = await fed.call("lmc", "GET", ECHO_PATH + "/public/a")
    status, kind, message = await _error(resp)
    assert (status, kind) == (500, "Server.ClientProxy.InvalidSignature")
    assert "freshness window" in message
    monkeypatch.undo()
    # A real refusal still passes, whatever its time.
    denied = await fed.call("lmc", "GET", PERSON_PATH + "/persons/35202-1234567-1")
    assert (await _error(denied))[1] == "Server.ServerProxy.ConsentDenied"


@pytest.mark.parametrize(
    "kind",
    [
        "Server.ServerProxy." + "x" * 70,  # a part longer than any X-Road type's
        "Server" + ("." + "A" * 64) * 4,  # each part well formed, 266 characters in all
    ],
)
async def test_a_refusal_type_that_is_no_x_road_error_type_is_refused(
    fed: Federation, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """The provider's signed error type reaches the local system, the audit record (255
    characters at most) and the metrics: it must at least have the shape of one."""
    provider_signs_error_type(monkeypatch, kind)
    resp = await fed.call("lmc", "GET", ECHO_PATH + "/public/a")
    status, got, message = await _error(resp)
    assert (status, got) == (500, "Server.ClientProxy.InvalidSignature")
    assert "names something other than an X-Road error type" in message
    assert kind[-10:] not in message
    assert (await fed.events("lmc"))[-1].error_type == "Server.ClientProxy.InvalidSignature"


async def test_a_provider_answer_signed_by_the_wrong_key_is_refused(fed: Federation) -> None:
    fed.nodes["nadra"].gateway.key = PrivateKey.generate()
    resp = await fed.call("lmc", "GET", ECHO_PATH)
    _status, kind, message = await _error(resp)
    assert kind == "Server.ClientProxy.InvalidSignature"
    assert "not a registered key of PK/FED/NADRA" in message
    assert (await fed.events("lmc"))[-1].outcome == "denied"


async def test_nothing_is_released_when_the_audit_log_cannot_record(fed: Federation) -> None:
    fed.nodes["nadra"].gateway.audit = FailingAudit()
    resp = await fed.call("lmc", "GET", ECHO_PATH + "/secret")
    _status, kind, _ = await _error(resp)
    assert kind == "Server.ServerProxy.AuditLogUnavailable"
    metrics = await (await fed.http.get(fed.nodes["lmc"].local_url + "/metrics")).text()
    assert 'outcome="Server.ServerProxy.AuditLogUnavailable",role="consumer"' in metrics
    assert b"secret" not in await resp.read()
    fed.nodes["nadra"].gateway.audit = fed.nodes["nadra"].audit
    fed.nodes["lmc"].gateway.audit = FailingAudit()
    resp = await fed.call("lmc", "GET", ECHO_PATH + "/secret")
    assert resp.status == 500
    assert b"/secret" not in await resp.read()


# --- forged traffic straight at the provider's mutual-TLS listener --------------------------


def _envelope(fed: Federation, **changes: Any) -> RequestEnvelope:
    fields: dict[str, Any] = {
        "message_id": "m-1",
        "request_id": str(uuid.uuid4()),
        "client": LMC_TAX,
        "service": ECHO,
        "sender": fed.nodes["lmc"].gateway.id,
        "recipient": fed.nodes["nadra"].gateway.id,
        "method": "GET",
        "path": "/x",
        "query": "",
        "headers": {},
        "body_sha256": env_.body_digest(b""),
        "body_length": 0,
        "time": utcnow(),
        "nonce": env_.new_nonce(),
    }
    fields.update(changes)
    return RequestEnvelope(**fields)


async def _raw(
    fed: Federation,
    token: str,
    *,
    body: bytes = b"",
    tls_node: str = "lmc",
    path: str = "/x",
    method: str = "GET",
    service: ServiceId = ECHO,
) -> aiohttp.ClientResponse:
    nadra = fed.nodes["nadra"]
    tls = fed.nodes[tls_node].tls
    ctx = client_context(tls.cert, tls.key, nadra.cert.public_bytes(Encoding.PEM).decode())
    url = URL(nadra.remote_url + service_path(service) + path, encoded=True)
    resp = await fed.http.request(
        method, url, headers={env_.ENVELOPE_HEADER: token}, data=body or None, ssl=ctx
    )
    await resp.read()
    return resp


async def test_a_well_formed_raw_request_is_accepted(fed: Federation) -> None:
    token = env_.seal(_envelope(fed), fed.member_keys[LMC])
    assert (await _raw(fed, token)).status == 200


async def test_an_envelope_with_a_repeated_field_is_refused(fed: Federation) -> None:
    """Signed by the member itself, so no forgery; but a reader keeping the first of a
    repeated key would read another message id and path than this one, keeping the last."""
    text = json.dumps(_envelope(fed).model_dump(mode="json", exclude_none=True))
    repeated = text.replace("{", '{"message_id": "other", "path": "/other", ', 1)
    token = jws.sign(repeated.encode(), fed.member_keys[LMC], typ=env_.REQUEST_TYP)
    status, kind, message = await _error(await _raw(fed, token))
    assert (status, kind) == (500, "Server.ServerProxy.InvalidSignature")
    assert "envelope is not strict JSON" in message
    assert fed.backend.seen == []


async def test_a_suspended_provider_gateway_serves_no_one(fed: Federation) -> None:
    async with transaction(fed.registry_db) as s:
        await ops.update_gateway(
            s, fed.nodes["nadra"].gateway.id, GatewayUpdate(status="suspended")
        )
    await fed.refresh()
    # LMC's gateway no longer sends there, and NADRA's answers no peer that still would.
    assert (await fed.call("lmc", "GET", ECHO_PATH + "/x")).status == 500
    status, kind, message = await _error(
        await _raw(fed, env_.seal(_envelope(fed), fed.member_keys[LMC]))
    )
    assert (status, kind) == (500, "Server.ServerProxy.InternalError")
    assert "not an active gateway" in message
    assert fed.backend.seen == []


async def test_a_service_named_only_in_an_envelope_names_no_metric_series(
    fed: Federation,
) -> None:
    """A member may sign any service code; only registered services become label values
    (a label is unbounded otherwise, and could hold a CNIC)."""
    code = "35202-1234567-1"
    token = env_.seal(_envelope(fed, service=ECHO.provider.service(code)), fed.member_keys[LMC])
    resp = await _raw(fed, token, service=ECHO.provider.service(code))
    assert (await _error(resp))[1] == "Server.ServerProxy.UnknownService"
    metrics = await (await fed.http.get(fed.nodes["nadra"].local_url + "/metrics")).text()
    assert 'service="unknown"' in metrics
    assert code not in metrics


async def test_a_malformed_envelope_is_refused_without_its_text_reaching_the_log(
    fed: Federation, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    head = b64url(json.dumps({"alg": "ES256", "typ": env_.REQUEST_TYP, "kid": "x"}).encode())
    doc = _envelope(fed).model_dump(mode="json")
    doc["client"] = "PK/GOV/NADRA/35202-1234567-1/x"
    resp = await _raw(fed, f"{head}.{b64url(json.dumps(doc).encode())}.AAAA")
    _status, kind, _message = await _error(resp)
    assert kind == "Server.ServerProxy.InvalidSignature"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert kind in logged
    assert "1234567" not in logged


async def test_an_unverified_envelope_cannot_write_lines_into_the_log(
    fed: Federation, caplog: pytest.LogCaptureFixture
) -> None:
    """The envelope is read before its signature is checked; what it names in a malformed
    place must not reach the log as written (a line break there forges a log line)."""
    caplog.set_level(logging.DEBUG)
    head = b64url(json.dumps({"alg": "ES256", "typ": env_.REQUEST_TYP, "kid": "x"}).encode())
    doc = _envelope(fed).model_dump(mode="json")
    doc["headers"] = {"a\nFORGED 35202-1234567-1": "v"}
    resp = await _raw(fed, f"{head}.{b64url(json.dumps(doc).encode())}.AAAA")
    status, kind, message = await _error(resp)
    assert (status, kind) == (500, "Server.ServerProxy.InvalidSignature")
    assert "envelope is malformed: headers.<key>" in message
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "FORGED" not in logged
    assert "1234567" not in logged


@pytest.mark.parametrize(
    ("changes", "kind", "message"),
    [
        (
            {"sender": "PK/PROV/PLRA/gw1"},
            "Server.ServerProxy.SslAuthenticationFailed",
            "TLS peer is PK/LG/LMC/gw1",
        ),
        (
            # Signed with PLRA's own key, but sent through LMC's gateway.
            {"client": PLRA_LAND, "_key": PLRA},
            "Server.ServerProxy.SslAuthenticationFailed",
            "not a client of the sending",
        ),
        ({"recipient": "PK/PROV/PLRA/gw1"}, "Server.ServerProxy.AccessDenied", "addressed to"),
        (
            {"time": dt.timedelta(minutes=-10)},  # from the moment the test runs
            "Server.ServerProxy.StaleMessage",
            "freshness",
        ),
        (
            {"time": dt.timedelta(minutes=10)},
            "Server.ServerProxy.StaleMessage",
            "freshness",
        ),
        ({"path": "/y"}, "Server.ServerProxy.InvalidSignature", "request line"),
        (
            {"body_sha256": env_.body_digest(b"other")},
            "Server.ServerProxy.InvalidSignature",
            "body",
        ),
        ({"headers": {"x-road-userid": "PK1"}}, "Server.ServerProxy.InvalidSignature", "headers"),
    ],
)
async def test_envelopes_that_do_not_hold_are_refused(
    fed: Federation, changes: dict[str, Any], kind: str, message: str
) -> None:
    changes = dict(changes)  # parametrized values are shared between the backends' runs
    if isinstance(changes.get("time"), dt.timedelta):
        # Taken now, not when the module was collected: a slow suite would otherwise bring a
        # "ten minutes ahead" envelope back inside the freshness window.
        changes["time"] = utcnow() + changes["time"]
    key = fed.member_keys[changes.pop("_key", LMC)]
    token = env_.seal(_envelope(fed, **changes), key)
    resp = await _raw(fed, token)
    _status, got, text = await _error(resp)
    assert got == kind
    assert message in text
    assert fed.backend.seen == []


async def test_forged_and_tampered_signatures_are_refused(fed: Federation) -> None:
    forged = env_.seal(_envelope(fed), PrivateKey.generate())
    assert "not a registered key" in (await _error(await _raw(fed, forged)))[2]
    good = env_.seal(_envelope(fed), fed.member_keys[LMC])
    head, payload, sig = good.split(".")
    flipped = sig[:-2] + ("AA" if sig[-2:] != "AA" else "BA")
    assert (await _error(await _raw(fed, f"{head}.{payload}.{flipped}")))[
        1
    ] == "Server.ServerProxy.InvalidSignature"
    assert (await _error(await _raw(fed, "")))[2].startswith("the request carries no")
    # Not even ASCII: still a signed refusal, and recorded.
    odd = await _raw(fed, "a.\u00e9.b")
    assert odd.headers[env_.ENVELOPE_HEADER]
    assert (await _error(odd))[1:] == (
        "Server.ServerProxy.InvalidSignature",
        "the Shahrah-Envelope header is not ASCII",
    )
    assert (await fed.events("nadra"))[-1].error_type == "Server.ServerProxy.InvalidSignature"
    assert fed.backend.seen == []


async def test_a_replayed_request_is_refused_even_after_a_restart(fed: Federation) -> None:
    token = env_.seal(_envelope(fed), fed.member_keys[LMC])
    assert (await _raw(fed, token)).status == 200
    again = await _error(await _raw(fed, token))
    assert again[1] == "Server.ServerProxy.ReplayedMessage"
    nadra = fed.nodes["nadra"].gateway
    await nadra.replay.close()
    nadra.replay = ReplayGuard(nadra.replay.sessions, window=nadra.replay.window)
    assert (await _error(await _raw(fed, token)))[1] == "Server.ServerProxy.ReplayedMessage"
    assert len(fed.backend.seen) == 1


async def test_an_unregistered_certificate_fails_the_handshake(
    fed: Federation, tmp_path: Path
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = make_certificate(
        "rogue", key, issuer=fed.ca
    )  # same CA as everyone: the CA is not trusted
    (tmp_path / "rogue.crt").write_bytes(cert.public_bytes(Encoding.PEM))
    (tmp_path / "rogue.key").write_bytes(
        key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    )
    nadra = fed.nodes["nadra"]
    ctx = client_context(
        str(tmp_path / "rogue.crt"),
        str(tmp_path / "rogue.key"),
        nadra.cert.public_bytes(Encoding.PEM).decode(),
    )
    token = env_.seal(_envelope(fed), fed.member_keys[LMC])
    with pytest.raises(aiohttp.ClientError):
        await fed.http.get(
            nadra.remote_url + service_path(ECHO) + "/x",
            headers={env_.ENVELOPE_HEADER: token},
            ssl=ctx,
        )
    # And a consumer that expects another certificate never sends its request.
    wrong = client_context(
        fed.nodes["lmc"].tls.cert,
        fed.nodes["lmc"].tls.key,
        cert.public_bytes(Encoding.PEM).decode(),
    )
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await fed.http.get(nadra.remote_url + service_path(ECHO) + "/x", ssl=wrong)
    assert fed.backend.seen == []


# --- limits and backend failures -----------------------------------------------------------


@pytest.fixture
async def tight(
    db_url: str,
    tmp_path: Path,
    serve: Any,
    http: aiohttp.ClientSession,
    request: pytest.FixtureRequest,
) -> Any:
    per_gateway = (
        sqlite_copy(request.getfixturevalue("sqlite_template"), tmp_path)
        if db_url.startswith("sqlite")
        else None
    )
    federation = await build(
        db_url,
        tmp_path,
        serve,
        http,
        gateway_db=per_gateway,
        limits=Limits(max_body=64 * 1024, backend_timeout=0.3),
    )
    yield federation
    await close(federation)


async def test_body_limit_and_backend_timeouts(tight: Federation) -> None:
    resp = await tight.call("lmc", "POST", ECHO_PATH, data=b"x" * (64 * 1024 + 1))
    assert (resp.status, resp.headers["X-Road-Error"]) == (400, "Client.PayloadTooLarge")
    assert tight.backend.seen == []
    assert (await tight.call("lmc", "POST", ECHO_PATH, data=b"x" * 1000)).status == 200
    tight.backend.delay = 1.0
    resp = await tight.call("lmc", "GET", ECHO_PATH + "/slow")
    _status, kind, message = await _error(resp)
    assert kind == "Server.ServerProxy.NetworkError"
    assert f"the backend of {ECHO} did not answer within 0.3 s" in message
    assert "127.0.0.1" not in message  # the backend's URL is the provider's business


async def test_an_answer_over_the_consumers_limit_is_named_for_what_it_is(
    fed: Federation,
) -> None:
    """Not InvalidSignature: the answer may be intact, it is only more than this gateway
    takes in."""
    lmc = fed.nodes["lmc"].gateway
    lmc.limits = dataclasses.replace(lmc.limits, max_body=4096)
    assert (await fed.call("lmc", "GET", ECHO_PATH + "/sized/4096")).status == 200
    resp = await fed.call("lmc", "GET", ECHO_PATH + "/sized/4097")
    status, kind, message = await _error(resp)
    assert (status, kind) == (500, "Server.ClientProxy.ResponseTooLarge")
    assert "limit of 4096 bytes" in message
    # Refused after it was sent: both records name the same request, as the provider's
    # says it delivered.
    consumer, provider_side = (await fed.events("lmc"))[-1], (await fed.events("nadra"))[-1]
    assert provider_side.outcome == "delivered"
    assert consumer.request_id is not None
    assert consumer.request_id == provider_side.request_id


async def test_a_provider_gateway_at_an_address_that_is_not_https_is_never_sent_anything(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = GlobalConfView.gateways_for

    def in_the_clear(view: GlobalConfView, client: ClientId) -> list[GatewayInfo]:
        return [
            g.model_copy(update={"address": g.address.replace("https://", "http://")})
            for g in real(view, client)
        ]

    monkeypatch.setattr(GlobalConfView, "gateways_for", in_the_clear)
    resp = await fed.call("lmc", "GET", ECHO_PATH + "/public/a")
    status, kind, message = await _error(resp)
    assert (status, kind) == (500, "Server.ClientProxy.NetworkError")
    assert "not https://" in message
    assert fed.backend.seen == []
    assert await fed.events("nadra") == []


async def test_an_in_process_adapter_is_held_to_the_backend_timeout(tight: Federation) -> None:
    """Adapters bring their own timeouts (up to 300 s); the gateway's bound holds over them."""

    class Stalled:
        async def call(self, request: BackendRequest) -> BackendResponse:
            await asyncio.sleep(5)
            return BackendResponse(200, {}, b"{}")

        async def close(self) -> None:
            pass

    tight.nodes["nadra"].gateway.backends[ECHO] = Stalled()
    started = time.monotonic()
    _status, kind, message = await _error(await tight.call("lmc", "GET", ECHO_PATH + "/x"))
    assert time.monotonic() - started < 3
    assert kind == "Server.ServerProxy.NetworkError"
    assert "did not answer within 0.3 s" in message


# --- schemas ---------------------------------------------------------------------------------

RECORDS_PATH = "/r1/PK/FED/NADRA/civil-registry/records"


async def test_bodies_are_checked_against_their_registered_schemas(fed: Federation) -> None:
    good = await fed.call("lmc", "GET", RECORDS_PATH + "/persons/35202-7654321-1")
    assert good.status == 200
    assert (await good.json())["cnic"] == "35202-7654321-1"
    bad_request = await fed.call(
        "lmc",
        "POST",
        RECORDS_PATH + "/persons/x",
        data=b'{"cnic": "3520212345671"}',
        headers={"Content-Type": "application/json"},
    )
    status, kind, message = await _error(bad_request)
    assert (status, kind) == (400, "Client.SchemaViolation")
    assert "pk.nadra.person" in message
    assert len(fed.backend.seen) == 1  # the refused request never reached the backend
    not_json = await fed.call("lmc", "POST", RECORDS_PATH + "/x", data=b"<xml/>")
    assert (await _error(not_json))[1] == "Client.BadRequest"
    empty = await fed.call("lmc", "POST", RECORDS_PATH + "/persons/x")  # no body is no record
    assert (await _error(empty))[1] == "Client.BadRequest"
    # Two values for one key: the schema would see one, a backend might act on the other.
    twice = await fed.call(
        "lmc",
        "POST",
        RECORDS_PATH + "/persons/x",
        data=json.dumps(PERSON_EXAMPLE).encode()[:-1] + b', "cnic": "42101-1111111-1"}',
        headers={"Content-Type": "application/json"},
    )
    status, kind, message = await _error(twice)
    assert (status, kind) == (400, "Client.BadRequest")
    assert "duplicate" in message
    assert len(fed.backend.seen) == 1
    broken = await fed.call("lmc", "GET", RECORDS_PATH + "/persons/broken")
    status, kind, message = await _error(broken)
    assert kind == "Server.ServerProxy.ServiceFailed"
    assert "violates pk.nadra.person" in message
    assert b"unknown-value" not in await broken.read()
    ok_post = await fed.call(
        "lmc",
        "POST",
        RECORDS_PATH + "/persons/35202-1234567-1",
        data=json.dumps(PERSON_EXAMPLE).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert ok_post.status == 200


# --- failing over to another gateway of the provider ---------------------------------------------


async def test_the_next_provider_gateway_is_tried_only_when_nothing_was_sent(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    view = fed.nodes["lmc"].gateway.globalconf.current()
    real = view.gateways_for(ECHO.provider)
    assert len(real) == 1

    def first_at(address: str) -> None:
        """The provider seems to have a gateway at ``address`` first, then its real one."""
        decoy = real[0].model_copy(update={"address": address})
        monkeypatch.setattr(view, "gateways_for", lambda client: [decoy, *real])

    # Nothing listens there: the request never left, so the real gateway gets it.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    first_at(f"https://127.0.0.1:{closed}")
    assert (await fed.call("lmc", "GET", ECHO_PATH + "/public/a")).status == 200
    assert len(fed.backend.seen) == 1

    # A gateway (with the pinned certificate) that takes the request and hangs up: it may
    # have acted on it, so it is never sent to the next one.
    async def hang_up(request: web.Request) -> web.Response:
        await request.read()
        assert request.transport is not None
        request.transport.close()
        return web.Response()

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hang_up)
    nadra, lmc = fed.nodes["nadra"], fed.nodes["lmc"]
    ctx = server_context(
        nadra.tls.cert, nadra.tls.key, [lmc.cert.public_bytes(Encoding.PEM).decode()]
    )
    async with listening(app, "127.0.0.1", 0, ctx) as port:
        first_at(f"https://127.0.0.1:{port}")
        resp = await fed.call("lmc", "GET", ECHO_PATH + "/public/b")
    status, kind, message = await _error(resp)
    assert (status, kind) == (500, "Server.ClientProxy.NetworkError")
    assert "the exchange with" in message
    assert len(fed.backend.seen) == 1  # the real gateway never saw the second request


async def test_x_road_security_server_picks_the_provider_gateway(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PR-REST 4.3: with X-Road-Security-Server the request goes to that gateway alone, never
    to another of the provider's, even when that one cannot be reached."""
    view = fed.nodes["lmc"].gateway.globalconf.current()
    real = view.gateways_for(ECHO.provider)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    decoy = real[0].model_copy(
        update={"id": real[0].id.member.gateway("gw2"), "address": f"https://127.0.0.1:{closed}"}
    )
    monkeypatch.setattr(view, "gateways_for", lambda client: [decoy, *real])
    monkeypatch.setattr(view, "gateways", {**view.gateways, decoy.id: decoy})

    resp = await fed.call(
        "lmc", "GET", ECHO_PATH + "/public/a", headers={"X-Road-Security-Server": str(decoy.id)}
    )
    status, kind, _ = await _error(resp)
    assert (status, kind) == (500, "Server.ClientProxy.NetworkError")
    assert fed.backend.seen == []  # not sent on to the gateway the caller did not name
    # Nothing went out: the record names no request a provider could have a record of.
    assert (await fed.events("lmc"))[-1].request_id is None

    # Percent-encoded parts, as for X-Road-Client; repeated, the last one counts.
    resp = await fed.http.get(
        URL(fed.nodes["lmc"].local_url + ECHO_PATH + "/public/b", encoded=True),
        headers=[
            ("X-Road-Client", str(LMC_TAX)),
            ("X-Road-Security-Server", str(decoy.id)),
            ("X-Road-Security-Server", "PK/FED/NADRA/gw%31"),
        ],
    )
    assert resp.status == 200, await resp.text()
    assert len(fed.backend.seen) == 1
    assert "X-Road-Security-Server" not in fed.backend.seen[-1].headers
    # Folded into one line by a proxy on the way, the last one counts too.
    folded = f"{decoy.id}, PK/FED/NADRA/gw1"
    resp = await fed.call(
        "lmc", "GET", ECHO_PATH + "/public/c", headers={"X-Road-Security-Server": folded}
    )
    assert resp.status == 200, await resp.text()
    assert len(fed.backend.seen) == 2
