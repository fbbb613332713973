"""The schema registry: subjects and versions, and registering a version after a preview.

Registering is two steps: the preview runs the registry's own compatibility
check (at the subject's level) and shows its verbose messages; only a
compatible schema is offered for registration, and the registration checks
again, so a version registered by someone else in between is still judged.
"""

from __future__ import annotations

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import BadRequestError
from core.pages import Console, PageContext
from registry.console._forms import Outcome, attempt, errors_of
from registry.schemareg import service as schemas
from registry.schemareg.api import read, write
from registry.schemareg.compat import Verdict
from registry.schemareg.payloads import SchemaRequest, parse_request

MAX_SHOWN = 5  # versions shown per subject (pages stay small); older ones are in the API


def _request(schema_text: str) -> SchemaRequest:
    return parse_request(SchemaRequest, {"schema": schema_text})


def register(console: Console) -> None:
    async def overview(
        request: web.Request, ctx: PageContext, form: dict[str, str], errors: dict[str, str]
    ) -> web.Response:
        async def subjects(s: AsyncSession) -> list[tuple[str, list[int], str]]:
            found: list[tuple[str, list[int], str]] = []
            for name in await schemas.list_subjects(s):
                config = await schemas.get_config(s, name)
                found.append((name, await schemas.list_versions(s, name), config.compatibility))
            return found

        return ctx.render(
            "schemas.html",
            status=400 if errors else 200,
            page_title=ctx.t("op.nav.schemas"),
            subjects=await read(request, subjects),
            form=form,
            errors=errors,
        )

    @console.page("/schemas")
    async def schema_list(request: web.Request, ctx: PageContext) -> web.StreamResponse:
        return await overview(request, ctx, {"subject": request.query.get("subject", "")}, {})

    @console.page("/schemas/subject")
    async def subject(request: web.Request, ctx: PageContext) -> web.StreamResponse:
        name = schemas.check_subject(request.query.get("name", ""))

        async def versions(s: AsyncSession) -> tuple[list[schemas.VersionInfo], str]:
            numbers = await schemas.list_versions(s, name)
            shown = [await schemas.get_version(s, name, n) for n in numbers[-MAX_SHOWN:]]
            return shown, (await schemas.get_config(s, name)).compatibility

        shown, level = await read(request, versions)
        return ctx.render(
            "subject.html", page_title=name, subject=name, versions=shown[::-1], level=level
        )

    @console.page("/schemas/preview", methods=("POST",))
    async def preview(request: web.Request, ctx: PageContext) -> web.StreamResponse:
        form = {k: ctx.form.get(k, "").strip() for k in ("subject", "schema")}
        try:
            name = schemas.check_subject(form["subject"])
        except BadRequestError as e:
            return await overview(request, ctx, form, {"subject": e.message})

        async def judge(s: AsyncSession) -> tuple[Verdict, list[int]]:
            verdict = await schemas.check_compatibility(s, name, None, _request(form["schema"]))
            try:
                existing = await schemas.list_versions(s, name)
            except BadRequestError:
                existing = []
            return verdict, existing

        try:
            verdict, existing = await read(request, judge)
        except BadRequestError as e:
            return await overview(request, ctx, form, errors_of(e, {}, blame="schema"))
        return ctx.render(
            "preview.html",
            page_title=ctx.t("op.schemas.preview_title"),
            form=form,
            verdict=verdict,
            existing=existing,
        )

    @console.page("/schemas/register", methods=("POST",))
    async def register_version(request: web.Request, ctx: PageContext) -> web.StreamResponse:
        form = {k: ctx.form.get(k, "").strip() for k in ("subject", "schema")}
        try:
            name = schemas.check_subject(form["subject"])
        except BadRequestError as e:
            return await overview(request, ctx, form, {"subject": e.message})
        done: Outcome[schemas.Registered] = await attempt(
            request,
            lambda s: schemas.register(s, name, _request(form["schema"])),
            blame="schema",
            run=write,
        )
        if not done.ok or done.value is None:
            return await overview(request, ctx, form, done.errors)
        ctx.flash("op.schemas.registered", subject=name, version=done.value.version)
        return ctx.redirect(f"/schemas/subject?name={name}")
