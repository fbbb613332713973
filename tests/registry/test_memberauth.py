"""Member-signed requests to federation services."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from core import jws
from core.db import Sessions, transaction
from core.errors import TooManyRequestsError, UnauthorizedError
from core.keys import PrivateKey
from registry import publisher
from registry import service as ops
from registry.globalconf import GlobalConfView, verify_globalconf
from registry.memberauth import (
    CLOCK_SKEW,
    MAX_AGE,
    MEMBER_REQUEST_TYP,
    PURGE_EVERY,
    PURGE_MARGIN,
    SCHEME,
    MemberRequestVerifier,
    RequestBinding,
    RequestChecks,
    binding_claims,
    nonce_ledger,
    sign_request,
)
from registry.models import SignedRequestNonce
from registry.payloads import KeyCreate, SubsystemUpdate
from tests.registry.federation import CIVIL, LMC_TAX, NADRA, NADRA_KEY, OPERATOR
from tests.registry.test_globalconf import anchor_for

# The seeded keys become valid when the test seeds them, so each test's clock starts from the
# real time at its start (set below), five minutes on.
NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(autouse=True)
def _clock() -> None:
    global NOW
    NOW = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)


async def _verifier(db: Sessions) -> MemberRequestVerifier:
    pub = await publisher.publish(db, OPERATOR, now=NOW, force=True)
    view = GlobalConfView(verify_globalconf(pub.signed, anchor_for(), now=NOW), pub.signed)
    return MemberRequestVerifier("consent", lambda: view, None, clock=lambda: NOW)


def _sign(**kw: object) -> str:
    args: dict[str, object] = {
        "audience": "consent",
        "method": "POST",
        "path": "/v1/decisions?x=1",
        "body": b'{"a":1}',
        "now": NOW + dt.timedelta(seconds=float(kw.pop("offset", 0))),  # type: ignore[arg-type]
    }
    args.update(kw)
    return sign_request(NADRA_KEY, CIVIL, **args)  # type: ignore[arg-type]


async def test_a_signed_request_authenticates_its_client(seeded: Sessions) -> None:
    verifier = await _verifier(seeded)
    header = _sign()
    request = {"method": "POST", "path": "/v1/decisions?x=1", "body": b'{"a":1}'}
    assert await verifier.verify(header, **request) == CIVIL  # type: ignore[arg-type]
    with pytest.raises(UnauthorizedError, match="replay"):
        await verifier.verify(header, method="POST", path="/v1/decisions?x=1", body=b'{"a":1}')


async def test_a_full_nonce_memory_refuses_rather_than_forgets(seeded: Sessions) -> None:
    pub = await publisher.publish(seeded, OPERATOR, now=NOW, force=True)
    view = GlobalConfView(verify_globalconf(pub.signed, anchor_for(), now=NOW), pub.signed)
    clock = [NOW]
    verifier = MemberRequestVerifier(
        "consent", lambda: view, None, clock=lambda: clock[0], max_nonces=2
    )
    request = {"method": "POST", "path": "/v1/decisions?x=1", "body": b'{"a":1}'}
    first = _sign()
    await verifier.verify(first, **request)  # type: ignore[arg-type]
    await verifier.verify(_sign(), **request)  # type: ignore[arg-type]
    with pytest.raises(TooManyRequestsError, match="try again shortly"):
        await verifier.verify(_sign(), **request)  # type: ignore[arg-type]
    # The first assertion is still inside its window, so it is still a replay.
    with pytest.raises(UnauthorizedError, match="replay"):
        await verifier.verify(first, **request)  # type: ignore[arg-type]
    clock[0] = NOW + dt.timedelta(minutes=2)  # both have aged out: room again
    await verifier.verify(_sign(now=clock[0]), **request)  # type: ignore[arg-type]


async def test_one_member_filling_its_share_of_the_nonce_memory_leaves_others_theirs(
    seeded: Sessions,
) -> None:
    """A member sending a flood of signed requests exhausts only its own share: with one
    shared memory it could have the consent service refuse every other member's decisions
    (and their gateways fail closed)."""
    lmc_key = PrivateKey.generate()
    async with transaction(seeded) as s:
        await ops.add_key(s, KeyCreate(member=LMC_TAX.member, jwk=lmc_key.public().to_jwk()))
    pub = await publisher.publish(seeded, OPERATOR, now=NOW, force=True)
    view = GlobalConfView(verify_globalconf(pub.signed, anchor_for(), now=NOW), pub.signed)
    verifier = MemberRequestVerifier(
        "consent", lambda: view, None, clock=lambda: NOW, max_nonces=4, max_nonces_per_caller=3
    )
    request = {"method": "POST", "path": "/v1/decisions?x=1", "body": b'{"a":1}'}

    def lmc() -> str:
        return sign_request(lmc_key, LMC_TAX, audience="consent", now=NOW, **request)  # type: ignore[arg-type]

    for _ in range(3):
        await verifier.verify(_sign(), **request)  # type: ignore[arg-type]
    with pytest.raises(TooManyRequestsError, match=f"from {NADRA} within"):
        await verifier.verify(_sign(), **request)  # type: ignore[arg-type]
    assert await verifier.verify(lmc(), **request) == LMC_TAX  # type: ignore[arg-type]
    # Four in all is the whole memory. LMC, under an equal share of it (two of four), is
    # still admitted; holding its share, it is refused like NADRA.
    assert await verifier.verify(lmc(), **request) == LMC_TAX  # type: ignore[arg-type]
    with pytest.raises(TooManyRequestsError, match=r"^too many signed requests within"):
        await verifier.verify(lmc(), **request)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([f"PK/GOV/M{i}" for i in range(8)]),
            st.integers(min_value=0, max_value=40),  # seconds the clock moves first
            st.integers(min_value=-30, max_value=60),  # age when it arrives (< 0: from ahead)
            st.integers(min_value=-1, max_value=30),  # -1: a new assertion; else a replay
        ),
        max_size=120,
    )
)
def test_no_assertion_is_accepted_twice_within_its_window_and_memory_stays_bounded(
    steps: list[tuple[str, int, int, int]],
) -> None:
    """However callers, clocks and replays interleave, an assertion is never accepted again
    while its age still admits it, and neither a caller's share nor the whole memory ever
    holds more than its bound (twice ``max_nonces`` in all)."""
    asyncio.run(_interleave(steps))


async def _interleave(steps: list[tuple[str, int, int, int]]) -> None:
    clock = [NOW]
    checks = RequestChecks(
        "consent", None, clock=lambda: clock[0], max_nonces=6, max_nonces_per_caller=6
    )
    sent: list[tuple[str, RequestBinding]] = []
    accepted: set[tuple[str, str]] = set()
    for n, (caller, advance, age, replay) in enumerate(steps):
        clock[0] += dt.timedelta(seconds=advance)
        if 0 <= replay < len(sent):
            caller, claims = sent[replay]
        else:
            claims = _claims(clock[0] - dt.timedelta(seconds=age), n)
            sent.append((caller, claims))
        try:
            await checks.check(
                claims, caller=caller, method="POST", path="/v1/decisions", body=b"{}", what="a"
            )
        except (UnauthorizedError, TooManyRequestsError):
            pass
        else:
            assert (caller, claims.nonce) not in accepted, "a replay was accepted in its window"
            accepted.add((caller, claims.nonce))
        held = [len(seen) for seen in checks._seen.values()]
        assert max(held, default=0) <= 6
        assert sum(held) <= 2 * 6


def _claims(iat: dt.datetime, n: int) -> RequestBinding:
    return RequestBinding.model_validate(
        {
            **binding_claims(
                audience="consent", method="POST", path="/v1/decisions", body=b"{}", now=iat
            ),
            "nonce": f"nonce-{n:010d}",
        }
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=7), max_size=80))
def test_callers_flooding_at_once_are_held_to_twice_the_total_and_newcomers_get_in(
    callers: list[int],
) -> None:
    """Eight callers, each allowed the whole total, send in any order within one window.
    The memory never holds more than twice the total, and a caller holding nothing is
    turned away only once it does: no group of callers can shut another out before that."""
    asyncio.run(_flood(callers))


async def _flood(callers: list[int]) -> None:
    checks = RequestChecks(
        "consent", None, clock=lambda: NOW, max_nonces=4, max_nonces_per_caller=4
    )
    for n, c in enumerate(callers):
        caller = f"PK/GOV/M{c}"
        holding = len(checks._seen.get(caller, ()))
        try:
            await checks.check(
                _claims(NOW, n),
                caller=caller,
                method="POST",
                path="/v1/decisions",
                body=b"{}",
                what="a",
            )
        except TooManyRequestsError:
            total = sum(len(seen) for seen in checks._seen.values())
            assert holding > 0 or total >= 2 * 4, "a newcomer was shut out"
        assert sum(len(seen) for seen in checks._seen.values()) <= 2 * 4


@pytest.mark.parametrize(
    ("header_kw", "request_kw", "reason"),
    [
        ({}, {"body": b'{"a":2}'}, "body"),
        ({}, {"path": "/v1/decisions?x=2"}, "another request"),
        ({}, {"method": "GET"}, "another request"),
        ({"audience": "audit"}, {}, "not 'consent'"),
        ({"offset": -61}, {}, "stale"),
        ({"offset": 31}, {}, "stale or from the future"),
    ],
)
async def test_assertions_bound_to_other_requests_are_refused(
    seeded: Sessions, header_kw: dict[str, object], request_kw: dict[str, object], reason: str
) -> None:
    verifier = await _verifier(seeded)
    request: dict[str, object] = {"method": "POST", "path": "/v1/decisions?x=1", "body": b'{"a":1}'}
    request.update(request_kw)
    with pytest.raises(UnauthorizedError, match=reason):
        await verifier.verify(_sign(**dict(header_kw)), **request)  # type: ignore[arg-type]


async def test_keys_of_another_member_unknown_keys_and_suspended_clients_fail(
    seeded: Sessions,
) -> None:
    verifier = await _verifier(seeded)
    forged = sign_request(NADRA_KEY, LMC_TAX, audience="consent", method="GET", path="/", now=NOW)
    with pytest.raises(UnauthorizedError, match="not a registered key of PK/LG/LMC"):
        await verifier.verify(forged, method="GET", path="/", body=b"")
    stranger = sign_request(
        PrivateKey.generate(), CIVIL, audience="consent", method="GET", path="/", now=NOW
    )
    with pytest.raises(UnauthorizedError, match="not a registered key"):
        await verifier.verify(stranger, method="GET", path="/", body=b"")
    with pytest.raises(UnauthorizedError, match="Shahrah-Member"):
        await verifier.verify("Bearer x", method="GET", path="/", body=b"")
    async with transaction(seeded) as s:
        await ops.update_subsystem(s, CIVIL, SubsystemUpdate(status="suspended"))
    verifier = await _verifier(seeded)
    with pytest.raises(UnauthorizedError, match="suspended"):
        await verifier.verify(_sign(), method="POST", path="/v1/decisions?x=1", body=b'{"a":1}')


async def test_a_revoked_key_stops_at_the_next_configuration(seeded: Sessions) -> None:
    spare = PrivateKey.generate()
    async with transaction(seeded) as s:
        await ops.add_key(s, KeyCreate(member=NADRA, jwk=spare.public().to_jwk()))
        await ops.revoke_key(s, NADRA_KEY.kid)
    verifier = await _verifier(seeded)
    with pytest.raises(UnauthorizedError, match="revoked"):
        await verifier.verify(_sign(), method="POST", path="/v1/decisions?x=1", body=b'{"a":1}')
    ok = sign_request(spare, CIVIL, audience="consent", method="GET", path="/", now=NOW)
    assert await verifier.verify(ok, method="GET", path="/", body=b"") == CIVIL


async def test_a_replay_is_refused_by_another_process_and_after_a_restart(
    seeded: Sessions,
) -> None:
    """Each process's memory knows only what it admitted: the service's database refuses a
    replay sent to another process of it, or to this one restarted, within the window."""
    pub = await publisher.publish(seeded, OPERATOR, now=NOW, force=True)
    view = GlobalConfView(verify_globalconf(pub.signed, anchor_for(), now=NOW), pub.signed)
    request = {"method": "POST", "path": "/v1/decisions?x=1", "body": b'{"a":1}'}
    header = _sign()
    first, second = nonce_ledger(seeded), nonce_ledger(seeded)
    try:
        one = MemberRequestVerifier("consent", lambda: view, first, clock=lambda: NOW)
        other = MemberRequestVerifier("consent", lambda: view, second, clock=lambda: NOW)
        assert await one.verify(header, **request) == CIVIL  # type: ignore[arg-type]
        with pytest.raises(UnauthorizedError, match="replay"):
            await other.verify(header, **request)  # type: ignore[arg-type]
        await first.close()
        restarted = MemberRequestVerifier("consent", lambda: view, second, clock=lambda: NOW)
        with pytest.raises(UnauthorizedError, match="replay"):
            await restarted.verify(header, **request)  # type: ignore[arg-type]
        # Another service (audience) keeps its own nonces.
        elsewhere = MemberRequestVerifier("audit-witness", lambda: view, second, clock=lambda: NOW)
        witness_header = _sign(audience="audit-witness")
        assert await elsewhere.verify(witness_header, **request) == CIVIL  # type: ignore[arg-type]
    finally:
        await first.close()
        await second.close()


async def test_concurrent_replays_across_processes_pass_once(seeded: Sessions) -> None:
    pub = await publisher.publish(seeded, OPERATOR, now=NOW, force=True)
    view = GlobalConfView(verify_globalconf(pub.signed, anchor_for(), now=NOW), pub.signed)
    request = {"method": "POST", "path": "/v1/decisions?x=1", "body": b'{"a":1}'}
    headers = [_sign() for _ in range(10)]
    ledgers = [nonce_ledger(seeded) for _ in range(3)]
    try:
        verifiers = [
            MemberRequestVerifier("consent", lambda: view, ledger, clock=lambda: NOW)
            for ledger in ledgers
        ]
        outcomes = await asyncio.gather(
            *(v.verify(h, **request) for h in headers for v in verifiers),  # type: ignore[arg-type]
            return_exceptions=True,
        )
    finally:
        for ledger in ledgers:
            await ledger.close()
    admitted = [o for o in outcomes if o == CIVIL]
    assert len(admitted) == len(headers)
    assert all(isinstance(o, UnauthorizedError) for o in outcomes if o != CIVIL)


async def test_nonces_past_the_window_are_forgotten(seeded: Sessions) -> None:
    pub = await publisher.publish(seeded, OPERATOR, now=NOW, force=True)
    view = GlobalConfView(verify_globalconf(pub.signed, anchor_for(), now=NOW), pub.signed)
    request = {"method": "POST", "path": "/v1/decisions?x=1", "body": b'{"a":1}'}
    clock = [NOW]
    ledger = nonce_ledger(seeded)
    try:
        verifier = MemberRequestVerifier("consent", lambda: view, ledger, clock=lambda: clock[0])
        ends = NOW + MAX_AGE + CLOCK_SKEW  # no clock within the skew takes it after that
        later = [ends + PURGE_MARGIN, ends + PURGE_MARGIN + PURGE_EVERY]
        kept = []
        for at in (NOW, *later):
            clock[0] = at
            await verifier.verify(_sign(now=at), **request)  # type: ignore[arg-type]
            async with transaction(seeded, write=False) as s:
                rows = await s.scalars(select(SignedRequestNonce))
                kept.append(sorted(row.expires_at for row in rows))
        # The first is kept a margin past its end (another process of the service may have a
        # clock that far behind), then purged.
        assert kept[1] == [ends, later[0] + MAX_AGE + CLOCK_SKEW]
        assert kept[2] == [at + MAX_AGE + CLOCK_SKEW for at in later]
    finally:
        await ledger.close()


async def test_a_nonce_that_is_not_base64url_is_refused_before_it_is_kept(
    seeded: Sessions,
) -> None:
    """A NUL in a nonce failed PostgreSQL's whole batch of nonces: every member's request
    in it got a 500, not only the one that sent it."""
    pub = await publisher.publish(seeded, OPERATOR, now=NOW, force=True)
    view = GlobalConfView(verify_globalconf(pub.signed, anchor_for(), now=NOW), pub.signed)
    request = {"method": "POST", "path": "/v1/decisions?x=1", "body": b'{"a":1}'}
    claims = {
        "client": str(CIVIL),
        **binding_claims(audience="consent", now=NOW, **request),  # type: ignore[arg-type]
        "nonce": "\x00" * 16,
    }
    poisoned = f"{SCHEME} {jws.sign_json(claims, NADRA_KEY, typ=MEMBER_REQUEST_TYP)}"
    ledger = nonce_ledger(seeded)
    try:
        verifier = MemberRequestVerifier("consent", lambda: view, ledger, clock=lambda: NOW)
        outcomes = await asyncio.gather(
            verifier.verify(poisoned, **request),  # type: ignore[arg-type]
            *(verifier.verify(_sign(), **request) for _ in range(5)),  # type: ignore[arg-type]
            return_exceptions=True,
        )
    finally:
        await ledger.close()
    assert isinstance(outcomes[0], UnauthorizedError)
    assert outcomes[0].message.endswith("assertion payload is malformed")
    assert outcomes[1:] == [CIVIL] * 5
