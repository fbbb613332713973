"""The citizen portal in a real browser, on the whole embedded federation: a citizen signs in,
revokes the corporation's consent, the corporation's next request is refused, and the refusal
shows in the citizen's timeline; in Urdu the page reads right to left. A regulator then finds
that refused exchange and sees it verified in a witnessed checkpoint."""

from __future__ import annotations

import time

from playwright.sync_api import Page, expect
from yarl import URL

from core.ids import Cnic
from shahrah.federation import PERSON, TAX_OFFICE
from tests.browser.conftest import Federation, assert_light, regulator_sign_in, shoot

MIRROR_WAIT = 30.0  # seconds for the gateways' records to reach the witness's mirror


def exchange(federation: Federation, cnic: Cnic, consent_id: str) -> tuple[int, str | None]:
    """LMC's property-tax system asks NADRA for the citizen's record through its gateway's r1,
    as the scenario does; returns the status and the X-Road error type."""
    live = federation.live
    url = f"{live.federation['gateways']['lmc']['local']}/r1/{PERSON.to_path()}/persons/{cnic}"

    async def call() -> tuple[int, str | None]:
        async with live.http.get(
            URL(url, encoded=True),
            headers={
                "X-Road-Client": str(TAX_OFFICE),
                "Shahrah-Data-Subject": cnic.to_user_id(),
                "Shahrah-Purpose": "property-tax-assessment",
                "Shahrah-Consent": consent_id,
            },
        ) as r:
            await r.read()
            return r.status, r.headers.get("X-Road-Error")

    return federation.call(call())


def refused_after_revoke(federation: Federation, cnic: Cnic, consent_id: str) -> str | None:
    """The first refused exchange after the revoke (the feed reaches gateways within a second)."""
    deadline = time.monotonic() + 5
    while True:
        status, error = exchange(federation, cnic, consent_id)
        if status != 200 or time.monotonic() > deadline:
            return error
        time.sleep(0.1)


def witness_now(federation: Federation) -> None:
    """Have every gateway checkpoint its log and submit it to the witness now, rather than at
    its next interval, so the mirror holds the latest exchanges."""

    async def sync() -> None:
        for running in federation.live.gateways.values():
            await running.audit.checkpoint()
            await running.audit.sync_witness()

    federation.call(sync())


def test_revoke_then_the_refusal_shows_in_my_timeline(page: Page, federation: Federation) -> None:
    live = federation.live
    citizen = live.citizen(0)
    cnic = Cnic(citizen["cnic"])
    consent_id = live.federation["consents"]["active"]
    portal = live.federation["consent"]["portal"]
    assert exchange(federation, cnic, consent_id) == (200, None)  # the consent works today

    page.goto(portal)
    expect(page.get_by_role("heading", name="Sign in to the citizen portal")).to_be_visible()
    shoot(page, "portal-sign-in")
    page.get_by_label("CNIC").fill(citizen["cnic"])
    page.get_by_label("Password").fill(citizen["password"])
    page.get_by_role("button", name="Sign in").click()

    expect(page.get_by_role("heading", name="My consents")).to_be_visible()
    card = page.locator("section.card", has=page.locator(f"a[href$='/consents/{consent_id}']"))
    expect(card).to_contain_text("Lahore Metropolitan Corporation (property-tax)")
    expect(card).to_contain_text("Property tax assessment")
    ward = live.federation["wards"][0]
    expect(page.locator("nav.people")).to_contain_text(ward["cnic"])  # acts for a child
    assert_light(page)
    shoot(page, "portal-consents")

    card.get_by_role("link").click()
    page.get_by_role("link", name="Revoke").click()
    expect(page.locator("form.confirm")).to_contain_text(
        "Lahore Metropolitan Corporation (property-tax) will no longer receive "
        "CNIC, name and permanent address about you for Property tax assessment."
    )
    shoot(page, "portal-confirm")
    page.locator("form.confirm").get_by_role("button", name="Revoke").click()
    expect(page.locator(".flash")).to_contain_text("Revoked.")

    assert refused_after_revoke(federation, cnic, consent_id) == "Server.ServerProxy.ConsentDenied"

    page.get_by_role("link", name="Who accessed my data").click()
    deadline = time.monotonic() + MIRROR_WAIT
    refused = page.locator("li.denied")
    while refused.count() == 0:
        assert time.monotonic() < deadline, "the refusal never reached the timeline"
        witness_now(federation)
        page.reload()
    expect(refused.first).to_contain_text("Lahore Metropolitan Corporation (property-tax)")
    expect(refused.first).to_contain_text("Refused: no valid consent")
    expect(refused.first).to_contain_text("Property tax assessment")
    expect(page.locator("li.delivered").first).to_contain_text("CNIC, name and permanent address")
    assert_light(page)
    shoot(page, "portal-timeline")

    page.get_by_role("link", name="اردو").click()
    expect(page.locator("html")).to_have_attribute("dir", "rtl")
    expect(page.get_by_role("heading", name="میرا ڈیٹا کس نے دیکھا")).to_be_visible()
    brand = page.locator(".brand").bounding_box()
    assert brand is not None
    assert brand["x"] > 1280 / 2  # laid out from the right
    shoot(page, "portal-timeline-ur")

    status = federation.call(
        _consent_status(federation, consent_id, citizen["cnic"], citizen["password"])
    )
    assert status == "REVOKED"

    # The regulator finds that refused exchange across the federation and sees it verified.
    page.goto(f"{federation.url('audit')}/console/lang/en?next=/console/")
    regulator_sign_in(page, federation)
    page.get_by_label("Citizen's CNIC").fill(citizen["cnic"])
    page.get_by_label("Outcome").select_option("denied")
    page.get_by_role("button", name="Search").click()
    rows = page.locator("tbody tr")
    expect(rows.first).to_contain_text("Denied")
    expect(rows.first).to_contain_text(str(PERSON))
    rows.first.get_by_role("link").click()
    expect(page.locator("main")).to_contain_text("Verified in checkpoint")
    expect(page.locator("main")).to_contain_text(consent_id)
    expect(page.locator("main")).to_contain_text("denied")


async def _consent_status(federation: Federation, cid: str, cnic: str, password: str) -> str:
    base = f"{federation.url('consent')}/v1/citizen"
    http = federation.live.http
    async with http.post(f"{base}/session", json={"cnic": cnic, "password": password}) as r:
        token = (await r.json())["token"]
    async with http.get(
        f"{base}/consents/{cid}", headers={"Authorization": f"Bearer {token}"}
    ) as r:
        return str((await r.json())["status"])
