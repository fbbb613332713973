"""The citizen portal's cost over the citizen API it sits beside.

One citizen with a page of consents (approved, pending, revoked) on an
in-process consent service; both paths are real HTTP requests on loopback,
measured round by round in the same process:

* portal page: ``GET /portal/consents`` with a session cookie — the page kit's
  guard (session, language), the account-session check, the same database
  reads, names from the global configuration, and the Jinja2 page;
* citizen API (baseline): ``GET /v1/citizen/consents`` with the bearer token,
  the same reads answered as JSON.

It also reports the page's size against the issue's 100 KB bound.

    python -m bench.consoles [--consents N] [--requests N] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import re
import tempfile
from pathlib import Path

import aiohttp
from aiohttp import web

from bench._timing import compare, table
from bench.consent import LMC_TAX, PERSON, PURPOSE, SUBJECT, batch, start_service
from consent.artefact import ConsentRequest, ServiceGrant
from consent.lifecycle import Action
from consent.state import STATE
from core.db import upgrade, utcnow
from core.ids import ClientId

PASSWORD = "a demo password"  # noqa: S105 (a throwaway account in a temporary database)


async def setup(url: str, consents: int) -> tuple[web.AppRunner, str]:
    runner, base = await start_service(url)
    app = runner.app
    service = app[STATE].service
    await app[STATE].accounts.add(SUBJECT, "Ayesha Khan", PASSWORD)
    now = utcnow()
    for i in range(consents):
        consent = await service.request(
            ClientId("PK", "LG", "LMC"),
            ConsentRequest(
                subject=SUBJECT,
                consumer=LMC_TAX,
                services=[ServiceGrant(service=PERSON, fields=["/name", "/city"])],
                purpose=PURPOSE,
                valid_from=now - dt.timedelta(minutes=1),
                expires_at=now + dt.timedelta(days=30 + i),
            ),
        )
        if i % 3 != 2:
            await service.citizen_act(SUBJECT, consent.id, Action.APPROVE)
        if i % 3 == 1:
            await service.citizen_act(SUBJECT, consent.id, Action.REVOKE)
    return runner, base


async def sign_in(http: aiohttp.ClientSession, base: str) -> tuple[str, str]:
    """A bearer token for the API, and a portal session cookie."""
    async with http.post(
        f"{base}/v1/citizen/session", json={"cnic": str(SUBJECT), "password": PASSWORD}
    ) as r:
        token = (await r.json())["token"]
    async with http.get(f"{base}/portal/login") as r:
        cookie = r.cookies["shahrah-citizen"].value
        csrf = re.search(r'name="csrf" value="([^"]+)"', await r.text())
    assert csrf is not None
    async with http.post(
        f"{base}/portal/login",
        data={"csrf": csrf.group(1), "cnic": str(SUBJECT), "password": PASSWORD},
        headers={"Cookie": f"shahrah-citizen={cookie}", "Origin": base},
        allow_redirects=False,
    ) as r:
        if r.status != 303:
            raise SystemExit(f"portal sign-in failed: {r.status}")
        cookie = r.cookies["shahrah-citizen"].value
    return token, cookie


async def _client() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--consents", type=int, default=12, help="consents on the page")
    parser.add_argument("--requests", type=int, default=100, help="requests per round")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'bench.db'}"
        upgrade(url)
        loop = asyncio.new_event_loop()
        runner, base = loop.run_until_complete(setup(url, args.consents))
        # The portal's cookie is Secure; a browser sends it to 127.0.0.1, aiohttp's jar would not.
        http = loop.run_until_complete(_client())
        token, cookie = loop.run_until_complete(sign_in(http, base))
        size = 0

        async def page() -> None:
            nonlocal size
            async with http.get(
                f"{base}/portal/consents", headers={"Cookie": f"shahrah-citizen={cookie}"}
            ) as r:
                body = await r.read()
                if r.status != 200 or b"Ayesha Khan" not in body:
                    raise SystemExit(f"the portal page failed: {r.status}")
                size = len(body)

        async def api() -> None:
            async with http.get(
                f"{base}/v1/citizen/consents", headers={"Authorization": f"Bearer {token}"}
            ) as r:
                if r.status != 200:
                    raise SystemExit(f"the citizen API failed: {r.status}")
                await r.read()

        n = args.requests
        results = compare(
            {
                "portal page (/portal/consents)": batch(loop, n, page),
                "citizen API (/v1/citizen/consents)": batch(loop, n, api),
            },
            ops=1,
            rounds=args.rounds,
        )
        per_request = [type(r)(r.name, r.per_op / n) for r in results]
        print(
            table(
                f"My consents, {args.consents} consents, {n} sequential requests a round",
                per_request,
                "citizen API (/v1/citizen/consents)",
            )
        )
        print(f"page size: {size:,} bytes (bound 100 KB)")
        loop.run_until_complete(http.close())
        loop.run_until_complete(runner.cleanup())


if __name__ == "__main__":
    main()
