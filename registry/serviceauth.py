"""Requests signed by a central service (consent, audit witness) to another central service.

The sibling of :mod:`registry.memberauth` for the federation's own services,
which hold no member key: a central service signs the same kind of
short-lived assertion (audience, method, path with query, body digest, time,
nonce) with the key the global configuration lists for it under
``central_services``, and the receiver checks it against that list. A
different JWS ``typ`` keeps the schemes apart, so a member's assertion can
never pass as a central service's, nor a receipt or checkpoint signed with the
same key as either.

Header form::

    Authorization: Shahrah-Service <compact JWS, typ shahrah-service-request+jws>
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection
from typing import Annotated

from aiohttp import web
from pydantic import Field, ValidationError

from core import jws
from core.errors import (
    ForbiddenError,
    InvalidSignatureError,
    OutdatedGlobalConfError,
    UnauthorizedError,
)
from core.keys import PrivateKey, PublicKey
from core.once import OnceLedger
from registry.globalconf import GlobalConfView
from registry.memberauth import (
    RequestBinding,
    RequestChecks,
    binding_claims,
    peek_claims,
    refusal_reason,
)

__all__ = [
    "SCHEME",
    "SERVICE_REQUEST_TYP",
    "ServiceRequestVerifier",
    "sign_service_request",
]

SERVICE_REQUEST_TYP = "shahrah-service-request+jws"
SCHEME = "Shahrah-Service"
_WHAT = "service assertion"


class _Claims(RequestBinding):
    service: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,63}$")]


def sign_service_request(
    key: PrivateKey,
    service: str,
    *,
    audience: str,
    method: str,
    path: str,
    body: bytes = b"",
    now: dt.datetime | None = None,
) -> str:
    """The ``Authorization`` header value for one request by central service ``service``."""
    claims = {
        "service": service,
        **binding_claims(audience=audience, method=method, path=path, body=body, now=now),
    }
    return f"{SCHEME} {jws.sign_json(claims, key, typ=SERVICE_REQUEST_TYP)}"


class ServiceRequestVerifier:
    """Checks central-service assertions for one audience; only ``callers`` are let in.

    A verified assertion by a central service not among ``callers`` is
    refused with 403; anything that does not verify, with 401.
    """

    def __init__(
        self,
        audience: str,
        view: Callable[[], GlobalConfView],
        callers: Collection[str],
        ledger: OnceLedger | None,
        *,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.view = view
        self.callers = frozenset(callers)
        self.checks = RequestChecks(audience, ledger, clock=clock)

    async def verify(self, header: str, *, method: str, path: str, body: bytes) -> str:
        """The name of the authenticated central service, or Unauthorized/ForbiddenError."""
        return await self._admit(self._signed(header), method=method, path=path, body=body)

    def _signed(self, header: str) -> _Claims:
        """The assertion's claims, once its signature verifies by a key of its service."""
        scheme, _, token = header.partition(" ")
        if scheme != SCHEME or not token:
            raise UnauthorizedError(f"expected 'Authorization: {SCHEME} <signed assertion>'")
        view = self.view()
        try:
            unverified = peek_claims(token, _Claims)
            verified = jws.verify(
                token, lambda kid: _key(view, unverified.service, kid), typ=SERVICE_REQUEST_TYP
            )
            claims = _Claims.model_validate_json(verified.payload)
        except (InvalidSignatureError, ValidationError) as e:
            raise UnauthorizedError(f"{_WHAT} refused: {refusal_reason(e)}") from e
        return claims

    async def _admit(self, claims: _Claims, *, method: str, path: str, body: bytes) -> str:
        # Before the nonce is kept: a service that may not call writes nothing.
        if claims.service not in self.callers:
            raise ForbiddenError(f"central service {claims.service!r} may not call this")
        await self.checks.check(
            claims, caller=claims.service, method=method, path=path, body=body, what=_WHAT
        )
        return claims.service

    async def authenticate(self, request: web.Request) -> str:
        """A ``core.web.Api`` authenticator: the request's verified central service."""
        header = request.headers.get("Authorization")
        if header is None:
            raise UnauthorizedError(f"missing 'Authorization: {SCHEME} ...'")
        claims = self._signed(header)  # before the body, as for members (memberauth)
        body = await request.read()
        return await self._admit(claims, method=request.method, path=request.path_qs, body=body)


def _key(view: GlobalConfView, service: str, kid: str) -> PublicKey:
    try:
        keys = view.central_service(service).keys.keyset()
    except OutdatedGlobalConfError as e:
        raise InvalidSignatureError(f"{service!r} is not a central service") from e
    key = keys.get(kid)
    if key is None:
        raise InvalidSignatureError(f"key {kid!r} is not a key of central service {service!r}")
    return key
