"""Services (with their consent flag, schemas and purposes) and the purposes catalogue."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from core.errors import NotFoundError
from core.ids import ServiceId
from core.pages import Console, PageContext
from registry import service, store
from registry.api import read
from registry.console._forms import Outcome, perform
from registry.console._listing import Listing, listing
from registry.globalconf import ServiceInfo
from registry.payloads import PurposeCreate, ServiceCreate, ServiceUpdate

SERVICE_FIELDS = (
    "title",
    "description",
    "request_schema",
    "response_schema",
    "requires_consent",
    "subject_field",
    "purposes",
)


def schema_ref(text: str) -> dict[str, str] | None:
    """``subject:version`` as the API's SchemaRef body; empty means none. A malformed
    value is passed on as it is, so the API's validation names what is wrong."""
    text = text.strip()
    if not text:
        return None
    subject, _, version = text.rpartition(":")
    return {"subject": subject or text, "version": version if subject else ""}


def service_body(form: Mapping[str, str]) -> dict[str, Any]:
    return {
        "title": form["title"],
        "description": form["description"],
        "request_schema": schema_ref(form["request_schema"]),
        "response_schema": schema_ref(form["response_schema"]),
        "requires_consent": form["requires_consent"] == "yes",
        "subject_field": form["subject_field"].strip() or None,
        "purposes": form["purposes"].replace(",", " ").split(),
    }


def service_form(info: ServiceInfo) -> dict[str, str]:
    def ref(r: Any) -> str:
        return f"{r.subject}:{r.version}" if r else ""

    return {
        "title": info.title,
        "description": info.description,
        "request_schema": ref(info.request_schema),
        "response_schema": ref(info.response_schema),
        "requires_consent": "yes" if info.requires_consent else "no",
        "subject_field": info.subject_field or "",
        "purposes": " ".join(info.purposes),
        "status": info.status,
    }


def register(console: Console) -> None:
    def yes_no(ctx: PageContext) -> list[tuple[str, str]]:
        return [("no", ctx.t("op.no")), ("yes", ctx.t("op.yes"))]

    listing(
        console,
        Listing(
            path="/services",
            template="services.html",
            title="op.nav.services",
            names=("id", *SERVICE_FIELDS),
            model=ServiceCreate,
            action=service.add_service,
            body=lambda form: {"id": form["id"], **service_body(form)},
            blame="id",
            done=lambda ctx, form, made: ctx.flash("op.services.added", id=str(made.id)),
            values=lambda ctx, snap: {
                "services": snap.services,
                "purposes": snap.purposes,
                "yes_no": yes_no(ctx),
            },
        ),
    )

    @console.page("/service", methods=("GET", "POST"))
    async def edit_service(request: web.Request, ctx: PageContext) -> web.StreamResponse:
        """One service (``?id=``): title, consent flag, schemas, purposes, status."""
        sid = ServiceId.parse(request.query.get("id", ""))
        snap = await read(request, store.snapshot)
        current = next((x for x in snap.services if x.id == sid), None)
        if current is None:
            raise NotFoundError(ctx.t("op.services.unknown", id=str(sid)))
        form = service_form(current)
        outcome: Outcome[Any] = Outcome()
        if request.method == "POST":
            form = {k: ctx.form.get(k, "").strip() for k in form}
            body = {**service_body(form), "status": form["status"]}
            outcome = await perform(
                request,
                ServiceUpdate,
                body,
                lambda s, b: service.update_service(s, sid, b),
                fields={k: k for k in form},
            )
            if outcome.ok:
                ctx.flash("op.services.changed", id=str(sid))
                return ctx.redirect("/services")
        return ctx.render(
            "service.html",
            status=200 if outcome.ok else 400,
            page_title=str(sid),
            service=current,
            purposes=snap.purposes,
            yes_no=yes_no(ctx),
            status_options=[(s, ctx.t(f"op.status.{s}")) for s in ("active", "suspended")],
            form=form,
            errors=outcome.errors,
        )

    # --- purposes ---------------------------------------------------------------------------

    listing(
        console,
        Listing(
            path="/purposes",
            template="purposes.html",
            title="op.nav.purposes",
            names=("code", "name", "description"),
            model=PurposeCreate,
            action=service.add_purpose,
            blame="code",
            done=lambda ctx, form, made: ctx.flash("op.purposes.added", code=made.code),
            values=lambda ctx, snap: {"purposes": snap.purposes},
        ),
    )
