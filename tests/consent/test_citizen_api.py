"""The citizen API: sign-in and lockout, my consents and my wards', the lifecycle actions,
history, receipts; someone else's consent is never seen."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import pytest
from jwcrypto import jwk as jwcrypto_jwk
from jwcrypto import jws as jwcrypto_jws

from consent import citizens
from consent.citizens import MAX_FAILURES
from consent.receipt import RECEIPT_TYP, verify_receipt
from consent.state import SIGNIN_LIMITER
from core import jws
from core.canonical import b64url, b64url_decode
from core.db import transaction, utcnow
from core.errors import InvalidSignatureError, UnauthorizedError
from core.keys import KeySet, PrivateKey
from core.passwords import LOCKOUT, wrong_credentials
from tests.consent.conftest import (
    CITIZEN,
    CONSENT_KEY,
    PASSWORD,
    PSEUDONYMS,
    STRANGER,
    WARD,
    Harness,
)
from tests.passwords import count_checked
from tests.web import raw_status


async def test_sign_in_me_and_sign_out(harness: Harness) -> None:
    await harness.accounts.add(CITIZEN, "Ayesha Khan", PASSWORD)
    async with harness.http.post(
        harness.base + "/v1/citizen/session", json={"cnic": "3520212345671", "password": PASSWORD}
    ) as r:
        assert r.status == 201
        session = await r.json()
    token = session["token"]
    assert token.startswith("shr_cz_")
    await harness.add_ward(CITIZEN, WARD)
    status, me = await harness.citizen("GET", "/v1/citizen/me", token)
    assert status == 200
    assert me == {
        "cnic": str(CITIZEN),
        "name": "Ayesha Khan",
        "wards": [{"cnic": str(WARD), "relation": "parent"}],
    }
    status, _ = await harness.citizen("DELETE", "/v1/citizen/session", token)
    assert status == 204
    status, body = await harness.citizen("GET", "/v1/citizen/me", token)
    assert status == 401
    assert "sign in again" in body["message"]


async def _attempt(harness: Harness, cnic: str, password: str) -> tuple[int, str]:
    async with harness.http.post(
        harness.base + "/v1/citizen/session", json={"cnic": cnic, "password": password}
    ) as r:
        return r.status, str((await r.json()).get("message", ""))


def _forget_address(harness: Harness) -> None:
    """Clear the per-address throttle, to look at the account's own lock-out alone."""
    limiter = harness.app[SIGNIN_LIMITER]
    limiter._failures.pop("addr:127.0.0.1", None)
    limiter._locked.pop("addr:127.0.0.1", None)


async def test_a_locked_account_answers_like_a_wrong_password_or_an_unknown_cnic(
    harness: Harness,
) -> None:
    """No status or message tells a real account from an unknown CNIC, or says whether a
    password tried on a locked account was right."""
    await harness.accounts.add(CITIZEN, "Ayesha Khan", PASSWORD)
    answers: dict[str, list[tuple[int, str]]] = {str(CITIZEN): [], str(STRANGER): []}
    for cnic, seen in answers.items():
        for _ in range(MAX_FAILURES):
            seen.append(await _attempt(harness, cnic, "not the password"))
            _forget_address(harness)
        seen.append(await _attempt(harness, cnic, PASSWORD))  # the right one, for CITIZEN
        _forget_address(harness)
    assert answers[str(CITIZEN)] == answers[str(STRANGER)]
    assert {a for seen in answers.values() for a in seen} == {(401, str(wrong_credentials("CNIC")))}
    assert "locked" in str(wrong_credentials("CNIC"))
    await harness.accounts.unlock(CITIZEN)
    assert (await _attempt(harness, str(CITIZEN), PASSWORD))[0] == 201


async def test_the_lock_out_expires(harness: Harness) -> None:
    await harness.accounts.add(CITIZEN, "Ayesha Khan", PASSWORD)
    for _ in range(MAX_FAILURES):
        with pytest.raises(UnauthorizedError):
            await harness.accounts.sign_in(CITIZEN, "not the password")
    with pytest.raises(UnauthorizedError):
        await harness.accounts.sign_in(CITIZEN, PASSWORD)
    later = dt.datetime.now(dt.UTC) + LOCKOUT + dt.timedelta(seconds=1)
    harness.accounts.clock = lambda: later
    assert (await harness.accounts.sign_in(CITIZEN, PASSWORD)).cnic == CITIZEN


