"""Server-rendered web consoles: templates, languages, sessions, CSRF and a strict CSP.

Each console (the citizen portal, the regulator console, the operator console)
is a :class:`Console` mounted under a path prefix of its service's aiohttp
application. The package that owns the console declares its pages with
:meth:`Console.page`; the kit does everything a page must never forget:

- **Language.** English or Urdu, from a cookie set by the switch on every page
  (``{prefix}/lang/{code}``), else from ``Accept-Language``. Urdu pages are
  laid out right to left (``<html dir="rtl">``). Text comes from message
  catalogues (``core/messages.json`` plus the package's ``messages.json``).
- **Sessions.** A random session id in an ``HttpOnly``, ``Secure``,
  ``SameSite=Strict`` cookie scoped to the prefix; the state stays on the
  server, bounded in number, with an idle and an absolute expiry. Signing in
  rotates the id, so a session fixed before sign-in is worth nothing.
- **CSRF.** Every form carries the session's token; every POST must return it
  (compared in constant time) and come from this origin (``Origin``, else
  ``Referer``). A refused POST changes nothing: the handler never runs.
- **Escaping and CSP.** Jinja2 autoescapes everything, and the policy allows
  no script at all, inline or not; confirmations are pages of their own.
- **Errors.** A :class:`core.errors.ShahrahError` raised by a page becomes an
  HTML error page with its status; anything else is logged with an id and
  shown as a generic failure.

Sign-in itself belongs to each console (a CNIC and password, a username and
password, an operator token); :class:`LoginLimiter` gives them all the same
throttling of repeated failures.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import logging
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import jinja2
from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from core.errors import (
    BadRequestError,
    ForbiddenError,
    NotFoundError,
    PayloadTooLargeError,
    ShahrahError,
    TooManyRequestsError,
)
from core.web import read_up_to, refuse_nul

__all__ = [
    "CSP",
    "LANGS",
    "Catalog",
    "Console",
    "LoginLimiter",
    "PageContext",
    "Session",
    "SessionStore",
    "client_address",
    "safe_next",
]

log = logging.getLogger(__name__)

LANGS = ("en", "ur")
RTL = frozenset({"ur"})
LANG_NAMES = {"en": "English", "ur": "اردو"}
LANG_COOKIE = "shahrah-lang"
MAX_FORM = 64 * 1024  # bytes; the largest form is a schema pasted for a compatibility preview
SESSION_IDLE = dt.timedelta(minutes=30)
SESSION_ABSOLUTE = dt.timedelta(hours=12)
MAX_SESSIONS = 10_000  # signed-in, per console; the oldest are dropped first past this
MAX_ANONYMOUS = 10_000  # not signed in, per console, in a pool of their own (see SessionStore)
STATIC_TYPES = {"css": "text/css", "svg": "image/svg+xml"}
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)

Page = Callable[[web.Request, "PageContext"], Awaitable[web.StreamResponse]]
Route = Callable[[web.Request], Awaitable[web.StreamResponse]]


# --- messages ----------------------------------------------------------------------------------


class Catalog:
    """Messages by language; a message missing in Urdu falls back to English."""

    def __init__(self, messages: Mapping[str, Mapping[str, str]]) -> None:
        self._messages = {lang: dict(messages.get(lang, {})) for lang in LANGS}

    @classmethod
    def load(cls, packages: Iterable[str]) -> Catalog:
        merged: dict[str, dict[str, str]] = {lang: {} for lang in LANGS}
        for package in packages:
            source = resources.files(package) / "messages.json"
            if not source.is_file():
                continue
            for lang, texts in json.loads(source.read_text("utf-8")).items():
                if lang not in merged:
                    raise ValueError(f"{package}/messages.json: unknown language {lang!r}")
                clash = merged[lang].keys() & texts.keys()
                if clash:
                    raise ValueError(f"{package}/messages.json redefines {sorted(clash)}")
                merged[lang].update(texts)
        return cls(merged)

    def keys(self, lang: str) -> set[str]:
        return set(self._messages[lang])

    def text(self, lang: str, key: str, **values: Any) -> str:
        template = self._messages[lang].get(key) or self._messages["en"].get(key)
        if template is None:
            raise KeyError(f"no message {key!r}")
        return template.format(**values) if values else template


# --- sessions ----------------------------------------------------------------------------------


@dataclass
class Session:
    id: str
    csrf: str
    created: float
    seen: float
    principal: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    flashes: list[str] = field(default_factory=list)


class SessionStore:
    """Server-side sessions with idle and absolute expiry, bounded in number.

    Signed-in and anonymous sessions are kept in two pools, each bounded and dropping its
    own oldest first. Anyone can open anonymous sessions by the thousand (every request
    without a cookie makes one); in a shared pool they would push out the sessions of
    people who are signed in. Only a successful sign-in adds to the signed-in pool.
    """

    def __init__(
        self,
        idle: dt.timedelta = SESSION_IDLE,
        absolute: dt.timedelta = SESSION_ABSOLUTE,
        *,
        limit: int = MAX_SESSIONS,
        anonymous_limit: int = MAX_ANONYMOUS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._idle = idle.total_seconds()
        self._absolute = absolute.total_seconds()
        self._limits = {True: limit, False: anonymous_limit}
        self._clock = clock
        self._pools: dict[bool, OrderedDict[str, Session]] = {
            True: OrderedDict(),  # signed in
            False: OrderedDict(),  # anonymous
        }

    def new(self, principal: str | None = None) -> Session:
        """A fresh session, signed in as ``principal`` if given (else anonymous)."""
        now = self._clock()
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), now, now)
        session.principal = principal
        signed = principal is not None
        pool = self._pools[signed]
        pool[session.id] = session
        while len(pool) > self._limits[signed]:
            pool.popitem(last=False)
        return session

    def get(self, sid: str) -> Session | None:
        """The live session with this id (and mark it used), or None if unknown or expired."""
        for pool in self._pools.values():
            session = pool.get(sid)
            if session is None:
                continue
            now = self._clock()
            if now - session.seen > self._idle or now - session.created > self._absolute:
                del pool[sid]
                return None
            session.seen = now
            pool.move_to_end(sid)
            return session
        return None

    def drop(self, sid: str) -> None:
        for pool in self._pools.values():
            pool.pop(sid, None)


class LoginLimiter:
    """Throttles sign-in attempts per key (an account, a client address).

    Every attempt counts against its keys from the moment it is made, before the password is
    checked, so a burst of simultaneous guesses is counted as it arrives; a successful one
    is then taken back, and only that one. Once ``limit`` attempts within ``window`` have
    not succeeded, the key is refused for ``lock``, doubling with each further lock-out.
    """

    def __init__(
        self,
        *,
        limit: int = 5,
        window: dt.timedelta = dt.timedelta(minutes=5),
        lock: dt.timedelta = dt.timedelta(minutes=1),
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self._limit = limit
        self._window = window.total_seconds()
        self._lock = lock.total_seconds()
        self._clock = clock
        self._max_keys = max_keys
        self._failures: OrderedDict[str, list[float]] = OrderedDict()
        self._locked: dict[str, tuple[float, int]] = {}  # key -> (until, lock-outs so far)

    def attempt(self, *keys: str) -> float:
        """Count one attempt against every key, or raise TooManyRequestsError if any is
        locked out; the attempt's time, for :meth:`succeeded`."""
        now = self._clock()
        recents = {}
        for key in keys:
            until, times = self._locked.get(key, (0.0, 0))
            recent = [t for t in self._failures.get(key, []) if now - t < self._window]
            if until <= now and len(recent) >= self._limit:
                until = now + self._lock * 2**times
                self._locked[key] = (until, times + 1)
                self._failures[key] = []
                if len(self._locked) > self._max_keys:
                    self._forget_locks(now)
            if until > now:
                wait = int(until - now) + 1
                raise TooManyRequestsError(
                    f"too many failed sign-ins; try again in {wait} s",
                    detail={"retry_after": wait},
                )
            recents[key] = recent
        for key, recent in recents.items():
            self._failures.pop(key, None)
            self._failures[key] = [*recent, now]
            while len(self._failures) > self._max_keys:
                self._failures.popitem(last=False)
        return now

    def succeeded(self, at: float, *keys: str) -> None:
        """The attempt made at ``at`` was right: it no longer counts. Only that one: a
        caller's own sign-in does not clear the failures it (or others) had from its address."""
        for key in keys:
            recent = self._failures.get(key)
            if recent is not None and at in recent:
                recent.remove(at)

    def _forget_locks(self, now: float) -> None:
        """Keep the lock-outs within ``max_keys``: expired ones go first (losing only how
        often they were locked), then those that would end soonest."""
        for key in [k for k, (until, _) in self._locked.items() if until <= now]:
            del self._locked[key]
        excess = len(self._locked) - self._max_keys
        if excess > 0:
            for key, _ in sorted(self._locked.items(), key=lambda kv: kv[1][0])[:excess]:
                del self._locked[key]


