"""Tables of the schema registry: schemas by global id, subject versions, compatibility config.

A schema is stored once, under one global id, however many subjects use it
(Confluent's model): ``identity`` is the SHA-256 of the canonical schema
together with its references, so registering the same document again, under
any subject and with its keys in any order, finds the existing id.
"""

from __future__ import annotations

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, CreatedAt

SUBJECT = 255  # characters; subjects are dotted names such as pk.nadra.person

#: Confluent's seven compatibility levels.
LEVELS = (
    "NONE",
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
)
#: How open content models are judged (see docs/schemas.md).
POLICIES = ("STRICT", "LENIENT")
#: The config row that holds the registry-wide defaults.
GLOBAL = ""


class Schema(Base):
    """One schema document with its references, under its global id."""

    __tablename__ = "registry_schemas"
    # Ids are never given twice (Confluent's promise; gateways keep validators by id for
    # good). PostgreSQL's sequence never goes back; SQLite needs AUTOINCREMENT, or it gives
    # the highest id again once that schema is permanently deleted.
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # SHA-256 (hex) of the RFC 8785 canonical schema: ignores key order and whitespace.
    fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    # SHA-256 (hex) of the canonical {schema, references}: what makes two registrations the same.
    identity: Mapped[str] = mapped_column(String(64), unique=True)
    schema_type: Mapped[str] = mapped_column(String(16), default="JSON")
    # The schema as compact JSON in the key order it was registered with (people read it).
    schema_text: Mapped[str] = mapped_column(Text)
    # Canonical JSON list of {name, subject, version}.
    references: Mapped[str] = mapped_column(Text, default="[]")
    created_at: Mapped[CreatedAt]


class SubjectVersion(Base):
    """Version ``version`` of ``subject`` is schema ``schema_id``; soft-deleted when ``deleted``."""

    __tablename__ = "registry_schema_versions"
    __table_args__ = (
        UniqueConstraint("subject", "version"),
        CheckConstraint("version >= 1", name="positive_version"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject: Mapped[str] = mapped_column(String(SUBJECT), index=True)
    version: Mapped[int] = mapped_column(Integer)
    schema_id: Mapped[int] = mapped_column(ForeignKey("registry_schemas.id", ondelete="RESTRICT"))
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[CreatedAt]


class SchemaReference(Base):
    """Schema ``schema_id`` names ``subject`` version ``version`` as a reference.

    Kept as rows (not only inside ``Schema.references``) so the registry can
    refuse to delete a version that another schema still needs.
    """

    __tablename__ = "registry_schema_references"

    schema_id: Mapped[int] = mapped_column(
        ForeignKey("registry_schemas.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(1024), primary_key=True)
    subject: Mapped[str] = mapped_column(String(SUBJECT), index=True)
    version: Mapped[int] = mapped_column(Integer)


class CompatibilityConfig(Base):
    """Compatibility level and policy of one subject, or the global default (subject ``''``)."""

    __tablename__ = "registry_schema_config"
    __table_args__ = (
        CheckConstraint(
            "compatibility IS NULL OR compatibility IN ("
            + ", ".join(f"'{x}'" for x in LEVELS)
            + ")",
            name="level",
        ),
        CheckConstraint(
            "policy IS NULL OR policy IN (" + ", ".join(f"'{x}'" for x in POLICIES) + ")",
            name="policy",
        ),
    )

    subject: Mapped[str] = mapped_column(String(SUBJECT), primary_key=True)
    compatibility: Mapped[str | None] = mapped_column(String(32), nullable=True)
    policy: Mapped[str | None] = mapped_column(String(16), nullable=True)
