"""Tables of the audit trail: Merkle logs in SQL, their checkpoints, and the mirror's index.

A log's tree is stored as its leaves (``audit_entry``, with the entry bytes)
and the hashes of its complete perfect subtrees above the leaves
(``audit_node``, by their in-order position). Those never change once written, so
any root or proof is a fold of at most ~2 log2 n rows read by primary key.

Many logs share one database: each is a row of ``audit_log`` named by its
log id (a gateway's is its GatewayId) and a ``kind``: ``local`` for a log
this node writes, ``mirror`` for a copy the audit server keeps of a log it
witnesses. The surrogate integer key keeps the two-million-row tables narrow.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, CreatedAt, UTCDateTime

__all__ = [
    "AuditAlarm",
    "AuditCheckpoint",
    "AuditEntry",
    "AuditEventIndex",
    "AuditLog",
    "AuditNode",
    "AuditRegulator",
]


class _Bytes(LargeBinary):
    """Bytes handed to the driver as they are (sqlite3 and psycopg both take ``bytes``).

    LargeBinary wraps every value first, about a fifth of the time of a bulk append.
    """

    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> None:
        return None


# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
_BigId = BigInteger().with_variant(Integer(), "sqlite")
_Hash = _Bytes(32)


class AuditLog(Base):
    __tablename__ = "audit_log"
    __table_args__ = (UniqueConstraint("name", "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(1100))
    kind: Mapped[str] = mapped_column(String(8))  # "local" or "mirror"
    origin: Mapped[str] = mapped_column(String(3400))
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    root: Mapped[bytes] = mapped_column(_Hash)  # root hash at ``size``, kept for get-sth
    created_at: Mapped[CreatedAt]


class AuditEntry(Base):
    __tablename__ = "audit_entry"
    __table_args__ = (Index("ix_audit_entry_leaf", "log_id", "leaf_hash"),)

    log_id: Mapped[int] = mapped_column(ForeignKey("audit_log.id"), primary_key=True)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    leaf_hash: Mapped[bytes] = mapped_column(_Hash)
    entry: Mapped[bytes] = mapped_column(_Bytes)


class AuditNode(Base):
    """The hash of a perfect subtree above the leaves (level 0 is ``audit_entry.leaf_hash``).

    ``key`` is the subtree's in-order position (audit.merkle.node_key): one integer,
    so a proof's few dozen nodes are one ``key IN (...)`` primary-key lookup."""

    __tablename__ = "audit_node"

    log_id: Mapped[int] = mapped_column(ForeignKey("audit_log.id"), primary_key=True)
    key: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(_Hash)


class AuditCheckpoint(Base):
    """A signed checkpoint of a log; ``cosigned`` is the same note with the witness's
    cosignature added once the witness accepted it."""

    __tablename__ = "audit_checkpoint"

    log_id: Mapped[int] = mapped_column(ForeignKey("audit_log.id"), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root: Mapped[bytes] = mapped_column(_Hash)
    note: Mapped[str] = mapped_column(Text)
    cosigned: Mapped[str | None] = mapped_column(Text)
    cosigned_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    # On a mirror: the public JWK of the member key whose signature the witness checked.
    key_jwk: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[CreatedAt]


class AuditEventIndex(Base):
    """The mirror's search index: one row per mirrored entry that is an audit event."""

    __tablename__ = "audit_event_index"
    __table_args__ = (
        UniqueConstraint("log_id", "idx"),
        Index("ix_audit_event_index_time", "time", "id"),
        Index("ix_audit_event_index_subject", "subject", "time"),
        Index("ix_audit_event_index_member", "member", "time"),
        Index("ix_audit_event_index_gateway", "gateway", "time"),
        Index("ix_audit_event_index_service", "service", "time"),
        Index("ix_audit_event_index_client", "client", "time"),
    )

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    log_id: Mapped[int] = mapped_column(ForeignKey("audit_log.id"))
    idx: Mapped[int] = mapped_column(BigInteger)
    time: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    gateway: Mapped[str] = mapped_column(String(1100))
    member: Mapped[str] = mapped_column(String(800))
    client: Mapped[str] = mapped_column(String(1100))
    service: Mapped[str] = mapped_column(String(1700))
    role: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[str] = mapped_column(String(16))
    error_type: Mapped[str | None] = mapped_column(String(255))
    subject: Mapped[str | None] = mapped_column(String(64))


class AuditAlarm(Base):
    """Evidence kept by the witness when a log misbehaves (fork, rollback, bad entries)."""

    __tablename__ = "audit_alarm"

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    log_name: Mapped[str] = mapped_column(String(1100), index=True)
    reason: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    evidence: Mapped[str] = mapped_column(Text)  # the signed checkpoint that was refused
    created_at: Mapped[CreatedAt]


class AuditRegulator(Base):
    """A person's account on the regulator console, acting for a regulator organisation.

    The organisation is a subsystem that must be in the global group
    ``audit-regulators`` whenever the person signs in or uses the console, so
    removing it from the group ends every account tied to it.
    """

    __tablename__ = "audit_regulator"
    __table_args__ = (CheckConstraint("failed_signins >= 0", name="failed_signins"),)

    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    organisation: Mapped[str] = mapped_column(String(1100))  # a ClientId
    password_hash: Mapped[str] = mapped_column(String(300))  # argon2id PHC string
    failed_signins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    disabled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[CreatedAt]
    password_changed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
