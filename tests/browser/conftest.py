"""Browser tests: the embedded federation, and Debian's Chromium driven by Playwright.

The federation (``shahrah.demo.running``) runs on its own event loop in a
background thread for a whole test module; ``federation.call(coro)`` runs a
coroutine there (an exchange, a wait) and returns its result. The browser is
Debian's ``chromium`` (``SHAHRAH_CHROMIUM`` overrides the path), never one
Playwright downloads. Without it these tests are skipped, unless
``SHAHRAH_REQUIRE_BROWSER=1`` (as ``.ci/run`` sets), when they fail.

Fixtures are module-scoped because Playwright's synchronous API runs its own
event loop on the main thread while it is started; stopping it at the end of
each module keeps later asyncio tests on a clean thread.

Screenshots go to ``build/screenshots/<name>-<width>.png`` (README names it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from shahrah.demo import Live, running
from tests.ports import free_base
from tests.web import MAX_PAGE

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

T = TypeVar("T")

CHROMIUM = Path(os.environ.get("SHAHRAH_CHROMIUM", "/usr/bin/chromium"))
REQUIRED = os.environ.get("SHAHRAH_REQUIRE_BROWSER") == "1"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"
WIDTHS = {360: 740, 1280: 900}  # phone and desktop viewports (width: height)
START_TIMEOUT = 120.0  # seconds; creating the federation hashes passwords and makes keys


def need_browser() -> None:
    problem = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problem = "Playwright for Python is not installed"
    if problem is None and not CHROMIUM.exists():
        problem = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    if problem:
        if REQUIRED:
            pytest.fail(f"browser tests are required here: {problem}")
        pytest.skip(problem)


class Loop:
    """An event loop on a background thread, serving while the tests drive a browser."""

    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        """Run ``coro`` on this loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def wait_for(
        self, check: Callable[[], Awaitable[bool]], *, timeout: float = 30.0, what: str = ""
    ) -> None:
        """Poll an async condition on this loop until it holds."""

        async def poll() -> None:
            deadline = self._loop.time() + timeout
            while not await check():
                if self._loop.time() > deadline:
                    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
                await asyncio.sleep(0.2)

        self.call(poll(), timeout + 5)

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=60)
        self._loop.close()


class Federation(Loop):
    """The embedded federation, running on a background loop until :meth:`stop`."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__("federation")
        self.data_dir = data_dir
        self.base_port = free_base()
        self._live: Live | None = None
        self._stack = contextlib.AsyncExitStack()

    @property
    def live(self) -> Live:
        assert self._live is not None, "the federation has not started"
        return self._live

    def url(self, component: str) -> str:
        """Base URL of a central component: ``registry``, ``consent`` or ``audit``."""
        return str(self.live.federation[component]["url"])

    def start(self) -> None:
        self._live = self.call(
            self._stack.enter_async_context(running(self.data_dir, self.base_port, people=20)),
            timeout=START_TIMEOUT,
        )

    def stop(self) -> None:
        try:
            self.call(self._stack.aclose(), timeout=60)
        finally:
            self.close()


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    need_browser()
    fed = Federation(tmp_path_factory.mktemp("federation"))
    try:
        fed.start()
        yield fed
    finally:
        fed.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        # --no-sandbox: CI runs as root, where Chromium's sandbox cannot start.
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser profile (no cookies) at desktop width, English first."""
    context = browser.new_context(viewport={"width": 1280, "height": WIDTHS[1280]}, locale="en-GB")
    context.set_default_timeout(15_000)
    tab = context.new_page()
    documents: set[str] = set()
    errors: list[tuple[str, str]] = []
    tab.on(
        "response",
        lambda r: documents.add(r.url) if r.request.resource_type == "document" else None,
    )
    tab.on(
        "console",
        lambda m: errors.append((m.text, m.location.get("url", ""))) if m.type == "error" else None,
    )
    try:
        yield tab
    finally:
        context.close()
    # A CSP violation or a broken stylesheet shows up as a console error. A page answered
    # with an error status (a refused form's 400) is reported too, and is not a fault.
    problems = [text for text, url in errors if url not in documents]
    assert not problems, f"the browser reported errors: {problems}"


def shoot(page: Page, name: str) -> None:
    """Screenshots of the current page at phone and desktop widths."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    before = page.viewport_size
    for width, height in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": height})
        page.screenshot(path=str(SCREENSHOTS / f"{name}-{width}.png"), full_page=True)
        # Usable at 360 px: nothing wider than the screen forces sideways scrolling.
        overflow = page.evaluate("() => document.documentElement.scrollWidth")
        assert overflow <= width, f"{name} is {overflow} px wide at a {width} px screen"
    if before:
        page.set_viewport_size(before)


def assert_light(page: Page) -> None:
    """The page and what it loaded weigh under 100 KB."""
    sizes = page.evaluate(
        "() => [performance.getEntriesByType('navigation')[0].decodedBodySize]"
        ".concat(performance.getEntriesByType('resource').map(r => r.decodedBodySize))"
    )
    assert sum(sizes) < MAX_PAGE, f"{page.url} weighs {sum(sizes)} bytes"


@contextlib.asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """Serve an aiohttp application on a free loopback port (inside a :class:`Loop`)."""
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def regulator_sign_in(page: Page, federation: Federation) -> None:
    """Sign in to the regulator console as the demo's regulator (several stories end there)."""
    from playwright.sync_api import expect

    regulator = federation.live.federation["regulator"]
    page.goto(regulator["console"])
    expect(page.get_by_role("heading", name="Regulator sign-in")).to_be_visible()
    page.get_by_label("Username").fill(regulator["username"])
    page.get_by_label("Password").fill(regulator["password"])
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Search the audit trail")).to_be_visible()