async def test_a_burst_of_guesses_gets_no_more_than_five_passwords_checked(
    harness: Harness,
) -> None:
    """Forty wrong passwords at once: each is counted before it is checked, so only the
    first MAX_FAILURES reach the account's hash, and then even the right one is refused,
    in the same words."""
    accounts = harness.accounts
    await accounts.add(CITIZEN, "Ayesha Khan", PASSWORD)
    checked = count_checked(accounts)
    results = await asyncio.gather(
        *(accounts.sign_in(CITIZEN, f"guess number {n}") for n in range(40)),
        return_exceptions=True,
    )
    assert len(checked) <= MAX_FAILURES
    assert {str(r) for r in results} == {str(wrong_credentials("CNIC"))}
    assert all(isinstance(r, UnauthorizedError) for r in results)
    with pytest.raises(UnauthorizedError) as right:
        await accounts.sign_in(CITIZEN, PASSWORD)
    with pytest.raises(UnauthorizedError) as unknown:
        await accounts.sign_in(STRANGER, PASSWORD)
    assert str(right.value) == str(unknown.value) == str(wrong_credentials("CNIC"))
    assert len(checked) <= MAX_FAILURES


async def test_sign_in_through_the_api_is_throttled_per_address(harness: Harness) -> None:
    """The portal's per-address throttle guards the API too: different CNICs from one
    address, then the right password, which is refused for now."""
    await harness.accounts.add(CITIZEN, "Ayesha Khan", PASSWORD)
    for n in range(5):
        status, _ = await _attempt(harness, f"61101-000000{n}-1", "nope")
        assert status == 401
    async with harness.http.post(
        harness.base + "/v1/citizen/session",
        json={"cnic": str(CITIZEN), "password": PASSWORD},
    ) as r:
        assert r.status == 429
        assert (await r.json())["detail"]["retry_after"] > 0


async def test_sessions_expire(harness: Harness) -> None:
    token = await harness.sign_in()
    harness.accounts.clock = lambda: dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    status, _ = await harness.citizen("GET", "/v1/citizen/me", token)
    assert status == 401


async def test_the_lifecycle_through_the_api(harness: Harness) -> None:
    consent = await harness.request_consent()
    cid = consent["id"]
    token = await harness.sign_in()
    status, pending = await harness.citizen("GET", "/v1/citizen/consents?status=PENDING", token)
    assert [c["id"] for c in pending["items"]] == [cid]
    steps = [
        ("resume", 409),
        ("approve", 200),
        ("approve", 409),
        ("pause", 200),
        ("pause", 409),
        ("resume", 200),
        ("revoke", 200),
        ("resume", 409),
        ("approve", 409),
    ]
    for action, expected in steps:
        status, body = await harness.citizen("POST", f"/v1/citizen/consents/{cid}/{action}", token)
        assert status == expected, (action, body)
        if status == 409:
            assert body["type"] == "Client.Conflict"
            assert action in body["message"]
    _, final = await harness.citizen("GET", f"/v1/citizen/consents/{cid}", token)
    assert final["status"] == "REVOKED"
    assert final["grantor"] == {"cnic": str(CITIZEN), "relation": "self"}

    status, history = await harness.citizen("GET", f"/v1/citizen/consents/{cid}/history", token)
    assert status == 200
    assert [(h["action"], h["status"]) for h in history] == [
        ("request", "PENDING"),
        ("approve", "ACTIVE"),
        ("pause", "PAUSED"),
        ("resume", "ACTIVE"),
        ("revoke", "REVOKED"),
    ]
    assert [h["log_index"] for h in history] == list(range(5))
    assert [h["log_entry"].encode() for h in history] == await harness.log_entries()
    entry = json.loads(history[1]["log_entry"])
    assert entry["actor"] == PSEUDONYMS(CITIZEN)  # the log holds pseudonyms only
    assert entry["subject"] == PSEUDONYMS(CITIZEN)
    assert history[1]["actor"] == str(CITIZEN)  # the citizen sees who acted


async def test_a_guardian_acts_for_a_ward_and_is_recorded_as_grantor(harness: Harness) -> None:
    consent = await harness.request_consent(subject=str(WARD))
    parent = await harness.sign_in(CITIZEN)
    status, _ = await harness.citizen(
        "POST", f"/v1/citizen/consents/{consent['id']}/approve", parent
    )
    assert status == 404  # no guardianship yet: not even visible
    await harness.add_ward(CITIZEN, WARD, "court_guardian")
    status, listed = await harness.citizen("GET", f"/v1/citizen/consents?subject={WARD}", parent)
    assert [c["id"] for c in listed["items"]] == [consent["id"]]
    status, approved = await harness.citizen(
        "POST", f"/v1/citizen/consents/{consent['id']}/approve", parent
    )
    assert status == 200
    assert approved["grantor"] == {"cnic": str(CITIZEN), "relation": "court_guardian"}
    status, _ = await harness.citizen("GET", f"/v1/citizen/consents?subject={STRANGER}", parent)
    assert status == 404
    # When the guardianship ends, so does the guardian's access to the ward's consents.
    async with transaction(harness.db) as s:
        (guardianship,) = await citizens.guardianships(s, WARD)
        await citizens.end_guardianship(s, guardianship.id, utcnow())
    status, _ = await harness.citizen("GET", f"/v1/citizen/consents/{consent['id']}", parent)
    assert status == 404
    status, _ = await harness.citizen(
        "POST", f"/v1/citizen/consents/{consent['id']}/revoke", parent
    )
    assert status == 404


