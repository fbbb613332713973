"""The regulator console's pages, under ``/console/`` on the audit server.

A regulator signs in with a username and password (audit.console.accounts),
searches every mirrored audit event of the federation, opens an entry to see
it verified against a checkpoint the witness cosigned, downloads the export
of the current search for the offline verifier, and reads the witness's
alarms. The search filters live in the server-side session: a search is a
POST followed by a redirect, so a CNIC never appears in a URL, a browser
history or an access log, and paging (``?cursor=``) and the export reuse them.
"""

from __future__ import annotations

import datetime as dt
import re
import tempfile
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import ValidationError
from sqlalchemy import select, true

from audit import mirror
from audit.console.accounts import Regulator, RegulatorAccounts
from audit.console.status import load_entry, verify_entry
from audit.export import write_export
from audit.models import AuditAlarm
from audit.regulators import require_regulator
from core.db import Sessions, transaction, utcnow
from core.errors import (
    BadRequestError,
    ForbiddenError,
    TooManyRequestsError,
    UnauthorizedError,
)
from core.keys import PrivateKey
from core.pages import Console, PageContext, client_address, safe_next
from core.pseudonym import Pseudonymizer
from core.web import parse_model
from registry.globalconf_client import GlobalConfClient

__all__ = ["PAGE_SIZE", "ConsoleDeps", "build_console"]

PREFIX = "/console"
PAGE_SIZE = 50  # results per page: keeps a page of results well under 100 KB
# Alarms per page: each keeps up to 64 KiB of evidence, so this bounds a page at about 1.6 MB.
ALARMS_PER_PAGE = 25
_INDEX = re.compile(r"0|[1-9][0-9]{0,17}", re.ASCII)  # an entry index as this console writes it
_FILTER_FIELDS = ("member", "service", "cnic", "outcome", "since", "until")


@dataclass(frozen=True)
class ConsoleDeps:
    """What the console's pages use of the audit server."""

    sessions: Sessions
    accounts: RegulatorAccounts
    conf: GlobalConfClient
    pseudonyms: Pseudonymizer | None
    witness_key: PrivateKey
    witness_name: str
    secure_cookies: bool = True


def _form_time(value: str) -> str:
    """A ``datetime-local`` value (no zone) is read as UTC, as the form's hint says."""
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return value  # left for the model to refuse, naming the field
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).isoformat()


def parse_filters(form: dict[str, str]) -> tuple[mirror.Filters | None, set[str]]:
    """The filters a search form asks for, or the names of the fields in error (a rule
    between fields, such as the time range's order, is reported on ``until``)."""
    values: dict[str, Any] = {}
    for name in _FILTER_FIELDS:
        value = form.get(name, "").strip()
        if value:
            values[name] = _form_time(value) if name in ("since", "until") else value
    try:
        return mirror.Filters.model_validate(values), set()
    except ValidationError as e:
        where = {str(p["loc"][0]) if p["loc"] else "until" for p in e.errors()}
        return None, {w if w in _FILTER_FIELDS else "until" for w in where}


