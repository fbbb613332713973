"""The regulator console in a real browser: an exchange through LMC's gateway, once
witnessed, is found by the citizen's CNIC, opened and seen verified, and exported for the
offline verifier; the Urdu switch lays the console out right to left."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from yarl import URL

from audit.verify import verify_export
from core.ids import Cnic
from registry.globalconf import Anchor
from shahrah.demo import citizen_action, request_consent
from shahrah.federation import PERSON, TAX_OFFICE
from tests.browser.conftest import Federation, assert_light, regulator_sign_in, shoot

CITIZEN = 2  # the demo citizen with no seeded consent: only this test's exchange is theirs


@pytest.fixture(scope="module")
def exchanged(federation: Federation) -> str:
    """LMC's property-tax office reads the citizen's record from NADRA with their consent,
    then every gateway checkpoints and has the witness cosign; returns the CNIC."""
    live = federation.live
    cnic = Cnic(live.citizen(CITIZEN)["cnic"])

    async def exchange() -> None:
        consent = await request_consent(live, cnic, days=1)
        await citizen_action(live, CITIZEN, consent, "approve")
        gateway = live.federation["gateways"]["lmc"]["local"]
        async with live.http.get(
            URL(f"{gateway}/r1/{PERSON.to_path()}/persons/{cnic}", encoded=True),
            headers={
                "X-Road-Client": str(TAX_OFFICE),
                "Shahrah-Data-Subject": cnic.to_user_id(),
                "Shahrah-Purpose": "property-tax-assessment",
                "Shahrah-Consent": consent,
            },
        ) as r:
            assert r.status == 200, await r.text()
        # Checkpoints are signed every few seconds and on demand; ask now, and wait for the
        # witness's cosignature rather than for the next tick.
        for running in live.gateways.values():
            await running.audit.checkpoint()
            await running.audit.sync_witness()

    federation.call(exchange())
    return str(cnic)


def test_a_regulator_finds_the_exchange_verified_and_exports_it(
    page: Page, federation: Federation, exchanged: str, tmp_path: Path
) -> None:
    page.goto(federation.live.federation["regulator"]["console"])
    assert_light(page)
    shoot(page, "regulator-sign-in")
    regulator_sign_in(page, federation)

    page.get_by_label("Citizen's CNIC").fill(exchanged)
    page.get_by_role("button", name="Search").click()
    rows = page.locator("tbody tr")
    # The consumer's gateway (LMC) and the provider's (NADRA) each logged the exchange.
    expect(rows).to_have_count(2)
    expect(page.locator("tbody")).to_contain_text(str(PERSON))
    assert exchanged not in page.url
    assert_light(page)
    shoot(page, "regulator-search-results")

    with page.expect_download() as download:
        page.get_by_role("button", name="Download export").click()
    path = tmp_path / "export.jsonl"
    download.value.save_as(path)
    anchor = Anchor.load(federation.data_dir / "registry" / "anchor.json")
    report = verify_export(path, anchor=anchor)
    assert report.ok, report.problems
    assert report.entries == 2
    assert exchanged not in path.read_text()
    assert json.loads(path.read_text().splitlines()[0])["query"] == {"cnic": "(pseudonymised)"}

    rows.first.get_by_role("link").click()
    expect(page.get_by_role("heading", name="Audit entry")).to_be_visible()
    expect(page.locator("main")).to_contain_text("Verified in checkpoint")
    expect(page.locator("main")).to_contain_text("witnessed at")
    expect(page.locator("main")).to_contain_text(str(TAX_OFFICE))
    assert_light(page)
    shoot(page, "regulator-entry")

    page.get_by_role("link", name="Witness alarms").click()
    expect(page.get_by_role("heading", name="Witness alarms")).to_be_visible()
    expect(page.locator("main")).to_contain_text("No alarms")
    shoot(page, "regulator-alarms")

    page.get_by_role("link", name="اردو").click()
    expect(page.locator("html")).to_have_attribute("dir", "rtl")
    expect(page.get_by_role("heading", name="گواہ کے انتباہات")).to_be_visible()
    assert_light(page)
    shoot(page, "regulator-alarms-ur")
