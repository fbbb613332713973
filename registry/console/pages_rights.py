"""Access rights: who may call which service (or endpoint); grant and revoke."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, get_args

from aiohttp import web

from core.errors import NotFoundError
from core.pages import Console, PageContext
from registry import service, store
from registry.api import read
from registry.console._forms import attempt, choices
from registry.console._listing import Listing, listing
from registry.globalconf import HttpMethod
from registry.payloads import AccessRightCreate, AccessRightView

GRANT_FIELDS = ("service", "method", "path", "client", "global_group", "local_group")


def grantee(right: AccessRightView) -> str:
    return str(right.client or right.global_group or right.local_group)


def _grant_body(form: Mapping[str, str]) -> dict[str, Any]:
    body: dict[str, Any] = {k: v or None for k, v in form.items()}
    body["method"], body["path"] = form["method"] or "*", form["path"] or "**"
    return body


def register(console: Console) -> None:
    def values(ctx: PageContext, snap: store.Snapshot) -> dict[str, Any]:
        none = ctx.t("op.rights.none_chosen")
        subsystems = [f"{m.id}/{s.code}" for m in snap.members for s in m.subsystems]
        return {
            "rights": snap.access_rights,
            "service_options": choices(
                ((str(s.id), str(s.id)) for s in snap.services), ctx.t("op.choose")
            ),
            "client_options": choices(((c, c) for c in subsystems), none),
            "group_options": choices(((g.code, g.code) for g in snap.global_groups), none),
            "method_options": [
                (m, ctx.t("op.rights.any_method") if m == "*" else m) for m in get_args(HttpMethod)
            ],
        }

    listing(
        console,
        Listing(
            path="/access-rights",
            template="rights.html",
            title="op.nav.rights",
            names=GRANT_FIELDS,
            model=AccessRightCreate,
            action=service.grant,
            body=_grant_body,
            done=lambda ctx, form, made: ctx.flash(
                "op.rights.granted", id=made.id, service=str(made.service), grantee=grantee(made)
            ),
            values=values,
            initial={"method": "*", "path": "**"},
        ),
    )

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
