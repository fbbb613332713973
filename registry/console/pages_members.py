"""Members, their subsystems and their signing keys."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from aiohttp import web

from core.errors import NotFoundError
from core.ids import MEMBER_CLASSES, ClientId, MemberId
from core.pages import Console, PageContext
from registry import service, store
from registry.api import read
from registry.console._forms import Outcome, attempt, choices, perform
from registry.globalconf import KeyInfo, MemberInfo
from registry.payloads import (
    KeyCreate,
    MemberCreate,
    MemberUpdate,
    SubsystemCreate,
    SubsystemUpdate,
)

STATUSES = ("active", "suspended")


def utc_field(value: str) -> str | None:
    """A ``datetime-local`` value read as UTC (the pages say so); empty means not given."""
    value = value.strip()
    if not value:
        return None
    return value if value.endswith("Z") or "+" in value[10:] else value + "Z"


def member_options(ctx: PageContext, members: list[MemberInfo]) -> list[tuple[str, str]]:
    return choices(((str(m.id), f"{m.id} — {m.name}") for m in members), ctx.t("op.choose"))


def key_state(key: KeyInfo, now: dt.datetime) -> str:
    """The message key naming whether a signing key verifies now."""
    if key.revoked_at is not None:
        return "op.keys.revoked"
    if now < key.not_before:
        return "op.keys.future"
    if key.not_after is not None and now >= key.not_after:
        return "op.keys.expired"
    return "op.keys.valid"


def register(console: Console) -> None:
    async def members_page(
        request: web.Request, ctx: PageContext, form: dict[str, str], outcome: Outcome[Any]
    ) -> web.Response:
        snap = await read(request, store.snapshot)
        return ctx.render(
            "members.html",
            status=200 if outcome.ok else 400,
            page_title=ctx.t("op.nav.members"),
            members=snap.members,
            class_options=[(c, c) for c in MEMBER_CLASSES],
            form=form,
            errors=outcome.errors,
        )

    @console.page("/members", methods=("GET", "POST"))
    async def members(request: web.Request, ctx: PageContext) -> web.StreamResponse:
        form = {k: ctx.form.get(k, "").strip() for k in ("member_class", "member_code", "name")}
        if request.method == "GET":
            return await members_page(request, ctx, form, Outcome())
        done = await perform(
            request,
            MemberCreate,
            form,
            service.add_member,
            fields={k: k for k in form},
            blame="member_code",
        )
        if not done.ok:
            return await members_page(request, ctx, form, done)
        ctx.flash("op.members.added", id=str(done.value.id) if done.value else "")
        return ctx.redirect("/members")

    @console.page("/members/status", methods=("POST",))
    async def member_status(request: web.Request, ctx: PageContext) -> web.StreamResponse:
        mid = MemberId.parse(ctx.form.get("member", ""))
        status = ctx.form.get("status", "")
        done = await perform(
            request,
            MemberUpdate,
            {"status": status},
            lambda s, body: service.update_member(s, mid, body),
            fields={"status": "status"},
        )
        if not done.ok:
            return await members_page(request, ctx, {}, done)
        ctx.flash("op.status_changed", id=str(mid), status=ctx.t(f"op.status.{status}"))
        return ctx.redirect("/members")

    # --- subsystems -------------------------------------------------------------------------

    async def subsystems_page(
        request: web.Request, ctx: PageContext, form: dict[str, str], outcome: Outcome[Any]
    ) -> web.Response:
        snap = await read(request, store.snapshot)
        return ctx.render(
            "subsystems.html",
            status=200 if outcome.ok else 400,
            page_title=ctx.t("op.nav.subsystems"),
            members=snap.members,
            member_options=member_options(ctx, snap.members),
            form=form,
            errors=outcome.errors,
        )

    @console.page("/subsystems", methods=("GET", "POST"))
    async def subsystems(request: web.Request, ctx: PageContext) -> web.StreamResponse:
        form = {k: ctx.form.get(k, "").strip() for k in ("member", "code", "name")}
        if request.method == "GET":
            return await subsystems_page(request, ctx, form, Outcome())
        body = {"id": f"{form['member']}/{form['code']}", "name": form["name"]}
        done = await perform(
            request,
            SubsystemCreate,
            body,
            service.add_subsystem,
            fields={"id": "code", "name": "name"},
            blame="code",
        )
        if not done.ok:
            return await subsystems_page(request, ctx, form, done)
        ctx.flash("op.subsystems.added", id=body["id"])
        return ctx.redirect("/subsystems")

    @console.page("/subsystems/status", methods=("POST",))
    async def subsystem_status(request: web.Request, ctx: PageContext) -> web.StreamResponse:
        cid = ClientId.parse(ctx.form.get("subsystem", ""), require_subsystem=True)
        status = ctx.form.get("status", "")
        done = await perform(
            request,
            SubsystemUpdate,
            {"status": status},
            lambda s, body: service.update_subsystem(s, cid, body),
            fields={"status": "status"},
        )
        if not done.ok:
            return await subsystems_page(request, ctx, {}, done)
        ctx.flash("op.status_changed", id=str(cid), status=ctx.t(f"op.status.{status}"))
        return ctx.redirect("/subsystems")

    # --- signing keys -----------------------------------------------------------------------

    async def keys_page(
        request: web.Request, ctx: PageContext, form: dict[str, str], outcome: Outcome[Any]
    ) -> web.Response:
        snap = await read(request, store.snapshot)
        now = dt.datetime.now(dt.UTC)
        keys = [(m.id, k, key_state(k, now)) for m in snap.members for k in m.keys]
        return ctx.render(
            "keys.html",
            status=200 if outcome.ok else 400,
            page_title=ctx.t("op.nav.keys"),
            member_options=member_options(ctx, snap.members),
            keys=keys,
            form=form,
            errors=outcome.errors,
        )

    @console.page("/keys", methods=("GET", "POST"))
    async def keys(request: web.Request, ctx: PageContext) -> web.StreamResponse:
        names = ("member", "jwk", "not_before", "not_after")
        form = {k: ctx.form.get(k, "").strip() for k in names}
        if request.method == "GET":
            return await keys_page(request, ctx, form, Outcome())
        try:
            jwk: Any = json.loads(form["jwk"]) if form["jwk"] else None
        except ValueError:
            return await keys_page(
                request, ctx, form, Outcome(errors={"jwk": ctx.t("op.keys.not_json")})
            )
        body = {
            "member": form["member"],
            "jwk": jwk,
            "not_before": utc_field(form["not_before"]),
            "not_after": utc_field(form["not_after"]),
        }
        done = await perform(
            request,
            KeyCreate,
            body,
            service.add_key,
            fields={k: k for k in names},
            blame="jwk",
        )
        if not done.ok:
            return await keys_page(request, ctx, form, done)
        ctx.flash("op.keys.added", kid=done.value.kid if done.value else "")
        return ctx.redirect("/keys")

    @console.page("/keys/{kid}/revoke", methods=("GET", "POST"))
    async def revoke_key(request: web.Request, ctx: PageContext) -> web.StreamResponse:
        kid = request.match_info["kid"]
        snap = await read(request, store.snapshot)
        found = [(m.id, k) for m in snap.members for k in m.keys if k.kid == kid]
        if not found:
            raise NotFoundError(ctx.t("op.keys.unknown"))
        owner, key = found[0]
        if request.method == "POST":
            done = await attempt(request, lambda s: service.revoke_key(s, kid))
            if done.ok:
                ctx.flash("op.keys.revoked_now", kid=kid)
                return ctx.redirect("/keys")
            error = next(iter(done.errors.values()))
        else:
            error = None
        return ctx.render(
            "confirm_revoke_key.html",
            status=409 if error else 200,
            page_title=ctx.t("op.keys.revoke_title"),
            owner=owner,
            key=key,
            error=error,
        )
