"""The global configuration's status: what is published, and what each gateway holds."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from aiohttp import web

from core.pages import Console, PageContext
from registry import publisher, store
from registry.api import STATE, read
from registry.fetch_reports import FetchReport, reports

#: A gateway that has not fetched for this many refresh intervals is shown as lagging.
LATE_INTERVALS = 3


@dataclass(frozen=True)
class GatewayRow:
    gateway: str
    report: FetchReport | None
    age: dt.timedelta | None  # since the gateway last fetched
    state: str  # message key: current, behind, late, never


def age_text(ctx: PageContext, age: dt.timedelta | None) -> str:
    if age is None:
        return "—"
    seconds = max(0, int(age.total_seconds()))
    if seconds < 120:
        return ctx.t("op.age.seconds", n=seconds)
    if seconds < 7200:
        return ctx.t("op.age.minutes", n=seconds // 60)
    return ctx.t("op.age.hours", n=seconds // 3600)


def gateway_rows(
    gateways: list[str],
    found: list[FetchReport],
    serial: int | None,
    refresh: int,
    now: dt.datetime,
) -> list[GatewayRow]:
    """One row per registered gateway, then any member that reported without naming one."""
    by_key = {f"{r.member}/{r.gateway}" if r.gateway else r.member: r for r in found}
    names = gateways + sorted(k for k in by_key if k not in gateways)
    rows = []
    for name in names:
        report = by_key.get(name)
        if report is None:
            rows.append(GatewayRow(name, None, None, "op.status.never"))
            continue
        age = now - report.fetched_at
        if serial is not None and report.serial < serial:
            state = "op.status.behind"
        elif age > dt.timedelta(seconds=refresh * LATE_INTERVALS):
            state = "op.status.late"
        else:
            state = "op.status.current"
        rows.append(GatewayRow(name, report, age, state))
    return rows


def register(console: Console) -> None:
    @console.page("/status")
    async def status(request: web.Request, ctx: PageContext) -> web.StreamResponse:
        sessions = request.app[STATE].sessions
        latest = await publisher.latest(sessions)
        fed = await read(request, store.federation)
        snap = await read(request, store.snapshot)
        now = dt.datetime.now(dt.UTC)
        rows = gateway_rows(
            [str(g.id) for g in snap.gateways],
            await reports(sessions),
            latest.serial if latest else None,
            fed.globalconf_refresh,
            now,
        )
        return ctx.render(
            "status.html",
            page_title=ctx.t("op.nav.status"),
            latest=latest,
            fed=fed,
            expired=latest is not None and latest.expires_at <= now,
            published_age=age_text(ctx, now - latest.issued_at) if latest else "—",
            rows=[(r, age_text(ctx, r.age)) for r in rows],
        )