# --- pages -------------------------------------------------------------------------------------


def client_address(request: web.Request) -> str:
    """The peer address as a :class:`LoginLimiter` key (proxies are not trusted)."""
    return f"addr:{request.remote or 'unknown'}"


def safe_next(value: str | None, prefix: str, default: str) -> str:
    """A local path inside the console to go back to after sign-in, or ``default``.

    Anything that could leave the site (a scheme, a host, ``//``, a backslash)
    or the console is replaced by the default; so is one with a control character, which
    ``urlsplit`` would quietly drop (CR, LF, tab) before the checks, and which would then
    break the ``Location`` header it goes into.
    """
    if not value or len(value) > 2048 or any(c < " " or c == "\x7f" for c in value):
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or "\\" in value or value.startswith("//"):
        return default
    if not (parts.path == prefix or parts.path.startswith(prefix + "/")):
        return default
    return value


@dataclass
class PageContext:
    """What a page handler gets besides the request: language, session, form, rendering."""

    request: web.Request
    console: Console
    lang: str
    session: Session
    form: MultiDictProxy[str] = field(default_factory=lambda: MultiDictProxy(MultiDict()))

    @property
    def principal(self) -> str | None:
        return self.session.principal

    @property
    def dir(self) -> str:
        return "rtl" if self.lang in RTL else "ltr"

    def t(self, key: str, **values: Any) -> str:
        return self.console.catalog.text(self.lang, key, **values)

    def url(self, path: str = "/") -> str:
        return self.console.url(path)

    def flash(self, key: str, **values: Any) -> None:
        """A message for the next page shown in this session ("Consent revoked.")."""
        self.session.flashes.append(self.t(key, **values))

    def redirect(self, path: str) -> web.Response:
        """303 See Other to a page of this console (after a POST, so reload does not repeat)."""
        return web.Response(status=303, headers={"Location": self.url(path)})

    def render(self, template: str, *, status: int = 200, **values: Any) -> web.Response:
        return self.console.render(self, template, status=status, **values)


