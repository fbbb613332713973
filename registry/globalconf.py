"""The signed global configuration: its document, its verification, and a lookup index.

The registry publishes one JSON document with everything a gateway needs to
decide on an exchange (members and their keys, gateways and their TLS pins,
services, access rights, purposes, central services). It is signed by the
operator as a compact JWS with the payload attached and ``typ``
:data:`GLOBALCONF_TYP`. Gateways start from a configuration *anchor* (the
instance name, the URL and the operator's public keys) and accept a document
only if it verifies against the anchor, names the anchor's instance, has not
expired and is not older than the last one they accepted.

:class:`GlobalConfView` indexes a verified document for the questions a
gateway asks on every message.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from core import jws
from core.canonical import canonical_json
from core.errors import (
    AccessDeniedError,
    BadRequestError,
    InvalidSignatureError,
    OutdatedGlobalConfError,
    UnknownServiceError,
)
from core.fields import (
    AwareDatetime,
    GatewayIdField,
    IdPart,
    MemberIdField,
    ServiceIdField,
    SubsystemIdField,
)
from core.ids import ClientId, GatewayId, MemberId, ServiceId
from core.keys import KeySet, PublicKey

__all__ = [
    "FORMAT",
    "GLOBALCONF_TYP",
    "AccessRightInfo",
    "Anchor",
    "CentralServiceInfo",
    "GatewayInfo",
    "GlobalConf",
    "GlobalConfRejectedError",
    "GlobalConfView",
    "GroupInfo",
    "Jwks",
    "KeyInfo",
    "LocalGroupInfo",
    "MemberInfo",
    "PurposeInfo",
    "SchemaRef",
    "ServiceInfo",
    "SubsystemInfo",
    "anchor_schema",
    "document_schema",
    "path_matches",
    "validate_path_pattern",
    "verify_globalconf",
]

GLOBALCONF_TYP = "shahrah-globalconf+jws"
FORMAT: Literal["shahrah-globalconf/1"] = "shahrah-globalconf/1"

#: How far a configuration's issue time may lie in the future of a gateway's clock.
CLOCK_SKEW = dt.timedelta(minutes=5)
#: The longest validity the registry gives a configuration; gateways refuse a longer one, so
#: that one signed by mistake (or with a stolen key) cannot outlive every later serial.
MAX_VALIDITY = dt.timedelta(days=7)

Status = Literal["active", "suspended"]
HttpMethod = Literal["*", "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
PurposeCode = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,99}$")]
SubjectName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")]
#: A subject's version number, as Confluent allows it (1 to 2^31-1) and the tables hold it.
SchemaVersion = Annotated[int, Field(ge=1, le=2**31 - 1)]
#: An RFC 6901 JSON Pointer to one member of a response document (not the whole of it).
SubjectField = Annotated[str, Field(pattern=r"^(/([^~/]|~[01])*)+$", max_length=300)]


def _path_pattern(value: str) -> str:
    try:
        return validate_path_pattern(value)
    except BadRequestError as e:
        raise ValueError(e.message) from e


PathPattern = Annotated[str, AfterValidator(_path_pattern)]


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GlobalConfRejectedError(OutdatedGlobalConfError):
    """A configuration document was refused: bad signature, wrong instance, expired, rollback."""


class Jwks(_Doc):
    """A JWK Set of public keys."""

    keys: list[dict[str, str]]

    def keyset(self) -> KeySet:
        """The keys, parsed once per document (it is frozen): verifiers on hot paths ask on
        every message."""
        return self._keyset

    @functools.cached_property
    def _keyset(self) -> KeySet:
        return KeySet.from_jwks(self.model_dump())


class KeyInfo(_Doc):
    kid: str
    jwk: dict[str, str]
    not_before: AwareDatetime
    not_after: AwareDatetime | None = None
    revoked_at: AwareDatetime | None = None


class SubsystemInfo(_Doc):
    code: IdPart
    name: str = ""
    status: Status = "active"


class MemberInfo(_Doc):
    id: MemberIdField
    name: str
    status: Status = "active"
    subsystems: list[SubsystemInfo] = []
    keys: list[KeyInfo] = []


class GatewayInfo(_Doc):
    id: GatewayIdField
    address: str
    tls_certificate: str = Field(description="PEM certificate the gateway presents in mutual TLS")
    tls_sha256: Sha256Hex = Field(description="hex SHA-256 of the certificate's DER form")
    # Absent rather than null when unset: a configuration in which no gateway is renewing
    # stays one that gateways of the previous release (strict, as every gateway is) accept.
    next_tls_certificate: str | None = Field(
        None,
        description="a renewed certificate the gateway may present instead (peers accept both)",
        exclude_if=lambda v: v is None,
    )
    next_tls_sha256: Sha256Hex | None = Field(
        None,
        description="hex SHA-256 of the renewed certificate's DER form",
        exclude_if=lambda v: v is None,
    )
    status: Status = "active"
    clients: list[SubsystemIdField] = []

    @model_validator(mode="after")
    def _renewal_is_whole(self) -> GatewayInfo:
        if (self.next_tls_certificate is None) != (self.next_tls_sha256 is None):
            raise ValueError("next_tls_certificate and next_tls_sha256 go together")
        if self.next_tls_sha256 == self.tls_sha256:
            raise ValueError("next_tls_sha256 is the current certificate's pin")
        return self

    def certificates(self) -> dict[str, str]:
        """Every certificate peers accept from this gateway: pin -> PEM, the current first."""
        found = {self.tls_sha256: self.tls_certificate}
        if self.next_tls_sha256 is not None and self.next_tls_certificate is not None:
            found[self.next_tls_sha256] = self.next_tls_certificate
        return found


class GroupInfo(_Doc):
    code: IdPart
    description: str = ""
    members: list[SubsystemIdField] = []


class LocalGroupInfo(_Doc):
    owner: SubsystemIdField
    code: IdPart
    description: str = ""
    members: list[SubsystemIdField] = []


class SchemaRef(_Doc):
    """A registered schema: subject and version in the schema registry."""

    subject: SubjectName
    version: SchemaVersion


class ServiceInfo(_Doc):
    id: ServiceIdField
    title: str
    description: str = ""
    request_schema: SchemaRef | None = None
    response_schema: SchemaRef | None = None
    requires_consent: bool = False
    # Where the answer names whose record it is (a JSON Pointer to a CNIC): the provider
    # gateway releases an answer under consent only if it is the consented subject's.
    subject_field: SubjectField | None = None
    purposes: list[PurposeCode] = []
    status: Status = "active"


class AccessRightInfo(_Doc):
    """One grant. Exactly one of ``client``, ``global_group`` or ``local_group`` is set;
    a local group is one of the service's own subsystem."""

    service: ServiceIdField
    method: HttpMethod = "*"
    path: PathPattern = "**"
    client: SubsystemIdField | None = None
    global_group: IdPart | None = None
    local_group: IdPart | None = None


