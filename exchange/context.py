"""What both sides of a gateway share: identity, keys, configuration, limits and the seams
to consent, schemas, audit and backends."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from adapters.base import Backend
from audit.events import AuditEvent
from consent.client import Pseudonym, stated_pseudonym
from core.canonical import b64url
from core.db import utcnow
from core.errors import (
    BadRequestError,
    InvalidSignatureError,
    PayloadTooLargeError,
    ShahrahError,
)
from core.ids import ClientId, Cnic, GatewayId, ServiceId
from core.keys import PrivateKey
from core.web import read_up_to
from exchange.clients import LocalClients
from exchange.errors import PseudonymUnavailableError
from exchange.metrics import GatewayMetrics
from exchange.peers import PeerPool
from exchange.ports import AuditSink, ConsentGate
from exchange.r1 import loggable
from exchange.replay import ReplayGuard
from registry.globalconf import GlobalConfView
from registry.globalconf_client import GlobalConfClient
from registry.schemareg.validation import ValidatorCache

__all__ = ["Gateway", "Limits", "read_body"]

log = logging.getLogger(__name__)

#: X-Road's REST metaservices, answered by the provider gateway itself (PR-MREST).
METASERVICES = frozenset({"listMethods", "allowedMethods", "getOpenAPI"})


@dataclass(frozen=True)
class Limits:
    max_body: int = 10 * 2**20  # bytes, request and response bodies
    backend_timeout: float = 30.0  # seconds for the system behind a service to answer
    peer_timeout: float = 60.0  # seconds a consumer gateway waits for the provider gateway
    connect_timeout: float = 5.0  # seconds to open a connection to a peer
    freshness: float = 120.0  # seconds a request envelope's time may differ from ours
    body_timeout: float = 30.0  # seconds for a request body to arrive, on either listener


@dataclass
class Gateway:
    """One gateway: the consumer side (r1 from local systems) and the provider side (mTLS)."""

    id: GatewayId
    key: PrivateKey
    globalconf: GlobalConfClient
    replay: ReplayGuard
    peers: PeerPool
    audit: AuditSink
    metrics: GatewayMetrics
    backends: Mapping[ServiceId, Backend] = field(default_factory=dict)
    consent: ConsentGate | None = None
    schemas: ValidatorCache | None = None
    limits: Limits = field(default_factory=Limits)
    local_clients: LocalClients = field(default_factory=LocalClients)
    clock: Callable[[], dt.datetime] = utcnow

    def use_key(self, key: PrivateKey) -> None:
        """Sign with ``key`` from now on, wherever this gateway signs: request envelopes and
        answers, its audit log's checkpoints and witness submissions, its questions to the
        consent service and its configuration fetches (exchange.rotation)."""
        self.key = key
        self.audit.use_key(key)
        if self.consent is not None:
            self.consent.use_key(key)
        self.globalconf.use_key(key)

    async def subject_pseudonym(self, subject: Cnic | None) -> Pseudonym | None:
        """The pseudonym an exchange about ``subject`` will be recorded with, asked before
        anything is sent or released: an exchange that could deliver is refused
        (PseudonymUnavailableError) rather than recorded without its subject, which the
        citizen would then never see."""
        if subject is None:
            return None
        if self.consent is None:
            raise PseudonymUnavailableError(
                "this gateway has no consent service to name the data subject in its audit "
                "record; the exchange is refused rather than recorded without them"
            )
        try:
            return await self.consent.pseudonym(subject)
        except ShahrahError as e:
            # The reason stays here: it tells of this member's lookups, not the caller's.
            log.warning("no pseudonym for the data subject, so the exchange is refused: %s", e)
            raise PseudonymUnavailableError(
                "this gateway cannot name the data subject in its audit record now; the "
                "exchange is refused rather than recorded without them"
            ) from e

    def known_pseudonym(self, subject: Cnic | None) -> str | None:
        """For the record of a refusal: the subject's pseudonym if this gateway knows it
        already (asked before, or brought by a permit), else None. Never asked for: refused
        requests, which anyone can send, would otherwise spend the member's lookups, and
        once they were gone every exchange about a new subject would be refused."""
        if subject is None or self.consent is None:
            return None
        return self.consent.known_pseudonym(subject)

    def stated_pseudonym(self, view: GlobalConfView, subject: Cnic, statement: str | None) -> str:
        """On the provider, the pseudonym of ``subject`` from the consent service's signed
        statement the consumer gateway sent in the envelope: the provider records the
        subject without asking the service, so a consumer cannot spend the provider
        member's lookups (and have its other consumers refused) by asking about many."""
        if statement is None:
            raise BadRequestError(
                "a request naming a data subject must carry the consent service's statement "
                "of the subject's pseudonym"
            )
        keys = view.central_service("consent").keys.keyset()
        try:
            return stated_pseudonym(statement, keys, subject)
        except InvalidSignatureError as e:
            raise InvalidSignatureError(f"subject pseudonym statement: {e.message}") from e

    async def record(
        self,
        *,
        role: Literal["consumer", "provider"],
        message_id: str,
        request_id: str | None,
        client: ClientId | None,
        service: ServiceId | None,
        method: str | None,
        error: ShahrahError | None,
        subject: Cnic | None = None,
        subject_pseudonym: str | None = None,
        purpose: str | None = None,
        legal_basis: str | None = None,
        consent_id: str | None = None,
        request_body: bytes | None = None,
        response_body: bytes | None = None,
        request_token: str | None = None,
        response_token: str | None = None,
        fields_released: list[str] | None = None,
    ) -> None:
        """Append the exchange to the audit log; returns once it is durable.

        A request too malformed to name its client and service is no exchange
        about anyone: it is refused and logged, but has no place in the trail.
        """
        if client is None or service is None:
            log.info(
                "not recorded in the audit trail (no client or service): %s",
                f"{error.xroad_type}: {loggable(error)}" if error else "-",
            )
            return
        event = AuditEvent(
            time=self.clock(),
            gateway=self.id,
            role=role,
            message_id=message_id,
            request_id=request_id,
            client=client,
            service=service,
            method=method if method in _METHODS else None,
            subject=subject_pseudonym or self.known_pseudonym(subject),
            purpose=purpose,
            legal_basis=legal_basis,
            consent_id=consent_id,
            outcome="denied" if error else "delivered",
            error_type=error.xroad_type if error else None,
            request_digest=_digest(request_body),
            response_digest=_digest(response_body),
            request_signature_digest=_digest(request_token.encode() if request_token else None),
            response_signature_digest=_digest(response_token.encode() if response_token else None),
            fields_released=(fields_released or []) if not error else [],
        )
        await self.audit.append(event)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _digest(data: bytes | None) -> str | None:
    return None if data is None else "sha256:" + b64url(hashlib.sha256(data).digest())


async def read_body(request: web.Request, limit: int, seconds: float) -> bytes:
    """The request body, refusing more than ``limit`` bytes without reading them all, and
    a body that has not arrived within ``seconds`` (a caller that announces a body
    and stalls would otherwise hold the request, and what it holds, for good)."""
    if (request.content_length or 0) > limit:
        raise PayloadTooLargeError(f"request body is larger than {limit} bytes")
    try:
        async with asyncio.timeout(seconds):
            body = await read_up_to(request.content, limit + 1)
    except TimeoutError as e:
        raise BadRequestError(f"request body did not arrive within {seconds:g} s") from e
    except (HttpProcessingError, ConnectionResetError) as e:
        # Shorter than its Content-Length, a malformed chunk, or the caller hung up: the
        # caller's fault, not the gateway's, and no part of such a body goes anywhere.
        raise BadRequestError("request body was cut short or malformed") from e
    if len(body) > limit:
        raise PayloadTooLargeError(f"request body is larger than {limit} bytes")
    return body
