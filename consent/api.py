"""The member-facing API: consumers' requests, gateways' decisions, pseudonyms, the feed
and its sync.

Every operation here authenticates a member system with a member-signed
request (``registry.memberauth``, audience ``consent``) checked against the
verified global configuration, so an expired configuration refuses them all
(fail closed, ``Server.ClientProxy.OutdatedGlobalConf``). Answers a gateway
acts on are signed (:mod:`consent.messages`). Pseudonym lookups are limited
per member (a token bucket), so CNICs cannot be pseudonymised in bulk.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from prometheus_client import generate_latest
from pydantic import BaseModel, ConfigDict, Field

from consent import feed
from consent.artefact import ConsentPage, ConsentRequest, ConsentView, PageCursor, StatusName
from consent.lifecycle import Status
from consent.messages import (
    DECISION_TYP,
    PSEUDONYM_TYP,
    SYNC_TYP,
    DecisionAnswer,
    DecisionRequest,
    Nonce,
    PseudonymAnswer,
    PseudonymRequest,
    SyncAnswer,
    SyncRequest,
    body_digest,
)
from consent.rules import ConsentDenied, DecisionQuery
from consent.state import STATE, api
from core import jws
from core.db import utcnow
from core.errors import BadRequestError, TooManyRequestsError
from core.fields import CnicField, SubsystemIdField
from core.ids import ClientId
from core.keys import KeySet

__all__ = ["api"]

JOSE = "application/jose"
_JWS = {"type": "string", "description": "compact JWS (see docs/consent.md for the payload)"}


def _signed(payload: BaseModel, request: web.Request, typ: str) -> web.Response:
    token = jws.sign_json(payload.model_dump(mode="json"), request.app[STATE].key, typ=typ)
    return web.Response(text=token, content_type=JOSE)


# --- consumers ---------------------------------------------------------------------------------


class ConsumerQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    consumer: SubsystemIdField | None = None
    subject: CnicField | None = None
    status: StatusName | None = None
    after: PageCursor | None = None
    limit: int = Field(default=50, ge=1, le=200)


@api.route(
    "POST",
    "/v1/consents",
    summary="Request a citizen's consent for one of your subsystems",
    body=ConsentRequest,
    response=ConsentView,
    status=201,
    auth="member",
    tags=["consumer"],
    errors=(403, 422, 503),
)
async def request_consent(
    request: web.Request, principal: ClientId, body: ConsentRequest
) -> ConsentView:
    """The consent starts PENDING until the citizen (or a guardian) approves or rejects it."""
    state = request.app[STATE]
    created = await state.service.request(principal, body)
    state.metrics.changes.labels("request").inc()
    return created


@api.route(
    "GET",
    "/v1/consents",
    summary="The consents your subsystems hold, newest first",
    query=ConsumerQuery,
    response=ConsentPage,
    auth="member",
    tags=["consumer"],
    errors=(403,),
)
async def list_consents(
    request: web.Request, principal: ClientId, query: ConsumerQuery
) -> ConsentPage:
    return await request.app[STATE].service.consumer_page(
        principal,
        consumer=query.consumer,
        subject=query.subject,
        status=Status(query.status) if query.status else None,
        after=query.after,
        limit=query.limit,
    )


@api.route(
    "GET",
    "/v1/consents/{consent_id}",
    summary="One consent your subsystems hold, with its status",
    response=ConsentView,
    auth="member",
    tags=["consumer"],
    errors=(404,),
)
async def get_consent(request: web.Request, principal: ClientId) -> ConsentView:
    return await request.app[STATE].service.consumer_get(
        principal, request.match_info["consent_id"]
    )


# --- gateways ----------------------------------------------------------------------------------


@api.route(
    "POST",
    "/v1/decisions",
    summary="Decide whether a consent permits one exchange (providers' gateways)",
    body=DecisionRequest,
    response=_JWS,
    content_type=JOSE,
    auth="member",
    tags=["gateway"],
    errors=(403, 503),
)
async def decide(request: web.Request, principal: ClientId, body: DecisionRequest) -> web.Response:
    """Answers 200 with a signed decision, permit or deny (with the reason). Only the member
    that provides the service may ask; uses of consents with limits are counted here."""
    state = request.app[STATE]
    digest = body_digest(await request.read())
    query = DecisionQuery(
        consent_id=body.consent_id,
        subject=body.subject,
        consumer=body.consumer,
        service=body.service,
        purpose=body.purpose,
        at=body.at,
    )
    try:
        decision = await state.service.decide(principal, query)
    except ConsentDenied as e:
        state.metrics.decisions.labels("deny", e.reason.value).inc()
        answer = DecisionAnswer(
            request_sha256=digest,
            consent_id=body.consent_id,
            decision="deny",
            reason=e.reason.value,
            message=e.why,
            issued_at=utcnow(),
        )
        return _signed(answer, request, DECISION_TYP)
    state.metrics.decisions.labels("permit", "").inc()
    consent = decision.consent
    answer = DecisionAnswer(
        request_sha256=digest,
        consent_id=consent.id,
        decision="permit",
        released_fields=decision.permit.released_fields,
        legal_basis=decision.permit.legal_basis,
        subject_pseudonym=decision.permit.subject_pseudonym,
        cacheable=not consent.counted,
        valid_from=consent.valid_from,
        expires_at=consent.expires_at,
        version=consent.version,
        issued_at=utcnow(),
    )
    return _signed(answer, request, DECISION_TYP)


@api.route(
    "POST",
    "/v1/pseudonyms",
    summary="The federation pseudonym of a data subject, for audit records",
    body=PseudonymRequest,
    response=_JWS,
    content_type=JOSE,
    auth="member",
    tags=["gateway"],
    errors=(429,),
)
async def pseudonym(
    request: web.Request, principal: ClientId, body: PseudonymRequest
) -> web.Response:
    """Gateways never hold the federation's pseudonym key; they ask here (and cache). Each
    member has a token bucket (429 with Retry-After beyond it), so nobody can turn CNICs
    into pseudonyms in bulk and re-identify audit records by trying every CNIC."""
    state = request.app[STATE]
    member = str(principal.member)
    try:
        state.pseudonym_limiter.take(member)
    except TooManyRequestsError:
        state.metrics.pseudonyms.labels(member, "limited").inc()
        raise
    state.metrics.pseudonyms.labels(member, "answered").inc()
    answer = PseudonymAnswer(
        request_sha256=body_digest(await request.read()),
        subject=body.subject,
        pseudonym=state.service.pseudonym(body.subject),
    )
    return _signed(answer, request, PSEUDONYM_TYP)


class FeedQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stream: Nonce = Field(description="a fresh random nonce; every message of the stream echoes it")
    after: int | None = Field(
        default=None, ge=0, description="resume after this change number (as Last-Event-ID)"
    )


@api.route(
    "GET",
    "/v1/feed",
    summary="Revocation feed: consent changes concerning your member, as server-sent events",
    query=FeedQuery,
    response={"type": "string"},
    content_type="text/event-stream",
    auth="member",
    tags=["gateway"],
)
async def feed_stream(
    request: web.Request, principal: ClientId, query: FeedQuery
) -> web.StreamResponse:
    """Resumable with Last-Event-ID (or ?after=). Each message's data is a signed
    FeedMessage; heartbeats follow the backlog and then come every heartbeat interval."""
    state = request.app[STATE]
    after = query.after
    last_id = request.headers.get("Last-Event-ID")
    if after is None and last_id is not None:
        if re.fullmatch(r"[0-9]{1,18}", last_id) is None:  # str.isdigit takes '²'; int does not
            raise BadRequestError("Last-Event-ID must be a change number")
        after = int(last_id)
    member = str(principal.member)
    with state.hub.stream_slot(member):  # before the answer starts: refused with a 429
        state.metrics.subscribers.inc()
        try:
            return await feed.stream(
                request,
                state.hub,
                state.key,
                member=member,
                nonce=query.stream,
                after=after,
                heartbeat=state.heartbeat,
            )
        finally:
            state.metrics.subscribers.dec()


@api.route(
    "POST",
    "/v1/feed/sync",
    summary="The newest change number now, for a gateway to know its feed has caught up",
    body=SyncRequest,
    response=_JWS,
    content_type=JOSE,
    auth="member",
    tags=["gateway"],
)
async def feed_sync(request: web.Request, principal: ClientId, body: SyncRequest) -> web.Response:
    """The head is read after the question arrived: a gateway whose feed has delivered up to
    it has heard every change made before it asked (see consent.trust)."""
    state = request.app[STATE]
    answer = SyncAnswer(
        request_sha256=body_digest(await request.read()),
        head=await state.service.feed_head(),
        issued_at=utcnow(),
    )
    return _signed(answer, request, SYNC_TYP)


# --- public --------------------------------------------------------------------------------------


@api.route(
    "GET",
    "/v1/jwks",
    summary="The consent service's public keys (as published in the global configuration)",
    response={"type": "object"},
    tags=["public"],
)
async def jwks(request: web.Request) -> dict[str, Any]:
    return KeySet([request.app[STATE].key.public()]).to_jwks()


@api.route(
    "GET",
    "/metrics",
    summary="Prometheus metrics",
    response={"type": "string"},
    content_type="text/plain",
    tags=["public"],
)
async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[STATE].metrics.registry)
    return web.Response(body=body, content_type="text/plain", charset="utf-8")
