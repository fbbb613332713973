"""Guardianships, registered in the consent service through its operator API."""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web

from core.errors import BadRequestError, NotFoundError
from core.pages import Console, PageContext
from registry.console._forms import errors_of
from registry.console.consent import (
    CONSENT_OPERATOR,
    ConsentOperator,
    ConsentUnavailableError,
    Guardianship,
)
from registry.console.pages_members import utc_field

FIELDS = ("guardian", "ward", "relation", "valid_from", "valid_until", "reference")
RELATIONS = ("parent", "court_guardian", "attorney")  # consent.artefact.Relation, less "self"


def register(console: Console) -> None:
    async def page(
        request: web.Request, ctx: PageContext, form: dict[str, str], errors: dict[str, str]
    ) -> web.Response:
        operator = request.app[CONSENT_OPERATOR]
        unavailable = None
        found: list[Guardianship] = []
        try:
            found = await operator.list(request)
        except ConsentUnavailableError as e:
            unavailable = e.message
        return ctx.render(
            "guardianships.html",
            status=503 if unavailable else 400 if errors else 200,
            page_title=ctx.t("op.nav.guardianships"),
            guardianships=found,
            now=dt.datetime.now(dt.UTC),
            unavailable=unavailable,
            relation_options=[(r, ctx.t(f"op.relation.{r}")) for r in RELATIONS],
            form=form,
            errors=errors,
        )

    @console.page("/guardianships", methods=("GET", "POST"))
    async def guardianships(request: web.Request, ctx: PageContext) -> web.StreamResponse:
        form = {k: ctx.form.get(k, "").strip() for k in FIELDS}
        if request.method == "GET":
            return await page(request, ctx, {"relation": "parent"}, {})
        body: dict[str, Any] = {k: v for k, v in form.items() if v}
        for k in ("valid_from", "valid_until"):
            if k in body:
                body[k] = utc_field(body[k])
        operator: ConsentOperator = request.app[CONSENT_OPERATOR]
        try:
            added = await operator.add(request, body)
        except BadRequestError as e:  # validated by the consent service, shown by field
            return await page(request, ctx, form, errors_of(e, {k: k for k in FIELDS}))
        ctx.flash("op.guardianships.added", id=added.id)
        return ctx.redirect("/guardianships")

    @console.page("/guardianships/{gid:[0-9]{1,18}}/end", methods=("GET", "POST"))
    async def end(request: web.Request, ctx: PageContext) -> web.StreamResponse:
        gid = int(request.match_info["gid"])
        operator: ConsentOperator = request.app[CONSENT_OPERATOR]
        if request.method == "POST":
            await operator.end(request, gid)
            ctx.flash("op.guardianships.ended", id=gid)
            return ctx.redirect("/guardianships")
        current = next((g for g in await operator.list(request) if g.id == gid), None)
        if current is None:
            raise NotFoundError(ctx.t("op.guardianships.unknown", id=gid))
        return ctx.render(
            "confirm_end_guardianship.html",
            page_title=ctx.t("op.guardianships.end_title"),
            g=current,
        )
