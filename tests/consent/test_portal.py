"""The citizen portal over HTTP: signing in and out, consents in words, confirmations that
say what will stop, wards, receipts; someone else's consent, forged forms and script in a
consent never get through."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from sqlalchemy import select

from consent import models as m
from consent.receipt import verify_receipt
from core.db import transaction
from core.ids import Cnic
from core.keys import KeySet
from core.pages import Catalog
from registry import publisher
from registry import service as ops
from registry.payloads import PurposeCreate, ServiceUpdate
from tests.consent.conftest import (
    CITIZEN,
    CONSENT_KEY,
    PASSWORD,
    PERSON,
    PURPOSE,
    STRANGER,
    WARD,
    Harness,
)
from tests.registry.federation import OPERATOR
from tests.web import MAX_PAGE, PageClient

LMC_TAX_NAME = "Lahore Metropolitan Corporation (property-tax)"


async def signed_in(harness: Harness, cnic: Any = CITIZEN) -> PageClient:
    await harness.sign_in(cnic)  # creates the account
    client = PageClient(harness.http, harness.base)
    page = await client.submit("/portal/login", cnic=cnic.digits, password=PASSWORD)
    assert page.status == 200, page.visible
    assert page.url.endswith("/portal/consents")
    return client


async def status_of(harness: Harness, cid: str) -> str:
    token = await harness.sign_in(CITIZEN)
    code, body = await harness.citizen("GET", f"/v1/citizen/consents/{cid}", token)
    assert code == 200
    return str(body["status"])


async def test_sign_in_remembers_the_page_and_sign_out_ends_it(harness: Harness) -> None:
    await harness.sign_in(CITIZEN)
    client = PageClient(harness.http, harness.base)
    page = await client.get("/portal/timeline")
    assert page.redirects[0].endswith("/portal/login?next=%2Fportal%2Ftimeline")
    wrong = await client.post(page.url, {"csrf": page.csrf, "cnic": str(CITIZEN), "password": "x"})
    assert wrong.status == 401
    assert "The CNIC or the password is not right, or the account is locked" in wrong.visible
    bad = await client.post(page.url, {"csrf": wrong.csrf, "cnic": "12345", "password": "x"})
    assert (bad.status, "13 digits" in bad.visible) == (400, True)
    done = await client.post(
        page.url, {"csrf": bad.csrf, "cnic": CITIZEN.digits, "password": PASSWORD}
    )
    assert done.url.endswith("/portal/timeline")
    out = await client.submit("/portal/logout", form_page="/portal/consents")
    assert "You have signed out." in out.visible
    assert (
        (await client.get("/portal/consents"))
        .redirects[0]
        .endswith("/portal/login?next=%2Fportal%2Fconsents")
    )


async def open_account_sessions(harness: Harness) -> int:
    async with transaction(harness.db, write=False) as s:
        rows = await s.scalars(
            select(m.CitizenSession).where(
                m.CitizenSession.cnic == str(CITIZEN), m.CitizenSession.ended_at.is_(None)
            )
        )
        return len(list(rows))


async def test_signing_out_ends_the_account_session_behind_the_portal(harness: Harness) -> None:
    client = await signed_in(harness)
    before = await open_account_sessions(harness)
    await client.submit("/portal/logout", form_page="/portal/consents")
    assert await open_account_sessions(harness) == before - 1


async def test_an_ended_account_session_sends_the_citizen_back_to_sign_in(
    harness: Harness,
) -> None:
    client = await signed_in(harness)
    # A password change ends every account session, wherever it was opened.
    await harness.accounts.set_password(CITIZEN, PASSWORD + " new")
    page = await client.get("/portal/consents")
    assert page.url.endswith("/portal/login")
    assert "Your session has ended" in page.visible


async def test_wrong_passwords_from_one_address_are_throttled(harness: Harness) -> None:
    await harness.sign_in(CITIZEN)
    client = PageClient(harness.http, harness.base)
    for n in range(5):
        # Different (unknown) CNICs, so only the per-address count can stop them.
        page = await client.submit("/portal/login", cnic=f"61101-000000{n}-1", password="nope")
        assert page.status == 401
    page = await client.submit("/portal/login", cnic=CITIZEN.digits, password=PASSWORD)
    assert page.status == 429
    assert "Too many failed sign-ins" in page.visible


async def test_my_consents_say_who_what_why_and_until_when(harness: Harness) -> None:
    active = await harness.active_consent(use_limit=5)
    pending = await harness.request_consent()
    client = await signed_in(harness)
    page = await client.get("/portal/consents")
    text = page.visible
    waiting, _, decided = text.partition("Requests waiting for a decision")[2].partition(
        "Active and past consents"
    )
    assert "Waiting for you" in waiting
    assert "Active" not in waiting
    assert "Active" in decided
    purpose = harness.conf.current().purposes[PURPOSE].name
    for part in (waiting, decided):
        assert f"Who {LMC_TAX_NAME}" in part
        assert "What name, address › city" in part
        assert "From National Database and Registration Authority" in part
        assert f"Why {purpose}" in part
    assert f"Valid until \u2066{active['expires_at'][:10]}" in decided
    assert "Uses left 5" in decided
    assert "Uses left no limit" in waiting
    assert f"/portal/consents/{pending['id']}" in page.text
    assert len(page.text.encode()) < MAX_PAGE


async def test_revoking_goes_through_a_confirmation_that_says_what_stops(
    harness: Harness,
) -> None:
    active = await harness.active_consent()
    client = await signed_in(harness)
    detail = await client.get(f"/portal/consents/{active['id']}")
    choices = detail.visible.split("Your choices")[1].split("Download")[0]
    assert choices.split() == ["Pause", "Revoke"]
    confirm = await client.get(f"/portal/consents/{active['id']}/revoke")
    assert confirm.status == 200
    purpose = harness.conf.current().purposes[PURPOSE].name
    assert (
        f"{LMC_TAX_NAME} will no longer receive name and address › city about you "
        f"for {purpose}. This cannot be undone."
    ) in confirm.visible
    assert await status_of(harness, active["id"]) == "ACTIVE"  # showing changed nothing
    done = await client.post(confirm.url, {"csrf": confirm.csrf})
    assert done.url.endswith(f"/portal/consents/{active['id']}")
    assert f"Revoked. {LMC_TAX_NAME} will no longer receive this data." in done.visible
    assert "This consent has ended" in done.visible
    assert await status_of(harness, active["id"]) == "REVOKED"
    # The history lists each change and who made it.
    history = done.visible.split("History", 1)[1]
    assert "Requested → Waiting for you the requesting agency" in history
    assert "Approved → Active you" in history
    assert "Revoked → Revoked you" in history
    # Revoking again is refused with the lifecycle's reason, and nothing changes.
    again = await client.get(f"/portal/consents/{active['id']}/revoke")
    assert "nothing more can be changed" in again.visible
    refused = await client.post(again.url, {"csrf": again.csrf})
    assert refused.status == 409


@pytest.mark.parametrize(
    ("action", "says", "after"),
    [
        (
            "approve",
            "will be able to receive name and address › city about you from "
            "National Database and Registration Authority",
            "ACTIVE",
        ),
        ("reject", "will not receive name and address › city about you", "REJECTED"),
    ],
)
async def test_a_pending_request_is_approved_or_rejected(
    harness: Harness, action: str, says: str, after: str
) -> None:
    pending = await harness.request_consent()
    client = await signed_in(harness)
    confirm = await client.get(f"/portal/consents/{pending['id']}/{action}")
    assert f"{LMC_TAX_NAME} {says}" in confirm.visible
    assert await status_of(harness, pending["id"]) == "PENDING"
    await client.post(confirm.url, {"csrf": confirm.csrf})
    assert await status_of(harness, pending["id"]) == after


async def test_pause_and_resume(harness: Harness) -> None:
    active = await harness.active_consent()
    client = await signed_in(harness)
    page = await client.submit(f"/portal/consents/{active['id']}/pause")
    assert "Paused." in page.visible
    assert await status_of(harness, active["id"]) == "PAUSED"
    page = await client.submit(f"/portal/consents/{active['id']}/resume")
    assert "Resumed." in page.visible
    assert await status_of(harness, active["id"]) == "ACTIVE"


async def test_another_citizens_consent_is_not_found_and_nothing_changes(
    harness: Harness,
) -> None:
    theirs = await harness.active_consent(subject=str(STRANGER))
    mine = await harness.active_consent()
    client = await signed_in(harness)
    token = (await client.get(f"/portal/consents/{mine['id']}/revoke")).csrf
    for path in ("", "/revoke", "/receipt", "/pause"):
        page = await client.get(f"/portal/consents/{theirs['id']}{path}")
        assert page.status == 404, path
        assert "Lahore" not in page.visible
    refused = await client.post(f"/portal/consents/{theirs['id']}/revoke", {"csrf": token})
    assert refused.status == 404
    stranger_token = await harness.sign_in(STRANGER)
    code, body = await harness.citizen(
        "GET", f"/v1/citizen/consents/{theirs['id']}", stranger_token
    )
    assert (code, body["status"]) == (200, "ACTIVE")
    # Nor can the person switcher reach someone else's data.
    assert (await client.get(f"/portal/consents?for={STRANGER}")).status == 404
    assert (await client.get(f"/portal/timeline?for={STRANGER}")).status == 404
    assert (await client.get("/portal/consents?for=nonsense")).status == 404


async def test_forged_or_missing_csrf_changes_nothing(harness: Harness) -> None:
    active = await harness.active_consent()
    client = await signed_in(harness)
    path = f"/portal/consents/{active['id']}/revoke"
    for form in ({}, {"csrf": "forged"}, {"csrf": ""}):
        refused = await client.post(path, form)
        assert refused.status == 403
        assert "Nothing was changed" in refused.visible
    good = (await client.get(path)).csrf
    assert (await client.post(path, {"csrf": good}, origin="https://evil.example")).status == 403
    assert await status_of(harness, active["id"]) == "ACTIVE"


async def test_script_in_a_notice_or_purpose_is_shown_as_text(harness: Harness) -> None:
    evil = '<script>alert("x")</script>'
    async with transaction(harness.db) as s:
        await ops.add_purpose(s, PurposeCreate(code="evil", name=evil))
        await ops.update_service(s, PERSON, ServiceUpdate(purposes=[PURPOSE, "evil"]))
    harness.conf.accept((await publisher.publish(harness.db, OPERATOR, force=True)).signed)
    consent = await harness.request_consent(purpose="evil", notice=evil + "<b>bold</b>")
    client = await signed_in(harness)
    for path in (
        "/portal/consents",
        f"/portal/consents/{consent['id']}",
        f"/portal/consents/{consent['id']}/approve",
    ):
        page = await client.get(path)
        assert "<script>" not in page.text, path
        assert "&lt;script&gt;" in page.text, path
        assert "<b>bold" not in page.text


def ward_link(page: Any, ward: Cnic = WARD) -> str:
    """The address the page's switcher gives the ward (it names no CNIC: see below)."""
    found = re.search(rf'<a href="([^"]*\?for=[^"]*)"[^>]*>{ward} ', page.text)
    assert found is not None, page.text
    return html.unescape(found.group(1))


