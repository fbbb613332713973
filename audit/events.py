"""Audit events: what a gateway records about every exchange it takes part in.

An event names who asked for what about whom, why, under which consent and
legal basis, and how it ended, with digests that tie it to the signed
messages. It never holds a CNIC or a message body: the data subject appears
only as a keyed pseudonym (core.pseudonym, whose key the federation holds,
not the members), and bodies and signatures only as SHA-256 digests.

A log entry is the RFC 8785 canonical JSON of an event (:meth:`AuditEvent.entry`),
so the same event always hashes to the same leaf, whoever serializes it.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.canonical import canonical_json
from core.fields import AwareDatetime, ClientIdField, GatewayIdField, ServiceIdField

__all__ = ["FORMAT", "AuditEvent", "Digest", "Pseudonym"]

FORMAT: Literal["shahrah-audit-event/1"] = "shahrah-audit-event/1"

#: ``sha256:`` + unpadded base64url of a SHA-256 digest.
Digest = Annotated[str, Field(pattern=r"^sha256:[A-Za-z0-9_-]{43}$")]
#: A CNIC's keyed pseudonym as core.pseudonym makes it.
Pseudonym = Annotated[str, Field(pattern=r"^ps1:[A-Za-z0-9_-]{43}$")]
_Text = Annotated[str, Field(min_length=1, max_length=255)]
_FieldName = Annotated[str, Field(min_length=1, max_length=96)]


class AuditEvent(BaseModel):
    """One exchange as one gateway saw it (the consumer's and the provider's gateway each log)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["shahrah-audit-event/1"] = FORMAT
    event_id: str = Field(
        default_factory=lambda: str(uuid.uuid4()),
        pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
        description="UUID of this record",
    )
    time: AwareDatetime = Field(description="when the gateway finished the exchange")
    gateway: GatewayIdField = Field(description="the gateway that wrote this record")
    role: Literal["consumer", "provider"]
    message_id: _Text = Field(description="X-Road-Id of the exchange")
    request_id: _Text | None = Field(
        None, description="X-Road-Request-Id: unique per forwarded request, the same on both sides"
    )
    client: ClientIdField = Field(description="the consumer subsystem (X-Road-Client)")
    service: ServiceIdField
    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] | None = None
    subject: Pseudonym | None = Field(None, description="pseudonym of the data subject's CNIC")
    purpose: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,99}$")] | None = None
    legal_basis: _Text | None = Field(None, description="e.g. 'consent' or the statute relied on")
    consent_id: _Text | None = None
    outcome: Literal["delivered", "denied"]
    error_type: _Text | None = Field(None, description="X-Road error type when denied")
    request_digest: Digest | None = Field(None, description="SHA-256 of the request body")
    response_digest: Digest | None = Field(None, description="SHA-256 of the response body")
    request_signature_digest: Digest | None = None
    response_signature_digest: Digest | None = None
    fields_released: list[_FieldName] = Field(
        default=[], max_length=128, description="response fields the consumer received"
    )

    @model_validator(mode="after")
    def _outcome_matches_error(self) -> AuditEvent:
        if (self.outcome == "denied") != (self.error_type is not None):
            raise ValueError("error_type is required when denied and only then")
        if self.outcome == "denied" and self.fields_released:
            raise ValueError("a denied exchange releases no fields")
        return self

    def entry(self) -> bytes:
        """The log entry: RFC 8785 canonical JSON, absent optional fields left out."""
        return canonical_json(self.model_dump(mode="json", exclude_none=True))
