"""POST /v1/pseudonyms: every member may ask, but not in bulk (a token bucket per member), so
pseudonyms in audit records cannot be re-identified by trying CNIC after CNIC."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from multidict import CIMultiDictProxy
from prometheus_client.parser import text_string_to_metric_families

from consent.client import ConsentUnavailableError
from consent.messages import PSEUDONYM_TYP, PseudonymAnswer
from core import jws
from core.ids import Cnic
from core.keys import KeySet
from registry.memberauth import sign_request
from tests.consent.conftest import CONSENT_KEY, LMC_KEY, PSEUDONYMS, Harness
from tests.registry.federation import CIVIL, LMC_TAX, NADRA_KEY

BURST = 5


@pytest.fixture
def harness_config() -> dict[str, Any]:
    return {"pseudonym_rate": 2.0, "pseudonym_burst": BURST}


def _cnic(i: int) -> Cnic:
    return Cnic(f"35202-{i:07d}-1")


async def _lookup(
    harness: Harness, i: int, *, key: Any = LMC_KEY, client: Any = LMC_TAX
) -> tuple[int, CIMultiDictProxy[str], str]:
    """Status, headers and body of one member-signed lookup of CNIC number ``i``."""
    body = f'{{"subject": "{_cnic(i)}", "nonce": "n{i:020d}"}}'.encode()
    auth = sign_request(
        key, client, audience="consent", method="POST", path="/v1/pseudonyms", body=body
    )
    async with harness.http.post(
        harness.base + "/v1/pseudonyms",
        data=body,
        headers={"Authorization": auth, "Content-Type": "application/json"},
    ) as resp:
        return resp.status, resp.headers, await resp.text()


async def _counts(harness: Harness) -> dict[tuple[str, str], float]:
    async with harness.http.get(harness.base + "/metrics") as resp:
        text = await resp.text()
    return {
        (s.labels["member"], s.labels["outcome"]): s.value
        for family in text_string_to_metric_families(text)
        if family.name == "shahrah_consent_pseudonym_requests"
        for s in family.samples
        if s.name.endswith("_total")
    }


async def test_a_member_is_answered_its_burst_then_told_when_to_come_back(
    harness: Harness,
) -> None:
    for i in range(BURST):
        status, _, token = await _lookup(harness, i)
        assert status == 200
        answer = PseudonymAnswer.model_validate_json(
            jws.verify(token, KeySet([CONSENT_KEY.public()]), typ=PSEUDONYM_TYP).payload
        )
        assert answer.pseudonym == PSEUDONYMS(_cnic(i))

    status, headers, text = await _lookup(harness, BURST)
    assert status == 429
    error = json.loads(text)
    assert error["type"] == "Client.TooManyRequests"
    assert headers["Retry-After"] == str(error["detail"]["retry_after"]) == "1"
    assert _cnic(BURST).digits[5:12] not in text

    status, _, _ = await _lookup(harness, BURST, key=NADRA_KEY, client=CIVIL)  # its own bucket
    assert status == 200

    await asyncio.sleep(int(headers["Retry-After"]))
    assert (await _lookup(harness, BURST + 1))[0] == 200
    assert await _counts(harness) == {
        ("PK/LG/LMC", "answered"): BURST + 1,
        ("PK/LG/LMC", "limited"): 1,
        ("PK/FED/NADRA", "answered"): 1,
    }


async def test_the_gateway_client_fails_only_the_lookup_that_was_refused(
    harness: Harness,
) -> None:
    async with harness.client() as client:
        known = (await client.pseudonym(_cnic(0))).value
        for i in range(1, BURST):
            await client.pseudonym(_cnic(i))
        with pytest.raises(ConsentUnavailableError) as caught:
            await client.pseudonym(_cnic(BURST))
        assert "429" in caught.value.message
        assert _cnic(BURST).digits[5:12] not in caught.value.message
        assert (await client.pseudonym(_cnic(0))).value == known  # cached: no lookup, no refusal
        await asyncio.sleep(1)
        assert (await client.pseudonym(_cnic(BURST))).value == PSEUDONYMS(_cnic(BURST))
