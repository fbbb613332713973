"""The console's common page shape: a list of the registry's objects with a form that adds one,
and buttons that suspend or reactivate a listed object.

Each area describes its page with a :class:`Listing` (what to show, which API body
the form becomes, which service function adds it); :func:`listing` declares the
page, which redisplays the form with the service's refusals by field, or flashes
what was done and returns to the list (so a reload does not add twice).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from aiohttp import web
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from core.pages import Console, PageContext
from registry import store
from registry.api import read
from registry.console._forms import perform

B = TypeVar("B", bound=BaseModel)
T = TypeVar("T")
U = TypeVar("U", bound=BaseModel)

Show = Callable[
    [web.Request, PageContext, Mapping[str, str], Mapping[str, str]], Awaitable[web.Response]
]


@dataclass(frozen=True)
class Listing(Generic[B, T]):
    path: str
    template: str
    title: str  # message key of the page's heading
    names: tuple[str, ...]  # the form's fields
    model: type[B]  # the API body the form becomes
    action: Callable[[AsyncSession, B], Awaitable[T]]
    done: Callable[[PageContext, Mapping[str, str], T], None]  # flashes what was done
    values: Callable[[PageContext, store.Snapshot], dict[str, Any]]  # what the list shows
    body: Callable[[Mapping[str, str]], Mapping[str, Any]] = dict
    fields: Mapping[str, str] | None = None  # body field -> form field; default: the same
    blame: str = ""  # the form field an unplaced refusal is about ("already exists")
    initial: Mapping[str, str] = field(default_factory=dict)


def listing(console: Console, spec: Listing[B, T]) -> Show:
    """Declare the page; returns the function that shows it (for :func:`status_toggle`)."""

    async def show(
        request: web.Request,
        ctx: PageContext,
        form: Mapping[str, str],
        errors: Mapping[str, str],
    ) -> web.Response:
        snap = await read(request, store.snapshot)
        return ctx.render(
            spec.template,
            status=400 if errors else 200,
            page_title=ctx.t(spec.title),
            form=form,
            errors=errors,
            **spec.values(ctx, snap),
        )

    @console.page(spec.path, methods=("GET", "POST"))
    async def page(request: web.Request, ctx: PageContext) -> web.StreamResponse:
        if request.method == "GET":
            return await show(request, ctx, spec.initial, {})
        form = {k: ctx.form.get(k, "").strip() for k in spec.names}
        done = await perform(
            request,
            spec.model,
            spec.body(form),
            spec.action,
            fields=spec.fields or {k: k for k in spec.names},
            blame=spec.blame,
        )
        if not done.ok or done.value is None:
            return await show(request, ctx, form, done.errors)
        spec.done(ctx, form, done.value)
        return ctx.redirect(spec.path)

    return show


def status_toggle(
    console: Console,
    path: str,
    *,
    target: str,
    model: type[U],
    change: Callable[[AsyncSession, str, U], Awaitable[Any]],
    back: str,
    show: Show,
) -> None:
    """Declare ``POST path``: set the status of the object named by form field ``target``."""

    @console.page(path, methods=("POST",))
    async def toggle(request: web.Request, ctx: PageContext) -> web.StreamResponse:
        ident, status = ctx.form.get(target, ""), ctx.form.get("status", "")
        done = await perform(
            request,
            model,
            {"status": status},
            lambda s, body: change(s, ident, body),
            fields={"status": "status"},
        )
        if not done.ok:
            return await show(request, ctx, {}, done.errors)
        ctx.flash("op.status_changed", id=ident, status=ctx.t(f"op.status.{status}"))
        return ctx.redirect(back)
