"""Requests signed by a central service: accepted from the allowed caller only, and never
when forged, replayed, bound to another request or meant for another audience."""

from __future__ import annotations

import datetime as dt

import pytest

from core.db import Sessions, transaction
from core.errors import ForbiddenError, UnauthorizedError
from core.keys import KeySet, PrivateKey
from registry import publisher
from registry import service as ops
from registry.globalconf import GlobalConfView, Jwks, verify_globalconf
from registry.memberauth import sign_request
from registry.payloads import CentralServiceSet
from registry.serviceauth import ServiceRequestVerifier, sign_service_request
from tests.registry.federation import CIVIL, NADRA_KEY, OPERATOR
from tests.registry.test_globalconf import anchor_for

CONSENT_KEY = PrivateKey.generate()
WITNESS_KEY = PrivateKey.generate()
PATH = "/api/v1/timeline"
BODY = b'{"cnic":"35202-1234567-1"}'


async def _verifier(db: Sessions, now: dt.datetime) -> ServiceRequestVerifier:
    async with transaction(db) as s:
        for name, key in (("consent", CONSENT_KEY), ("audit-witness", WITNESS_KEY)):
            await ops.set_central_service(
                s,
                name,
                CentralServiceSet(
                    url=f"http://127.0.0.1/{name}",
                    keys=Jwks.model_validate(KeySet([key.public()]).to_jwks()),
                ),
            )
    pub = await publisher.publish(db, OPERATOR, now=now, force=True)
    view = GlobalConfView(verify_globalconf(pub.signed, anchor_for(), now=now), pub.signed)
    return ServiceRequestVerifier(
        "audit-witness", lambda: view, {"consent"}, None, clock=lambda: now
    )


def _sign(now: dt.datetime, *, key: PrivateKey = CONSENT_KEY, **kw: object) -> str:
    args: dict[str, object] = {
        "audience": "audit-witness",
        "method": "POST",
        "path": PATH,
        "body": BODY,
        "now": now,
    }
    args.update(kw)
    service = str(args.pop("service", "consent"))
    return sign_service_request(key, service, **args)  # type: ignore[arg-type]


async def _verify(verifier: ServiceRequestVerifier, header: str, **kw: object) -> str:
    request: dict[str, object] = {"method": "POST", "path": PATH, "body": BODY}
    request.update(kw)
    return await verifier.verify(header, **request)  # type: ignore[arg-type]


async def test_the_allowed_service_is_let_in_once(seeded: Sessions) -> None:
    now = dt.datetime.now(dt.UTC)
    verifier = await _verifier(seeded, now)
    header = _sign(now)
    assert await _verify(verifier, header) == "consent"
    with pytest.raises(UnauthorizedError, match="replay"):
        await _verify(verifier, header)


@pytest.mark.parametrize(
    ("sign_kw", "request_kw", "reason"),
    [
        ({}, {"body": b"{}"}, "body"),
        ({}, {"path": PATH + "?x=1"}, "another request"),
        ({}, {"method": "GET"}, "another request"),
        ({"audience": "consent"}, {}, "is for 'consent', not 'audit-witness'"),
        ({"offset": -61}, {}, "stale"),
        ({"offset": 31}, {}, "from the future"),
    ],
)
async def test_assertions_for_another_request_or_audience_are_refused(
    seeded: Sessions, sign_kw: dict[str, object], request_kw: dict[str, object], reason: str
) -> None:
    now = dt.datetime.now(dt.UTC)
    verifier = await _verifier(seeded, now)
    sign_kw = dict(sign_kw)  # the parameters are shared by both backends' runs
    offset = dt.timedelta(seconds=float(sign_kw.pop("offset", 0)))  # type: ignore[arg-type]
    with pytest.raises(UnauthorizedError, match=reason):
        await _verify(verifier, _sign(now + offset, **sign_kw), **request_kw)


async def test_forgeries_and_other_callers_are_refused(seeded: Sessions) -> None:
    now = dt.datetime.now(dt.UTC)
    verifier = await _verifier(seeded, now)
    # A key that is not the consent service's, claiming to be it.
    with pytest.raises(UnauthorizedError, match="not a key of central service 'consent'"):
        await _verify(verifier, _sign(now, key=PrivateKey.generate()))
    # A name that is no central service.
    with pytest.raises(UnauthorizedError, match="'registry' is not a central service"):
        await _verify(verifier, _sign(now, service="registry"))
    # A real central service that is not allowed to call.
    with pytest.raises(ForbiddenError, match="'audit-witness' may not call"):
        await _verify(verifier, _sign(now, key=WITNESS_KEY, service="audit-witness"))
    # A member's valid assertion is not a service's, whichever scheme it is sent under.
    member = sign_request(NADRA_KEY, CIVIL, audience="audit-witness", method="POST", path=PATH)
    with pytest.raises(UnauthorizedError, match="Shahrah-Service"):
        await _verify(verifier, member, body=b"")
    with pytest.raises(UnauthorizedError, match="refused"):
        await _verify(verifier, "Shahrah-Service " + member.partition(" ")[2], body=b"")
    # The consent service's key signing a member-typed assertion does not pass either.
    typed_wrong = sign_request(
        CONSENT_KEY, CIVIL, audience="audit-witness", method="POST", path=PATH, body=BODY
    )
    with pytest.raises(UnauthorizedError, match="refused"):
        await _verify(verifier, "Shahrah-Service " + typed_wrong.partition(" ")[2])
    tampered = _sign(now)
    head, payload, sig = tampered.split(".")
    # A different first character changes r; overwriting the tail with a fixed value would
    # leave one signature in 256 (those ending in a zero byte) untouched.
    flipped = ("B" if sig[0] == "A" else "A") + sig[1:]
    with pytest.raises(UnauthorizedError):
        await _verify(verifier, f"{head}.{payload}.{flipped}")
