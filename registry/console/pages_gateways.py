"""Gateways: where each listens, the TLS certificate peers pin, and the subsystems it serves."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from core.errors import NotFoundError
from core.ids import GatewayId
from core.pages import Console, PageContext
from registry import service, store
from registry.api import read
from registry.console._forms import Outcome, perform
from registry.console._listing import Listing, listing
from registry.console.pages_members import member_options
from registry.payloads import GatewayCreate, GatewayUpdate


def _gateway_body(form: Mapping[str, str]) -> dict[str, Any]:
    return {
        "id": f"{form['member']}/{form['code']}",
        "address": form["address"],
        "tls_certificate": form["tls_certificate"],
        # Subsystem codes of the member, separated by spaces or commas.
        "clients": [f"{form['member']}/{c}" for c in form["clients"].replace(",", " ").split()],
    }


def register(console: Console) -> None:
    listing(
        console,
        Listing(
            path="/gateways",
            template="gateways.html",
            title="op.nav.gateways",
            names=("member", "code", "address", "tls_certificate", "clients"),
            model=GatewayCreate,
            action=service.add_gateway,
            body=_gateway_body,
            fields={
                "id": "code",
                "address": "address",
                "tls_certificate": "tls_certificate",
                "clients": "clients",
            },
            blame="code",
            done=lambda ctx, form, made: ctx.flash("op.gateways.added", id=str(made.id)),
            values=lambda ctx, snap: {
                "gateways": snap.gateways,
                "member_options": member_options(ctx, snap.members),
            },
        ),
    )

    @console.page("/gateway", methods=("GET", "POST"))
    async def gateway(request: web.Request, ctx: PageContext) -> web.StreamResponse:
        """One gateway (``?id=``): change its address, certificate (and so its pin) or status,
        register a renewed certificate beside the current one, or drop it."""
        gid = GatewayId.parse(request.query.get("id", ""))
        snap = await read(request, store.snapshot)
        current = next((g for g in snap.gateways if g.id == gid), None)
        if current is None:
            raise NotFoundError(ctx.t("op.gateways.unknown", id=str(gid)))
        form = {
            "address": current.address,
            "tls_certificate": "",
            "next_tls_certificate": "",
            "status": current.status,
        }
        outcome: Outcome[Any] = Outcome()
        if request.method == "POST":
            form = {k: ctx.form.get(k, "").strip() for k in form}
            body = {
                "address": form["address"] or None,
                "tls_certificate": form["tls_certificate"] or None,
                "next_tls_certificate": form["next_tls_certificate"] or None,
                "drop_next_tls_certificate": ctx.form.get("drop_next") == "1",
                "status": form["status"] or None,
            }
            outcome = await perform(
                request,
                GatewayUpdate,
                body,
                lambda s, b: service.update_gateway(s, gid, b),
                fields={k: k for k in form},
                blame="tls_certificate",
            )
            if outcome.ok:
                ctx.flash("op.gateways.changed", id=str(gid))
                return ctx.redirect("/gateways")
        return ctx.render(
            "gateway.html",
            status=200 if outcome.ok else 400,
            page_title=str(gid),
            gateway=current,
            form=form,
            errors=outcome.errors,
            status_options=[(s, ctx.t(f"op.status.{s}")) for s in ("active", "suspended")],
        )
