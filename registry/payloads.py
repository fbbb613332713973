"""Request bodies of the registry's operator actions (shared by the HTTP API and the CLI).

Responses reuse the global configuration's own models (``MemberInfo``,
``ServiceInfo``, ...): what an operator reads back is exactly what gateways
will be told.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.fields import AwareDatetime, GatewayIdField, IdPart, MemberIdField, ServiceIdField
from core.fields import SubsystemIdField as SubsystemId
from core.ids import MEMBER_CLASSES
from registry.globalconf import (
    MAX_VALIDITY,
    AccessRightInfo,
    HttpMethod,
    Jwks,
    PathPattern,
    PurposeCode,
    SchemaRef,
    Status,
    SubjectField,
)

Name = Annotated[str, Field(min_length=1, max_length=300)]
Text = Annotated[str, Field(max_length=2000)]
GroupText = Annotated[str, Field(max_length=1000)]  # as the groups' description columns hold
HttpUrl = Annotated[
    str, Field(pattern=r"^https?://[^\s/?#]+(:[0-9]+)?(/[^\s]*)?$", max_length=2048)
]
#: Gateways reach each other over pinned mutual TLS only: an http:// address would send the
#: envelope and body in the clear to whoever answers.
GatewayAddress = Annotated[
    str, Field(pattern=r"^https://[^\s/?#]+(:[0-9]+)?(/[^\s]*)?$", max_length=2048)
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MemberCreate(_Body):
    member_class: Literal["FED", "PROV", "LG", "PRIV"] = Field(
        description=f"one of {', '.join(MEMBER_CLASSES)}"
    )
    member_code: IdPart
    name: Name


class MemberUpdate(_Body):
    name: Name | None = None
    status: Status | None = None


class SubsystemCreate(_Body):
    id: SubsystemId
    name: Annotated[str, Field(max_length=300)] = ""


class SubsystemUpdate(_Body):
    name: Annotated[str, Field(max_length=300)] | None = None
    status: Status | None = None


class GatewayCreate(_Body):
    id: GatewayIdField
    address: GatewayAddress = Field(description="https:// URL other gateways reach this one at")
    tls_certificate: str = Field(
        max_length=16_384, description="the gateway's TLS certificate (PEM); its pin is derived"
    )
    clients: list[SubsystemId] = []


class GatewayUpdate(_Body):
    address: GatewayAddress | None = None
    tls_certificate: Annotated[str, Field(max_length=16_384)] | None = Field(
        None,
        description="replaces the current certificate; the renewed one, if it is this, is "
        "promoted and the old one dropped",
    )
    next_tls_certificate: Annotated[str, Field(max_length=16_384)] | None = Field(
        None,
        description="a renewed certificate (PEM) registered beside the current one: peers "
        "accept both, so the gateway can move to it without a refused handshake",
    )
    drop_next_tls_certificate: bool = Field(
        False, description="unregister the renewed certificate (an abandoned renewal)"
    )
    status: Status | None = None


class ClientRef(_Body):
    client: SubsystemId


class KeyCreate(_Body):
    member: MemberIdField
    jwk: dict[str, Any] = Field(description="public EC P-256 JWK")
    not_before: AwareDatetime | None = Field(None, description="defaults to now")
    not_after: AwareDatetime | None = None

    @model_validator(mode="after")
    def _window(self) -> Self:
        if self.not_before and self.not_after and self.not_after <= self.not_before:
            raise ValueError("not_after must be later than not_before")
        return self


class GroupCreate(_Body):
    code: IdPart
    description: GroupText = ""


class LocalGroupCreate(_Body):
    owner: SubsystemId
    code: IdPart
    description: GroupText = ""


class PurposeCreate(_Body):
    code: PurposeCode
    name: Name
    description: Text = ""


class ServiceCreate(_Body):
    id: ServiceIdField
    title: Name
    description: Text = ""
    request_schema: SchemaRef | None = None
    response_schema: SchemaRef | None = None
    requires_consent: bool = False
    subject_field: SubjectField | None = None
    purposes: list[PurposeCode] = []


class ServiceUpdate(_Body):
    title: Name | None = None
    description: Text | None = None
    request_schema: SchemaRef | None = None
    response_schema: SchemaRef | None = None
    requires_consent: bool | None = None
    subject_field: SubjectField | None = None
    purposes: list[PurposeCode] | None = None
    status: Status | None = None


class AccessRightCreate(_Body):
    """Grant a subsystem, a global group or one of the service's local groups."""

    service: ServiceIdField
    method: HttpMethod = "*"
    path: PathPattern = "**"
    client: SubsystemId | None = None
    global_group: IdPart | None = None
    local_group: IdPart | None = None

    @model_validator(mode="after")
    def _one_grantee(self) -> Self:
        given = [x for x in (self.client, self.global_group, self.local_group) if x is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of client, global_group, local_group")
        return self


class AccessRightView(AccessRightInfo):
    id: int


class CentralServiceSet(_Body):
    url: HttpUrl
    keys: Jwks


class FederationSettings(_Body):
    globalconf_validity: int | None = Field(
        None, ge=60, le=int(MAX_VALIDITY.total_seconds()), description="seconds"
    )
    globalconf_refresh: int | None = Field(None, ge=1, le=3600, description="seconds")


class FederationView(BaseModel):
    instance: str
    globalconf_validity: int
    globalconf_refresh: int
    serial: int | None
    issued_at: AwareDatetime | None
    expires_at: AwareDatetime | None
