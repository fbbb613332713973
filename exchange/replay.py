"""Freshness and replay protection on the provider side.

A request envelope is accepted only if its time lies within the freshness
window of the provider's clock and its request id has not been seen. Seen
ids are written to the database (group-committed, since every exchange
writes one, by a worker thread on a plain connection) and kept for twice the
window, so a replay is refused even after a restart or by another gateway
process sharing the database.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, delete

from core.batching import GroupCommitter
from core.db import Sessions, WorkerConnection, transaction, utcnow
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
        self._worker = WorkerConnection(sessions, name="replay")

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
        inserted = await self._worker.write(lambda conn: _insert_new(conn, items))
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
        await self._worker.close()


@functools.cache
def _insert_sql(paramstyle: str, rows: int) -> str:
    """One multi-row insert that skips ids already stored and names the ones it stored."""
    mark = "?" if paramstyle == "qmark" else "%s"
    values = ", ".join([f"({mark}, {mark}, {mark})"] * rows)
    # Only placeholders and our own table name are interpolated; every value is bound.
    return (
        f"INSERT INTO {SeenRequest.__tablename__} (request_id, client, expires_at) "  # noqa: S608
        f"VALUES {values} ON CONFLICT (request_id) DO NOTHING RETURNING request_id"
    )


def _insert_new(conn: Connection, items: Sequence[_Seen]) -> set[str]:
    """Store the ids not yet seen, in the caller's transaction; returns those it stored."""
    # The column type's own conversion, so rows read the same whichever path wrote them.
    column = SeenRequest.__table__.c.expires_at.type
    expires = column.dialect_impl(conn.dialect).bind_processor(conn.dialect)
    assert expires is not None
    params: list[object] = []
    for i in items:
        params += (i.request_id, i.client, expires(i.expires_at))
    sql = _insert_sql(conn.dialect.paramstyle, len(items))
    return {row[0] for row in conn.exec_driver_sql(sql, tuple(params))}
