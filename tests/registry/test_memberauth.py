"""Member-signed requests to federation services."""

from __future__ import annotations

import datetime as dt

import pytest

from core.db import Sessions, transaction
from core.errors import TooManyRequestsError, UnauthorizedError
from core.keys import PrivateKey
from registry import publisher
from registry import service as ops
from registry.globalconf import GlobalConfView, verify_globalconf
from registry.memberauth import MemberRequestVerifier, sign_request
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
    return MemberRequestVerifier("consent", lambda: view, clock=lambda: NOW)


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
    assert (
        verifier.verify(header, method="POST", path="/v1/decisions?x=1", body=b'{"a":1}') == CIVIL
    )
    with pytest.raises(UnauthorizedError, match="replay"):
        verifier.verify(header, method="POST", path="/v1/decisions?x=1", body=b'{"a":1}')


async def test_a_full_nonce_memory_refuses_rather_than_forgets(seeded: Sessions) -> None:
    pub = await publisher.publish(seeded, OPERATOR, now=NOW, force=True)
    view = GlobalConfView(verify_globalconf(pub.signed, anchor_for(), now=NOW), pub.signed)
    clock = [NOW]
    verifier = MemberRequestVerifier("consent", lambda: view, clock=lambda: clock[0], max_nonces=2)
    request = {"method": "POST", "path": "/v1/decisions?x=1", "body": b'{"a":1}'}
    first = _sign()
    verifier.verify(first, **request)  # type: ignore[arg-type]
    verifier.verify(_sign(), **request)  # type: ignore[arg-type]
    with pytest.raises(TooManyRequestsError, match="try again shortly"):
        verifier.verify(_sign(), **request)  # type: ignore[arg-type]
    # The first assertion is still inside its window, so it is still a replay.
    with pytest.raises(UnauthorizedError, match="replay"):
        verifier.verify(first, **request)  # type: ignore[arg-type]
    clock[0] = NOW + dt.timedelta(minutes=2)  # both have aged out: room again
    verifier.verify(_sign(now=clock[0]), **request)  # type: ignore[arg-type]


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
        verifier.verify(_sign(**dict(header_kw)), **request)  # type: ignore[arg-type]


async def test_keys_of_another_member_unknown_keys_and_suspended_clients_fail(
    seeded: Sessions,
) -> None:
    verifier = await _verifier(seeded)
    forged = sign_request(NADRA_KEY, LMC_TAX, audience="consent", method="GET", path="/", now=NOW)
    with pytest.raises(UnauthorizedError, match="not a registered key of PK/LG/LMC"):
        verifier.verify(forged, method="GET", path="/", body=b"")
    stranger = sign_request(
        PrivateKey.generate(), CIVIL, audience="consent", method="GET", path="/", now=NOW
    )
    with pytest.raises(UnauthorizedError, match="not a registered key"):
        verifier.verify(stranger, method="GET", path="/", body=b"")
    with pytest.raises(UnauthorizedError, match="Shahrah-Member"):
        verifier.verify("Bearer x", method="GET", path="/", body=b"")
    async with transaction(seeded) as s:
        await ops.update_subsystem(s, CIVIL, SubsystemUpdate(status="suspended"))
    verifier = await _verifier(seeded)
    with pytest.raises(UnauthorizedError, match="suspended"):
        verifier.verify(_sign(), method="POST", path="/v1/decisions?x=1", body=b'{"a":1}')


async def test_a_revoked_key_stops_at_the_next_configuration(seeded: Sessions) -> None:
    spare = PrivateKey.generate()
    async with transaction(seeded) as s:
        await ops.add_key(s, KeyCreate(member=NADRA, jwk=spare.public().to_jwk()))
        await ops.revoke_key(s, NADRA_KEY.kid)
    verifier = await _verifier(seeded)
    with pytest.raises(UnauthorizedError, match="revoked"):
        verifier.verify(_sign(), method="POST", path="/v1/decisions?x=1", body=b'{"a":1}')
    ok = sign_request(spare, CIVIL, audience="consent", method="GET", path="/", now=NOW)
    assert verifier.verify(ok, method="GET", path="/", body=b"") == CIVIL