async def test_acting_for_a_ward(harness: Harness) -> None:
    await harness.add_ward(CITIZEN, WARD)
    theirs = await harness.request_consent(subject=str(WARD))
    client = await signed_in(harness)
    mine = await client.get("/portal/consents")
    assert f"{WARD} (my child)" in mine.visible
    assert theirs["id"] not in mine.text  # the default view is my own
    ward = await client.get(ward_link(mine))
    assert theirs["id"] in ward.text
    confirm = await client.get(f"/portal/consents/{theirs['id']}/approve")
    assert f"about {WARD} from" in confirm.visible
    await client.post(confirm.url, {"csrf": confirm.csrf})
    token = await harness.sign_in(CITIZEN)
    _, body = await harness.citizen("GET", f"/v1/citizen/consents/{theirs['id']}", token)
    assert body["status"] == "ACTIVE"
    assert body["grantor"] == {"cnic": str(CITIZEN), "relation": "parent"}
    detail = await client.get(f"/portal/consents/{theirs['id']}")
    assert "Approved → Active you (my child)" in detail.visible


async def test_the_receipt_is_the_signed_one(harness: Harness) -> None:
    active = await harness.active_consent()
    client = await signed_in(harness)
    got = await client.get(f"/portal/consents/{active['id']}/receipt")
    assert got.status == 200
    assert got.headers["Content-Type"].startswith("application/jose")
    verified = verify_receipt(got.text, KeySet([CONSENT_KEY.public()]))
    assert (verified.record_id, verified.status) == (active["id"], "ACTIVE")


