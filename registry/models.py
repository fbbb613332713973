"""Tables of the central registry: who is in the federation and what they may do.

Everything a gateway needs is published from these tables as the signed
global configuration (:mod:`registry.globalconf`); the last published
versions are kept in ``registry_globalconf`` so a restarted registry never
reuses a serial.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.db import Base, CreatedAt, UTCDateTime

CODE = 255  # identifier parts are at most 255 characters (core.ids.MAX_PART_LENGTH)

#: Status values of members, subsystems, gateways and services.
STATUSES = ("active", "suspended")


class Federation(Base):
    """The single row that names this X-Road instance and its publishing settings."""

    __tablename__ = "registry_federation"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance: Mapped[str] = mapped_column(String(CODE))
    globalconf_validity: Mapped[int] = mapped_column(Integer)  # seconds a configuration is valid
    globalconf_refresh: Mapped[int] = mapped_column(Integer)  # seconds between gateway fetches
    created_at: Mapped[CreatedAt]


class Member(Base):
    __tablename__ = "registry_members"
    __table_args__ = (
        UniqueConstraint("member_class", "member_code"),
        CheckConstraint("status IN ('active', 'suspended')", name="status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    member_class: Mapped[str] = mapped_column(String(CODE))
    member_code: Mapped[str] = mapped_column(String(CODE))
    name: Mapped[str] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[CreatedAt]

    subsystems: Mapped[list[Subsystem]] = relationship(back_populates="member")


class Subsystem(Base):
    __tablename__ = "registry_subsystems"
    __table_args__ = (
        UniqueConstraint("member_id", "code"),
        CheckConstraint("status IN ('active', 'suspended')", name="status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("registry_members.id", ondelete="RESTRICT"))
    code: Mapped[str] = mapped_column(String(CODE))
    name: Mapped[str] = mapped_column(String(300), default="")
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[CreatedAt]

    member: Mapped[Member] = relationship(back_populates="subsystems")


class Gateway(Base):
    """A member's gateway (X-Road's security server): where it listens and its TLS pin."""

    __tablename__ = "registry_gateways"
    __table_args__ = (
        UniqueConstraint("member_id", "code"),
        CheckConstraint("status IN ('active', 'suspended')", name="status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("registry_members.id", ondelete="RESTRICT"))
    code: Mapped[str] = mapped_column(String(CODE))
    address: Mapped[str] = mapped_column(String(2048))  # https://host:port of the gateway
    tls_certificate: Mapped[str] = mapped_column(Text)  # PEM; peers trust exactly this certificate
    # Hex SHA-256 of its DER form: the pin, by which gateways know a peer, so one gateway's.
    tls_sha256: Mapped[str] = mapped_column(String(64), index=True, unique=True)
    # A renewed certificate registered beside the current one, as X-Road lets a security
    # server hold several: peers accept either, so the gateway moves to it without one
    # refused handshake, and making it the current one drops the old.
    next_tls_certificate: Mapped[str | None] = mapped_column(Text, default=None)
    next_tls_sha256: Mapped[str | None] = mapped_column(
        String(64), index=True, unique=True, default=None
    )
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[CreatedAt]


class GatewayClient(Base):
    """A subsystem served by a gateway; a subsystem may sit on several (X-Road clustering)."""

    __tablename__ = "registry_gateway_clients"

    gateway_id: Mapped[int] = mapped_column(
        ForeignKey("registry_gateways.id", ondelete="CASCADE"), primary_key=True
    )
    subsystem_id: Mapped[int] = mapped_column(
        ForeignKey("registry_subsystems.id", ondelete="CASCADE"), primary_key=True
    )


class MemberKey(Base):
    """A member's public signing key with its validity window.

    Several keys per member allow rotation: a new key is added with a future
    ``not_before``, the old one gets a ``not_after``; ``revoked_at`` ends a
    key at once (it stops verifying from the next configuration).
    """

    __tablename__ = "registry_member_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("registry_members.id", ondelete="RESTRICT"))
    kid: Mapped[str] = mapped_column(String(64), unique=True)  # RFC 7638 thumbprint
    jwk: Mapped[str] = mapped_column(Text)  # canonical JSON of the public JWK
    not_before: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    not_after: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[CreatedAt]


class GlobalGroup(Base):
    __tablename__ = "registry_global_groups"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(CODE), unique=True)
    description: Mapped[str] = mapped_column(String(1000), default="")
    created_at: Mapped[CreatedAt]


class GlobalGroupMember(Base):
    __tablename__ = "registry_global_group_members"

    group_id: Mapped[int] = mapped_column(
        ForeignKey("registry_global_groups.id", ondelete="CASCADE"), primary_key=True
    )
    subsystem_id: Mapped[int] = mapped_column(
        ForeignKey("registry_subsystems.id", ondelete="CASCADE"), primary_key=True
    )


class LocalGroup(Base):
    """A group defined by a providing subsystem for its own access rights."""

    __tablename__ = "registry_local_groups"
    __table_args__ = (UniqueConstraint("owner_id", "code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("registry_subsystems.id", ondelete="CASCADE"))
    code: Mapped[str] = mapped_column(String(CODE))
    description: Mapped[str] = mapped_column(String(1000), default="")
    created_at: Mapped[CreatedAt]


class LocalGroupMember(Base):
    __tablename__ = "registry_local_group_members"

    group_id: Mapped[int] = mapped_column(
        ForeignKey("registry_local_groups.id", ondelete="CASCADE"), primary_key=True
    )
    subsystem_id: Mapped[int] = mapped_column(
        ForeignKey("registry_subsystems.id", ondelete="CASCADE"), primary_key=True
    )


class Purpose(Base):
    """An entry of the purposes catalogue that consents and services refer to."""

    __tablename__ = "registry_purposes"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(CODE), unique=True)
    name: Mapped[str] = mapped_column(String(300))
    description: Mapped[str] = mapped_column(String(2000), default="")
    created_at: Mapped[CreatedAt]


class Service(Base):
    __tablename__ = "registry_services"
    __table_args__ = (
        # An unversioned service stores version '' so the constraint holds on both databases
        # (NULLs never collide in a UNIQUE constraint).
        UniqueConstraint("subsystem_id", "code", "version"),
        CheckConstraint("status IN ('active', 'suspended')", name="status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    subsystem_id: Mapped[int] = mapped_column(
        ForeignKey("registry_subsystems.id", ondelete="RESTRICT")
    )
    code: Mapped[str] = mapped_column(String(CODE))
    version: Mapped[str] = mapped_column(String(CODE), default="")
    title: Mapped[str] = mapped_column(String(300))
    description: Mapped[str] = mapped_column(String(2000), default="")
    request_schema_subject: Mapped[str | None] = mapped_column(String(CODE), nullable=True)
    request_schema_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    response_schema_subject: Mapped[str | None] = mapped_column(String(CODE), nullable=True)
    response_schema_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    requires_consent: Mapped[bool] = mapped_column(Boolean, default=False)
    # JSON Pointer to the data subject's CNIC in the response (services under consent).
    subject_field: Mapped[str | None] = mapped_column(String(300), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[CreatedAt]


class ServicePurpose(Base):
    """The purposes a service may be called for."""

    __tablename__ = "registry_service_purposes"

    service_id: Mapped[int] = mapped_column(
        ForeignKey("registry_services.id", ondelete="CASCADE"), primary_key=True
    )
    purpose_id: Mapped[int] = mapped_column(
        ForeignKey("registry_purposes.id", ondelete="RESTRICT"), primary_key=True
    )


class AccessRight(Base):
    """Permission for one grantee to call a service, or one endpoint of it.

    ``method='*'`` and ``path='**'`` grant the whole service. A path pattern's
    ``*`` matches one segment and a trailing ``**`` any remainder. The grantee is
    exactly one of a subsystem, a global group or a local group.
    """

    __tablename__ = "registry_access_rights"
    __table_args__ = (
        CheckConstraint(
            "(CASE WHEN subsystem_id IS NULL THEN 0 ELSE 1 END)"
            " + (CASE WHEN global_group_id IS NULL THEN 0 ELSE 1 END)"
            " + (CASE WHEN local_group_id IS NULL THEN 0 ELSE 1 END) = 1",
            name="one_grantee",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("registry_services.id", ondelete="CASCADE"))
    method: Mapped[str] = mapped_column(String(16), default="*")
    path: Mapped[str] = mapped_column(String(2048), default="**")
    subsystem_id: Mapped[int | None] = mapped_column(
        ForeignKey("registry_subsystems.id", ondelete="CASCADE"), nullable=True
    )
    global_group_id: Mapped[int | None] = mapped_column(
        ForeignKey("registry_global_groups.id", ondelete="CASCADE"), nullable=True
    )
    local_group_id: Mapped[int | None] = mapped_column(
        ForeignKey("registry_local_groups.id", ondelete="CASCADE"), nullable=True
    )
    created_at: Mapped[CreatedAt]


class CentralService(Base):
    """A federation-wide service (consent, audit witness, ...) and the keys it signs with."""

    __tablename__ = "registry_central_services"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    url: Mapped[str] = mapped_column(String(2048))
    jwks: Mapped[str] = mapped_column(Text)  # canonical JSON JWK Set
    updated_at: Mapped[CreatedAt]


class OperatorToken(Base):
    """An operator's API token, kept only as its SHA-256 (tokens are 256-bit random)."""

    __tablename__ = "registry_operator_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[CreatedAt]
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class GlobalConfVersion(Base):
    """Every signed global configuration published, newest serial last."""

    __tablename__ = "registry_globalconf"

    serial: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    issued_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    content_sha256: Mapped[str] = mapped_column(String(64))  # of the content without times/serial
    signed: Mapped[str] = mapped_column(Text)  # the compact JWS served at /globalconf


