"""The operator console in Chromium against the embedded federation: the operator signs in,
grants an access right that the next global configuration carries, previews an incompatible
schema, sees every gateway's configuration, and reads the console in Urdu."""

from __future__ import annotations

import json
import re
from typing import Any

from playwright.sync_api import Page, expect

from core.canonical import b64url_decode
from shahrah.demo import describe
from shahrah.federation import ASSESSMENT, MEMBERS, REGISTRY_OFFICE
from tests.browser.conftest import Federation, assert_light, shoot

GRANT = {
    "service": str(ASSESSMENT),
    "method": "GET",
    "path": "/assessments/*",
    "client": str(REGISTRY_OFFICE),
}


def sign_in(page: Page, federation: Federation) -> str:
    console = f"{federation.url('registry')}/console"
    page.goto(f"{console}/members")
    expect(page).to_have_url(f"{console}/login?next=%2Fconsole%2Fmembers")
    page.get_by_label("Operator token").fill(federation.live.federation["operator_token"])
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Members")).to_be_visible()
    return console


def published(federation: Federation) -> dict[str, Any]:
    """The payload of the configuration the registry serves now."""

    async def fetch() -> str:
        async with federation.live.http.get(f"{federation.url('registry')}/globalconf") as r:
            return await r.text()

    payload: dict[str, Any] = json.loads(b64url_decode(federation.call(fetch()).split(".")[1]))
    return payload


def test_the_demo_says_where_the_console_is_and_how_to_sign_in(federation: Federation) -> None:
    text = describe(federation.live)
    assert f"operator console {federation.url('registry')}/console" in text
    assert federation.live.federation["operator_token"] in text


def test_an_operator_grants_an_access_right_and_the_next_configuration_carries_it(
    page: Page, federation: Federation
) -> None:
    console = sign_in(page, federation)
    assert_light(page)
    shoot(page, "operator-members")
    before = published(federation)["serial"]

    page.get_by_role("link", name="Access rights").click()
    page.get_by_label("Service", exact=True).select_option(GRANT["service"])
    page.get_by_label("Subsystem", exact=True).select_option(GRANT["client"])
    page.get_by_label("Method", exact=True).select_option(GRANT["method"])
    page.get_by_label("Path", exact=True).fill(GRANT["path"])
    page.get_by_role("button", name="Grant access").click()
    expect(page.locator(".flash")).to_contain_text(f"{GRANT['client']} may call")
    expect(page).to_have_url(f"{console}/access-rights")
    assert_light(page)
    shoot(page, "operator-access-rights")

    def carried() -> bool:
        conf = published(federation)
        rights = [{k: v for k, v in r.items() if v is not None} for r in conf["access_rights"]]
        return conf["serial"] > before and GRANT in rights

    # Polled from the test thread: published() itself runs on the federation's loop.
    for _ in range(100):
        if carried():
            break
        page.wait_for_timeout(200)
    assert carried(), "the granted right never reached the global configuration"


def test_an_incompatible_schema_is_shown_with_the_checkers_reasons(
    page: Page, federation: Federation
) -> None:
    sign_in(page, federation)
    page.get_by_role("link", name="Schemas").click()
    page.get_by_label("Subject", exact=True).fill("pk.nadra.person")
    page.get_by_label("JSON Schema", exact=True).fill(
        json.dumps({"type": "object", "properties": {"cnic": {"type": "integer"}}})
    )
    page.get_by_role("button", name="Check compatibility").click()
    expect(page.get_by_role("heading", name="Compatibility preview")).to_be_visible()
    expect(page.locator(".verdict.bad")).to_contain_text("incompatible")
    expect(page.locator(".messages li").first).to_contain_text("errorType:")
    expect(page.get_by_role("button", name="Register version")).to_have_count(0)
    assert_light(page)
    shoot(page, "operator-schema-preview")


def test_every_gateway_reports_its_configuration_and_urdu_reads_right_to_left(
    page: Page, federation: Federation
) -> None:
    sign_in(page, federation)
    page.get_by_role("link", name="Configuration status").click()
    expect(page.get_by_role("heading", name="At each gateway")).to_be_visible()
    for m in MEMBERS:
        # Each gateway signed its fetches; it may hold an older serial than the newest one
        # (the grant above published one), until its next refresh.
        row = page.locator("tbody tr", has_text=f"{m.id}/gw1")
        expect(row.locator("td").nth(1)).to_have_text(re.compile(r"^[0-9]+$"))
        expect(row.locator(".status")).to_have_text(re.compile("^(current|behind)$"))
    assert_light(page)
    shoot(page, "operator-status")

    page.get_by_role("link", name="اردو").click()
    expect(page.locator("html")).to_have_attribute("dir", "rtl")
    expect(page.get_by_role("heading", name="کنفیگریشن کی صورتحال")).to_be_visible()
    shoot(page, "operator-status-ur")