class Console:
    """One web console: its pages, templates, messages and sessions, under ``prefix``."""

    def __init__(
        self,
        name: str,
        *,
        prefix: str,
        package: str,
        title: str,
        nav: Sequence[tuple[str, str]] = (),
        stylesheets: Sequence[str] = (),
        login: str = "/login",
        home: str = "/",
        session_idle: dt.timedelta = SESSION_IDLE,
        secure_cookies: bool = True,
        on_sign_out: Callable[[PageContext], Awaitable[None]] | None = None,
        still_valid: Callable[[PageContext], Awaitable[bool]] | None = None,
    ) -> None:
        if not prefix.startswith("/") or prefix.endswith("/"):
            raise ValueError("a console prefix starts with '/' and does not end with one")
        self.name = name
        self.prefix = prefix
        self.package = package
        self.title = title
        self.nav = tuple(nav)
        self.stylesheets = tuple(stylesheets)
        self.login = login
        self.home = home
        self.secure_cookies = secure_cookies
        # Runs before a session ends, for consoles whose session holds a credential of their
        # own service (the citizen portal's account session) that must end with it.
        self.on_sign_out = on_sign_out
        # Asked on every signed-in page: whether the credential the session began with still
        # holds (an operator token revoked since ends its sessions at their next request).
        self.still_valid = still_valid
        self.cookie = f"shahrah-{name}"
        self.sessions = SessionStore(idle=session_idle)
        self.limiter = LoginLimiter()
        self.catalog = Catalog.load(["core", package])
        self._static = self._load_static()
        self._pages: list[tuple[str, tuple[str, ...], Route]] = []
        self._env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(
                [jinja2.PackageLoader(package, "templates"), jinja2.PackageLoader("core")]
            ),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._env.filters["when"] = _when

    # -- declaring ---------------------------------------------------------------------------

    def url(self, path: str = "/") -> str:
        return self.prefix + (path if path.startswith("/") else "/" + path)

    def page(
        self, path: str, *, methods: Sequence[str] = ("GET",), auth: bool = True
    ) -> Callable[[Page], Page]:
        """Declare a page at ``prefix + path``; ``auth=False`` for the sign-in page."""

        def declare(handler: Page) -> Page:
            self._pages.append((path, tuple(methods), self._guard(handler, auth)))
            return handler

        return declare

    def mount(self, app: web.Application) -> None:
        """Add every page, the stylesheets, the language switch and sign-out to ``app``."""
        for path, methods, handler in self._pages:
            for method in methods:
                app.router.add_route(method, self.url(path), handler)
        app.router.add_get(self.url("/static/{name}"), self._serve_static)
        app.router.add_get(self.url("/lang/{lang}"), self._switch_language)
        app.router.add_post(self.url("/logout"), self._guard(self._logout, auth=False))
        if self.home != "/":
            app.router.add_get(self.prefix + "/", self._to_home)
        app.router.add_get(self.prefix, self._to_home)

    # -- sign-in -----------------------------------------------------------------------------

    def sign_in(self, ctx: PageContext, principal: str, data: dict[str, Any] | None = None) -> None:
        """Start an authenticated session under a new id (the old one stops working)."""
        self.sessions.drop(ctx.session.id)
        fresh = self.sessions.new(principal)
        fresh.data = dict(data or {})
        ctx.session = fresh

    def sign_out(self, ctx: PageContext) -> None:
        self.sessions.drop(ctx.session.id)
        ctx.session = self.sessions.new()

    # -- rendering ---------------------------------------------------------------------------

    def render(
        self, ctx: PageContext, template: str, *, status: int = 200, **values: Any
    ) -> web.Response:
        flashes, ctx.session.flashes = ctx.session.flashes, []
        other = "ur" if ctx.lang == "en" else "en"
        here = ctx.request.path_qs
        values.setdefault("page_title", "")
        html = self._env.get_template(template).render(
            t=ctx.t,
            lang=ctx.lang,
            dir=ctx.dir,
            console=self,
            url=self.url,
            static=lambda name: self.url(f"/static/{name}"),
            csrf=ctx.session.csrf,
            principal=ctx.principal,
            flashes=flashes,
            current=ctx.request.path,
            other_lang=other,
            other_lang_name=LANG_NAMES[other],
            lang_switch=self.url(f"/lang/{other}") + "?next=" + quote(here, safe=""),
            **values,
        )
        return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")

    def _error_page(self, ctx: PageContext, error: ShahrahError) -> web.Response:
        return self.render(
            ctx,
            "error.html",
            status=error.status,
            page_title=ctx.t("core.error.title"),
            error=error,
        )

    # -- the guard around every page -------------------------------------------------------

    def _language(self, request: web.Request) -> str:
        chosen = request.cookies.get(LANG_COOKIE)
        if chosen in LANGS:
            return chosen
        for part in request.headers.get("Accept-Language", "").split(","):
            code = part.split(";")[0].strip().lower()[:2]
            if code in LANGS:
                return code
        return "en"

    def _session(self, request: web.Request) -> tuple[Session, bool]:
        """The request's session and whether it is one the browser already holds."""
        sid = request.cookies.get(self.cookie)
        if sid:
            session = self.sessions.get(sid)
            if session is not None:
                return session, True
        return self.sessions.new(), False

    def _same_origin(self, request: web.Request) -> bool:
        expected = f"{request.scheme}://{request.host}"
        origin = request.headers.get("Origin")
        if origin is not None:
            return hmac.compare_digest(origin.encode(), expected.encode())
        referer = request.headers.get("Referer", "")
        parts = urlsplit(referer)
        return bool(parts.scheme) and f"{parts.scheme}://{parts.netloc}" == expected

    async def _read_form(self, request: web.Request) -> MultiDictProxy[str]:
        too_large = PayloadTooLargeError(f"the form is larger than {MAX_FORM} bytes")
        if request.content_length is not None and request.content_length > MAX_FORM:
            raise too_large
        # Only URL-encoded forms: every page's form is one, and it is the one kind whose
        # whole body we can bound and then parse ourselves (no file uploads to think of).
        if request.content_type != "application/x-www-form-urlencoded":
            raise BadRequestError("expected a form submission")
        # A chunked body has no Content-Length: read at most one byte past the limit
        # ourselves rather than letting request.post() buffer whatever arrives.
        body = await read_up_to(request.content, MAX_FORM + 1)
        if len(body) > MAX_FORM:
            raise too_large
        # Every page is served in UTF-8, so browsers send forms in it; any other charset named
        # here (punycode, utf-7...) is refused rather than handed to its codec.
        if (request.charset or "utf-8").lower() != "utf-8":
            raise BadRequestError("forms are taken in UTF-8 only")
        try:
            pairs = parse_qsl(
                body.decode("utf-8").rstrip(), keep_blank_values=True, encoding="utf-8"
            )
        except UnicodeDecodeError as e:
            raise BadRequestError("the form is not valid text") from e
        return MultiDictProxy(MultiDict(pairs))

    def _guard(self, handler: Page, auth: bool) -> Route:
        async def guarded(request: web.Request) -> web.StreamResponse:
            session, known = self._session(request)
            ctx = PageContext(request, self, self._language(request), session)
            try:
                if request.method == "POST":
                    await self._check_post(request, ctx, known)
                refuse_nul(request, list(ctx.form.items()))  # path, query and form at once
                if auth and ctx.principal is not None and not await self._still_valid(ctx):
                    self.sign_out(ctx)
                    response: web.StreamResponse = self._to_login(ctx, expired=True)
                elif auth and ctx.principal is None:
                    response = self._to_login(ctx, expired=known is False)
                else:
                    response = await handler(request, ctx)
            except ShahrahError as e:
                response = self._error_page(ctx, e)
            except web.HTTPException:
                raise
            except Exception:
                error_id = str(uuid.uuid4())
                log.exception(
                    "page %s %s failed (error %s)", request.method, request.path, error_id
                )
                response = self._error_page(
                    ctx, ShahrahError(ctx.t("core.error.internal", id=error_id))
                )
            self._finish(request, ctx, response)
            return response

        return guarded

    async def _still_valid(self, ctx: PageContext) -> bool:
        return self.still_valid is None or await self.still_valid(ctx)

    async def _check_post(self, request: web.Request, ctx: PageContext, known: bool) -> None:
        if not self._same_origin(request):
            raise ForbiddenError(ctx.t("core.error.origin"))
        ctx.form = await self._read_form(request)
        token = ctx.form.get("csrf", "")
        if not known or not hmac.compare_digest(token.encode(), ctx.session.csrf.encode()):
            # Nothing was done; a stale page after the session expired lands here too.
            raise ForbiddenError(ctx.t("core.error.csrf"))

    def _to_login(self, ctx: PageContext, *, expired: bool) -> web.Response:
        if expired and ctx.request.cookies.get(self.cookie):
            ctx.flash("core.session_expired")
        target = self.url(self.login)
        if ctx.request.method == "GET":
            target += "?next=" + quote(ctx.request.path_qs, safe="")
        return web.Response(status=303, headers={"Location": target})

    def _finish(self, request: web.Request, ctx: PageContext, response: web.StreamResponse) -> None:
        if request.cookies.get(self.cookie) != ctx.session.id:
            response.set_cookie(
                self.cookie,
                ctx.session.id,
                path=self.prefix,
                httponly=True,
                secure=self.secure_cookies,
                samesite="Strict",
            )
        response.headers["Content-Security-Policy"] = CSP
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"

    # -- built-in routes -------------------------------------------------------------------

    async def _logout(self, request: web.Request, ctx: PageContext) -> web.StreamResponse:
        if self.on_sign_out is not None and ctx.principal is not None:
            await self.on_sign_out(ctx)
        self.sign_out(ctx)
        ctx.flash("core.signed_out")
        return ctx.redirect(self.login)

    async def _to_home(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPSeeOther(self.url(self.home))

    async def _switch_language(self, request: web.Request) -> web.StreamResponse:
        lang = request.match_info["lang"]
        if lang not in LANGS:
            raise NotFoundError(f"no language {lang!r}")
        target = safe_next(request.query.get("next"), self.prefix, self.url(self.home))
        response = web.Response(status=303, headers={"Location": target})
        response.set_cookie(
            LANG_COOKIE,
            lang,
            path="/",
            max_age=365 * 24 * 3600,
            secure=self.secure_cookies,
            samesite="Lax",
        )
        return response

    def _load_static(self) -> dict[str, bytes]:
        files: dict[str, bytes] = {}
        for package in ("core", self.package):
            folder = resources.files(package) / "static"
            if folder.is_dir():
                files.update({f.name: f.read_bytes() for f in folder.iterdir() if f.is_file()})
        return files

    async def _serve_static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        body = self._static.get(name)
        kind = STATIC_TYPES.get(name.rpartition(".")[2])
        if body is None or kind is None:
            raise NotFoundError(f"no static file {name!r}")
        return web.Response(
            body=body,
            content_type=kind,
            charset="utf-8",
            headers={"Cache-Control": "public, max-age=3600"},
        )


def _when(value: dt.datetime | None) -> str:
    """A time as people read it: ``2026-11-28 14:05 UTC``.

    Wrapped in Unicode's left-to-right isolate (LRI ... PDI) so that inside Urdu text the
    date keeps its order instead of being rearranged around its hyphens and spaces. It is
    text, not markup, so it also works inside translated messages.
    """
    if value is None:
        return "—"
    return "\u2066" + value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC") + "\u2069"
