"""Members, their subsystems and their signing keys."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from core.errors import NotFoundError
from core.ids import MEMBER_CLASSES, ClientId, MemberId
from core.pages import Console, PageContext
from registry import service, store
from registry.api import read
from registry.console._forms import attempt, choices
from registry.console._listing import Listing, listing, status_toggle
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


def _key_body(form: Mapping[str, str]) -> dict[str, Any]:
    try:
        jwk: Any = json.loads(form["jwk"])
    except ValueError:
        jwk = form["jwk"]  # not JSON: the API's validation says the key must be an object
    return {
        "member": form["member"],
        "jwk": jwk,
        "not_before": utc_field(form["not_before"]),
        "not_after": utc_field(form["not_after"]),
    }


def register(console: Console) -> None:
    members = listing(
        console,
        Listing(
            path="/members",
            template="members.html",
            title="op.nav.members",
            names=("member_class", "member_code", "name"),
            model=MemberCreate,
            action=service.add_member,
            done=lambda ctx, form, made: ctx.flash("op.members.added", id=str(made.id)),
            values=lambda ctx, snap: {
                "members": snap.members,
                "class_options": [(c, c) for c in MEMBER_CLASSES],
            },
            blame="member_code",
        ),
    )
    status_toggle(
        console,
        "/members/status",
        target="member",
        model=MemberUpdate,
        change=lambda s, ident, body: service.update_member(s, MemberId.parse(ident), body),
        back="/members",
        show=members,
    )

    subsystems = listing(
        console,
        Listing(
            path="/subsystems",
            template="subsystems.html",
            title="op.nav.subsystems",
            names=("member", "code", "name"),
            model=SubsystemCreate,
            action=service.add_subsystem,
            body=lambda form: {"id": f"{form['member']}/{form['code']}", "name": form["name"]},
            fields={"id": "code", "name": "name"},
            blame="code",
            done=lambda ctx, form, _: ctx.flash(
                "op.subsystems.added", id=f"{form['member']}/{form['code']}"
            ),
            values=lambda ctx, snap: {
                "members": snap.members,
                "member_options": member_options(ctx, snap.members),
            },
        ),
    )
    status_toggle(
        console,
        "/subsystems/status",
        target="subsystem",
        model=SubsystemUpdate,
        change=lambda s, ident, body: service.update_subsystem(
            s, ClientId.parse(ident, require_subsystem=True), body
        ),
        back="/subsystems",
        show=subsystems,
    )

    listing(
        console,
        Listing(
            path="/keys",
            template="keys.html",
            title="op.nav.keys",
            names=("member", "jwk", "not_before", "not_after"),
            model=KeyCreate,
            action=service.add_key,
            body=_key_body,
            blame="jwk",
            done=lambda ctx, form, key: ctx.flash("op.keys.added", kid=key.kid),
            values=lambda ctx, snap: {
                "member_options": member_options(ctx, snap.members),
                "keys": [
                    (m.id, k, key_state(k, dt.datetime.now(dt.UTC)))
                    for m in snap.members
                    for k in m.keys
                ],
            },
        ),
    )

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
