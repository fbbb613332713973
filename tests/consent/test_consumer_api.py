"""The consumer API: members request consents for their own subsystems and list theirs; every
bad request is refused with a precise 4xx and changes nothing."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import func, select

from consent import models as m
from core.db import transaction, utcnow
from tests.consent.conftest import (
    CITIZEN,
    PARCELS,
    PLRA_KEY,
    Harness,
    consent_body,
)
from tests.registry.federation import CIVIL, NADRA_KEY, PERSON, PLRA_LAND


async def _counts(h: Harness) -> tuple[int, int, int]:
    async with transaction(h.db, write=False) as s:
        consents = await s.scalar(select(func.count()).select_from(m.Consent))
        events = await s.scalar(select(func.count()).select_from(m.ConsentEvent))
        head = await s.scalar(select(m.FeedHead.seq))
    return int(consents or 0), int(events or 0), int(head or 0)


async def test_a_request_is_recorded_pending_and_logged(harness: Harness) -> None:
    consent = await harness.request_consent(use_limit=10, frequency={"max": 5, "per": "day"})
    assert consent["status"] == "PENDING"
    assert consent["id"].startswith("cns-")
    assert consent["subject"] == str(CITIZEN)
    assert consent["services"] == [{"service": str(PERSON), "fields": ["/name", "/address/city"]}]
    assert consent["frequency"] == {"max": 5, "per": "day"}
    assert consent["grantor"] is None
    assert consent["version"] >= 1
    entries = await harness.log_entries()
    assert len(entries) == 1
    assert b'"action":"request"' in entries[0]
    assert str(CITIZEN).encode() not in entries[0]  # pseudonyms only

    status, page = await harness.member("GET", "/v1/consents")
    assert status == 200
    assert [c["id"] for c in page["items"]] == [consent["id"]]
    status, one = await harness.member("GET", f"/v1/consents/{consent['id']}")
    assert (status, one["status"]) == (200, "PENDING")


async def test_listing_pages_and_filters_and_shows_only_your_own(harness: Harness) -> None:
    ids = [(await harness.request_consent())["id"] for _ in range(3)]
    status, page = await harness.member("GET", "/v1/consents?limit=2")
    assert status == 200
    assert [c["id"] for c in page["items"]] == ids[::-1][:2]
    status, rest = await harness.member("GET", f"/v1/consents?limit=2&after={page['next_after']}")
    assert [c["id"] for c in rest["items"]] == ids[:1]
    assert rest["next_after"] is None
    status, none = await harness.member("GET", "/v1/consents?status=ACTIVE")
    assert none["items"] == []
    # PLRA holds none of them, and cannot see one by id either.
    status, theirs = await harness.member("GET", "/v1/consents", key=PLRA_KEY, client=PLRA_LAND)
    assert (status, theirs["items"]) == (200, [])
    status, _ = await harness.member(
        "GET", f"/v1/consents/{ids[0]}", key=PLRA_KEY, client=PLRA_LAND
    )
    assert status == 404
    status, _ = await harness.member("GET", f"/v1/consents?consumer={PLRA_LAND}")
    assert status == 403
    # Nor can PLRA page from LMC's consent: that would tell it exists, and when it was asked.
    status, cursor = await harness.member(
        "GET", f"/v1/consents?after={ids[0]}", key=PLRA_KEY, client=PLRA_LAND
    )
    assert (status, cursor["type"]) == (400, "Client.BadRequest"), cursor


def _later(days: int) -> str:
    return (utcnow() + dt.timedelta(days=days)).isoformat()


BAD: list[tuple[str, dict[str, Any], int, str]] = [
    (
        "dates in the wrong order",
        {"valid_from": _later(5), "expires_at": _later(1)},
        400,
        "expires_at must be later than valid_from",
    ),
    ("expiry in the past", {"valid_from": None, "expires_at": _later(-1)}, 400, "in the past"),
    ("too long", {"expires_at": _later(6 * 366)}, 400, "at most"),
    ("naive time", {"expires_at": "2030-01-01T00:00:00"}, 400, "time zone"),
    # Valid as written, but past year 9999 (or before year 1) once converted to UTC.
    ("time beyond UTC's range", {"expires_at": "9999-12-31T23:00:00-05:00"}, 400, "range"),
    ("time before UTC's range", {"valid_from": "0001-01-01T00:30:00+05:00"}, 400, "range"),
    ("malformed CNIC", {"subject": "35202-123"}, 400, "subject"),
    ("unknown purpose", {"purpose": "marketing"}, 422, "catalogue"),
    (
        "field not in the schema",
        {"services": [{"service": str(PERSON), "fields": ["/name", "/religion"]}]},
        422,
        "/religion is not a field of nadra-person version 1",
    ),
    (
        "not a pointer",
        {"services": [{"service": str(PERSON), "fields": ["name"]}]},
        400,
        "JSON Pointer",
    ),
    (
        "unknown service",
        {"services": [{"service": "PK/FED/NADRA/civil-registry/ghost/v1", "fields": ["/a"]}]},
        422,
        "not registered",
    ),
    (
        "unknown consumer",
        {"consumer": "PK/LG/LMC/no-such-system"},
        422,
        "not registered",
    ),
    (
        "another member's subsystem",
        {"consumer": str(PLRA_LAND)},
        403,
        "its own subsystems",
    ),
    (
        "service listed twice",
        {"services": [{"service": str(PERSON), "fields": ["/name"]}] * 2},
        400,
        "twice",
    ),
    ("unknown legal basis", {"legal_basis": "legitimate_interest"}, 400, "legal_basis"),
    ("zero use limit", {"use_limit": 0}, 400, "use_limit"),
    ("bad frequency", {"frequency": {"max": 5, "per": "fortnight"}}, 400, "frequency"),
    ("extra field", {"colour": "blue"}, 400, "colour"),
    # PostgreSQL's text cannot hold NUL: it was an internal error there, and kept on SQLite.
    ("NUL in the notice", {"notice": "see\u0000here"}, 400, "NUL"),
]


@pytest.mark.parametrize(("case", "changes", "status", "words"), BAD)
async def test_bad_requests_are_refused_precisely_and_change_nothing(
    harness: Harness, case: str, changes: dict[str, Any], status: int, words: str
) -> None:
    before = await _counts(harness)
    got, body = await harness.member("POST", "/v1/consents", consent_body(**changes))
    assert got == status, (case, body)
    assert words in body["message"], (case, body["message"])
    assert await _counts(harness) == before
    assert await harness.log_entries() == []


@pytest.mark.parametrize("path", ["/v1/consents/cns-a%00b", "/v1/consents?after=a%00b"])
async def test_nul_in_a_path_or_query_is_refused_on_every_database(
    harness: Harness, path: str
) -> None:
    got, body = await harness.member("GET", path)
    assert (got, body["message"]) == (400, "text may not contain NUL (U+0000)")


async def test_a_consumer_without_an_access_right_cannot_ask(harness: Harness) -> None:
    body = consent_body(
        consumer=str(PLRA_LAND), services=[{"service": str(PARCELS), "fields": ["/owner"]}]
    )
    status, answer = await harness.member(
        "POST", "/v1/consents", body, key=PLRA_KEY, client=PLRA_LAND
    )
    assert status == 422
    assert "no access right" in answer["message"]


async def test_member_authentication_is_required_and_checked(harness: Harness) -> None:
    async with harness.http.post(harness.base + "/v1/consents", json=consent_body()) as r:
        assert r.status == 401
    # NADRA's key cannot speak for LMC.
    status, _body = await harness.member("POST", "/v1/consents", consent_body(), key=NADRA_KEY)
    assert status == 401
    # NADRA may speak for itself, but not request consents for LMC's system.
    status, _ = await harness.member(
        "POST", "/v1/consents", consent_body(), key=NADRA_KEY, client=CIVIL
    )
    assert status == 403


async def test_an_expired_configuration_fails_closed(harness: Harness) -> None:
    view = harness.conf.current()
    harness.conf.clock = lambda: view.conf.expires_at + dt.timedelta(seconds=1)
    status, body = await harness.member("POST", "/v1/consents", consent_body())
    assert status == 503
    assert body["type"] == "Server.ClientProxy.OutdatedGlobalConf"
