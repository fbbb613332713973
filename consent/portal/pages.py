"""The citizen portal's pages, under ``/portal/`` of the consent service.

Sign-in goes through the same accounts as the citizen API (argon2id, lock-out
after five wrong passwords in the database) and the same per-address throttle
(the console's limiter, which the citizen API shares). The portal session
holds the account session's token and checks it on every page, so a session
that ended there (timed out, password changed) sends the citizen back to sign
in.

Every action goes through :class:`consent.service.ConsentService` as the
citizen API's do, with the same rules: a consent neither about the citizen
nor about a ward is "not found", whatever the URL says. A GET only shows;
each change is a POST from its own confirmation page, which says in words
what will stop or start.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from audit.errors import TimelineUnavailableError
from audit.mirror import parse_cursor
from audit.timeline import MAX_CURSOR
from audit.timeline_client import TimelineClient
from consent import citizens
from consent.artefact import Relation
from consent.citizen_api import signed_receipt
from consent.lifecycle import Action, Status
from consent.portal.views import CITIZEN_ACTIONS, Names, card, history_rows, timeline_rows
from consent.state import STATE, ConsentState
from core.db import transaction, utcnow
from core.errors import (
    BadRequestError,
    NotFoundError,
    TooManyRequestsError,
    UnauthorizedError,
)
from core.ids import Cnic
from core.pages import Console, PageContext, client_address, safe_next

__all__ = ["PREFIX", "TIMELINE", "build_console"]

PREFIX = "/portal"
TIMELINE = web.AppKey("consent_portal_timeline", TimelineClient)
MAX_CONSENTS = 200  # per page of the list; a citizen with more pages through the API
TIMELINE_PAGE = 50

CitizenPage = Callable[[web.Request, PageContext, Cnic], Awaitable[web.StreamResponse]]
_PAGES: list[tuple[str, tuple[str, ...], CitizenPage]] = []
_ACTIONS = "|".join(a.value for a in CITIZEN_ACTIONS)


def build_console() -> Console:
    """A fresh portal (its own sessions and throttle) with every page declared."""
    console = Console(
        "citizen",
        prefix=PREFIX,
        package="consent",
        title="portal.title",
        nav=[("/consents", "portal.nav.consents"), ("/timeline", "portal.nav.timeline")],
        stylesheets=["portal.css"],
        home="/consents",
        on_sign_out=_end_account_session,
    )
    console.page("/login", methods=("GET", "POST"), auth=False)(_login)
    for path, methods, handler in _PAGES:
        console.page(path, methods=methods)(_signed_in(handler))
    return console


def _page(path: str, methods: tuple[str, ...] = ("GET",)) -> Callable[[CitizenPage], CitizenPage]:
    def declare(handler: CitizenPage) -> CitizenPage:
        _PAGES.append((path, methods, handler))
        return handler

    return declare


def _signed_in(handler: CitizenPage) -> Callable[[web.Request, PageContext], Awaitable[Any]]:
    """Check the account session behind the portal session on every page."""

    async def page(request: web.Request, ctx: PageContext) -> web.StreamResponse:
        state = request.app[STATE]
        try:
            me = await state.accounts.authenticate(str(ctx.session.data.get("token", "")))
        except UnauthorizedError:
            me = None
        if me is None or str(me) != ctx.principal:
            ctx.console.sign_out(ctx)
            ctx.flash("core.session_expired")
            return ctx.redirect(ctx.console.login)
        return await handler(request, ctx, me)

    return page


# --- signing in --------------------------------------------------------------------------------


async def _login(request: web.Request, ctx: PageContext) -> web.StreamResponse:
    console = ctx.console
    error = None
    status = 200
    cnic_text = ""
    if request.method == "POST":
        cnic_text = ctx.form.get("cnic", "")[:32]
        address = client_address(request)
        try:
            at = console.limiter.attempt(address)
            cnic = Cnic.parse(cnic_text.strip())
            signed = await request.app[STATE].accounts.sign_in(cnic, ctx.form.get("password", ""))
        except TooManyRequestsError as e:
            error = ctx.t("portal.login.throttled", seconds=e.detail.get("retry_after", 60))
            status = 429
        except BadRequestError:
            error = ctx.t("portal.login.bad_cnic")
            status = 400
        except UnauthorizedError:
            # Also a locked account: it answers exactly as a wrong password does.
            error = ctx.t("portal.login.wrong")
            status = 401
        else:
            console.limiter.succeeded(at, address)
            console.sign_in(ctx, str(cnic), {"token": signed.token})
            target = safe_next(request.query.get("next"), console.prefix, ctx.url(console.home))
            return web.Response(status=303, headers={"Location": target})
    return ctx.render(
        "portal/login.html",
        status=status,
        page_title=ctx.t("core.sign_in"),
        error=error,
        cnic=cnic_text,
    )


async def _end_account_session(ctx: PageContext) -> None:
    """Signing out of the portal ends the account session behind it, not only the cookie."""
    token = ctx.session.data.get("token")
    if token:
        await ctx.request.app[STATE].accounts.sign_out(str(token))


# --- whose data --------------------------------------------------------------------------------


async def _people(state: ConsentState, me: Cnic) -> dict[str, Relation]:
    """Me and the wards I may act for now, with how."""
    async with transaction(state.sessions, write=False) as s:
        wards = await citizens.wards(s, me, utcnow())
    return {str(me): Relation.SELF, **dict(sorted(wards.items()))}


def _handle(ctx: PageContext, cnic: str) -> str:
    """How a page address names one of my people (``?for=``): not by the CNIC, which would
    stay in the browser's history and bookmarks (on a shared computer too), but by a digest
    keyed with this session's secret, which names no one in any other session."""
    digest = hmac.new(ctx.session.csrf.encode(), cnic.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:12]).decode()


