"""The gateway's own tables. (Its message log is the audit package's Merkle log.)"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, UTCDateTime


class SeenRequest(Base):
    """Request ids a provider gateway has accepted, kept past the freshness window.

    Persisted, so a restart (or another gateway process on the same database)
    does not reopen a replay window.
    """

    __tablename__ = "exchange_seen_requests"
    __table_args__ = (Index("ix_exchange_seen_requests_expires_at", "expires_at"),)

    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    client: Mapped[str] = mapped_column(String(1100))
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
