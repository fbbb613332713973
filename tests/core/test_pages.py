"""The page kit: sessions, CSRF, origin checks, escaping, languages, errors, throttling."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import TooManyRequestsError
from core.pages import CSP, MAX_FORM, Catalog, LoginLimiter, SessionStore, safe_next
from tests.core import kitsite
from tests.web import MAX_PAGE, PageClient


@pytest.fixture
async def site(serve: Any, http: aiohttp.ClientSession) -> tuple[PageClient, list[str]]:
    app, notes = kitsite.build()
    return PageClient(http, await serve(app)), notes


async def signed_in(site: tuple[PageClient, list[str]]) -> PageClient:
    client, _ = site
    page = await client.submit("/kit/login", word=kitsite.WORD)
    assert page.status == 200
    assert "My notes" in page.visible
    return client


async def test_pages_need_a_session_and_remember_where_you_were_going(
    site: tuple[PageClient, list[str]],
) -> None:
    client, _ = site
    page = await client.get("/kit/?q=hello")
    assert page.redirects[0].endswith("/kit/login?next=%2Fkit%2F%3Fq%3Dhello")
    after = await client.post(page.url, {"csrf": page.csrf, "word": kitsite.WORD})
    assert after.url.endswith("/kit/?q=hello")
    assert "hello" in after.visible


async def test_signing_in_rotates_the_session_id(site: tuple[PageClient, list[str]]) -> None:
    client, _ = site
    await client.get("/kit/login")
    before = client.cookies["shahrah-kit"]
    await signed_in(site)
    assert client.cookies["shahrah-kit"] != before
    # The id held before sign-in is worth nothing now.
    thief = PageClient(client.http, client.base)
    thief.cookies["shahrah-kit"] = before
    assert (await thief.get("/kit/")).redirects[0].endswith("/kit/login?next=%2Fkit%2F")


async def test_a_post_without_the_csrf_token_changes_nothing(
    site: tuple[PageClient, list[str]],
) -> None:
    client = await signed_in(site)
    _, notes = site
    for form in ({"note": "x"}, {"note": "x", "csrf": "forged"}, {"note": "x", "csrf": ""}):
        refused = await client.post("/kit/", form)
        assert refused.status == 403
        assert "Nothing was changed" in refused.visible
    assert notes == []
    assert (await client.submit("/kit/", note="kept")).status == 200
    assert notes == ["kept"]


async def test_nul_in_a_form_or_query_is_refused_and_changes_nothing(
    site: tuple[PageClient, list[str]],
) -> None:
    """PostgreSQL's text cannot hold NUL: a note with one was an internal error there."""
    client = await signed_in(site)
    _, notes = site
    token = (await client.get("/kit/")).csrf
    refused = await client.post("/kit/", {"csrf": token, "note": "a\x00b"})
    assert refused.status == 400
    assert "NUL" in refused.visible
    assert (await client.get("/kit/?q=a%00b")).status == 400
    assert notes == []


async def test_a_form_in_any_charset_but_utf8_is_refused_not_failed(
    site: tuple[PageClient, list[str]],
) -> None:
    """Anyone could name a codec that fails with a plain UnicodeError (punycode): a 500 and a
    traceback in the log, before sign-in."""
    client, _ = site
    token = (await client.get("/kit/login")).csrf
    for charset in ("punycode", "utf-7", "no-such-codec"):
        refused = await client.request(
            "POST",
            "/kit/login",
            data=f"csrf={token}&word=x".encode(),
            headers={
                "Origin": client.base,
                "Content-Type": f"application/x-www-form-urlencoded; charset={charset}",
            },
        )
        assert refused.status == 400, charset
        assert "UTF-8" in refused.visible


async def test_a_post_from_another_origin_changes_nothing(
    site: tuple[PageClient, list[str]],
) -> None:
    client = await signed_in(site)
    _, notes = site
    token = (await client.get("/kit/")).csrf
    assert (
        await client.post("/kit/", {"csrf": token, "note": "x"}, origin="https://evil.example")
    ).status == 403
    assert (await client.post("/kit/", {"csrf": token, "note": "x"}, origin=None)).status == 403
    assert notes == []


async def test_script_in_any_field_is_shown_as_text(site: tuple[PageClient, list[str]]) -> None:
    client = await signed_in(site)
    evil = '<script>alert("x")</script>'
    page = await client.submit("/kit/", note=evil)
    assert evil not in page.text
    assert "&lt;script&gt;" in page.text
    echoed = await client.get("/kit/?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E")
    assert "<script>alert(1)" not in echoed.text
    assert echoed.headers["Content-Security-Policy"] == CSP
    assert "script-src" not in CSP  # default-src 'none' leaves no script source at all


