"""A tiny console used to test the page kit: sign in with a fixed word, keep notes."""

from __future__ import annotations

from aiohttp import web

from core.errors import NotFoundError
from core.pages import Console, PageContext, client_address, safe_next
from core.web import tokens_equal

WORD = "open sesame"


def build() -> tuple[web.Application, list[str]]:
    notes: list[str] = []

    async def signed_out(ctx: PageContext) -> None:
        notes.append(f"goodbye {ctx.principal}")

    console = Console(
        "kit",
        prefix="/kit",
        package="tests.core.kitsite",
        title="kit.title",
        nav=[("/", "kit.notes")],
        on_sign_out=signed_out,
    )

    @console.page("/login", methods=("GET", "POST"), auth=False)
    async def login(request: web.Request, ctx: PageContext) -> web.StreamResponse:
        error = None
        if request.method == "POST":
            keys = ("word", client_address(request))
            at = console.limiter.attempt(*keys)
            if tokens_equal(ctx.form.get("word", ""), WORD):
                console.limiter.succeeded(at, *keys)
                console.sign_in(ctx, "visitor")
                target = safe_next(request.query.get("next"), console.prefix, ctx.url("/"))
                return web.Response(status=303, headers={"Location": target})
            error = ctx.t("kit.wrong")
        return ctx.render("login.html", page_title=ctx.t("kit.title"), error=error)

    @console.page("/", methods=("GET", "POST"))
    async def home(request: web.Request, ctx: PageContext) -> web.StreamResponse:
        if request.method == "POST":
            notes.append(ctx.form.get("note", ""))
            ctx.flash("kit.saved")
            return ctx.redirect("/")
        query = request.query.get("q", "")
        return ctx.render("home.html", page_title=ctx.t("kit.notes"), notes=notes, q=query)

    @console.page("/missing")
    async def missing(request: web.Request, ctx: PageContext) -> web.StreamResponse:
        raise NotFoundError("no such note")

    @console.page("/broken")
    async def broken(request: web.Request, ctx: PageContext) -> web.StreamResponse:
        raise RuntimeError("secret detail that must not be shown")

    app = web.Application()
    console.mount(app)
    return app, notes
