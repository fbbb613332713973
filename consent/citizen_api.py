"""The citizen API (what the citizen portal's pages call) and the operator's guardianship API.

Citizens sign in with CNIC and password and then carry ``Authorization:
Bearer <session token>``. A consent that is neither about the citizen nor
about one of their wards answers 404, exactly like one that does not exist.
"""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from consent import citizens
from consent.artefact import ConsentPage, ConsentView, PageCursor, Relation, StatusName
from consent.citizens import GuardianshipCreate, GuardianshipView
from consent.lifecycle import Action, Status
from consent.receipt import receipt_document, sign_receipt
from consent.state import SIGNIN_LIMITER, STATE, ConsentState, api
from core.db import transaction, utcnow
from core.errors import NotFoundError, OutdatedGlobalConfError
from core.fields import AwareDatetime, CnicField
from core.ids import Cnic, MemberId
from core.pages import client_address
from core.web import bearer_token, path_id

__all__ = ["api", "signed_receipt"]

CITIZEN_ACTIONS = "approve|reject|pause|resume|revoke"


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cnic: CnicField
    password: str = Field(min_length=1, max_length=citizens.MAX_PASSWORD)


class Session(BaseModel):
    token: str = Field(description="send as 'Authorization: Bearer <token>'")
    cnic: CnicField
    expires_at: AwareDatetime


class Ward(BaseModel):
    cnic: CnicField
    relation: Relation


class Me(BaseModel):
    cnic: CnicField
    name: str
    wards: list[Ward]


class CitizenQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: CnicField | None = Field(default=None, description="yourself or one of your wards")
    status: StatusName | None = Field(default=None, description="e.g. PENDING for open requests")
    after: PageCursor | None = None
    limit: int = Field(default=50, ge=1, le=200)


class HistoryItem(BaseModel):
    seq: int
    action: str
    status: Status
    at: AwareDatetime
    actor_kind: str
    actor: str = Field(description="a CNIC for citizens, a client id for consumers")
    relation: str | None
    log_index: int = Field(description="the change's leaf index in the consent log")
    log_entry: str = Field(description="the exact bytes appended to the consent log")


@api.route(
    "POST",
    "/v1/citizen/session",
    summary="Sign in with CNIC and password",
    body=SignIn,
    response=Session,
    status=201,
    tags=["citizen"],
    errors=(401, 429),
)
async def sign_in(request: web.Request, body: SignIn) -> Session:
    """After five wrong passwords in a row the account is locked for 15 minutes; a locked
    account answers exactly like a wrong CNIC or password (401). Repeated failures from one
    address are throttled with the portal's limiter (429, with ``detail.retry_after``)."""
    limiter = request.app[SIGNIN_LIMITER]
    address = client_address(request)
    at = limiter.attempt(address)
    done = await request.app[STATE].accounts.sign_in(body.cnic, body.password)
    limiter.succeeded(at, address)
    return Session(token=done.token, cnic=done.cnic, expires_at=done.expires_at)


@api.route(
    "DELETE",
    "/v1/citizen/session",
    summary="Sign out",
    status=204,
    auth="citizen",
    tags=["citizen"],
)
async def sign_out(request: web.Request, principal: Cnic) -> web.Response:
    await request.app[STATE].accounts.sign_out(bearer_token(request))
    return web.Response(status=204)


@api.route(
    "GET",
    "/v1/citizen/me",
    summary="Who is signed in, and the wards they may act for",
    response=Me,
    auth="citizen",
    tags=["citizen"],
)
async def me(request: web.Request, principal: Cnic) -> Me:
    state = request.app[STATE]
    async with transaction(state.sessions, write=False) as s:
        wards = await citizens.wards(s, principal, utcnow())
    return Me(
        cnic=principal,
        name=await state.accounts.name(principal),
        wards=[Ward(cnic=Cnic(c), relation=r) for c, r in sorted(wards.items())],
    )


@api.route(
    "GET",
    "/v1/citizen/consents",
    summary="Consents and pending requests about you and your wards",
    query=CitizenQuery,
    response=ConsentPage,
    auth="citizen",
    tags=["citizen"],
    errors=(404,),
)
async def my_consents(request: web.Request, principal: Cnic, query: CitizenQuery) -> ConsentPage:
    return await request.app[STATE].service.citizen_page(
        principal,
        subject=query.subject,
        status=Status(query.status) if query.status else None,
        after=query.after,
        limit=query.limit,
    )


@api.route(
    "GET",
    "/v1/citizen/consents/{consent_id}",
    summary="One of your (or your ward's) consents",
    response=ConsentView,
    auth="citizen",
    tags=["citizen"],
    errors=(404,),
)
async def my_consent(request: web.Request, principal: Cnic) -> ConsentView:
    return await request.app[STATE].service.citizen_get(principal, request.match_info["consent_id"])


