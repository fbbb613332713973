"""The operator console: the registry's management pages under ``/console``.

Everything the operator API does, as server-rendered pages (English and Urdu):
members, subsystems, gateways, signing keys, services, access rights, the
schema registry (with a compatibility preview before registering), purposes,
guardianships (held by the consent service) and the global configuration's
status at each gateway. The operator signs in with an operator token; every
change goes through the same service functions as the API.
"""

from __future__ import annotations

from aiohttp import web

from core.db import transaction
from core.pages import Console, PageContext
from registry import tokens
from registry.api import STATE
from registry.console import (
    pages_auth,
    pages_gateways,
    pages_guardianships,
    pages_members,
    pages_rights,
    pages_schemas,
    pages_services,
    pages_status,
)
from registry.console.consent import CONSENT_OPERATOR, ConsentOperator

__all__ = ["PREFIX", "build_console", "mount_console"]

PREFIX = "/console"

NAV = [
    ("/members", "op.nav.members"),
    ("/subsystems", "op.nav.subsystems"),
    ("/gateways", "op.nav.gateways"),
    ("/keys", "op.nav.keys"),
    ("/services", "op.nav.services"),
    ("/access-rights", "op.nav.rights"),
    ("/schemas", "op.nav.schemas"),
    ("/purposes", "op.nav.purposes"),
    ("/guardianships", "op.nav.guardianships"),
    ("/status", "op.nav.status"),
]


def build_console(*, secure_cookies: bool = True) -> Console:
    console = Console(
        "operator",
        prefix=PREFIX,
        package="registry.console",
        title="op.title",
        nav=NAV,
        stylesheets=["operator.css"],
        home="/members",
        secure_cookies=secure_cookies,
        still_valid=_token_active,
    )
    for area in (
        pages_auth,
        pages_members,
        pages_gateways,
        pages_services,
        pages_rights,
        pages_schemas,
        pages_guardianships,
        pages_status,
    ):
        area.register(console)
    return console


async def _token_active(ctx: PageContext) -> bool:
    """Whether the operator token the session signed in with is still in force."""
    state = ctx.request.app[STATE]
    if ctx.principal == tokens.ENV_PRINCIPAL:
        return bool(state.admin_token)
    async with transaction(state.sessions, write=False) as s:
        return await tokens.active(s, str(ctx.principal))


def mount_console(
    app: web.Application, *, consent_token: str | None, secure_cookies: bool = True
) -> Console:
    """Add the console's pages to the registry's ``app``; ``consent_token`` is the consent
    service's operator token, for guardianships (without it that page says so)."""
    console = build_console(secure_cookies=secure_cookies)
    console.mount(app)
    operator = ConsentOperator(consent_token)
    app[CONSENT_OPERATOR] = operator
    app.cleanup_ctx.append(operator.lifecycle)
    return console
