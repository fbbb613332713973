"""The page kit in a real browser: secure cookies on loopback, keyboard, Urdu, no script."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Loop, assert_light, need_browser, serving, shoot
from tests.core import kitsite


@pytest.fixture(scope="module")
def kit() -> Iterator[str]:
    need_browser()
    loop = Loop("kitsite")
    stack = contextlib.AsyncExitStack()

    async def start() -> str:
        app, _ = kitsite.build()
        return await stack.enter_async_context(serving(app))

    try:
        yield loop.call(start())
    finally:
        loop.call(stack.aclose())
        loop.close()


def test_sign_in_by_keyboard_then_notes_in_urdu_without_running_script(
    page: Page, kit: str
) -> None:
    page.goto(f"{kit}/kit/")
    expect(page).to_have_url(f"{kit}/kit/login?next=%2Fkit%2F")
    page.keyboard.press("Tab")
    expect(page.locator(".skip")).to_be_focused()
    page.get_by_label("Word").fill(kitsite.WORD)
    page.keyboard.press("Enter")
    # The Secure, HttpOnly, SameSite=Strict session cookie holds on http://127.0.0.1.
    expect(page.get_by_role("heading", name="My notes")).to_be_visible()
    cookie = next(c for c in page.context.cookies() if c["name"] == "shahrah-kit")
    assert cookie["secure"]
    assert cookie["httpOnly"]
    assert cookie["sameSite"] == "Strict"

    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.get_by_label("Note").fill('<script>alert("x")</script><img src=x onerror=alert(2)>')
    page.get_by_role("button", name="Saved.").click()
    expect(page.locator("main li")).to_contain_text('<script>alert("x")</script>')
    assert dialogs == []

    page.get_by_role("link", name="اردو").click()
    expect(page.locator("html")).to_have_attribute("dir", "rtl")
    expect(page.get_by_role("heading", name="میرے نوٹس")).to_be_visible()
    brand = page.locator(".brand").bounding_box()
    assert brand is not None
    assert brand["x"] > 1280 / 2
    assert_light(page)
    shoot(page, "kit-notes-ur")
