"""An exchange end to end over real sockets and real mutual TLS."""

from __future__ import annotations

import base64
import os

import pytest

from core.ids import ClientId
from exchange.envelope import ENVELOPE_HEADER
from tests.exchange.harness import ECHO, LMC_TAX, Federation

ECHO_PATH = "/r1/PK/FED/NADRA/civil-registry/echo"
PERSON_PATH = "/r1/PK/FED/NADRA/civil-registry/person/v1"


async def test_a_request_crosses_two_gateways_and_comes_back_signed(fed: Federation) -> None:
    resp = await fed.call(
        "lmc",
        "GET",
        ECHO_PATH + "/records/42?fields=a,b&x=%2F",
        headers={
            "X-Road-Id": "msg-1",
            "X-Road-UserId": "PK3520212345671",
            "X-Custom-In": "yes",
            "Connection": "close, X-Hop-In",
            "X-Hop-In": "for the gateway only",
            "Shahrah-Envelope": "forged by caller",
        },
    )
    assert resp.status == 200
    body = await resp.json()
    assert body == {
        "method": "GET",
        "path": "/records/42",
        "query": "fields=a,b&x=%2F",
        "client": str(LMC_TAX),
        "user": "PK3520212345671",
    }
    # X-Road's response headers, the backend's end-to-end headers, not its hop-by-hop ones.
    assert resp.headers["X-Road-Client"] == str(LMC_TAX)
    assert resp.headers["X-Road-Service"] == str(ECHO)
    assert resp.headers["X-Road-Id"] == "msg-1"
    assert len(base64.b64decode(resp.headers["X-Road-Request-Hash"])) == 64
    assert resp.headers["X-Custom"] == "kept"
    assert resp.headers.get("Server") != "legacy/1.0"
    assert "X-Hop-Out" not in resp.headers  # named in Connection: hop-by-hop
    # PR-REST 4.3: cache headers as the backend sent them; none of the gateway's own.
    assert resp.headers["Cache-Control"] == "private, max-age=60"
    assert "X-Frame-Options" not in resp.headers
    assert ENVELOPE_HEADER not in resp.headers
    seen = fed.backend.seen[-1]
    assert seen.headers["X-Custom-In"] == "yes"
    assert seen.headers["X-Road-Id"] == "msg-1"
    assert "Shahrah-Envelope" not in seen.headers
    assert "X-Hop-In" not in seen.headers


async def test_both_gateways_record_the_exchange(fed: Federation) -> None:
    resp = await fed.call(
        "lmc",
        "POST",
        ECHO_PATH + "/x",
        data=b'{"a": 1}',
        headers={"Content-Type": "application/json"},
    )
    assert resp.status == 200
    consumer = (await fed.events("lmc"))[-1]
    provider = (await fed.events("nadra"))[-1]
    assert (consumer.role, provider.role) == ("consumer", "provider")
    assert consumer.outcome == provider.outcome == "delivered"
    assert consumer.request_id == provider.request_id
    assert consumer.request_digest == provider.request_digest is not None
    assert consumer.response_digest == provider.response_digest is not None
    assert consumer.response_signature_digest == provider.response_signature_digest


@pytest.mark.parametrize("sent", [None, "", "   "])
async def test_message_id_is_generated_when_absent_or_blank(
    fed: Federation, sent: str | None
) -> None:
    headers = {} if sent is None else {"X-Road-Id": sent}
    resp = await fed.call("lmc", "GET", ECHO_PATH, headers=headers)
    assert resp.status == 200
    assert len(resp.headers["X-Road-Id"]) == 36
    assert fed.backend.seen[-1].path == "/"


async def test_last_x_road_client_header_wins(fed: Federation) -> None:
    resp = await fed.http.get(
        fed.nodes["lmc"].local_url + ECHO_PATH,
        headers=[("X-Road-Client", "PK/PROV/PLRA/land-records"), ("X-Road-Client", str(LMC_TAX))],
    )
    assert resp.status == 200
    assert resp.headers["X-Road-Client"] == str(LMC_TAX)
    # Folded into one line on the way (RFC 9110 5.3), the last still wins.
    for line, wins in (
        (f"PK/PROV/PLRA/land-records, {LMC_TAX}", str(LMC_TAX)),
        (f"PK/PROV/PLRA/land-records,{LMC_TAX}", str(LMC_TAX)),
        (f"{LMC_TAX}, PK/PROV/PLRA/land-records", None),
    ):
        resp = await fed.http.get(
            fed.nodes["lmc"].local_url + ECHO_PATH, headers={"X-Road-Client": line}
        )
        if wins:
            assert (resp.status, resp.headers["X-Road-Client"]) == (200, wins)
        else:  # PLRA's subsystem, last, is no client of this gateway
            assert resp.headers["X-Road-Error"] == "Client.InvalidClientIdentifier"


async def test_a_folded_x_road_client_costs_a_few_parses_whatever_its_commas(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every tail of a long line tried in turn would hold the event loop for seconds."""
    parses = []
    real = ClientId.parse.__func__  # type: ignore[attr-defined]

    def counted(cls: type[ClientId], text: str, **kw: bool) -> ClientId:
        parses.append(len(text))
        return real(cls, text, **kw)  # type: ignore[no-any-return]

    monkeypatch.setattr(ClientId, "parse", classmethod(counted))
    line = "," * 20_000 + "PK/LG"  # no tail reads as an identifier
    resp = await fed.http.get(
        fed.nodes["lmc"].local_url + ECHO_PATH, headers={"X-Road-Client": line}
    )
    assert resp.headers["X-Road-Error"] == "Client.InvalidClientIdentifier"
    assert len(parses) <= 17
    folded = ", ".join(["PK/PROV/PLRA/land-records"] * 1000 + [str(LMC_TAX)])
    resp = await fed.http.get(
        fed.nodes["lmc"].local_url + ECHO_PATH, headers={"X-Road-Client": folded}
    )
    assert resp.headers["X-Road-Client"] == str(LMC_TAX)


async def test_x_road_service_is_the_five_part_service_id_the_caller_named(
    fed: Federation,
) -> None:
    """PR-REST 4.1/4.3: a serviceId is INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE; the version
    of a versioned service is, to an r1 caller, part of the path, and X-Road's own clients
    refuse an X-Road-Service of any other length. (Refused here for want of consent, which
    the answer's X-Road headers do not depend on.)"""
    resp = await fed.call("lmc", "GET", PERSON_PATH + "/persons/3520212345671")
    assert resp.headers["X-Road-Error"].startswith("Server.ServerProxy.")
    assert resp.headers["X-Road-Service"] == "PK/FED/NADRA/civil-registry/person"


async def test_redirects_are_passed_through_not_followed(fed: Federation) -> None:
    resp = await fed.call("lmc", "GET", ECHO_PATH + "/redirect")
    assert resp.status == 302
    assert resp.headers["Location"] == "/elsewhere"
    assert len(fed.backend.seen) == 1


async def test_a_large_body_arrives_whole(fed: Federation) -> None:
    """Bodies arrive over TCP in many chunks; none may be cut at the first one, on the way
    in (both gateways) or back (from the backend, from the provider gateway)."""
    body = os.urandom(900 * 1024)  # under aiohttp's 1 MiB warning for raw bytes bodies
    resp = await fed.call("lmc", "POST", ECHO_PATH + "/upload", data=body)
    assert resp.status == 200, await resp.text()
    assert fed.backend.bodies[-1] == body
    assert await resp.read() == body
