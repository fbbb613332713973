"""Consent decisions per second: a gateway's cached decisions against the uncached paths.

Three cases on one consent (no use limits, so it may be cached), measured
round by round in the same process:

* cached: ``ConsentClient.decide`` answered from the gateway's cache while the
  revocation feed is live (what a provider gateway pays per exchange);
* client without cache: the same call with ``cache_size=0``, so every
  decision is a member-signed HTTP request to the consent service, a database
  read and a signed answer verified by the gateway;
* database path (baseline): ``ConsentService.decide`` called in-process, one
  read transaction and the rules, no HTTP and no signatures;
* feed sync: ``ConsentClient.sync``, the signed round trip that vouches for a
  gateway's cache (a member-signed request, a one-row read, a signed answer),
  which a busy provider gateway makes every ``cache_trust / 3`` seconds.

    python -m bench.consent [--db URL] [--cached N] [--uncached N] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from argon2 import PasswordHasher

from bench._timing import Result, compare, table
from consent.artefact import ConsentRequest, ServiceGrant
from consent.client import ConsentClient
from consent.lifecycle import Action
from consent.rules import DecisionQuery
from consent.schemafields import RegistryFields
from consent.server import ConsentConfig, build_app
from consent.state import STATE
from core.db import create_engine, sessions, transaction, upgrade, utcnow
from core.ids import ClientId, Cnic, MemberId
from core.keys import KeySet, PrivateKey
from core.pseudonym import Pseudonymizer
from registry import publisher
from registry import service as ops
from registry.globalconf import Anchor, CentralServiceInfo, Jwks, SchemaRef
from registry.globalconf_client import GlobalConfClient
from registry.payloads import (
    AccessRightCreate,
    KeyCreate,
    MemberCreate,
    PurposeCreate,
    ServiceCreate,
    SubsystemCreate,
)
from registry.schemareg import service as schemas
from registry.schemareg.payloads import SchemaRequest
from registry.schemareg.validation import DatabaseSchemaSource, ValidatorCache

OPERATOR = PrivateKey.generate()
NADRA_KEY = PrivateKey.generate()
CONSENT_KEY = PrivateKey.generate()
NADRA = MemberId("PK", "FED", "NADRA")
CIVIL = NADRA.subsystem("civil-registry")
PERSON = CIVIL.service("person", "v1")
LMC = MemberId("PK", "LG", "LMC")
LMC_TAX = LMC.subsystem("property-tax")
SUBJECT = Cnic("35202-1234567-1")
PURPOSE = "identity-verification"
SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "city": {"type": "string"}}}


async def seed(url: str) -> GlobalConfClient:
    """A two-member federation with one consent-requiring service, signed and verified."""
    engine = create_engine(url)
    db = sessions(engine)
    try:
        async with transaction(db) as s:
            await ops.init_federation(s, "PK")
            for cls, code in [("FED", "NADRA"), ("LG", "LMC")]:
                await ops.add_member(s, MemberCreate(member_class=cls, member_code=code, name=code))
            for sub in (CIVIL, LMC_TAX):
                await ops.add_subsystem(s, SubsystemCreate(id=sub))
            await ops.add_key(s, KeyCreate(member=NADRA, jwk=NADRA_KEY.public().to_jwk()))
            await ops.add_purpose(s, PurposeCreate(code=PURPOSE, name="Identity verification"))
            await schemas.register(
                s, "person", SchemaRequest.model_validate({"schema": json.dumps(SCHEMA)})
            )
            await ops.add_service(
                s,
                ServiceCreate(
                    id=PERSON,
                    title="Person",
                    requires_consent=True,
                    subject_field="/cnic",
                    purposes=[PURPOSE],
                    response_schema=SchemaRef(subject="person", version=1),
                ),
            )
            await ops.grant(s, AccessRightCreate(service=PERSON, client=LMC_TAX))
        signed = (await publisher.publish(db, OPERATOR, now=utcnow(), force=True)).signed
    finally:
        await engine.dispose()
    anchor = Anchor(
        instance="PK",
        url="http://127.0.0.1/globalconf",
        keys=Jwks.model_validate(KeySet([OPERATOR.public()]).to_jwks()),
        generated_at=utcnow(),
    )
    conf = GlobalConfClient(anchor)
    conf.accept(signed)
    return conf


def batch(
    loop: asyncio.AbstractEventLoop, n: int, call: Callable[[], Awaitable[object]]
) -> Callable[[], None]:
    """``n`` awaited calls as one synchronous case, so loop entry is paid once per batch."""

    async def run() -> None:
        for _ in range(n):
            await call()

    return lambda: loop.run_until_complete(run())


async def start_service(url: str) -> tuple[web.AppRunner, str]:
    """The consent service over the seeded federation, on a loopback port; and its URL."""
    conf = await seed(url)
    engine = create_engine(url)
    config = ConsentConfig(
        db_url=url,
        signing_key=CONSENT_KEY,
        pseudonymizer=Pseudonymizer(os.urandom(32)),
        globalconf=conf,
        fields=RegistryFields(ValidatorCache(DatabaseSchemaSource(sessions(engine)))),
        hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1),
        refresh_globalconf=False,
    )
    runner = web.AppRunner(build_app(config), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def setup(url: str) -> tuple[web.AppRunner, ConsentClient, ConsentClient, DecisionQuery]:
    runner, base = await start_service(url)
    service = runner.app[STATE].service
    now = utcnow()
    consent = await service.request(
        ClientId("PK", "LG", "LMC"),
        ConsentRequest(
            subject=SUBJECT,
            consumer=LMC_TAX,
            services=[ServiceGrant(service=PERSON, fields=["/name"])],
            purpose=PURPOSE,
            valid_from=now - dt.timedelta(minutes=1),
            expires_at=now + dt.timedelta(days=30),
        ),
    )
    await service.citizen_act(SUBJECT, consent.id, Action.APPROVE)
    info = CentralServiceInfo(
        name="consent", url=base, keys=Jwks.model_validate(KeySet([CONSENT_KEY.public()]).to_jwks())
    )
    member = ClientId("PK", "FED", "NADRA")
    cached = ConsentClient(lambda: info, key=NADRA_KEY, member=member)
    uncached = ConsentClient(lambda: info, key=NADRA_KEY, member=member, cache_size=0)
    for client in (cached, uncached):
        await client.start()
    deadline = time.monotonic() + 5
    while not cached.status().feed_live:
        if time.monotonic() > deadline:
            raise SystemExit("the feed never became live")
        await asyncio.sleep(0.01)
    query = DecisionQuery(consent.id, SUBJECT, LMC_TAX, PERSON, PURPOSE, utcnow())
    await cached.decide(query)  # fill the cache
    while not cached.status().cache_trusted:  # a sync vouches for it
        if time.monotonic() > deadline:
            raise SystemExit("the cache was never vouched for")
        await asyncio.sleep(0.01)
    return runner, cached, uncached, query


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", help="postgresql://... (default: a temporary SQLite file)")
    parser.add_argument("--cached", type=int, default=20_000, help="cached decisions per round")
    parser.add_argument("--uncached", type=int, default=200, help="uncached decisions per round")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        url = args.db or f"sqlite:///{Path(folder) / 'bench.db'}"
        upgrade(url)
        loop = asyncio.new_event_loop()
        runner, cached, uncached, query = loop.run_until_complete(setup(url))
        service = runner.app[STATE].service
        provider = ClientId("PK", "FED", "NADRA")

        def fresh() -> DecisionQuery:
            """The decision time moves on with the clock, as a gateway's does."""
            return DecisionQuery(query.consent_id, SUBJECT, LMC_TAX, PERSON, PURPOSE, utcnow())

        sizes = {
            "cached decide (gateway client)": args.cached,
            "client without cache (HTTP, signed)": args.uncached,
            "database path (ConsentService.decide)": args.uncached,
            "feed sync (ConsentClient.sync)": args.uncached,
        }
        raw = compare(
            {
                "cached decide (gateway client)": batch(
                    loop, args.cached, lambda: cached.decide(query)
                ),
                "client without cache (HTTP, signed)": batch(
                    loop, args.uncached, lambda: uncached.decide(fresh())
                ),
                "database path (ConsentService.decide)": batch(
                    loop, args.uncached, lambda: service.decide(provider, fresh())
                ),
                "feed sync (ConsentClient.sync)": batch(loop, args.uncached, uncached.sync),
            },
            ops=1,
            rounds=args.rounds,
        )
        results = [Result(r.name, r.per_op / sizes[r.name]) for r in raw]
        backend = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
        print(
            table(
                f"Consent decisions, {backend}, {os.cpu_count()} CPUs",
                results,
                baseline="database path (ConsentService.decide)",
            )
        )
        by_name = {r.name: r for r in results}
        speedup = (
            by_name["database path (ConsentService.decide)"].per_op
            / by_name["cached decide (gateway client)"].per_op
        )
        print(f"cached decisions: {speedup:,.0f}x the uncached database path")
        hits, asked = cached.counters.hits, cached.counters.asked
        print(f"cached client: {hits:,} answers from its cache, {asked} asked the service")
        for client in (cached, uncached):
            loop.run_until_complete(client.close())
        loop.run_until_complete(runner.cleanup())
        loop.close()


if __name__ == "__main__":
    main()
