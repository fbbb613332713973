"""Freshness and replay protection on the provider side.

A request envelope is accepted only if its time lies within the freshness
window of the provider's clock and its request id has not been seen. Seen
ids are written to the database (group-committed, since every exchange
writes one) and kept for twice the window, so a replay is refused even after
a restart or by another gateway process sharing the database.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite

from core.batching import GroupCommitter
from core.db import Sessions, transaction, utcnow
from core.errors import AccessDeniedError
from exchange.models import SeenRequest

__all__ = ["ReplayError", "ReplayGuard", "StaleRequestError"]

log = logging.getLogger(__name__)


class StaleRequestError(AccessDeniedError):
    xroad_type = "Server.ServerProxy.StaleMessage"


class ReplayError(AccessDeniedError):
    xroad_type = "Server.ServerProxy.ReplayedMessage"


@dataclass(frozen=True)
class _Seen:
    request_id: str
    client: str
    expires_at: dt.datetime


class ReplayGuard:
    def __init__(self, sessions: Sessions, *, window: dt.timedelta) -> None:
        self.sessions = sessions
        self.window = window
        self._batch: GroupCommitter[_Seen, bool] = GroupCommitter(self._write)

    async def admit(
        self, request_id: str, client: str, sent_at: dt.datetime, now: dt.datetime
    ) -> None:
        """Refuse a stale or already seen request; remember it durably otherwise."""
        if abs(now - sent_at) > self.window:
            raise StaleRequestError(
                f"request was sent at {sent_at.isoformat()}, outside the "
                f"{int(self.window.total_seconds())} s freshness window"
            )
        fresh = await self._batch.submit(_Seen(request_id, client, now + 2 * self.window))
        if not fresh:
            raise ReplayError(f"request {request_id} was already received (replay)")

    async def _write(self, items: Sequence[_Seen]) -> list[bool]:
        async with transaction(self.sessions) as s:
            dialect = (await s.connection()).dialect.name
            insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
            stmt = (
                insert(SeenRequest)
                .values(
                    [
                        {"request_id": i.request_id, "client": i.client, "expires_at": i.expires_at}
                        for i in items
                    ]
                )
                .on_conflict_do_nothing(index_elements=["request_id"])
                .returning(SeenRequest.request_id)
            )
            inserted = set((await s.execute(stmt)).scalars())
        # Within one batch the first occurrence of an id wins; later ones are replays.
        results, taken = [], set()
        for item in items:
            ok = item.request_id in inserted and item.request_id not in taken
            taken.add(item.request_id)
            results.append(ok)
        return results

    async def purge(self, now: dt.datetime | None = None) -> int:
        """Forget ids whose replay window has passed; returns how many."""
        async with transaction(self.sessions) as s:
            result = await s.execute(
                delete(SeenRequest).where(SeenRequest.expires_at < (now or utcnow()))
            )
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def close(self) -> None:
        await self._batch.close()
