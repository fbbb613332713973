"""The consent service's replay memory for member-signed requests, as `consent serve` sizes
it: each member has its own share, so one member's flood leaves the others answered."""

from __future__ import annotations

from typing import Any

import pytest

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
