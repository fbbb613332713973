"""The demo path of docs/consent.md, end to end: a registry and a consent service started with
`shahrah ... serve` as real processes, set up with the operator's commands, then a consumer's
request, a citizen's approval, a gateway's permit and a revoke that reaches it."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner

from consent.client import ConsentClient
from consent.rules import ConsentDenied, DecisionQuery, DenyReason
from core.ids import ClientId, Cnic, ServiceId
from core.keys import PrivateKey
from registry.globalconf import Anchor
from registry.globalconf_client import GlobalConfClient
from registry.memberauth import sign_request
from shahrah.cli import main

SUBJECT = Cnic("35202-1234567-1")
PASSWORD = "a long enough secret"
PERSON = ServiceId.parse("PK/FED/NADRA/civil-registry/person/v1")
CONSUMER = ClientId.parse("PK/LG/LMC/property-tax")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def shahrah(*args: str, env: dict[str, str] | None = None) -> str:
    result = CliRunner().invoke(main, list(args), env=env or {}, catch_exceptions=False)
    assert result.exit_code == 0, result.output + result.stderr
    return result.stdout


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[dict[str, Any]]:
    reg, cns = tmp_path / "reg", tmp_path / "cns"
    rport, cport = _port(), _port()
    r, c = ("--data-dir", str(reg)), ("--data-dir", str(cns))
    shahrah(
        "registry",
        "init",
        *r,
        "--instance",
        "PK",
        "--url",
        f"http://127.0.0.1:{rport}/globalconf",
        "--no-passphrase",
    )
    shahrah("consent", "init", *c, "--anchor", str(reg / "anchor.json"), "--no-passphrase")
    shahrah(
        "registry",
        "central-service",
        "consent",
        *r,
        "--url",
        f"http://127.0.0.1:{cport}",
        "--jwks",
        str(cns / "jwks.json"),
    )
    keys = {}
    for cls, code, sub in [("FED", "NADRA", "civil-registry"), ("LG", "LMC", "property-tax")]:
        shahrah("registry", "member", "add", *r, cls, code, "--name", code)
        shahrah("registry", "subsystem", "add", *r, f"PK/{cls}/{code}/{sub}")
        pem, jwk = tmp_path / f"{code}.pem", tmp_path / f"{code}.jwk"
        shahrah("key", "generate", "--out", str(pem), "--jwk-out", str(jwk), "--no-passphrase")
        shahrah("registry", "key", "add", *r, "--member", f"PK/{cls}/{code}", "--jwk", str(jwk))
        keys[code] = PrivateKey.load(pem, None)
    shahrah("registry", "purpose", "add", *r, "identity-verification", "--name", "Identity")
    shahrah(
        "registry",
        "service",
        "add",
        *r,
        str(PERSON),
        "--title",
        "Person",
        "--response-schema",
        "pk.nadra.person:1",
        "--requires-consent",
        "--subject-field",
        "/cnic",
        "--purpose",
        "identity-verification",
    )
    shahrah("registry", "access", "grant", *r, str(PERSON), "--client", str(CONSUMER))
    shahrah(
        "consent",
        "citizen",
        "add",
        *c,
        str(SUBJECT),
        "--name",
        "Ayesha Khan",
        env={"SHAHRAH_CITIZEN_PASSWORD": PASSWORD},
    )
    env = {**os.environ, "SHAHRAH_KEY_PASSPHRASE": ""}
    cli = [sys.executable, "-m", "shahrah"]
    servers = [
        subprocess.Popen(  # noqa: S603 (our own command)
            [*cli, "registry", "serve", *r, "--port", str(rport), "--no-passphrase"], env=env
        ),
        subprocess.Popen(  # noqa: S603
            [
                *cli,
                "consent",
                "serve",
                *c,
                "--port",
                str(cport),
                "--no-passphrase",
                "--heartbeat",
                "0.1",
            ],
            env=env,
        ),
    ]
    try:
        yield {"reg": reg, "registry": rport, "consent": cport, "keys": keys}
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait(timeout=10)


async def _until_up(http: aiohttp.ClientSession, url: str, key: PrivateKey) -> None:
    """Until the consent service holds a configuration (member requests stop answering 503)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        path = "/v1/consents"
        auth = sign_request(key, CONSUMER, audience="consent", method="GET", path=path)
        try:
            async with http.get(url + path, headers={"Authorization": auth}) as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    raise AssertionError("the consent service did not come up with a configuration")


async def test_the_demo_path(federation: dict[str, Any]) -> None:
    base = f"http://127.0.0.1:{federation['consent']}"
    keys = federation["keys"]
    async with aiohttp.ClientSession() as http:
        await _until_up(http, base, keys["LMC"])
        body = json.dumps(
            {
                "subject": str(SUBJECT),
                "consumer": str(CONSUMER),
                "services": [{"service": str(PERSON), "fields": ["/name", "/date_of_birth"]}],
                "purpose": "identity-verification",
                "expires_at": (dt.datetime.now(dt.UTC) + dt.timedelta(days=7)).isoformat(),
                "notice": "Property tax assessment",
            }
        ).encode()
        auth = sign_request(
            keys["LMC"],
            CONSUMER,
            audience="consent",
            method="POST",
            path="/v1/consents",
            body=body,
        )
        async with http.post(
            base + "/v1/consents",
            data=body,
            headers={"Authorization": auth, "Content-Type": "application/json"},
        ) as r:
            assert r.status == 201, await r.text()
            consent = await r.json()
        async with http.post(
            base + "/v1/citizen/session", json={"cnic": str(SUBJECT), "password": PASSWORD}
        ) as r:
            token = (await r.json())["token"]
        citizen = {"Authorization": f"Bearer {token}"}
        async with http.post(
            f"{base}/v1/citizen/consents/{consent['id']}/approve", headers=citizen
        ) as r:
            assert (await r.json())["status"] == "ACTIVE"

        conf = GlobalConfClient(Anchor.load(federation["reg"] / "anchor.json"))
        assert await conf.refresh(http)
        nadra = ClientId("PK", "FED", "NADRA")
        query = DecisionQuery(
            consent["id"],
            SUBJECT,
            CONSUMER,
            PERSON,
            "identity-verification",
            dt.datetime.now(dt.UTC),
        )
        async with ConsentClient.for_globalconf(conf, key=keys["NADRA"], member=nadra) as gw:
            permit = await gw.decide(query)
            assert permit.released_fields == ["/name", "/date_of_birth"]
            async with http.post(
                f"{base}/v1/citizen/consents/{consent['id']}/revoke", headers=citizen
            ) as r:
                assert r.status == 200
            revoked = time.monotonic()
            while True:  # the feed carries the revoke to the gateway's cache within a second
                try:
                    await gw.decide(query)
                except ConsentDenied as e:
                    reason = e.reason
                    break
                assert time.monotonic() - revoked < 1.0
                await asyncio.sleep(0.005)
            assert reason is DenyReason.REVOKED
