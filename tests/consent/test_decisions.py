"""Decisions for gateways: permit with the released fields, or deny with the precise reason;
signed answers bound to the request; use limits counted atomically."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

import pytest

from consent import store
from consent.client import ConsentClient, stated_pseudonym
from consent.history import MerkleConsentLog
from consent.messages import DECISION_TYP, DecisionAnswer
from consent.rules import ConsentDenied, DecisionQuery, DenyReason
from consent.service import ConsentService
from consent.state import STATE
from core import jws
from core.db import create_engine, sessions, transaction, utcnow
from core.errors import InvalidSignatureError
from core.ids import ClientId, Cnic
from core.keys import KeySet, PrivateKey
from registry.globalconf import Jwks
from tests.consent.conftest import (
    CITIZEN,
    CONSENT_KEY,
    PARCELS,
    PLRA_KEY,
    PSEUDONYMS,
    PURPOSE,
    Harness,
    schema_fields,
)
from tests.registry.federation import CIVIL, LMC_TAX, NADRA_KEY, PERSON, PLRA_LAND

NADRA_MEMBER = ClientId("PK", "FED", "NADRA")


def query(consent_id: str, **changes: Any) -> DecisionQuery:
    values: dict[str, Any] = {
        "consent_id": consent_id,
        "subject": CITIZEN,
        "consumer": LMC_TAX,
        "service": PERSON,
        "purpose": PURPOSE,
        "at": utcnow(),
    }
    values.update(changes)
    return DecisionQuery(**values)


async def test_an_active_consent_permits_its_fields(harness: Harness) -> None:
    consent = await harness.active_consent()
    async with harness.client() as client:
        permit = await client.decide(query(consent["id"]))
    assert permit.consent_id == consent["id"]
    assert permit.released_fields == ["/name", "/address/city"]
    assert permit.legal_basis == "consent"
    assert permit.subject_pseudonym == PSEUDONYMS(CITIZEN)


async def _deny_reason(harness: Harness, q: DecisionQuery) -> DenyReason:
    async with harness.client() as client:
        with pytest.raises(ConsentDenied) as caught:
            await client.decide(q)
    assert caught.value.xroad_type == "Server.ServerProxy.ConsentDenied"
    assert caught.value.detail["reason"] == caught.value.reason.value
    return caught.value.reason


async def test_every_deny_reason(harness: Harness) -> None:
    active = await harness.active_consent()
    cid = active["id"]
    cases: list[tuple[DecisionQuery, DenyReason]] = [
        (query("cns-nope"), DenyReason.UNKNOWN_CONSENT),
        (query(cid, subject=Cnic("42101-1111111-1")), DenyReason.OTHER_SUBJECT),
        (query(cid, consumer=PLRA_LAND), DenyReason.OTHER_CONSUMER),
        (query(cid, service=CIVIL.service("person", "v2")), DenyReason.SERVICE_NOT_COVERED),
        (query(cid, purpose="tax-assessment"), DenyReason.PURPOSE_MISMATCH),
    ]
    for q, reason in cases:
        assert await _deny_reason(harness, q) is reason, q
    pending = await harness.request_consent()
    assert await _deny_reason(harness, query(pending["id"])) is DenyReason.PENDING
    future = await harness.active_consent(valid_from=(utcnow() + dt.timedelta(days=1)).isoformat())
    assert await _deny_reason(harness, query(future["id"])) is DenyReason.NOT_YET_VALID
    token = await harness.sign_in()
    for action, reason in [
        ("pause", DenyReason.PAUSED),
        ("revoke", DenyReason.REVOKED),
    ]:
        status, _ = await harness.citizen("POST", f"/v1/citizen/consents/{cid}/{action}", token)
        assert status == 200
        assert await _deny_reason(harness, query(cid)) is reason
    rejected = await harness.request_consent()
    await harness.citizen("POST", f"/v1/citizen/consents/{rejected['id']}/reject", token)
    assert await _deny_reason(harness, query(rejected["id"])) is DenyReason.REJECTED


async def test_a_member_that_is_no_party_to_a_consent_learns_nothing_of_it(
    harness: Harness,
) -> None:
    """PLRA provides a service the consent does not cover: whatever subject and consumer it
    names, it is told what an unknown id would tell it, never whose consent it is."""
    cid = (await harness.active_consent())["id"]
    info = harness.service_info
    async with ConsentClient(lambda: info, key=PLRA_KEY, member=PLRA_LAND) as plra:
        for subject, consumer in [
            (CITIZEN, LMC_TAX),
            (CITIZEN, PLRA_LAND),
            (Cnic("42101-1111111-1"), LMC_TAX),
        ]:
            asked = query(cid, subject=subject, consumer=consumer, service=PARCELS)
            with pytest.raises(ConsentDenied) as caught:
                await plra.decide(asked)
            assert caught.value.reason is DenyReason.UNKNOWN_CONSENT
            assert str(LMC_TAX) not in caught.value.message
    # The provider it was granted to hears of another consumer, without its name.
    with pytest.raises(ConsentDenied) as caught:
        async with harness.client() as nadra:
            await nadra.decide(query(cid, consumer=PLRA_LAND))
    assert caught.value.reason is DenyReason.OTHER_CONSUMER
    assert str(LMC_TAX) not in caught.value.message


async def test_expiry_at_decision_time_denies_and_records_it(harness: Harness) -> None:
    consent = await harness.active_consent()
    service: ConsentService = harness.app[STATE].service
    later = utcnow() + dt.timedelta(days=31)
    service.clock = lambda: later
    with pytest.raises(ConsentDenied) as caught:
        await service.decide(NADRA_MEMBER, query(consent["id"], at=later))
    assert caught.value.reason is DenyReason.EXPIRED
    token = await harness.sign_in()
    _, body = await harness.citizen("GET", f"/v1/citizen/consents/{consent['id']}", token)
    assert body["status"] == "EXPIRED"


async def test_validity_is_also_judged_by_the_services_own_clock(harness: Harness) -> None:
    """A gateway's clock may be up to CLOCK_SKEW behind: a consent that has expired (or not
    begun) by the consent service's clock is refused even if the gateway's ``at`` says
    otherwise."""
    service: ConsentService = harness.app[STATE].service
    skew = dt.timedelta(seconds=10)
    ends = utcnow().replace(microsecond=0) + dt.timedelta(hours=1)
    ending = await harness.active_consent(expires_at=ends.isoformat())
    service.clock = lambda: ends + skew
    with pytest.raises(ConsentDenied) as caught:
        await service.decide(NADRA_MEMBER, query(ending["id"], at=ends - skew))
    assert caught.value.reason is DenyReason.EXPIRED

    starts = utcnow().replace(microsecond=0) + dt.timedelta(hours=2)
    future = await harness.active_consent(valid_from=starts.isoformat())
    service.clock = lambda: starts - skew
    with pytest.raises(ConsentDenied) as caught:
        await service.decide(NADRA_MEMBER, query(future["id"], at=starts + skew))
    assert caught.value.reason is DenyReason.NOT_YET_VALID


async def test_the_sweep_expires_what_is_due(harness: Harness) -> None:
    active = await harness.active_consent()
    pending = await harness.request_consent()
    keep = await harness.active_consent(expires_at=(utcnow() + dt.timedelta(days=90)).isoformat())
    service: ConsentService = harness.app[STATE].service
    service.clock = lambda: utcnow() + dt.timedelta(days=31)
    assert await service.sweep() == 2
    assert await service.sweep() == 0
    token = await harness.sign_in()
    for consent, status in [(active, "EXPIRED"), (pending, "EXPIRED"), (keep, "ACTIVE")]:
        _, body = await harness.citizen("GET", f"/v1/citizen/consents/{consent['id']}", token)
        assert body["status"] == status


async def test_only_the_providing_member_may_ask(harness: Harness) -> None:
    consent = await harness.active_consent()
    body = {
        "consent_id": consent["id"],
        "subject": str(CITIZEN),
        "consumer": str(LMC_TAX),
        "service": str(PERSON),
        "purpose": PURPOSE,
        "at": utcnow().isoformat(),
        "nonce": "n" * 22,
    }
    status, answer = await harness.member("POST", "/v1/decisions", body)  # LMC asks: no
    assert status == 403
    assert "only PK/FED/NADRA" in answer["message"]
    status, answer = await harness.member(
        "POST", "/v1/decisions", {**body, "service": str(PARCELS)}, key=NADRA_KEY, client=CIVIL
    )
    assert status == 403
    status, signed = await harness.member(
        "POST", "/v1/decisions", body, key=NADRA_KEY, client=CIVIL
    )
    assert status == 200
    answer = DecisionAnswer.model_validate_json(
        jws.verify(signed, KeySet([CONSENT_KEY.public()]), typ=DECISION_TYP).payload
    )
    assert answer.decision == "permit"
    assert answer.cacheable is True
    status, skewed = await harness.member(
        "POST",
        "/v1/decisions",
        {**body, "at": (utcnow() - dt.timedelta(minutes=5)).isoformat()},
        key=NADRA_KEY,
        client=CIVIL,
    )
    assert status == 400
    assert "clock" in skewed["message"]


async def test_use_limit_and_frequency(harness: Harness) -> None:
    limited = await harness.active_consent(use_limit=2)
    per_day = await harness.active_consent(frequency={"max": 1, "per": "day"})
    async with harness.client() as client:
        for _ in range(2):
            await client.decide(query(limited["id"]))
        with pytest.raises(ConsentDenied) as caught:
            await client.decide(query(limited["id"]))
        assert caught.value.reason is DenyReason.USE_LIMIT_REACHED
        await client.decide(query(per_day["id"]))
        with pytest.raises(ConsentDenied) as caught:
            await client.decide(query(per_day["id"]))
        assert caught.value.reason is DenyReason.FREQUENCY_EXCEEDED
        assert client.counters.hits == 0  # counted consents are never answered from the cache
    service: ConsentService = harness.app[STATE].service
    tomorrow = utcnow() + dt.timedelta(days=1, seconds=1)
    service.clock = lambda: tomorrow
    decision = await service.decide(NADRA_MEMBER, query(per_day["id"], at=tomorrow))
    assert decision.consent.uses == 2


async def test_racing_gateways_spend_the_last_uses_exactly_once(
    harness: Harness, db_url: str
) -> None:
    """Several gateway processes (own engines, own connections) race for 3 uses: 3 win."""
    consent = await harness.active_consent(use_limit=3)
    engines = [create_engine(db_url, pool_size=2) for _ in range(4)]
    try:
        services = [
            ConsentService(
                sessions=sessions(e),
                log=MerkleConsentLog(),
                pseudonymize=PSEUDONYMS,
                conf=harness.conf.current,
                fields=schema_fields(harness.db),
            )
            for e in engines
        ]
        start = asyncio.Event()

        async def racer(service: ConsentService) -> DenyReason | None:
            await start.wait()
            try:
                await service.decide(NADRA_MEMBER, query(consent["id"]))
            except ConsentDenied as e:
                return e.reason
            return None

        tasks = [asyncio.create_task(racer(services[i % 4])) for i in range(12)]
        await asyncio.sleep(0.05)
        start.set()
        results = await asyncio.gather(*tasks)
    finally:
        for e in engines:
            await e.dispose()
    assert results.count(None) == 3
    assert set(results) == {None, DenyReason.USE_LIMIT_REACHED}
    async with transaction(harness.db, write=False) as s:
        row = await store.consent(s, consent["id"])
        assert row is not None
        assert row.uses == 3


async def test_pseudonyms_are_signed_and_cached(harness: Harness) -> None:
    """A lookup brings the service's signed statement, which anyone with the service's
    public key can check, for that subject only (the cache is shown in test_pseudonyms)."""
    async with harness.client() as client:
        first = await client.pseudonym(CITIZEN)
        assert first.value == PSEUDONYMS(CITIZEN)
        assert json.dumps(first.value).startswith('"ps1:')
        assert await client.pseudonym(CITIZEN) == first
    assert first.statement is not None
    keys = KeySet([CONSENT_KEY.public()])
    assert stated_pseudonym(first.statement, keys, CITIZEN) == first.value
    with pytest.raises(InvalidSignatureError, match="another subject"):
        stated_pseudonym(first.statement, keys, Cnic("35202-7654321-9"))
    with pytest.raises(InvalidSignatureError):
        stated_pseudonym(first.statement, KeySet([PrivateKey.generate().public()]), CITIZEN)


async def test_a_statement_whose_key_left_the_configuration_is_looked_up_again(
    harness: Harness,
) -> None:
    """The consent service's key rotates: a statement signed with the old key could be
    checked by nobody once the configuration lists only the new one, so the client looks
    the subject up again rather than hand it on (providers would refuse every exchange
    about the subject until the gateway restarted)."""
    located = [harness.service_info]
    client = ConsentClient(lambda: located[0], key=NADRA_KEY, member=CIVIL)
    async with client:
        first = await client.pseudonym(CITIZEN)
        assert first.kid == CONSENT_KEY.kid
        assert await client.pseudonym(CITIZEN) is first  # cached while its key is listed

        rotated = PrivateKey.generate()
        harness.app[STATE].key = rotated
        located[0] = harness.service_info.model_copy(
            update={"keys": Jwks.model_validate(KeySet([rotated.public()]).to_jwks())}
        )
        second = await client.pseudonym(CITIZEN)
    assert (second.value, second.kid) == (first.value, rotated.kid)
    assert second.statement is not None
    assert stated_pseudonym(second.statement, KeySet([rotated.public()]), CITIZEN) == first.value