async def test_signing_out_ends_the_session(site: tuple[PageClient, list[str]]) -> None:
    client = await signed_in(site)
    held = client.cookies["shahrah-kit"]
    page = await client.submit("/kit/logout", form_page="/kit/")
    assert "You have signed out." in page.visible
    assert site[1] == ["goodbye visitor"]  # the console's own sign-out ran first
    stale = PageClient(client.http, client.base)
    stale.cookies["shahrah-kit"] = held
    assert "/kit/login" in (await stale.get("/kit/")).url


async def test_an_expired_session_asks_to_sign_in_again(site: tuple[PageClient, list[str]]) -> None:
    client = await signed_in(site)
    client.cookies["shahrah-kit"] = "no-longer-known"
    page = await client.get("/kit/")
    assert "Your session has ended" in page.visible


async def test_urdu_is_right_to_left_and_the_switch_is_on_every_page(
    site: tuple[PageClient, list[str]],
) -> None:
    client, _ = site
    english = await client.get("/kit/login")
    assert english.dir == "ltr"
    assert 'href="/kit/lang/ur?next=%2Fkit%2Flogin"' in english.text
    urdu = await client.get("/kit/lang/ur?next=/kit/login")
    assert urdu.dir == "rtl"
    assert "نوٹس" in urdu.visible
    # The switch never sends anyone off the site.
    away = await client.request("GET", "/kit/lang/en?next=https://evil.example/", follow=False)
    assert away.headers["Location"] == "/kit/"


async def test_errors_are_pages_with_their_status_and_no_internals(
    site: tuple[PageClient, list[str]],
) -> None:
    client = await signed_in(site)
    missing = await client.get("/kit/missing")
    assert missing.status == 404
    assert "no such note" in missing.visible
    broken = await client.get("/kit/broken")
    assert broken.status == 500
    assert "secret detail" not in broken.text
    assert "reference" in broken.visible


async def test_repeated_failed_sign_ins_are_throttled(site: tuple[PageClient, list[str]]) -> None:
    client, _ = site
    for _ in range(5):
        page = await client.submit("/kit/login", word="wrong")
        assert "Wrong word." in page.visible
    locked = await client.submit("/kit/login", word=kitsite.WORD)
    assert locked.status == 429
    assert "try again in" in locked.visible


async def test_pages_are_light_and_cookies_are_guarded(site: tuple[PageClient, list[str]]) -> None:
    client, _ = site
    async with client.http.get(client.base + "/kit/login") as r:
        cookie = r.headers["Set-Cookie"]
        body = await r.read()
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Path=/kit" in cookie
    async with client.http.get(client.base + "/kit/static/shahrah.css") as css:
        sheet = await css.read()
    assert len(body) + len(sheet) < MAX_PAGE