class GatewayFetch(Base):
    """The last global configuration each gateway fetched, as it reported it.

    A gateway that holds a member key signs its fetch (:mod:`registry.fetch_reports`); the
    registry keeps one row per (member, gateway) with the serial it served and when, so the
    operator can see which gateways lag behind. Plain strings rather than foreign keys: a
    report describes what happened and outlives later changes to the member's registration.
    """

    __tablename__ = "registry_gateway_fetches"

    member: Mapped[str] = mapped_column(String(1024), primary_key=True)  # X-Road member id
    gateway: Mapped[str] = mapped_column(String(CODE), primary_key=True)  # '' if not named
    serial: Mapped[int] = mapped_column(Integer)  # the configuration served (or confirmed by 304)
    fetched_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class SignedRequestNonce(Base):
    """Nonces of the signed requests a federation service admitted (:mod:`registry.memberauth`,
    :mod:`registry.serviceauth`), kept until the assertion could no longer be accepted.

    In the database, so that neither another process of the service nor the same one after
    a restart takes a replay within the acceptance window. Every service (consent, audit
    witness, registry) keeps its own in its own database, one row per (audience, caller,
    nonce): a caller's nonces never collide with another's.
    """

    __tablename__ = "registry_signed_request_nonces"
    __table_args__ = (Index("ix_registry_signed_request_nonces_expires_at", "expires_at"),)

    audience: Mapped[str] = mapped_column(String(CODE), primary_key=True)
    caller: Mapped[str] = mapped_column(String(1024), primary_key=True)  # member id or service
    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
