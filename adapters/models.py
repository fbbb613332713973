"""Tables of the file-drop adapters: the ledger of ingested files and the records they loaded.

The ledger makes ingestion idempotent: a file is known by its source and the
SHA-256 of its content, so the same bytes are never loaded twice, whatever
the file is called or however often it is dropped again. A record is kept
under its source and key; a later file with the same key replaces it (the
newest drop is the truth), and ``file_id`` says which file it came from.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, CreatedAt, UTCDateTime, utcnow

__all__ = ["FileRecord", "IngestedFile"]


class IngestedFile(Base):
    __tablename__ = "adapter_files"
    __table_args__ = (UniqueConstraint("source", "sha256"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(255))  # the service the drop directory serves
    name: Mapped[str] = mapped_column(String(1024))  # file name as dropped
    sha256: Mapped[str] = mapped_column(String(64))  # hex digest of the content
    size: Mapped[int] = mapped_column(BigInteger)  # bytes
    status: Mapped[str] = mapped_column(String(16))  # loaded | rejected
    reason: Mapped[str | None] = mapped_column(Text)  # why a file was rejected whole
    records_loaded: Mapped[int] = mapped_column(Integer)
    records_rejected: Mapped[int] = mapped_column(Integer)  # sent to the dead-letter file
    ingested_at: Mapped[CreatedAt]


class FileRecord(Base):
    __tablename__ = "adapter_records"

    source: Mapped[str] = mapped_column(String(255), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    file_id: Mapped[int] = mapped_column(ForeignKey("adapter_files.id"), index=True)
    record_number: Mapped[int] = mapped_column(Integer)  # position in its file, 1-based
    document: Mapped[str] = mapped_column(Text)  # the service's JSON, already mapped and valid
    loaded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
