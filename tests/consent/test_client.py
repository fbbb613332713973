"""The gateway-side client's own rules: when a cached permit may answer."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consent.artefact import ConsentView
from consent.cache import PermitCache
from consent.messages import DecisionAnswer
from consent.rules import CLOCK_SKEW, ConsentDenied, DenyReason, cache_window, evaluate
from core.db import utcnow
from tests.consent.conftest import CITIZEN, PURPOSE, Harness
from tests.consent.test_decisions import query
from tests.consent.test_feed import cached, caught_up, until
from tests.registry.federation import LMC_TAX, PERSON

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
SECONDS = st.integers(min_value=-200_000, max_value=200_000).map(
    lambda ms: dt.timedelta(milliseconds=ms)
)
SKEWS = st.integers(
    min_value=-int(CLOCK_SKEW.total_seconds() * 1000),
    max_value=int(CLOCK_SKEW.total_seconds() * 1000),
).map(lambda ms: dt.timedelta(milliseconds=ms))


def _view(valid_from: dt.datetime, expires_at: dt.datetime) -> ConsentView:
    return ConsentView.model_validate(
        {
            "id": "cns-" + "0" * 32,
            "subject": str(CITIZEN),
            "consumer": str(LMC_TAX),
            "services": [{"service": str(PERSON), "fields": ["/name"]}],
            "purpose": PURPOSE,
            "legal_basis": "consent",
            "valid_from": valid_from,
            "expires_at": expires_at,
            "use_limit": None,
            "frequency": None,
            "uses": 0,
            "notice": "",
            "status": "ACTIVE",
            "grantor": None,
            "version": 2,
            "requested_at": T0,
            "decided_at": T0,
            "updated_at": T0,
        }
    )


@given(start=SECONDS, length=SECONDS, at=SECONDS, skew=SKEWS)
def test_a_cached_permit_answers_only_where_every_allowed_service_clock_would_permit(
    start: dt.timedelta, length: dt.timedelta, at: dt.timedelta, skew: dt.timedelta
) -> None:
    """Whatever the service's clock within CLOCK_SKEW of the gateway's ``at`` (it refuses a
    query further off), the cache never permits what the service would refuse."""
    valid_from = T0 + start
    expires_at = valid_from + abs(length) + dt.timedelta(milliseconds=1)
    view = _view(valid_from, expires_at)
    when = T0 + at
    start, end = cache_window(valid_from, expires_at)
    if start <= when < end:
        assert evaluate(view, query(view.id, at=when), when + skew) == ["/name"]


async def test_a_lagging_gateway_does_not_permit_from_cache_past_expiry(harness: Harness) -> None:
    """The gateway's clock lags the service's by 25 s (allowed: up to CLOCK_SKEW). Once the
    consent has expired by the service's clock the gateway must not permit it from its cache
    for those 25 s: it asks, and the service refuses."""
    lag = dt.timedelta(seconds=25)
    ends = utcnow() + dt.timedelta(seconds=2)
    consent = await harness.active_consent(expires_at=ends.isoformat())
    async with harness.client() as client:
        await caught_up(harness, client)
        await client.decide(query(consent["id"], at=utcnow() - lag))  # asked, in force, cached
        await until(lambda: client.status().cache_trusted)
        while utcnow() < ends - dt.timedelta(seconds=0.3):  # in use, so kept vouched for
            try:
                await client.decide(query(consent["id"], at=utcnow() - lag))
            except ConsentDenied as e:
                # Asked just before the end (the lag keeps the cache out of it), answered
                # just after it on a loaded machine: the service's own verdict, and the one
                # this test expects below; any other reason is a failure.
                if e.reason is not DenyReason.EXPIRED:
                    raise
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(max(0.0, (ends - utcnow()).total_seconds()) + 0.2)
        assert client.status().cache_trusted
        with pytest.raises(ConsentDenied) as caught:
            await client.decide(query(consent["id"], at=utcnow() - lag))
        assert caught.value.reason is DenyReason.EXPIRED
        assert client.counters.hits == 0


async def _act(harness: Harness, consent_id: str, action: str) -> None:
    token = await harness.sign_in()
    status, body = await harness.citizen(
        "POST", f"/v1/citizen/consents/{consent_id}/{action}", token
    )
    assert status == 200, body


async def test_confirm_refuses_a_permit_whose_consent_was_revoked_since(harness: Harness) -> None:
    """What the provider asks before releasing an answer: has anything been heard about the
    consent since the decision? A revoke has; the refusal is the one the next call gets."""
    consent = await harness.active_consent()
    other = await harness.active_consent()
    async with harness.client() as client:
        await caught_up(harness, client)
        asked = await client.decide(query(consent["id"]))
        await cached(client, query(consent["id"]))
        from_cache = await client.decide(query(consent["id"]))
        untouched = await client.decide(query(other["id"]))
        await client.confirm(asked)
        await client.confirm(from_cache)

        heard = client.counters.invalidations
        await _act(harness, consent["id"], "revoke")
        await until(lambda: client.counters.invalidations > heard)
        for permit in (asked, from_cache):
            with pytest.raises(ConsentDenied) as caught:
                await client.confirm(permit)
            assert caught.value.reason is DenyReason.REVOKED
            assert caught.value.why == "it is REVOKED"
        with pytest.raises(ConsentDenied) as next_call:
            await client.decide(query(consent["id"]))
        assert (next_call.value.reason, next_call.value.why) == (
            caught.value.reason,
            caught.value.why,
        )
        await client.confirm(untouched)  # another consent's change is no news about this one


async def test_confirm_asks_nobody_and_lets_a_resumed_consent_pass(harness: Harness) -> None:
    """A consent with a use limit is counted once per decision: confirming must not count it
    again. One paused and resumed meanwhile is in force again."""
    limited = await harness.active_consent(use_limit=5)
    async with harness.client() as client:
        await caught_up(harness, client)
        permit = await client.decide(query(limited["id"]))
        asked = client.counters.asked
        heard = client.counters.invalidations
        await _act(harness, limited["id"], "pause")
        await until(lambda: client.counters.invalidations > heard)
        with pytest.raises(ConsentDenied) as caught:
            await client.confirm(permit)
        assert caught.value.reason is DenyReason.PAUSED
        await _act(harness, limited["id"], "resume")
        await until(lambda: client.counters.invalidations > heard + 1)
        await client.confirm(permit)
        assert client.counters.asked == asked
    token = await harness.sign_in()
    _, body = await harness.citizen("GET", f"/v1/citizen/consents/{limited['id']}", token)
    assert body["uses"] == 1


async def test_confirm_after_a_slow_call_waits_for_a_sync_and_counts_no_use(
    harness: Harness,
) -> None:
    """A backend slower than cache_trust: before the answer leaves, confirm needs a sync the
    feed has caught up with to vouch for the present. With nothing cached (a limited
    consent is never cached) no sync runs by itself; confirm has one made, asks for no
    decision, and passes."""
    limited = await harness.active_consent(use_limit=5)
    async with harness.client() as client:
        await caught_up(harness, client)
        permit = await client.decide(query(limited["id"]))
        assert client.status().cached_permits == 0
        asked, syncs = client.counters.asked, client.counters.syncs
        await asyncio.sleep(client.cache_trust + 0.1)  # the backend answering
        assert not client.status().cache_trusted
        await client.confirm(permit)
        assert client.counters.syncs > syncs
        assert client.counters.asked == asked
    token = await harness.sign_in()
    _, body = await harness.citizen("GET", f"/v1/citizen/consents/{limited['id']}", token)
    assert body["uses"] == 1


async def test_confirms_waiting_at_once_share_one_sync(harness: Harness) -> None:
    """Twenty answers ready at once after a slow call wait for the same sync, not one each:
    syncs count against the member's share of the service's replay memory."""
    limited = await harness.active_consent(use_limit=5)
    async with harness.client() as client:
        await caught_up(harness, client)
        permit = await client.decide(query(limited["id"]))
        await asyncio.sleep(client.cache_trust + 0.1)
        syncs = client.counters.syncs
        await asyncio.gather(*(client.confirm(permit) for _ in range(20)))
        # One, or two if the feed had not yet delivered the first one's head.
        assert 1 <= client.counters.syncs - syncs <= 2


def test_a_kept_permit_ends_when_its_consent_does_whatever_the_gateways_clock_says() -> None:
    """A gateway whose wall clock falls behind (within the envelope's freshness window)
    still sees a consent in force after it expired; the permit's end is also counted on the
    monotonic clock, from the time the consent had left when the service answered."""
    issued = utcnow()
    answer = DecisionAnswer(
        request_sha256="x",
        consent_id="cns-1",
        decision="permit",
        released_fields=["/name"],
        legal_basis="consent",
        subject_pseudonym="ps1:x",
        cacheable=True,
        valid_from=issued - dt.timedelta(days=1),
        expires_at=issued + dt.timedelta(seconds=60),
        issued_at=issued,
    )
    cache = PermitCache(10)
    key = ("cns-1", CITIZEN, LMC_TAX, PERSON, PURPOSE)
    sent = 1000.0  # monotonic seconds, when the question left
    with cache.watch("cns-1") as watch:
        cache.keep(key, watch, answer, sent)
    behind = issued - dt.timedelta(seconds=100)  # the gateway's clock, 100 s slow
    assert cache.hit(key, behind, sent, now=sent + 59) is not None
    assert cache.hit(key, behind, sent, now=sent + 60) is None
