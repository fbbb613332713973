"""The consent service's side of the citizen timeline: ask the audit server, signed as itself.

The audit server is the federation's central service ``audit-witness``; its
URL comes from the verified global configuration. Every failure (unreachable,
refused, an answer that does not parse) becomes one
:class:`~audit.errors.TimelineUnavailableError`, so the portal can say so
plainly; the reason goes to the log, never to the page.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import urlsplit

import aiohttp
from pydantic import ValidationError

from audit.errors import TimelineUnavailableError
from audit.timeline import Timeline, TimelineQuery
from audit.witness_client import WITNESS_SERVICE, post_bounded
from core.errors import OutdatedGlobalConfError
from core.ids import Cnic
from core.keys import PrivateKey
from registry.globalconf import GlobalConfView
from registry.serviceauth import sign_service_request

__all__ = ["TIMELINE_PATH", "TimelineClient"]

log = logging.getLogger(__name__)

TIMELINE_PATH = "/api/v1/timeline"
TIMEOUT = 5.0  # seconds; a citizen is waiting for the page
_MAX_ANSWER = 4 * 2**20  # bytes; 200 items with their fields fit many times over


class TimelineClient:
    """Reads citizens' timelines for central service ``service`` (the consent service)."""

    def __init__(
        self,
        view: Callable[[], GlobalConfView],
        http: aiohttp.ClientSession,
        key: PrivateKey,
        *,
        service: str = "consent",
        timeout: float = TIMEOUT,
    ) -> None:
        self.view = view
        self.http = http
        self.key = key
        self.service = service
        self.timeout = timeout

    async def timeline(self, cnic: Cnic, *, limit: int = 50, cursor: str | None = None) -> Timeline:
        """One page of ``cnic``'s exchanges, newest first, or TimelineUnavailableError."""
        try:
            url = self.view().central_service(WITNESS_SERVICE).url.rstrip("/") + TIMELINE_PATH
        except OutdatedGlobalConfError as e:
            raise TimelineUnavailableError(f"the audit server is not known now: {e.message}") from e
        body = (
            TimelineQuery(cnic=cnic, limit=limit, cursor=cursor)
            .model_dump_json(exclude_none=True)
            .encode()
        )
        headers = {
            "Content-Type": "application/json",
            "Authorization": sign_service_request(
                self.key,
                self.service,
                audience=WITNESS_SERVICE,
                method="POST",
                path=urlsplit(url).path,
                body=body,
            ),
        }
        try:
            status, answer = await post_bounded(
                self.http, url, body, headers, seconds=self.timeout, limit=_MAX_ANSWER
            )
        except (aiohttp.ClientError, TimeoutError) as e:
            log.warning("the audit server at %s cannot be reached: %r", url, e)
            raise TimelineUnavailableError("the audit server cannot be reached") from e
        if status != 200:
            log.warning("the audit server answered a timeline request with HTTP %d", status)
            raise TimelineUnavailableError(f"the audit server answered HTTP {status}")
        try:
            return Timeline.model_validate_json(answer)
        except ValidationError as e:
            # Where and why, not the values: they are a citizen's records.
            where = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()[:3]
            )
            log.warning("the audit server's timeline does not parse (%s)", where)
            raise TimelineUnavailableError("the audit server's answer does not parse") from e
