"""The consent artefact: what a consumer asks for, what a citizen grants, what gateways enforce.

A consent names one data subject (CNIC), one consumer subsystem, one or more
services with, per service, the response fields it may release (JSON
Pointers into the service's registered response schema), one purpose from
the federation's catalogue, a legal basis, a validity window and optional
use limits. Request bodies are checked here for form (identifiers, dates in
order, pointer syntax, bounds); :mod:`consent.service` checks them against
the global configuration and the schema registry.
"""

from __future__ import annotations

import datetime as dt
import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from consent.lifecycle import Status
from core.fields import AwareDatetime, CnicField, ServiceIdField, SubsystemIdField

__all__ = [
    "CONSENT_ID_PATTERN",
    "MAX_VALIDITY",
    "ConsentRequest",
    "ConsentView",
    "Frequency",
    "Grantor",
    "LegalBasis",
    "PageCursor",
    "Period",
    "Relation",
    "ServiceGrant",
    "validate_pointer",
]

#: Consent ids as the gateway's ``Shahrah-Consent`` header accepts them.
CONSENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,254}$"
PurposeCode = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,99}$")]

#: The longest a consent may run; a citizen re-grants rather than signs away a decade.
MAX_VALIDITY = dt.timedelta(days=5 * 366)
MAX_SERVICES = 20
MAX_FIELDS = 200
MAX_POINTER = 512


class LegalBasis(StrEnum):
    """Why the consumer may process the data (GDPR article 6 vocabulary, as DPV names it)."""

    CONSENT = "consent"
    LEGAL_OBLIGATION = "legal_obligation"
    PUBLIC_TASK = "public_task"


class Relation(StrEnum):
    """Who granted a consent, relative to its subject."""

    SELF = "self"
    PARENT = "parent"  # parent of a minor
    COURT_GUARDIAN = "court_guardian"  # guardian appointed by a court
    ATTORNEY = "attorney"  # holder of a power of attorney


class Period(StrEnum):
    HOUR = "hour"
    DAY = "day"
    WEEK = "week"

    @property
    def length(self) -> dt.timedelta:
        return _PERIODS[self]


_PERIODS = {
    Period.HOUR: dt.timedelta(hours=1),
    Period.DAY: dt.timedelta(days=1),
    Period.WEEK: dt.timedelta(weeks=1),
}


_ESCAPE = re.compile(r"~(?![01])")


def validate_pointer(value: str) -> str:
    """An RFC 6901 JSON Pointer naming a member (never the whole document, never ``-``)."""
    if not value.startswith("/") or len(value) > MAX_POINTER:
        raise ValueError(f"{value!r} is not a JSON Pointer to a field (it must start with '/')")
    for token in value[1:].split("/"):
        if token in ("", "-"):
            raise ValueError(f"JSON Pointer {value!r} has an empty or '-' segment")
        if _ESCAPE.search(token):
            raise ValueError(f"JSON Pointer {value!r} has a '~' not followed by 0 or 1")
        if any(ord(c) < 0x20 for c in token):
            raise ValueError(f"JSON Pointer {value!r} contains control characters")
    return value


Pointer = Annotated[str, AfterValidator(validate_pointer)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Frequency(_Model):
    """At most ``max`` uses in any window of one ``per`` (a sliding window, e.g. 5 per day)."""

    max: int = Field(ge=1, le=1_000_000)
    per: Period


class ServiceGrant(_Model):
    """One service a consent covers and the response fields it may release there."""

    service: ServiceIdField
    fields: list[Pointer] = Field(min_length=1, max_length=MAX_FIELDS)

    @model_validator(mode="after")
    def _distinct(self) -> ServiceGrant:
        if len(set(self.fields)) != len(self.fields):
            raise ValueError(f"fields of {self.service} are listed twice")
        return self


class ConsentRequest(_Model):
    """A consumer's request for a citizen's consent (the consumer API's body)."""

    subject: CnicField
    consumer: SubsystemIdField
    services: list[ServiceGrant] = Field(min_length=1, max_length=MAX_SERVICES)
    purpose: PurposeCode
    legal_basis: LegalBasis = LegalBasis.CONSENT
    valid_from: AwareDatetime | None = Field(
        default=None, description="when the consent starts to permit; default: when requested"
    )
    expires_at: AwareDatetime
    use_limit: int | None = Field(default=None, ge=1, le=1_000_000, description="uses in total")
    frequency: Frequency | None = None
    notice: str = Field(
        default="",
        max_length=2000,
        description="what the consumer tells the citizen about the request (shown before approval)",
    )

    @model_validator(mode="after")
    def _consistent(self) -> ConsentRequest:
        if self.valid_from is not None and self.expires_at <= self.valid_from:
            raise ValueError("expires_at must be later than valid_from")
        services = [str(g.service) for g in self.services]
        if len(set(services)) != len(services):
            raise ValueError("a service is listed twice")
        return self


class Grantor(_Model):
    """Who approved (or rejected) the consent: the subject, or someone acting for them."""

    cnic: CnicField
    relation: Relation


class ConsentView(BaseModel):
    """A consent as the APIs show it."""

    model_config = ConfigDict(frozen=True)

    id: str
    subject: CnicField
    consumer: SubsystemIdField
    services: list[ServiceGrant]
    purpose: str
    legal_basis: LegalBasis
    valid_from: AwareDatetime
    expires_at: AwareDatetime
    use_limit: int | None
    frequency: Frequency | None
    uses: int = Field(description="uses counted so far (only consents with limits count)")
    notice: str
    status: Status
    grantor: Grantor | None
    version: int = Field(description="sequence number of the latest change (the feed's id)")
    requested_at: AwareDatetime
    decided_at: AwareDatetime | None = Field(description="when it was approved or rejected")
    updated_at: AwareDatetime

    @property
    def counted(self) -> bool:
        """Whether uses are counted centrally (so decisions may not be cached)."""
        return self.use_limit is not None or self.frequency is not None

    def released(self, service: str) -> list[str] | None:
        for grant in self.services:
            if str(grant.service) == service:
                return list(grant.fields)
        return None


#: ``?after=``: the previous page's ``next_after``, always a consent the caller may see.
PageCursor = Annotated[
    str,
    Field(
        max_length=64,
        description="next_after of the previous page; a consent you may not see is a 400",
    ),
]


class ConsentPage(BaseModel):
    items: list[ConsentView]
    next_after: str | None = Field(description="pass as ?after= for the next page; null at the end")


#: A status as a query parameter takes it (inline in OpenAPI, unlike the enum's $ref).
StatusName = Literal["PENDING", "ACTIVE", "REJECTED", "PAUSED", "REVOKED", "EXPIRED"]
