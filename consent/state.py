"""What the consent service's HTTP handlers share: the ``Api`` declaration, app state,
authenticators and metrics."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from consent import operators
from consent.citizens import Accounts
from consent.feed import FeedHub
from consent.service import ConsentService
from core.db import Sessions, transaction
from core.ids import ClientId, Cnic
from core.keys import PrivateKey
from core.pages import LoginLimiter
from core.ratelimit import RateLimiter
from core.web import Api, bearer_token
from registry.globalconf import GlobalConfView
from registry.memberauth import SCHEME, MemberRequestVerifier

__all__ = ["STATE", "ConsentState", "Metrics", "api"]

AUDIENCE = "consent"

api = Api(
    title="Shahrah consent service",
    version="1",
    description=(
        "Consent artefacts and their lifecycle, enforcement decisions for gateways, the "
        "revocation feed, the consumer API for members, the citizen API and the operator's "
        "guardianship API. See docs/consent.md."
    ),
    security_schemes={
        "member": {
            "type": "http",
            "scheme": SCHEME,
            "description": "member-signed request assertion (registry.memberauth), audience "
            f"'{AUDIENCE}'",
        },
        "citizen": {"type": "http", "scheme": "bearer", "description": "citizen session token"},
        "operator": {"type": "http", "scheme": "bearer", "description": "consent operator token"},
    },
)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.decisions = Counter(
            "shahrah_consent_decisions",
            "Decisions answered to gateways, by outcome and deny reason.",
            ["decision", "reason"],
            registry=self.registry,
        )
        self.changes = Counter(
            "shahrah_consent_changes",
            "Consent changes recorded, by action.",
            ["action"],
            registry=self.registry,
        )
        self.pseudonyms = Counter(
            "shahrah_consent_pseudonym_requests",
            "Pseudonym lookups by member, answered or refused by the rate limit.",
            ["member", "outcome"],
            registry=self.registry,
        )
        self.subscribers = Gauge(
            "shahrah_consent_feed_subscribers",
            "Revocation feed streams open on this process.",
            registry=self.registry,
        )


@dataclass
class ConsentState:
    sessions: Sessions
    service: ConsentService
    accounts: Accounts
    hub: FeedHub
    key: PrivateKey
    conf: Callable[[], GlobalConfView]
    verifier: MemberRequestVerifier
    heartbeat: float
    metrics: Metrics
    pseudonym_limiter: RateLimiter  # per member: CNICs must not be pseudonymised in bulk


STATE = web.AppKey("consent", ConsentState)
#: The citizen portal's per-address sign-in throttle, which the citizen API shares, so
#: guesses spread over both count together.
SIGNIN_LIMITER = web.AppKey("consent_signin_limiter", LoginLimiter)


async def member(request: web.Request) -> ClientId:
    """A member or subsystem proven by a signed assertion against the global configuration."""
    return await request.app[STATE].verifier.authenticate(request)


async def citizen(request: web.Request) -> Cnic:
    return await request.app[STATE].accounts.authenticate(bearer_token(request))


async def operator(request: web.Request) -> str:
    async with transaction(request.app[STATE].sessions, write=False) as s:
        return await operators.tokens.check(s, bearer_token(request))


AUTHENTICATORS: dict[str, Callable[[web.Request], Awaitable[Any]]] = {
    "member": member,
    "citizen": citizen,
    "operator": operator,
}