async def test_urdu_pages_are_right_to_left_and_light(harness: Harness) -> None:
    await harness.active_consent()
    client = await signed_in(harness)
    client.cookies["shahrah-lang"] = "ur"
    for path in ("/portal/consents", "/portal/timeline", "/portal/login"):
        page = await client.get(path)
        assert page.dir == "rtl", path
        assert len(page.text.encode()) < MAX_PAGE
    page = await client.get("/portal/consents")
    assert "میری رضامندیاں" in page.visible


async def test_without_the_audit_server_the_timeline_says_so_plainly(harness: Harness) -> None:
    client = await signed_in(harness)
    page = await client.get("/portal/timeline")
    assert page.status == 503
    assert "cannot be reached right now" in page.visible
    assert "Traceback" not in page.text
    assert "consents" in page.text  # the rest of the portal is still a click away


def test_every_portal_text_has_an_urdu_translation() -> None:
    catalog = Catalog.load(["core", "consent"])
    portal = {k for k in catalog.keys("en") if k.startswith("portal.")}
    assert portal
    assert portal == {k for k in catalog.keys("ur") if k.startswith("portal.")}


async def test_page_addresses_never_hold_a_wards_cnic(harness: Harness) -> None:
    """They stay in the browser's history and bookmarks, on a shared computer too: a page
    names a person of mine by a digest that means something in my session only."""
    await harness.add_ward(CITIZEN, WARD)
    theirs = await harness.request_consent(subject=str(WARD))
    client = await signed_in(harness)
    for path in ("/portal/consents", "/portal/timeline"):
        page = await client.get(path)
        link = ward_link(page)
        assert WARD.digits not in link
        assert str(WARD) not in link
        assert (await client.get(link)).status in (200, 503)  # 503: no audit server here
        # The CNIC itself names no one, even a ward of mine.
        assert (await client.get(f"{path}?for={WARD}")).status == 404
    detail = await client.get(f"/portal/consents/{theirs['id']}")
    back = re.search(r'href="([^"]*/portal/consents\?for=[^"]*)"', detail.text)
    assert back is not None
    assert WARD.digits not in back.group(1)
    assert theirs["id"] in (await client.get(html.unescape(back.group(1)))).text
    again = await signed_in(harness)  # another session: the old address names no one
    assert (await again.get(ward_link(await client.get("/portal/consents")))).status == 404
