"""Queries on the file-drop ledger and the loaded records."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.models import FileRecord, IngestedFile
from core.db import utcnow

__all__ = ["file_known", "files", "get_record", "record_file", "upsert_records"]

# Rows per INSERT: five parameters each stays far below SQLite's 32766 limit.
_CHUNK = 1000


async def file_known(session: AsyncSession, source: str, sha256: str) -> bool:
    found = await session.scalar(
        select(IngestedFile.id).where(IngestedFile.source == source, IngestedFile.sha256 == sha256)
    )
    return found is not None


async def record_file(session: AsyncSession, entry: IngestedFile) -> int:
    session.add(entry)
    await session.flush()
    return entry.id


async def upsert_records(
    session: AsyncSession, source: str, file_id: int, rows: Sequence[tuple[str, int, str]]
) -> None:
    """Store ``(key, record number, JSON document)`` rows; a key already there is replaced."""
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    now = utcnow()
    for i in range(0, len(rows), _CHUNK):
        values = [
            {
                "source": source,
                "key": key,
                "file_id": file_id,
                "record_number": number,
                "document": document,
                "loaded_at": now,
            }
            for key, number, document in rows[i : i + _CHUNK]
        ]
        stmt = insert(FileRecord).values(values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["source", "key"],
            set_={
                "file_id": stmt.excluded.file_id,
                "record_number": stmt.excluded.record_number,
                "document": stmt.excluded.document,
                "loaded_at": stmt.excluded.loaded_at,
            },
        )
        await session.execute(stmt)


async def get_record(session: AsyncSession, source: str, key: str) -> str | None:
    document: str | None = await session.scalar(
        select(FileRecord.document).where(FileRecord.source == source, FileRecord.key == key)
    )
    return document


async def files(session: AsyncSession, source: str) -> Sequence[IngestedFile]:
    result = await session.scalars(
        select(IngestedFile).where(IngestedFile.source == source).order_by(IngestedFile.id)
    )
    return result.all()
