"""Access rights: who may call which service (or endpoint); grant and revoke."""

from __future__ import annotations

from typing import Any, get_args

from aiohttp import web

from core.errors import NotFoundError
from core.pages import Console, PageContext
from registry import service, store
from registry.api import read
from registry.console._forms import Outcome, attempt, choices, perform
from registry.globalconf import HttpMethod
from registry.payloads import AccessRightCreate, AccessRightView

GRANT_FIELDS = ("service", "method", "path", "client", "global_group", "local_group")


def grantee(right: AccessRightView) -> str:
    return str(right.client or right.global_group or right.local_group)


def register(console: Console) -> None:
    async def rights_page(
        request: web.Request, ctx: PageContext, form: dict[str, str], outcome: Outcome[Any]
    ) -> web.Response:
        snap = await read(request, store.snapshot)
        prompt = ctx.t("op.choose")
        return ctx.render(
            "rights.html",
            status=200 if outcome.ok else 400,
            page_title=ctx.t("op.nav.rights"),
            rights=snap.access_rights,
            service_options=choices(((str(s.id), str(s.id)) for s in snap.services), prompt),
            client_options=choices(
                (
                    (f"{m.id}/{s.code}", f"{m.id}/{s.code}")
                    for m in snap.members
                    for s in m.subsystems
                ),
                ctx.t("op.rights.none_chosen"),
            ),
            group_options=choices(
                ((g.code, g.code) for g in snap.global_groups), ctx.t("op.rights.none_chosen")
            ),
            method_options=[
                (m, ctx.t("op.rights.any_method") if m == "*" else m) for m in get_args(HttpMethod)
            ],
            form=form,
            errors=outcome.errors,
        )

    @console.page("/access-rights", methods=("GET", "POST"))
    async def rights(request: web.Request, ctx: PageContext) -> web.StreamResponse:
        form = {k: ctx.form.get(k, "").strip() for k in GRANT_FIELDS}
        if request.method == "GET":
            return await rights_page(request, ctx, {"method": "*", "path": "**"}, Outcome())
        body = {k: v or None for k, v in form.items()}
        body["method"], body["path"] = form["method"] or "*", form["path"] or "**"
        done = await perform(
            request,
            AccessRightCreate,
            body,
            service.grant,
            fields={k: k for k in GRANT_FIELDS},
        )
        if not done.ok or done.value is None:
            return await rights_page(request, ctx, form, done)
        ctx.flash(
            "op.rights.granted",
            id=done.value.id,
            service=form["service"],
            grantee=grantee(done.value),
        )
        return ctx.redirect("/access-rights")

    @console.page("/access-rights/{id:[0-9]{1,18}}/revoke", methods=("GET", "POST"))
    async def revoke(request: web.Request, ctx: PageContext) -> web.StreamResponse:
        right_id = int(request.match_info["id"])
        snap = await read(request, store.snapshot)
        right = next((r for r in snap.access_rights if r.id == right_id), None)
        if right is None:
            raise NotFoundError(ctx.t("op.rights.unknown", id=right_id))
        error = None
        if request.method == "POST":
            done = await attempt(request, lambda s: service.revoke_access(s, right_id))
            if done.ok:
                ctx.flash("op.rights.revoked", id=right_id)
                return ctx.redirect("/access-rights")
            error = next(iter(done.errors.values()))
        return ctx.render(
            "confirm_revoke_right.html",
            status=409 if error else 200,
            page_title=ctx.t("op.rights.revoke_title"),
            right=right,
            grantee=grantee(right),
            error=error,
        )
