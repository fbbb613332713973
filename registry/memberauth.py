"""Member-authenticated HTTP requests to federation services.

A gateway (or any member system holding a member signing key) proves who it
is to a central service (consent, audit witness, schema registry reads) by
signing a short-lived assertion bound to the request: audience, method, path
with query, body digest, time and a nonce. The service checks it against the
member keys in its verified global configuration, so no separate credential
store is needed and a revoked key stops working from the next configuration.

Header form::

    Authorization: Shahrah-Member <compact JWS, typ shahrah-member-request+jws>

The binding claims and their checks (:class:`RequestChecks`) are shared with
:mod:`registry.serviceauth`, the same scheme for central services.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import logging
import secrets
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.exc import SQLAlchemyError

from core import jws
from core.canonical import b64url_decode
from core.db import Sessions
from core.errors import (
    AccessDeniedError,
    BadRequestError,
    InvalidSignatureError,
    TooManyRequestsError,
    UnauthorizedError,
)
from core.fields import AwareDatetime, ClientIdField
from core.ids import ClientId
from core.keys import PrivateKey
from core.once import OnceLedger
from registry.globalconf import GlobalConfView
from registry.models import SignedRequestNonce

__all__ = [
    "MEMBER_REQUEST_TYP",
    "SCHEME",
    "MemberRequestVerifier",
    "RequestBinding",
    "RequestChecks",
    "binding_claims",
    "nonce_ledger",
    "peek_claims",
    "refusal_reason",
    "sign_request",
]

MEMBER_REQUEST_TYP = "shahrah-member-request+jws"
SCHEME = "Shahrah-Member"
MAX_AGE = dt.timedelta(seconds=60)  # how long an assertion is accepted after it was made
CLOCK_SKEW = dt.timedelta(seconds=30)
#: Nonces a verifier remembers within the acceptance window: in all, and per caller.
MAX_NONCES = 250_000
MAX_NONCES_PER_CALLER = 25_000
#: How often nonces past the window are deleted from the database, and how much later than
#: their end: another process of the service, with a clock that far behind, may still
#: take the assertion.
PURGE_EVERY = dt.timedelta(minutes=1)
PURGE_MARGIN = dt.timedelta(minutes=5)

log = logging.getLogger(__name__)


class RequestBinding(BaseModel):
    """What ties a signed assertion to one request; each scheme adds who signed it."""

    model_config = ConfigDict(extra="forbid")

    aud: str = Field(max_length=255)
    method: str = Field(max_length=16)
    path: str = Field(max_length=8192)
    body_sha256: str = Field(pattern=r"^[A-Za-z0-9_-]{43}$")
    iat: AwareDatetime
    # base64url, as sign_request makes it: a NUL (which PostgreSQL's text refuses) would fail
    # the whole group-committed batch of nonces, other members' requests with it.
    nonce: str = Field(pattern=r"^[A-Za-z0-9_-]{16,64}$")


class _Claims(RequestBinding):
    client: ClientIdField


_B = TypeVar("_B", bound=RequestBinding)


def _body_digest(body: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b"=").decode()


def binding_claims(
    *, audience: str, method: str, path: str, body: bytes, now: dt.datetime | None
) -> dict[str, str]:
    """The claims binding an assertion to one request (a fresh nonce each time)."""
    return {
        "aud": audience,
        "method": method.upper(),
        "path": path,
        "body_sha256": _body_digest(body),
        "iat": (now or dt.datetime.now(dt.UTC))
        .astimezone(dt.UTC)
        .isoformat()
        .replace("+00:00", "Z"),
        "nonce": secrets.token_urlsafe(16),
    }


def sign_request(
    key: PrivateKey,
    client: ClientId,
    *,
    audience: str,
    method: str,
    path: str,
    body: bytes = b"",
    now: dt.datetime | None = None,
) -> str:
    """The ``Authorization`` header value for one request by ``client`` (a member or subsystem)."""
    claims = {
        "client": str(client),
        **binding_claims(audience=audience, method=method, path=path, body=body, now=now),
    }
    return f"{SCHEME} {jws.sign_json(claims, key, typ=MEMBER_REQUEST_TYP)}"


class RequestChecks:
    """The checks every signed-request scheme shares once the signature verified: audience,
    request, body, age, and no replay.

    Nonces are remembered for the acceptance window twice over. In the service's database
    (``ledger``), so that another process of the service, or the same one restarted, refuses
    a replay too. And in bounded memory kept per caller (the signing member, or central
    service), which refuses a replay to this process without a write and keeps any caller
    from filling the database: a full memory refuses newcomers (429) rather
    than forget a nonce still inside the window. Per caller, so that a member sending a
    flood of signed requests exhausts only its own share: with one shared memory it could
    have the consent service refuse every other member's decisions, and their gateways
    fail closed. A caller may hold ``max_nonces_per_caller``; once ``max_nonces`` are held
    in all, only callers holding less than an equal share of that (``max_nonces`` over the
    callers holding any) are still admitted, so that several members together cannot shut
    the others out either, and never beyond twice ``max_nonces`` in all.
    """

    def __init__(
        self,
        audience: str,
        ledger: OnceLedger | None,
        *,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        max_nonces: int = MAX_NONCES,
        max_nonces_per_caller: int = MAX_NONCES_PER_CALLER,
    ) -> None:
        self.audience = audience
        self.ledger = ledger
        self.clock = clock
        self._purged_at = dt.datetime.min.replace(tzinfo=dt.UTC)
        # caller -> nonce -> iat (POSIX seconds), in arrival order (about iat order).
        self._seen: dict[str, OrderedDict[str, float]] = {}
        self._total = 0
        self._max = max_nonces
        self._per_caller = max_nonces_per_caller

    async def check(
        self,
        claims: RequestBinding,
        *,
        caller: str,
        method: str,
        path: str,
        body: bytes,
        what: str,
    ) -> None:
        """Raise UnauthorizedError naming ``what`` (e.g. "member assertion") and the reason;
        TooManyRequestsError when ``caller``'s share of the nonce memory, or the whole of it,
        is full."""
        now = self.clock()
        if claims.aud != self.audience:
            raise UnauthorizedError(f"{what} is for {claims.aud!r}, not {self.audience!r}")
        if claims.method != method.upper() or claims.path != path:
            raise UnauthorizedError(f"{what} was made for another request")
        if claims.body_sha256 != _body_digest(body):
            raise UnauthorizedError(f"{what} does not match the request body")
        if not (now - MAX_AGE <= claims.iat <= now + CLOCK_SKEW):
            raise UnauthorizedError(f"{what} is stale or from the future")
        self._remember(caller, claims.nonce, claims.iat.timestamp(), now, what)
        if self.ledger is None:
            return
        row = {
            "audience": self.audience,
            "caller": caller,
            "nonce": claims.nonce,
            "expires_at": claims.iat + MAX_AGE + CLOCK_SKEW,
        }
        if not await self.ledger.first(row):
            raise UnauthorizedError(f"{what} was already used (replay)")
        if now - self._purged_at >= PURGE_EVERY:
            self._purged_at = now
            try:
                await self.ledger.purge(now - PURGE_MARGIN)
            except SQLAlchemyError:
                # Only housekeeping: the rows stay until the next try.
                log.warning("could not forget expired request nonces", exc_info=True)

    def _remember(self, caller: str, nonce: str, iat: float, now: dt.datetime, what: str) -> None:
        horizon = (now - MAX_AGE - CLOCK_SKEW).timestamp()
        seen = self._seen.setdefault(caller, OrderedDict())
        self._expire(seen, horizon)
        if nonce in seen:
            raise UnauthorizedError(f"{what} was already used (replay)")
        # Forgetting a nonce still inside the window would let its assertion be replayed:
        # a full memory refuses the newcomer instead, until old ones age out.
        if len(seen) >= self._per_caller:
            raise TooManyRequestsError(
                f"too many signed requests from {caller} within the acceptance window; "
                "try again shortly",
                detail={"retry_after": 1},
            )
        if self._total >= self._max:
            for name, other in list(self._seen.items()):
                self._expire(other, horizon)
                if not other and name != caller:
                    del self._seen[name]
            if self._total >= self._max and (
                len(seen) >= max(1, self._max // len(self._seen)) or self._total >= 2 * self._max
            ):
                raise TooManyRequestsError(
                    "too many signed requests within the acceptance window; try again shortly",
                    detail={"retry_after": 1},
                )
        seen[nonce] = iat
        self._total += 1

    def _expire(self, seen: OrderedDict[str, float], horizon: float) -> None:
        """Drop nonces whose assertions are past the window from the front of ``seen``."""
        while seen:
            oldest, when = next(iter(seen.items()))
            if when >= horizon:
                break
            del seen[oldest]
            self._total -= 1


def nonce_ledger(sessions: Sessions) -> OnceLedger:
    """Where a service keeps the nonces of the signed requests it admitted (one per server,
    shared by its verifiers: rows are per audience and caller).

    Its commits do not wait for the disk: every process of the service sees a row at once,
    which is what refuses a replay, and a request (a gateway's consent sync, which must be
    answered within 0.75 s) never waits behind another writer's flush. Only a crash of the
    database itself within a replay's minute could forget the last moment's nonces.
    """
    return OnceLedger(sessions, SignedRequestNonce, name="request-nonces", durable=False)


class MemberRequestVerifier:
    """Checks member assertions for one service (``audience``) against the current configuration.

    Nonces seen within the acceptance window are remembered (:class:`RequestChecks`; in
    ``ledger`` too, if given), so an assertion cannot be replayed within it either.
    """

    def __init__(
        self,
        audience: str,
        view: Callable[[], GlobalConfView],
        ledger: OnceLedger | None,
        *,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        max_nonces: int = MAX_NONCES,
        max_nonces_per_caller: int = MAX_NONCES_PER_CALLER,
    ) -> None:
        self.audience = audience
        self.view = view
        self.checks = RequestChecks(
            audience,
            ledger,
            clock=clock,
            max_nonces=max_nonces,
            max_nonces_per_caller=max_nonces_per_caller,
        )

    async def verify(self, header: str, *, method: str, path: str, body: bytes) -> ClientId:
        """The authenticated client, or UnauthorizedError with the reason."""
        claims, view = self._signed(header)
        return await self._admit(claims, view, method=method, path=path, body=body)

    def _signed(self, header: str) -> tuple[_Claims, GlobalConfView]:
        """The assertion's claims, once its signature verifies by a key of its member."""
        scheme, _, token = header.partition(" ")
        if scheme != SCHEME or not token:
            raise UnauthorizedError(f"expected 'Authorization: {SCHEME} <signed assertion>'")
        view = self.view()
        try:
            # Resolve the key through the claimed client's member, at the assertion's time.
            unverified = peek_claims(token, _Claims)
            claims_client = unverified.client
            verified = jws.verify(
                token,
                lambda kid: view.signing_key(claims_client.member, kid, unverified.iat),
                typ=MEMBER_REQUEST_TYP,
            )
            claims = _Claims.model_validate_json(verified.payload)
        except (InvalidSignatureError, ValidationError) as e:
            raise UnauthorizedError(f"member assertion refused: {refusal_reason(e)}") from e
        return claims, view

    async def _admit(
        self, claims: _Claims, view: GlobalConfView, *, method: str, path: str, body: bytes
    ) -> ClientId:
        await self.checks.check(
            claims,
            # One share per member: its subsystems sign with its keys.
            caller=str(claims.client.member),
            method=method,
            path=path,
            body=body,
            what="member assertion",
        )
        try:
            view.require_active_client(claims.client)
        except AccessDeniedError as e:
            raise UnauthorizedError(f"member assertion refused: {e.message}") from e
        return claims.client

    async def authenticate(self, request: web.Request) -> ClientId:
        """A ``core.web.Api`` authenticator: the request's verified client."""
        header = request.headers.get("Authorization")
        if header is None:
            raise UnauthorizedError(f"missing 'Authorization: {SCHEME} ...'")
        # The signature before the body: no one without a member's key makes the service
        # read, and hold, a body of up to its limit (40 MiB for the witness).
        claims, view = self._signed(header)
        body = await request.read()
        return await self._admit(
            claims, view, method=request.method, path=request.path_qs, body=body
        )


def peek_claims(token: str, model: type[_B]) -> _B:
    """Read the claims before verification, only to learn whose keys to try."""
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidSignatureError("not a compact JWS")
    try:
        # Strict: a repeated claim (an audience, a path) may be read two ways by two readers.
        return model.model_validate(jws.strict_json(b64url_decode(parts[1]), "assertion"))
    except (ValidationError, BadRequestError) as e:
        raise InvalidSignatureError("assertion payload is malformed") from e


def refusal_reason(e: InvalidSignatureError | ValidationError) -> str:
    if isinstance(e, InvalidSignatureError):
        return e.message
    return "malformed claims"