def build_console(deps: ConsoleDeps) -> Console:
    """The console; ``mount`` it on the audit server's application."""
    console = Console(
        "regulator",
        prefix=PREFIX,
        package="audit",
        title="reg.title",
        nav=[("/", "reg.nav.search"), ("/alarms", "reg.nav.alarms")],
        stylesheets=("regulator.css",),
        secure_cookies=deps.secure_cookies,
    )

    async def regulator(ctx: PageContext) -> Regulator:
        """The signed-in regulator, if the account and its organisation may still read."""
        try:
            who = await deps.accounts.active(str(ctx.principal))
            require_regulator(deps.conf.current(), who.organisation)
        except (UnauthorizedError, ForbiddenError):
            console.sign_out(ctx)
            raise
        return who

    @console.page("/login", methods=("GET", "POST"), auth=False)
    async def login(request: web.Request, ctx: PageContext) -> web.StreamResponse:
        error, status = None, 200
        username = ctx.form.get("username", "").strip()
        if request.method == "POST":
            keys = (f"user:{username}", client_address(request))
            try:
                at = console.limiter.attempt(*keys)
                who = await deps.accounts.sign_in(username, ctx.form.get("password", ""))
                require_regulator(deps.conf.current(), who.organisation)
            except TooManyRequestsError:
                error, status = ctx.t("reg.login.locked"), 429
            except UnauthorizedError:
                error, status = ctx.t("reg.login.wrong"), 401
            except ForbiddenError:
                error, status = ctx.t("reg.login.not_regulator"), 403
            else:
                console.limiter.succeeded(at, *keys)
                console.sign_in(ctx, who.username, {"organisation": str(who.organisation)})
                target = safe_next(request.query.get("next"), PREFIX, ctx.url("/"))
                return web.Response(status=303, headers={"Location": target})
        return ctx.render(
            "reg_login.html",
            status=status,
            page_title=ctx.t("reg.login.title"),
            username=username,
            error=error,
        )

    @console.page("/", methods=("GET", "POST"))
    async def search(request: web.Request, ctx: PageContext) -> web.StreamResponse:
        who = await regulator(ctx)
        if request.method == "POST":
            form = {k: ctx.form.get(k, "") for k in _FILTER_FIELDS}
            filters, errors = parse_filters(form)
            if filters is None:
                return ctx.render(
                    "reg_search.html",
                    status=400,
                    page_title=ctx.t("reg.search.title"),
                    who=who,
                    form=form,
                    errors={k: ctx.t(f"reg.bad.{k}") for k in errors},
                    page=None,
                )
            ctx.session.data["search"] = form
            return ctx.redirect("/")
        form = dict(ctx.session.data.get("search", {}))
        filters, _ = parse_filters(form)
        query = parse_model(
            mirror.SearchQuery,
            (filters or mirror.Filters()).model_dump(exclude_none=True)
            | {"limit": PAGE_SIZE, "cursor": request.query.get("cursor") or None},
            where="query",
        )
        async with transaction(deps.sessions, write=False) as s:
            page = await mirror.search(s, query, deps.pseudonyms)
        return ctx.render(
            "reg_search.html",
            page_title=ctx.t("reg.search.title"),
            who=who,
            form=form,
            errors={},
            page=page,
        )

    @console.page("/entry")
    async def entry(request: web.Request, ctx: PageContext) -> web.StreamResponse:
        await regulator(ctx)
        log_id = request.query.get("log", "")
        index_text = request.query.get("index", "")
        # ASCII decimal only: str.isdigit() also holds for '²' (which int() refuses) and for
        # other scripts' digits (which it reads), neither an address this console writes.
        if not _INDEX.fullmatch(index_text) or not 0 < len(log_id) <= 1100:
            raise BadRequestError(ctx.t("reg.entry.bad_address"))
        async with transaction(deps.sessions, write=False) as s:
            found = await load_entry(s, log_id, int(index_text))
            status = await verify_entry(
                s,
                found,
                view=deps.conf.current(),
                witness_name=deps.witness_name,
                witness_key=deps.witness_key.public(),
            )
        return ctx.render(
            "reg_entry.html",
            page_title=ctx.t("reg.entry.title"),
            found=found,
            verification=status,
            entry_text=found.entry.decode("utf-8", errors="replace"),
        )

    @console.page("/export", methods=("POST",))
    async def export(request: web.Request, ctx: PageContext) -> web.StreamResponse:
        await regulator(ctx)
        filters, _ = parse_filters(dict(ctx.session.data.get("search", {})))
        view = deps.conf.current()
        # Spooled to disk, not memory: an export of whole logs can be large.
        out = tempfile.TemporaryFile()  # noqa: SIM115 (aiohttp closes it once sent)
        try:
            await write_export(
                deps.sessions,
                out,
                filters=filters or mirror.Filters(),
                pseudonymize=deps.pseudonyms,
                witness_key=deps.witness_key,
                witness_name=deps.witness_name,
                globalconf=view.signed,
            )
            out.seek(0)
        except BaseException:
            out.close()
            raise
        name = f"shahrah-audit-{utcnow().strftime('%Y%m%dT%H%M%SZ')}.jsonl"
        return web.Response(
            body=out,
            content_type="application/jsonl",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    @console.page("/alarms")
    async def alarms(request: web.Request, ctx: PageContext) -> web.StreamResponse:
        """Newest first, a page at a time; ``?before=ID`` (the last id of the page before)
        asks for older ones, as the API's ``before`` does."""
        await regulator(ctx)
        before_text = request.query.get("before")
        if before_text is not None and not _INDEX.fullmatch(before_text):
            raise BadRequestError(ctx.t("reg.alarms.bad_page"))
        older = AuditAlarm.id < int(before_text) if before_text is not None else true()
        async with transaction(deps.sessions, write=False) as s:
            # One more than a page, to know whether an older page exists.
            rows = list(
                await s.scalars(
                    select(AuditAlarm)
                    .where(older)
                    .order_by(AuditAlarm.id.desc())
                    .limit(ALARMS_PER_PAGE + 1)
                )
            )
        shown = rows[:ALARMS_PER_PAGE]
        return ctx.render(
            "reg_alarms.html",
            page_title=ctx.t("reg.alarms.title"),
            alarms=shown,
            paged=before_text is not None,
            older=shown[-1].id if len(rows) > ALARMS_PER_PAGE else None,
        )

    return console
