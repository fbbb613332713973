"""Signing in with an operator token (the same tokens the operator API accepts)."""

from __future__ import annotations

from aiohttp import web

from core.db import transaction
from core.errors import UnauthorizedError
from core.pages import Console, PageContext, client_address, safe_next
from registry import tokens
from registry.api import STATE

MAX_TOKEN = 512  # characters; real tokens are far shorter, longer input is not worth hashing


def register(console: Console) -> None:
    @console.page("/login", methods=("GET", "POST"), auth=False)
    async def login(request: web.Request, ctx: PageContext) -> web.StreamResponse:
        error = None
        if request.method == "POST":
            # Throttled per address: a token names no account to count failures against.
            keys = (client_address(request),)
            at = console.limiter.attempt(*keys)
            try:
                name = await _check(request, ctx.form.get("token", ""))
            except UnauthorizedError:
                error = ctx.t("op.login.wrong")
            else:
                console.limiter.succeeded(at, *keys)
                console.sign_in(ctx, name)
                target = safe_next(request.query.get("next"), console.prefix, ctx.url("/members"))
                return web.Response(status=303, headers={"Location": target})
        return ctx.render(
            "login.html",
            status=401 if error else 200,
            page_title=ctx.t("op.login.title"),
            error=error,
        )


async def _check(request: web.Request, token: str) -> str:
    """The token's name; the token itself is never logged or kept in the session."""
    if not token or len(token) > MAX_TOKEN:
        raise UnauthorizedError("invalid operator token")
    state = request.app[STATE]
    async with transaction(state.sessions, write=False) as s:
        return await tokens.check(s, token, state.admin_token)
