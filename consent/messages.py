"""What the consent service and gateways say to each other, and how it is signed.

A gateway releases citizens' data on the strength of a decision, so the
decision must be the consent service's and must answer *this* question.
Every answer to a gateway is therefore a compact JWS signed with the
consent service's key (published in the global configuration's
``central_services`` entry), typed per message kind:

* decisions (``shahrah-consent-decision+jws``) and pseudonyms
  (``shahrah-consent-pseudonym+jws``) carry the SHA-256 of the exact request
  body they answer, which holds a fresh nonce, so an old answer cannot be
  replayed for a new question. A pseudonym answer also names its subject:
  it is a statement anyone holding the service's key can check ("this
  CNIC's pseudonym is P"), which the consumer gateway passes on in the
  request envelope so that the provider's gateway need not ask again;
* feed messages (``shahrah-consent-feed+jws``) carry the stream's nonce,
  chosen by the gateway when it connects, and a counter that goes up by one
  per message, so a message cannot be dropped, replayed or moved to another
  stream unnoticed;
* sync answers (``shahrah-consent-sync+jws``) name the newest change at the
  moment the question arrived and carry the question's SHA-256, so the
  gateway knows the answer is no older than its question
  (:mod:`consent.trust`).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from consent.artefact import CONSENT_ID_PATTERN
from core.fields import AwareDatetime, CnicField, ServiceIdField, SubsystemIdField

__all__ = [
    "DECISION_TYP",
    "FEED_TYP",
    "PSEUDONYM_TYP",
    "SYNC_TYP",
    "DecisionAnswer",
    "DecisionRequest",
    "FeedMessage",
    "Nonce",
    "PseudonymAnswer",
    "PseudonymRequest",
    "SyncAnswer",
    "SyncRequest",
    "body_digest",
]

DECISION_TYP = "shahrah-consent-decision+jws"
PSEUDONYM_TYP = "shahrah-consent-pseudonym+jws"
FEED_TYP = "shahrah-consent-feed+jws"
SYNC_TYP = "shahrah-consent-sync+jws"

Nonce = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{16,64}$")]
ConsentId = Annotated[str, Field(pattern=CONSENT_ID_PATTERN)]


def body_digest(body: bytes) -> str:
    """Unpadded base64url SHA-256 of a request body, as the answers carry it."""
    return base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b"=").decode("ascii")


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DecisionRequest(_Message):
    consent_id: ConsentId
    subject: CnicField
    consumer: SubsystemIdField
    service: ServiceIdField
    purpose: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,99}$")]
    at: AwareDatetime
    nonce: Nonce


class DecisionAnswer(_Message):
    """The signed answer to one :class:`DecisionRequest`."""

    format: Literal["shahrah-consent-decision/1"] = "shahrah-consent-decision/1"
    request_sha256: str
    consent_id: str
    decision: Literal["permit", "deny"]
    reason: str | None = None  # consent.rules.DenyReason on deny
    message: str | None = None
    released_fields: list[str] = []
    legal_basis: str | None = None
    subject_pseudonym: str | None = None
    #: False when uses are counted centrally: every exchange must then ask.
    cacheable: bool = False
    valid_from: AwareDatetime | None = None
    expires_at: AwareDatetime | None = None
    version: int | None = None
    issued_at: AwareDatetime


class PseudonymRequest(_Message):
    subject: CnicField
    nonce: Nonce


class PseudonymAnswer(_Message):
    format: Literal["shahrah-consent-pseudonym/2"] = "shahrah-consent-pseudonym/2"
    request_sha256: str
    subject: CnicField
    pseudonym: str


class FeedMessage(_Message):
    """One message of a revocation feed stream.

    ``event``: consent ``consent_id`` changed to ``status`` (change number ``seq``);
    ``heartbeat``: every change up to ``seq`` concerning the subscriber has been sent;
    ``reset``: the resume point is unknown to the service, so drop every cached decision.
    """

    format: Literal["shahrah-consent-feed/1"] = "shahrah-consent-feed/1"
    stream: Nonce
    n: int = Field(ge=1)
    kind: Literal["event", "heartbeat", "reset"]
    seq: int = Field(ge=0)
    consent_id: str | None = None
    status: str | None = None
    at: AwareDatetime


class SyncRequest(_Message):
    nonce: Nonce


class SyncAnswer(_Message):
    """The signed answer to one :class:`SyncRequest`: ``head`` is the newest change the
    service had committed when it read it, after the question arrived, so every change
    committed before the gateway sent the question is numbered ``head`` or lower."""

    format: Literal["shahrah-consent-sync/1"] = "shahrah-consent-sync/1"
    request_sha256: str
    head: int = Field(ge=0)
    issued_at: AwareDatetime
