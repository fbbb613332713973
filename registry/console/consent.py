"""The consent service's operator API, as the console uses it for guardianships.

Guardianships live in the consent service, not the registry: the console
calls ``/v1/operator/guardianships`` there with the consent service's own
operator token (a registry token opens nothing there). The service's URL
comes from the registry's central services (``consent``), the same entry
the global configuration publishes. Answers are checked for shape before
they are shown; failures become errors that say what to fix.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from core.db import transaction
from core.errors import BadRequestError, NotFoundError, ShahrahError
from core.fields import AwareDatetime
from core.web import read_up_to
from registry import store
from registry.api import STATE

__all__ = [
    "CONSENT_OPERATOR",
    "ConsentOperator",
    "ConsentUnavailableError",
    "Guardianship",
]

CENTRAL_SERVICE = "consent"
TIMEOUT = 10.0  # seconds for one call to the consent service
MAX_ANSWER = 4 * 2**20  # bytes; a list of guardianships larger than this is refused unread
PATH = "/v1/operator/guardianships"


class ConsentUnavailableError(ShahrahError):
    """The consent service cannot be reached, refuses the console's token, or is not set up."""

    status = 503
    xroad_type = "Server.ConsentUnavailable"


class Guardianship(BaseModel):
    """What the consent service answers for one guardianship (unknown fields are ignored)."""

    model_config = ConfigDict(extra="ignore")

    id: int
    guardian: str
    ward: str
    relation: str
    valid_from: AwareDatetime
    valid_until: AwareDatetime | None = None
    reference: str
    ended_at: AwareDatetime | None = None

    def in_force(self, now: dt.datetime) -> bool:
        return (
            self.ended_at is None
            and self.valid_from <= now
            and (self.valid_until is None or now < self.valid_until)
        )


class ConsentOperator:
    """Calls the consent service's operator API with the configured token."""

    def __init__(self, token: str | None) -> None:
        self._token = token
        self._http: aiohttp.ClientSession | None = None

    async def lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as http:
            self._http = http
            yield
            self._http = None

    @property
    def configured(self) -> bool:
        return bool(self._token)

    async def _base(self, request: web.Request) -> str:
        async with transaction(request.app[STATE].sessions, write=False) as s:
            snap = await store.snapshot(s)
        for central in snap.central_services:
            if central.name == CENTRAL_SERVICE:
                return central.url.rstrip("/")
        raise ConsentUnavailableError(
            "the consent service is not registered as a central service (name 'consent')"
        )

    async def _call(
        self, request: web.Request, method: str, path: str, body: dict[str, Any] | None = None
    ) -> Any:
        if not self._token or self._http is None:
            raise ConsentUnavailableError(
                "no operator token for the consent service is configured for this registry"
            )
        url = await self._base(request) + path
        try:
            async with self._http.request(
                method,
                url,
                json=body,
                headers={"Authorization": f"Bearer {self._token}"},
                timeout=aiohttp.ClientTimeout(total=TIMEOUT),
                allow_redirects=False,
            ) as r:
                raw = await read_up_to(r.content, MAX_ANSWER + 1)
                status = r.status
        except (aiohttp.ClientError, TimeoutError) as e:
            raise ConsentUnavailableError(
                f"the consent service at {url} cannot be reached ({type(e).__name__})"
            ) from e
        if len(raw) > MAX_ANSWER:
            raise ConsentUnavailableError("the consent service's answer is too large")
        answer = _json(raw)
        if status in (401, 403):
            raise ConsentUnavailableError(
                "the consent service refused this registry's operator token"
            )
        if status in (400, 404, 409, 422):
            message = answer.get("message") if isinstance(answer, dict) else None
            detail = answer.get("detail") if isinstance(answer, dict) else None
            error = NotFoundError if status == 404 else BadRequestError
            raise error(str(message or f"refused (HTTP {status})"), detail=detail)
        if status not in (200, 201):
            raise ConsentUnavailableError(f"the consent service answered HTTP {status}")
        return answer

    async def list(self, request: web.Request) -> list[Guardianship]:
        answer = await self._call(request, "GET", PATH)
        try:
            return [Guardianship.model_validate(item) for item in answer]
        except (TypeError, ValidationError) as e:
            raise ConsentUnavailableError("the consent service's answer was not understood") from e

    async def add(self, request: web.Request, body: dict[str, Any]) -> Guardianship:
        return _one(await self._call(request, "POST", PATH, body))

    async def end(self, request: web.Request, gid: int) -> Guardianship:
        return _one(await self._call(request, "POST", f"{PATH}/{gid}/end"))


def _json(raw: bytes) -> Any:
    with contextlib.suppress(ValueError):
        return json.loads(raw) if raw else None
    return None


def _one(answer: Any) -> Guardianship:
    try:
        return Guardianship.model_validate(answer)
    except ValidationError as e:
        raise ConsentUnavailableError("the consent service's answer was not understood") from e


CONSENT_OPERATOR = web.AppKey("consent_operator", ConsentOperator)
