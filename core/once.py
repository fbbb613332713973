"""Durable first sightings: a key passes the first time it is offered, never again.

Replay protection keeps what it has admitted (a provider gateway's request ids,
a service's signed-request nonces) in the database, so that neither a restart
nor another process sharing the database reopens the window. Every admission
writes a row, so concurrent offers are group-committed (:mod:`core.batching`)
and written by a worker thread on a plain connection
(:class:`core.db.WorkerConnection`): one multi-row insert that skips keys
already stored and returns the ones it stored.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Connection, Table, delete

from core.batching import GroupCommitter
from core.db import Base, Sessions, WorkerConnection, transaction

__all__ = ["OnceLedger"]


class OnceLedger:
    """Rows of ``model``'s table keyed by its primary key; ``expires_at`` says when a row
    may go.

    :meth:`first` stores a row unless its key is held: True the first time (once the row
    is committed), False for every later offer, in one batch or across processes.
    """

    def __init__(
        self, sessions: Sessions, model: type[Base], *, name: str, durable: bool = True
    ) -> None:
        self.sessions = sessions
        self.table = table = cast(Table, model.__table__)
        self._columns = [c.name for c in table.columns]
        self._key = [c.name for c in table.primary_key.columns]
        self._batch: GroupCommitter[Mapping[str, Any], bool] = GroupCommitter(self._write)
        self._worker = WorkerConnection(sessions, name=name, durable=durable)

    async def first(self, row: Mapping[str, Any]) -> bool:
        """Store ``row`` (every column of the table) if its key is new; whether it was."""
        return await self._batch.submit(row)

    async def purge(self, now: dt.datetime) -> int:
        """Forget rows that expired before ``now``; returns how many."""
        async with transaction(self.sessions) as s:
            result = await s.execute(delete(self.table).where(self.table.c.expires_at < now))
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def close(self) -> None:
        await self._batch.close()
        await self._worker.close()

    def _identity(self, row: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(row[name] for name in self._key)

    async def _write(self, rows: Sequence[Mapping[str, Any]]) -> list[bool]:
        stored = await self._worker.write(lambda conn: self._insert_new(conn, rows))
        # Within one batch the first offer of a key wins; later ones are repeats.
        results, taken = [], set()
        for row in rows:
            key = self._identity(row)
            results.append(key in stored and key not in taken)
            taken.add(key)
        return results

    def _insert_new(
        self, conn: Connection, rows: Sequence[Mapping[str, Any]]
    ) -> set[tuple[Any, ...]]:
        """Store the rows whose keys are new, in the caller's transaction; their keys."""
        # Each column type's own conversion, so rows read the same whichever path wrote them.
        convert = [
            column.type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
            for column in self.table.columns
        ]
        params: list[object] = []
        for row in rows:
            for name, to_db in zip(self._columns, convert, strict=True):
                params.append(to_db(row[name]) if to_db else row[name])
        sql = _insert_sql(
            self.table.name,
            tuple(self._columns),
            tuple(self._key),
            conn.dialect.paramstyle,
            len(rows),
        )
        return {tuple(found) for found in conn.exec_driver_sql(sql, tuple(params))}


@functools.lru_cache(maxsize=64)  # the common batch sizes, not one text for each of 1,024
def _insert_sql(
    table: str, columns: tuple[str, ...], key: tuple[str, ...], paramstyle: str, rows: int
) -> str:
    """One multi-row insert that skips keys already stored and names the ones it stored."""
    mark = "?" if paramstyle == "qmark" else "%s"
    values = ", ".join(["(" + ", ".join([mark] * len(columns)) + ")"] * rows)
    # Only placeholders and our own table and column names are interpolated; every value
    # is bound.
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES {values} "  # noqa: S608
        f"ON CONFLICT ({', '.join(key)}) DO NOTHING RETURNING {', '.join(key)}"
    )