class PurposeInfo(_Doc):
    code: PurposeCode
    name: str
    description: str = ""


class CentralServiceInfo(_Doc):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,63}$")]
    url: str
    keys: Jwks


class GlobalConf(_Doc):
    """The document gateways run on. Lists are sorted so the canonical form is stable."""

    format: Literal["shahrah-globalconf/1"] = FORMAT
    instance: IdPart
    serial: int = Field(ge=1)
    issued_at: AwareDatetime
    expires_at: AwareDatetime
    refresh_interval: int = Field(ge=1, description="seconds between gateway fetches")
    operator_keys: Jwks
    members: list[MemberInfo] = []
    gateways: list[GatewayInfo] = []
    global_groups: list[GroupInfo] = []
    local_groups: list[LocalGroupInfo] = []
    purposes: list[PurposeInfo] = []
    services: list[ServiceInfo] = []
    access_rights: list[AccessRightInfo] = []
    central_services: list[CentralServiceInfo] = []


def _anchor_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("the configuration URL must be an http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        # Fetch errors quote the URL, and reach the health endpoint, local systems and peers.
        raise ValueError("the configuration URL may not carry a user name or password")
    return url


class Anchor(_Doc):
    """What a gateway trusts before it has any configuration: X-Road's configuration anchor."""

    instance: IdPart
    url: Annotated[str, AfterValidator(_anchor_url)] = Field(
        description="where GET returns the signed global configuration (http or https, "
        "without a user name or password)"
    )
    keys: Jwks = Field(description="the operator's public keys (JWK Set)")
    generated_at: AwareDatetime

    def keyset(self) -> KeySet:
        return self.keys.keyset()

    @classmethod
    def load(cls, path: Path) -> Anchor:
        try:
            return cls.model_validate_json(path.read_bytes())
        except OSError as e:
            raise BadRequestError(f"cannot read anchor {path}: {e.strerror}") from e
        except ValidationError as e:
            raise BadRequestError(
                f"{path} is not a configuration anchor: {e.errors()[0]['msg']}"
            ) from e

    def dumps(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"


def verify_globalconf(
    signed: str | bytes,
    anchor: Anchor,
    *,
    now: dt.datetime,
    previous: GlobalConf | None = None,
    timely: bool = True,
) -> GlobalConf:
    """Verify a served configuration against the anchor; raise GlobalConfRejectedError if not good.

    ``previous`` is the last configuration this gateway accepted: a lower
    serial is a rollback, and the same serial with other content is
    equivocation; both are refused. ``timely=False`` skips the checks of its
    validity period, for a configuration read only to learn its serial.
    """
    try:
        verified = jws.verify(signed, anchor.keyset(), typ=GLOBALCONF_TYP)
    except InvalidSignatureError as e:
        raise GlobalConfRejectedError(f"global configuration signature: {e.message}") from e
    try:
        # The registry signs the RFC 8785 form; anything else (a repeated key, say, which
        # readers in other languages could take the first of) was not made by it.
        canonical = canonical_json(json.loads(verified.payload)) == verified.payload
    except (ValueError, RecursionError, BadRequestError):
        canonical = False
    if not canonical:
        raise GlobalConfRejectedError("global configuration is not in canonical JSON form")
    try:
        conf = GlobalConf.model_validate_json(verified.payload)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise GlobalConfRejectedError(
            f"global configuration is malformed at {where}: {err['msg']}"
        ) from e
    if conf.instance != anchor.instance:
        raise GlobalConfRejectedError(
            f"global configuration is for instance {conf.instance!r}, anchor is {anchor.instance!r}"
        )
    if conf.expires_at <= conf.issued_at:
        raise GlobalConfRejectedError("global configuration expires before it was issued")
    if conf.expires_at - conf.issued_at > MAX_VALIDITY:
        raise GlobalConfRejectedError(
            f"global configuration is valid for longer than {MAX_VALIDITY.days} days"
        )
    if not timely:
        return conf
    if conf.issued_at > now + CLOCK_SKEW:
        raise GlobalConfRejectedError("global configuration is issued in the future")
    if conf.expires_at <= now:
        raise GlobalConfRejectedError(
            f"global configuration serial {conf.serial} expired at {conf.expires_at.isoformat()}"
        )
    if previous is not None:
        if conf.serial < previous.serial:
            raise GlobalConfRejectedError(
                f"global configuration serial {conf.serial} is older than "
                f"{previous.serial} (rollback)"
            )
        if conf.serial == previous.serial and conf != previous:
            raise GlobalConfRejectedError(
                f"two different global configurations carry serial {conf.serial}"
            )
    return conf


# --- path patterns ----------------------------------------------------------------------------

_PATTERN_SEGMENT = re.compile(r"^[^/?#]*$")


def validate_path_pattern(pattern: str) -> str:
    """An endpoint pattern: ``**`` alone, or ``/seg/...`` where ``*`` is one segment and a
    trailing ``**`` any remainder."""
    if pattern == "**":
        return pattern
    if not pattern.startswith("/") or len(pattern) > 2048:
        raise BadRequestError("path pattern must start with '/' (or be '**' for every path)")
    segments = pattern[1:].split("/")
    for i, seg in enumerate(segments):
        if seg == "**" and i != len(segments) - 1:
            raise BadRequestError("'**' may only end a path pattern")
        if not _PATTERN_SEGMENT.match(seg) or ("*" in seg and seg not in ("*", "**")):
            raise BadRequestError(f"path pattern segment {seg!r} is not allowed")
    return pattern


def path_matches(pattern: str, path: str) -> bool:
    """Whether a request path (already normalized, starting with '/') matches ``pattern``.

    ``*`` stands for one segment, never an empty one: a right to ``/persons/*`` (one
    record) must not reach ``/persons/``, which many backends route to the collection. A
    trailing ``**`` stands for whatever follows, nothing included.
    """
    if pattern == "**":
        return True
    want = pattern[1:].split("/")
    have = path[1:].split("/") if path.startswith("/") else path.split("/")
    for i, seg in enumerate(want):
        if seg == "**":
            return True
        if i >= len(have) or not (have[i] if seg == "*" else seg == have[i]):
            return False
    return len(have) == len(want)


# --- the index a gateway consults --------------------------------------------------------------


@dataclass(frozen=True)
class _Key:
    member: MemberId
    info: KeyInfo
    key: PublicKey


class GlobalConfView:
    """A verified configuration, indexed for the gateway's per-message questions."""

    def __init__(self, conf: GlobalConf, signed: str) -> None:
        self.conf = conf
        self.signed = signed
        self.members: dict[MemberId, MemberInfo] = {m.id: m for m in conf.members}
        self.subsystems: dict[ClientId, SubsystemInfo] = {
            m.id.subsystem(s.code): s for m in conf.members for s in m.subsystems
        }
        self._keys: dict[str, _Key] = {
            k.kid: _Key(m.id, k, PublicKey.from_jwk(k.jwk)) for m in conf.members for k in m.keys
        }
        self.services: dict[ServiceId, ServiceInfo] = {s.id: s for s in conf.services}
        self._versions: dict[tuple[ClientId, str], set[str | None]] = defaultdict(set)
        for sid in self.services:
            self._versions[(sid.provider, sid.service_code)].add(sid.version)
        self.gateways: dict[GatewayId, GatewayInfo] = {g.id: g for g in conf.gateways}
        self._by_client: dict[ClientId, list[GatewayInfo]] = defaultdict(list)
        for g in conf.gateways:
            for c in g.clients:
                self._by_client[c].append(g)
        self._by_pin = {pin: g for g in conf.gateways for pin in g.certificates()}
        self._global_groups = {g.code: frozenset(g.members) for g in conf.global_groups}
        self._local_groups = {(g.owner, g.code): frozenset(g.members) for g in conf.local_groups}
        self._rights: dict[ServiceId, list[AccessRightInfo]] = defaultdict(list)
        for r in conf.access_rights:
            self._rights[r.service].append(r)
        self.purposes = {p.code: p for p in conf.purposes}
        self.central_services = {c.name: c for c in conf.central_services}

    @property
    def serial(self) -> int:
        return self.conf.serial

    def expired(self, now: dt.datetime) -> bool:
        return self.conf.expires_at <= now

    def signing_key(self, member: MemberId, kid: str, at: dt.datetime) -> PublicKey:
        """The key ``kid`` if it is ``member``'s and valid at ``at``; else InvalidSignatureError."""
        entry = self._keys.get(kid)
        if entry is None or entry.member != member:
            raise InvalidSignatureError(f"key {kid!r} is not a registered key of {member}")
        info = entry.info
        if info.revoked_at is not None:
            raise InvalidSignatureError(f"key {kid!r} of {member} was revoked")
        if at < info.not_before or (info.not_after is not None and at >= info.not_after):
            raise InvalidSignatureError(f"key {kid!r} of {member} is not valid at {at.isoformat()}")
        return entry.key

    def require_active_client(self, client: ClientId) -> None:
        """Refuse a client whose member or subsystem is unknown or suspended."""
        member = self.members.get(client.member)
        if member is None:
            raise AccessDeniedError(f"{client.member} is not a member of {self.conf.instance}")
        if member.status != "active":
            raise AccessDeniedError(f"member {client.member} is suspended")
        if client.subsystem is not None:
            sub = self.subsystems.get(client)
            if sub is None:
                raise AccessDeniedError(f"subsystem {client} is not registered")
            if sub.status != "active":
                raise AccessDeniedError(f"subsystem {client} is suspended")

    def service(self, sid: ServiceId) -> ServiceInfo:
        info = self.services.get(sid)
        if info is None or info.status != "active":
            raise UnknownServiceError(f"service {sid} is not registered")
        return info

    def resolve_service(
        self, provider: ClientId, code: str, rest: list[str]
    ) -> tuple[ServiceId, list[str]]:
        """Find the service for an r1 URL: an unversioned service, or one whose version is the
        first remaining path segment. Returns the id and the path segments left for the backend."""
        versions = self._versions.get((provider, code), set())
        if rest and rest[0] in versions:
            return provider.service(code, rest[0]), rest[1:]
        if None in versions:
            return provider.service(code), rest
        raise UnknownServiceError(f"service {provider}/{code} is not registered")

    def versions_of(self, provider: ClientId) -> list[ServiceId]:
        return sorted((s for s in self.services if s.provider == provider), key=str)

    def is_allowed(self, client: ClientId, sid: ServiceId, method: str, path: str) -> bool:
        """Whether an access right lets ``client`` call ``method path`` on ``sid``."""
        for right in self._rights.get(sid, ()):
            if right.method not in ("*", method) or not path_matches(right.path, path):
                continue
            if right.client is not None and right.client == client:
                return True
            if right.global_group is not None and client in self._global_groups.get(
                right.global_group, ()
            ):
                return True
            if right.local_group is not None and client in self._local_groups.get(
                (sid.provider, right.local_group), ()
            ):
                return True
        return False

    def allowed_services(self, client: ClientId) -> list[ServiceId]:
        """Services ``client`` holds at least one access right on (X-Road's allowedMethods)."""
        return sorted(
            (
                sid
                for sid, rights in self._rights.items()
                if any(self.grants(r, client, sid) for r in rights)
            ),
            key=str,
        )

    def grants(self, right: AccessRightInfo, client: ClientId, sid: ServiceId) -> bool:
        """Whether ``right`` (on ``sid``) names ``client``, directly or through a group."""
        return (
            right.client == client
            or client in self._global_groups.get(right.global_group or "", ())
            or client in self._local_groups.get((sid.provider, right.local_group or ""), ())
        )

    def gateways_for(self, client: ClientId) -> list[GatewayInfo]:
        """Active gateways that serve ``client`` (a provider subsystem)."""
        return [g for g in self._by_client.get(client, []) if g.status == "active"]

    def gateway_by_pin(self, sha256_hex: str) -> GatewayInfo | None:
        return self._by_pin.get(sha256_hex)

    def central_service(self, name: str) -> CentralServiceInfo:
        info = self.central_services.get(name)
        if info is None:
            raise OutdatedGlobalConfError(
                f"central service {name!r} is not in the global configuration"
            )
        return info

    def clients(self) -> Iterable[ClientId]:
        """Every member and subsystem (X-Road's listClients)."""
        for m in self.conf.members:
            yield ClientId(m.id.instance, m.id.member_class, m.id.member_code)
            for s in m.subsystems:
                yield m.id.subsystem(s.code)


def document_schema() -> dict[str, Any]:
    """JSON Schema of the configuration payload, published as schemas/globalconf.schema.json."""
    schema = GlobalConf.model_json_schema(mode="serialization")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://shahrah.gov.pk/schemas/globalconf.schema.json",
        **schema,
    }


def anchor_schema() -> dict[str, Any]:
    schema = Anchor.model_json_schema(mode="serialization")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://shahrah.gov.pk/schemas/anchor.schema.json",
        **schema,
    }
