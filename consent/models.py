"""Tables of the consent service.

``consent_consents`` holds each artefact's current state, ``consent_services``
its services and released fields, ``consent_events`` every change (the
history citizens see, the revocation feed gateways follow, and the entries
of the consent log), ``consent_uses`` the counted uses of consents with
limits. ``consent_feed_head`` is a one-row counter: every change takes the
next sequence number from it under its row lock, so sequence order is commit
order and a feed reader that has seen number n has seen everything before n.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, CreatedAt, UTCDateTime

CNIC = 15  # #####-#######-#
ID = 64
CLIENT = 1100  # four identifier parts of at most 255 characters and their slashes
SERVICE = 1600

STATUSES = "'PENDING', 'ACTIVE', 'REJECTED', 'PAUSED', 'REVOKED', 'EXPIRED'"
RELATIONS = "'self', 'parent', 'court_guardian', 'attorney'"


class Consent(Base):
    __tablename__ = "consent_consents"
    __table_args__ = (
        CheckConstraint(f"status IN ({STATUSES})", name="status"),
        CheckConstraint(
            "legal_basis IN ('consent', 'legal_obligation', 'public_task')", name="legal_basis"
        ),
        CheckConstraint("expires_at > valid_from", name="window"),
        CheckConstraint("use_limit IS NULL OR use_limit > 0", name="use_limit"),
        CheckConstraint("uses >= 0", name="uses"),
        CheckConstraint(
            "(freq_max IS NULL AND freq_per IS NULL) OR "
            "(freq_max > 0 AND freq_per IN ('hour', 'day', 'week'))",
            name="frequency",
        ),
        CheckConstraint(
            f"grantor_relation IS NULL OR grantor_relation IN ({RELATIONS})", name="relation"
        ),
        Index(None, "status", "expires_at"),
        Index(None, "subject", "requested_at"),
        Index(None, "consumer_member", "requested_at"),
    )

    id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    subject: Mapped[str] = mapped_column(String(CNIC))
    consumer: Mapped[str] = mapped_column(String(CLIENT))
    consumer_member: Mapped[str] = mapped_column(String(CLIENT))
    requested_by: Mapped[str] = mapped_column(String(CLIENT))
    purpose: Mapped[str] = mapped_column(String(100))
    legal_basis: Mapped[str] = mapped_column(String(32))
    valid_from: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    use_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    freq_max: Mapped[int | None] = mapped_column(Integer, nullable=True)
    freq_per: Mapped[str | None] = mapped_column(String(8), nullable=True)
    uses: Mapped[int] = mapped_column(Integer, default=0)
    notice: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16))
    grantor_cnic: Mapped[str | None] = mapped_column(String(CNIC), nullable=True)
    grantor_relation: Mapped[str | None] = mapped_column(String(32), nullable=True)
    version: Mapped[int] = mapped_column(Integer)  # seq of the latest event
    requested_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    decided_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class ConsentService(Base):
    """One service a consent covers; ``provider`` is the owning member, for the feed filter."""

    __tablename__ = "consent_services"
    __table_args__ = (Index(None, "provider", "consent_id"),)

    consent_id: Mapped[str] = mapped_column(
        ForeignKey("consent_consents.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    service: Mapped[str] = mapped_column(String(SERVICE))
    provider: Mapped[str] = mapped_column(String(CLIENT))
    fields: Mapped[str] = mapped_column(Text)  # JSON array of JSON Pointers


class ConsentEvent(Base):
    """One change of one consent, numbered by the feed head."""

    __tablename__ = "consent_events"
    __table_args__ = (
        CheckConstraint(f"status IN ({STATUSES})", name="status"),
        Index(None, "consent_id", "seq"),
    )

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    consent_id: Mapped[str] = mapped_column(ForeignKey("consent_consents.id", ondelete="RESTRICT"))
    action: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))  # the state after the change
    actor_kind: Mapped[str] = mapped_column(String(16))  # citizen, consumer, system
    actor: Mapped[str] = mapped_column(String(CLIENT))  # CNIC, client id, or 'expiry'
    relation: Mapped[str | None] = mapped_column(String(32), nullable=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    entry: Mapped[str] = mapped_column(Text)  # the canonical JSON appended to the consent log
    leaf_index: Mapped[int] = mapped_column(Integer)  # its index in the consent log


class FeedHead(Base):
    __tablename__ = "consent_feed_head"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer)


class ConsentUse(Base):
    """A counted use of a consent with a use limit or frequency."""

    __tablename__ = "consent_uses"
    __table_args__ = (Index(None, "consent_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    consent_id: Mapped[str] = mapped_column(ForeignKey("consent_consents.id", ondelete="CASCADE"))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class Citizen(Base):
    """A citizen's account on the consent service, created by the operator."""

    __tablename__ = "consent_citizens"

    cnic: Mapped[str] = mapped_column(String(CNIC), primary_key=True)
    name: Mapped[str] = mapped_column(String(300))
    password_hash: Mapped[str] = mapped_column(String(300))  # argon2id PHC string
    failed_signins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[CreatedAt]
    password_changed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class CitizenSession(Base):
    """A signed-in citizen; only the token's SHA-256 is kept."""

    __tablename__ = "consent_sessions"

    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    cnic: Mapped[str] = mapped_column(
        ForeignKey("consent_citizens.cnic", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[CreatedAt]
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Guardianship(Base):
    """The operator's record that ``guardian`` may act for ``ward`` (with the relation)."""

    __tablename__ = "consent_guardianships"
    __table_args__ = (
        CheckConstraint(f"relation IN ({RELATIONS}) AND relation <> 'self'", name="relation"),
        CheckConstraint("guardian <> ward", name="distinct"),
        CheckConstraint("valid_until IS NULL OR valid_until > valid_from", name="window"),
        Index(None, "guardian"),
        Index(None, "ward"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    guardian: Mapped[str] = mapped_column(String(CNIC))
    ward: Mapped[str] = mapped_column(String(CNIC))
    relation: Mapped[str] = mapped_column(String(32))
    valid_from: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    valid_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    reference: Mapped[str] = mapped_column(String(300))  # court order, deed or birth record
    created_at: Mapped[CreatedAt]
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class OperatorToken(Base):
    """A token for the consent service's operator API; only its SHA-256 is kept."""

    __tablename__ = "consent_operator_tokens"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[CreatedAt]
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