async def test_a_chunked_form_larger_than_the_limit_is_refused(
    site: tuple[PageClient, list[str]],
) -> None:
    """Without Content-Length the size is counted while reading: 413, and nothing saved."""
    client = await signed_in(site)
    _, notes = site
    token = (await client.get("/kit/")).csrf
    headers = client._headers(
        {"Origin": client.base, "Content-Type": "application/x-www-form-urlencoded"}
    )

    async def chunks(size: int) -> AsyncIterator[bytes]:
        yield f"csrf={token}&note=".encode()
        for _ in range(size // 1024):
            yield b"x" * 1024

    for size, status in ((MAX_FORM + 1024, 413), (1024, 303)):
        async with client.http.post(
            client.base + "/kit/", data=chunks(size), headers=headers, allow_redirects=False
        ) as r:
            assert "Content-Length" not in r.request_info.headers
            assert r.status == status
    assert notes == ["x" * 1024]


def test_sessions_expire_when_idle_and_at_their_absolute_limit() -> None:
    now = [0.0]
    store = SessionStore(
        dt.timedelta(minutes=30),
        dt.timedelta(hours=1),
        limit=3,
        anonymous_limit=3,
        clock=lambda: now[0],
    )
    a = store.new()
    now[0] = 29 * 60
    assert store.get(a.id) is a
    now[0] = 58 * 60
    assert store.get(a.id) is a
    now[0] = 61 * 60
    assert store.get(a.id) is None  # used recently, but past its absolute limit
    first, *_ = [store.new() for _ in range(4)]
    assert store.get(first.id) is None  # the oldest make way when the store is full


def test_anonymous_sessions_never_push_out_signed_in_ones() -> None:
    """Requests without a cookie each open a session; however many arrive, the sessions of
    people who are signed in stay."""
    store = SessionStore(limit=3, anonymous_limit=3)
    signed = [store.new(f"person-{i}") for i in range(3)]
    anonymous = [store.new() for _ in range(1000)]
    assert all(store.get(s.id) is s for s in signed)
    assert store.get(anonymous[0].id) is None  # the anonymous pool drops its own oldest
    assert store.get(anonymous[-1].id) is anonymous[-1]
    fourth = store.new("person-3")
    assert store.get(signed[0].id) is None  # the signed-in pool is bounded too
    assert store.get(fourth.id) is fourth
    store.drop(fourth.id)
    assert store.get(fourth.id) is None


def test_the_limiter_locks_out_and_doubles_the_wait() -> None:
    now = [0.0]
    limiter = LoginLimiter(limit=3, lock=dt.timedelta(seconds=10), clock=lambda: now[0])
    for _ in range(3):
        limiter.attempt("a")  # three that do not succeed
    with pytest.raises(TooManyRequestsError):
        limiter.attempt("a")
    limiter.attempt("b")  # other keys are not affected
    now[0] = 11
    for _ in range(3):
        limiter.attempt("a")
    with pytest.raises(TooManyRequestsError):
        limiter.attempt("a")
    now[0] = 11 + 15
    with pytest.raises(TooManyRequestsError):
        limiter.attempt("a")  # the second lock-out lasts 20 s
    now[0] = 11 + 21
    limiter.attempt("a")


def test_a_success_takes_back_its_own_attempt_and_no_other() -> None:
    """A caller holding one real account signed in between guesses at others' and so
    cleared its address's failures: it could guess for ever."""
    limiter = LoginLimiter(limit=3, clock=lambda: 0.0)
    limiter.attempt("addr:1")
    at = limiter.attempt("addr:1")
    limiter.succeeded(at, "addr:1")  # its own account
    limiter.attempt("addr:1")
    limiter.attempt("addr:1")
    with pytest.raises(TooManyRequestsError):
        limiter.attempt("addr:1")


def test_attempts_count_before_the_password_is_checked() -> None:
    """Simultaneous guesses all passed a check made before any of them had failed."""
    limiter = LoginLimiter(limit=5, clock=lambda: 0.0)
    admitted = 0
    for _ in range(30):  # thirty arrive before any answer is known
        try:
            limiter.attempt("addr:1")
        except TooManyRequestsError:
            continue
        admitted += 1
    assert admitted == 5


def test_the_limiter_keeps_its_lock_outs_bounded() -> None:
    now = [0.0]
    limiter = LoginLimiter(limit=1, lock=dt.timedelta(seconds=10), clock=lambda: now[0], max_keys=3)

    def lock(key: str) -> None:
        limiter.attempt(key)
        with pytest.raises(TooManyRequestsError):
            limiter.attempt(key)

    for key in ("a", "b", "c"):
        lock(key)
    now[0] = 11  # a, b and c have served their time
    lock("d")
    for key in ("e", "f"):
        now[0] += 1
        lock(key)
    # Over the bound: the expired ones went, and no live lock-out was lost for them.
    for key in ("d", "e", "f"):
        with pytest.raises(TooManyRequestsError):
            limiter.attempt(key)
    now[0] += 1
    lock("g")  # all four live: the one that would end soonest (d) gives way
    limiter.attempt("d")
    for key in ("e", "f", "g"):
        with pytest.raises(TooManyRequestsError):
            limiter.attempt(key)
    assert len(limiter._locked) == 3


def test_every_core_message_has_an_urdu_translation() -> None:
    catalog = Catalog.load(["core"])
    assert catalog.keys("en") == catalog.keys("ur")


@given(st.text(max_size=60))
def test_next_never_leaves_the_console(value: str) -> None:
    target = safe_next(value, "/kit", "/kit/")
    assert target == "/kit/" or (target.startswith("/kit") and not target.startswith("//"))
    assert "\\" not in target
    # It goes into a Location header: a control character there broke the response.
    assert not any(c < " " or c == "\x7f" for c in target)


@pytest.mark.parametrize(
    "value",
    [
        "https://evil.example/kit/",
        "//evil.example/kit",
        "/kit\\..",
        "/other",
        "/kitchen",
        "",
        "/kit/\r\nSet-Cookie: x=1",
        "/kit/a\tb",
    ],
)
def test_next_refuses_known_escapes(value: str) -> None:
    assert safe_next(value, "/kit", "/kit/") == "/kit/"