@api.route(
    "POST",
    "/v1/citizen/consents/{consent_id}/{action:" + CITIZEN_ACTIONS + "}",
    summary="Approve, reject, pause, resume or revoke a consent",
    response=ConsentView,
    auth="citizen",
    tags=["citizen"],
    errors=(404, 409),
)
async def act(request: web.Request, principal: Cnic) -> ConsentView:
    """409 when the action does not apply to the consent's state (e.g. resuming a revoked
    consent); a revoke reaches every subscribed gateway within a second."""
    state = request.app[STATE]
    action = Action(request.match_info["action"])
    done = await state.service.citizen_act(principal, request.match_info["consent_id"], action)
    state.metrics.changes.labels(action.value).inc()
    return done


@api.route(
    "GET",
    "/v1/citizen/consents/{consent_id}/history",
    summary="Every change of the consent, with its place in the consent log",
    response=list[HistoryItem],
    auth="citizen",
    tags=["citizen"],
    errors=(404,),
)
async def history(request: web.Request, principal: Cnic) -> list[HistoryItem]:
    events = await request.app[STATE].service.citizen_history(
        principal, request.match_info["consent_id"]
    )
    return [
        HistoryItem(
            seq=e.seq,
            action=e.action,
            status=Status(e.status),
            at=e.at,
            actor_kind=e.actor_kind,
            actor=e.actor,
            relation=e.relation,
            log_index=e.leaf_index,
            log_entry=e.entry,
        )
        for e in events
    ]


@api.route(
    "GET",
    "/v1/citizen/consents/{consent_id}/receipt",
    summary="A signed receipt of the consent (ISO/IEC TS 27560 fields, compact JWS)",
    response={"type": "string"},
    content_type="application/jose",
    auth="citizen",
    tags=["citizen"],
    errors=(404,),
)
async def receipt(request: web.Request, principal: Cnic) -> web.Response:
    """Verify it with the consent service's JWK Set from the global configuration."""
    cid = request.match_info["consent_id"]
    return web.Response(
        text=await signed_receipt(request.app[STATE], principal, cid),
        content_type="application/jose",
        headers={"Content-Disposition": f'attachment; filename="{cid}.receipt.jws"'},
    )


async def signed_receipt(state: ConsentState, principal: Cnic, cid: str) -> str:
    """A freshly signed receipt of a consent visible to ``principal`` (else NotFoundError)."""
    consent = await state.service.citizen_get(principal, cid)
    events = await state.service.citizen_history(principal, cid)
    try:
        view = state.conf()
    except OutdatedGlobalConfError:
        view = None  # names are a courtesy; the receipt stands without them

    def names(member: MemberId) -> str | None:
        info = view.members.get(member) if view else None
        return info.name if info else None

    purpose = view.purposes.get(consent.purpose) if view else None
    document = receipt_document(
        consent,
        events,
        instance=consent.consumer.instance,
        names=names,
        purpose_name=purpose.name if purpose else None,
        now=utcnow(),
    )
    return sign_receipt(document, state.key)


# --- operator ----------------------------------------------------------------------------------


class GuardianshipQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cnic: CnicField | None = Field(default=None, description="as guardian or as ward")


@api.route(
    "POST",
    "/v1/operator/guardianships",
    summary="Register that a guardian may act for a ward",
    body=GuardianshipCreate,
    response=GuardianshipView,
    status=201,
    auth="operator",
    tags=["operator"],
)
async def add_guardianship(
    request: web.Request, principal: str, body: GuardianshipCreate
) -> GuardianshipView:
    async with transaction(request.app[STATE].sessions) as s:
        return await citizens.add_guardianship(s, body, utcnow())


@api.route(
    "GET",
    "/v1/operator/guardianships",
    summary="Guardianships, all or of one citizen",
    query=GuardianshipQuery,
    response=list[GuardianshipView],
    auth="operator",
    tags=["operator"],
)
async def list_guardianships(
    request: web.Request, principal: str, query: GuardianshipQuery
) -> list[GuardianshipView]:
    async with transaction(request.app[STATE].sessions, write=False) as s:
        return await citizens.guardianships(s, query.cnic)


@api.route(
    "POST",
    "/v1/operator/guardianships/{gid:[0-9]+}/end",
    summary="End a guardianship now",
    response=GuardianshipView,
    auth="operator",
    tags=["operator"],
    errors=(404,),
)
async def end_guardianship(request: web.Request, principal: str) -> GuardianshipView:
    raw = request.match_info["gid"]
    gid = path_id(raw)
    if gid is None:  # beyond any row id; never let it reach the database as an overflow
        raise NotFoundError(f"no guardianship {raw} in force")
    async with transaction(request.app[STATE].sessions) as s:
        return await citizens.end_guardianship(s, gid, utcnow())
