"""The consent service's replay memory for member-signed requests, as `consent serve` sizes
it: each member has its own share, so one member's flood leaves the others answered."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from core.keys import PrivateKey
from registry.memberauth import sign_request
from tests.consent.conftest import LMC_KEY, Harness
from tests.registry.federation import CIVIL, LMC_TAX, NADRA_KEY

SHARE = 3


@pytest.fixture
def harness_config() -> dict[str, Any]:
    return {"signed_requests_per_member": SHARE, "signed_requests": 100}


async def test_a_member_past_its_share_is_told_to_wait_and_others_are_answered(
    harness: Harness,
) -> None:
    for _ in range(SHARE):
        status, _ = await harness.member("GET", "/v1/consents", key=NADRA_KEY, client=CIVIL)
        assert status == 200
    status, body = await harness.member("GET", "/v1/consents", key=NADRA_KEY, client=CIVIL)
    assert status == 429
    assert body["type"] == "Client.TooManyRequests"
    assert "PK/FED/NADRA" in body["message"]
    status, _ = await harness.member("GET", "/v1/consents", key=LMC_KEY, client=LMC_TAX)
    assert status == 200


async def test_an_unsigned_request_is_refused_before_its_body_is_read(harness: Harness) -> None:
    """Whoever holds no member key cannot make the service read and hold a body of up to its
    limit: the assertion is checked first, so a body that never ends is not waited for."""

    async def endless() -> AsyncIterator[bytes]:
        yield b'{"consumer": "'
        await asyncio.sleep(30)
        yield b'"}'

    forged = sign_request(
        PrivateKey.generate(),
        LMC_TAX,
        audience="consent",
        method="POST",
        path="/v1/consents",
        body=b"{}",
    )
    for authorization in ("Shahrah-Member nonsense", forged):
        async with asyncio.timeout(5):
            async with harness.http.post(
                harness.base + "/v1/consents",
                data=endless(),
                headers={"Authorization": authorization, "Content-Type": "application/json"},
            ) as resp:
                assert resp.status == 401