def _chosen(ctx: PageContext, me: Cnic, people: dict[str, Relation]) -> Cnic:
    """The person the page is about (``?for=``): me, or one of my wards; else 404."""
    wanted = ctx.request.query.get("for")
    if wanted is None:
        return me
    for cnic in people:
        if hmac.compare_digest(_handle(ctx, cnic).encode(), wanted.encode()):
            return Cnic.parse(cnic)
    raise NotFoundError("no such person among yours")


def _switcher(ctx: PageContext, people: dict[str, Relation], subject: Cnic) -> list[Any]:
    return [
        {
            "cnic": cnic,
            "handle": _handle(ctx, cnic),
            "label": ctx.t("portal.me")
            if relation is Relation.SELF
            else ctx.t("portal.ward", cnic=cnic, relation=ctx.t(f"portal.relation.{relation}")),
            "current": cnic == str(subject),
            "me": relation is Relation.SELF,
        }
        for cnic, relation in people.items()
    ]


def _known(ctx: PageContext) -> set[str]:
    return ctx.console.catalog.keys(ctx.lang)


# --- consents ----------------------------------------------------------------------------------


@_page("/consents")
async def consents(request: web.Request, ctx: PageContext, me: Cnic) -> web.StreamResponse:
    state = request.app[STATE]
    people = await _people(state, me)
    subject = _chosen(ctx, me, people)
    page = await state.service.citizen_page(
        me, subject=subject, status=None, after=None, limit=MAX_CONSENTS
    )
    names = Names(state.conf)
    cards = [card(c, me, names, ctx.t, _known(ctx)) for c in page.items]
    return ctx.render(
        "portal/consents.html",
        page_title=ctx.t("portal.nav.consents"),
        name=await state.accounts.name(me),
        people=_switcher(ctx, people, subject),
        here=ctx.url("/consents"),
        pending=[c for c in cards if c.status is Status.PENDING],
        others=[c for c in cards if c.status is not Status.PENDING],
    )


