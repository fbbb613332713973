"""Freshness and replay protection on the provider side.

A request envelope is accepted only if its time lies within the freshness
window of the provider's clock and its request id has not been seen. Seen
ids are kept in the database (:class:`core.once.OnceLedger`) for twice the
window, so a replay is refused even after a restart or by another gateway
process sharing the database.
"""

from __future__ import annotations

import datetime as dt

from core.db import Sessions, utcnow
from core.errors import AccessDeniedError
from core.once import OnceLedger
from exchange.models import SeenRequest

__all__ = ["ReplayError", "ReplayGuard", "StaleRequestError"]


class StaleRequestError(AccessDeniedError):
    xroad_type = "Server.ServerProxy.StaleMessage"


class ReplayError(AccessDeniedError):
    xroad_type = "Server.ServerProxy.ReplayedMessage"


class ReplayGuard:
    def __init__(self, sessions: Sessions, *, window: dt.timedelta) -> None:
        self.sessions = sessions
        self.window = window
        self._seen = OnceLedger(sessions, SeenRequest, name="replay")

    async def admit(
        self, request_id: str, client: str, sent_at: dt.datetime, now: dt.datetime
    ) -> None:
        """Refuse a stale or already seen request; remember it durably otherwise."""
        if abs(now - sent_at) > self.window:
            raise StaleRequestError(
                f"request was sent at {sent_at.isoformat()}, outside the "
                f"{int(self.window.total_seconds())} s freshness window"
            )
        row = {"request_id": request_id, "client": client, "expires_at": now + 2 * self.window}
        if not await self._seen.first(row):
            raise ReplayError(f"request {request_id} was already received (replay)")

    async def purge(self, now: dt.datetime | None = None) -> int:
        """Forget ids whose replay window has passed; returns how many."""
        return await self._seen.purge(now or utcnow())

    async def close(self) -> None:
        await self._seen.close()