@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        ("GET", ""),
        ("POST", "/approve"),
        ("POST", "/revoke"),
        ("GET", "/history"),
        ("GET", "/receipt"),
    ],
)
async def test_someone_elses_consent_is_not_found(
    harness: Harness, method: str, suffix: str
) -> None:
    consent = await harness.request_consent()
    stranger = await harness.sign_in(STRANGER)
    status, theirs = await harness.citizen(
        method, f"/v1/citizen/consents/{consent['id']}{suffix}", stranger
    )
    status_missing, missing = await harness.citizen(
        method, f"/v1/citizen/consents/cns-{'0' * 32}{suffix}", stranger
    )
    assert (status, status_missing) == (404, 404)
    assert theirs["message"].replace(consent["id"], "X") == missing["message"].replace(
        f"cns-{'0' * 32}", "X"
    )
    _, listed = await harness.citizen("GET", "/v1/citizen/consents", stranger)
    assert listed["items"] == []
    owner = await harness.sign_in()
    _, mine = await harness.citizen("GET", f"/v1/citizen/consents/{consent['id']}", owner)
    assert mine["status"] == "PENDING"  # nothing changed


async def test_someone_elses_consent_as_a_page_cursor_is_refused_like_a_missing_one(
    harness: Harness,
) -> None:
    """Accepted as ``after``, another citizen's consent id would say that it exists and,
    page by page, when it was requested."""
    consent = await harness.request_consent()
    stranger = await harness.sign_in(STRANGER)
    missing = f"cns-{'0' * 32}"
    status, theirs = await harness.citizen(
        "GET", f"/v1/citizen/consents?after={consent['id']}", stranger
    )
    status_missing, nothing = await harness.citizen(
        "GET", f"/v1/citizen/consents?after={missing}", stranger
    )
    assert (status, status_missing) == (400, 400), theirs
    assert theirs["message"].replace(consent["id"], "X") == nothing["message"].replace(missing, "X")


async def test_receipts_verify_with_ours_and_with_another_jose_library(harness: Harness) -> None:
    consent = await harness.active_consent(use_limit=5)
    token = await harness.sign_in()
    status, signed = await harness.citizen(
        "GET", f"/v1/citizen/consents/{consent['id']}/receipt", token
    )
    assert status == 200
    keys = KeySet([CONSENT_KEY.public()])
    receipt = verify_receipt(signed, keys)
    doc = receipt.document
    assert receipt.record_id == consent["id"]
    assert receipt.kid == CONSENT_KEY.kid
    assert doc["pii_principal_id"] == str(CITIZEN)
    assert doc["status"] == "ACTIVE"
    assert doc["event_state"] == "given"
    assert doc["purposes"][0]["lawful_basis"] == "consent"
    assert doc["purposes"][0]["purpose_name"] == "Identity verification"
    assert doc["pii_controllers"][0]["party_name"] == "Lahore Metropolitan Corporation"
    assert doc["pii_information"][0]["pii_attributes"] == ["/name", "/address/city"]
    assert doc["validity"]["use_limit"] == 5
    assert [e["event_state"] for e in doc["events"]] == ["requested", "given"]

    # Any JOSE library verifies it with the published JWK.
    other = jwcrypto_jws.JWS()
    other.deserialize(signed)
    other.verify(jwcrypto_jwk.JWK(**CONSENT_KEY.public().to_jwk()))
    assert json.loads(other.payload)["record_id"] == consent["id"]
    header = json.loads(b64url_decode(signed.split(".")[0]))
    assert header["typ"] == RECEIPT_TYP

    # A changed byte, another key, or another type of signature: refused.
    head, payload, sig = signed.split(".")
    forged = json.loads(b64url_decode(payload))
    forged["status"] = "REVOKED"
    with pytest.raises(InvalidSignatureError):
        verify_receipt(f"{head}.{b64url(json.dumps(forged).encode())}.{sig}", keys)
    with pytest.raises(InvalidSignatureError):
        verify_receipt(signed, KeySet([PrivateKey.generate().public()]))
    with pytest.raises(InvalidSignatureError, match="not of type"):
        verify_receipt(jws.sign_json({"a": 1}, CONSENT_KEY, typ="other+jws"), keys)


@pytest.mark.parametrize("path", ["/v1/citizen/me", "/v1/operator/guardianships"])
async def test_a_bearer_token_that_is_not_utf8_is_refused(harness: Harness, path: str) -> None:
    """Bytes that are not UTF-8 reach the handler as lone surrogates, which cannot be hashed
    to look the token up: a 401, not an internal error."""
    status = await raw_status(harness.base, path, b"Authorization: Bearer shr_cz_\xff\xfe\r\n")
    assert status == 401