@_page("/consents/{consent_id}")
async def consent(request: web.Request, ctx: PageContext, me: Cnic) -> web.StreamResponse:
    state = request.app[STATE]
    cid = request.match_info["consent_id"]
    view = await state.service.citizen_get(me, cid)
    events = await state.service.citizen_history(me, cid)
    shown = card(view, me, Names(state.conf), ctx.t, _known(ctx))
    return ctx.render(
        "portal/consent.html",
        page_title=shown.consumer,
        c=shown,
        whose=_handle(ctx, shown.subject),
        history=history_rows(events, me, ctx.t),
    )


@_page("/consents/{consent_id}/{action:" + _ACTIONS + "}", methods=("GET", "POST"))
async def act(request: web.Request, ctx: PageContext, me: Cnic) -> web.StreamResponse:
    state = request.app[STATE]
    cid = request.match_info["consent_id"]
    action = Action(request.match_info["action"])
    view = await state.service.citizen_get(me, cid)  # 404 before anything else
    shown = card(view, me, Names(state.conf), ctx.t, _known(ctx))
    if request.method == "POST":
        await state.service.citizen_act(me, cid, action)
        state.metrics.changes.labels(action.value).inc()
        ctx.flash(f"portal.done.{action}", consumer=shown.consumer)
        return ctx.redirect(f"/consents/{cid}")
    whom = ctx.t("portal.whom.self") if not shown.for_ward else shown.subject
    consequence = ctx.t(
        f"portal.confirm.{action}",
        consumer=shown.consumer,
        fields=shown.fields,
        whom=whom,
        provider=shown.providers,
        purpose=shown.purpose,
        until=_date(shown.expires_at),
    )
    label = ctx.t(f"portal.action.{action}")
    return ctx.render(
        "portal/confirm.html",
        page_title=label,
        c=shown,
        action=action,
        label=label,
        question=ctx.t("portal.confirm.title", action=label),
        consequence=consequence,
        applies=action in shown.actions,
    )


@_page("/consents/{consent_id}/receipt")
async def receipt(request: web.Request, ctx: PageContext, me: Cnic) -> web.StreamResponse:
    cid = request.match_info["consent_id"]
    return web.Response(
        text=await signed_receipt(request.app[STATE], me, cid),
        content_type="application/jose",
        headers={"Content-Disposition": f'attachment; filename="{cid}.receipt.jws"'},
    )


# --- who accessed my data ----------------------------------------------------------------------


@_page("/timeline")
async def timeline(request: web.Request, ctx: PageContext, me: Cnic) -> web.StreamResponse:
    state = request.app[STATE]
    people = await _people(state, me)
    subject = _chosen(ctx, me, people)
    cursor = request.query.get("cursor") or None
    if cursor is not None:
        # An edited page address is the citizen's mistake (400), not the audit server being
        # unavailable (503), which is all the server's refusal would tell the page.
        try:
            if len(cursor) > MAX_CURSOR:
                raise BadRequestError("cursor too long")
            parse_cursor(cursor)
        except BadRequestError as e:
            raise BadRequestError(ctx.t("portal.timeline.bad_cursor")) from e
    rows = None
    next_cursor = None
    unavailable = False
    client = request.app.get(TIMELINE)
    try:
        if client is None:
            raise TimelineUnavailableError("the portal is not connected to the audit server")
        found = await client.timeline(subject, limit=TIMELINE_PAGE, cursor=cursor)
        rows = timeline_rows(found.items, Names(state.conf), ctx.t, _known(ctx))
        next_cursor = found.next_cursor
    except TimelineUnavailableError:
        unavailable = True
    return ctx.render(
        "portal/timeline.html",
        status=503 if unavailable else 200,
        page_title=ctx.t("portal.timeline.heading"),
        people=_switcher(ctx, people, subject),
        here=ctx.url("/timeline"),
        whose=_handle(ctx, str(subject)),
        rows=rows,
        next_cursor=next_cursor,
        unavailable=unavailable,
    )


def _date(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d")
