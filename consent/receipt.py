"""Consent receipts: the citizen's signed copy of a consent record.

A receipt is a compact JWS, ``typ`` :data:`RECEIPT_TYP`, signed with the
consent service's key, over the RFC 8785 canonical form of a JSON document
whose fields follow ISO/IEC TS 27560:2023's consent record and receipt
structure (header, processing, parties, events; names in snake_case):

========================  ==========================================================
27560 element              receipt field
========================  ==========================================================
schema version             ``schema_version``
receipt id / record id     ``receipt_id`` / ``record_id`` (+ ``record_version``)
PII principal id           ``pii_principal_id`` (the subject's CNIC)
privacy notice, language   ``notice``, ``language``
purpose, lawful basis      ``purposes[]``: ``purpose``, ``purpose_name``, ``lawful_basis``
PII information            ``pii_information[]``: service, provider, ``pii_attributes``
PII controllers            ``pii_controllers[]``: the consumer's member
recipient third parties    ``recipients[]``: the consumer subsystem
jurisdiction               ``jurisdiction`` (the X-Road instance, e.g. PK)
withdrawal method          ``withdrawal_method``
validity duration          ``validity``: ``valid_from``, ``expires_at``, use limits
events                     ``events[]``: ``event_time``, ``event_type``, ``event_state``,
                           ``entity_id``, ``relation``
========================  ==========================================================

Anyone holding the consent service's JWK Set (from the global
configuration's ``central_services`` entry ``consent``) can verify a receipt
with any JOSE library; :func:`verify_receipt` is Shahrah's own.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from consent import models as m
from consent.artefact import ConsentView
from consent.lifecycle import Status
from core import jws
from core.errors import InvalidSignatureError
from core.ids import MemberId
from core.keys import KeySet, PrivateKey

__all__ = ["RECEIPT_TYP", "SCHEMA_VERSION", "VerifiedReceipt", "sign_receipt", "verify_receipt"]

RECEIPT_TYP = "shahrah-consent-receipt+jws"
SCHEMA_VERSION = "shahrah-consent-receipt/1; ISO/IEC TS 27560:2023"

#: ISO/IEC TS 27560 event states (as DPV names consent statuses) for our lifecycle.
EVENT_STATES = {
    Status.PENDING.value: "requested",
    Status.ACTIVE.value: "given",
    Status.REJECTED.value: "refused",
    Status.PAUSED.value: "suspended",
    Status.REVOKED.value: "withdrawn",
    Status.EXPIRED.value: "expired",
}


def _time(value: dt.datetime | None) -> str | None:
    return None if value is None else value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def receipt_document(
    consent: ConsentView,
    events: Sequence[m.ConsentEvent],
    *,
    instance: str,
    names: Callable[[MemberId], str | None],
    purpose_name: str | None,
    now: dt.datetime,
) -> dict[str, Any]:
    """The receipt's JSON document for ``consent`` and its history."""
    consumer_member = consent.consumer.member
    return {
        "schema_version": SCHEMA_VERSION,
        "receipt_id": str(uuid.uuid4()),
        "issued_at": _time(now),
        "record_id": consent.id,
        "record_version": consent.version,
        "pii_principal_id": str(consent.subject),
        "language": "en",
        "notice": consent.notice,
        "jurisdiction": instance,
        "purposes": [
            {
                "purpose": consent.purpose,
                "purpose_name": purpose_name,
                "lawful_basis": consent.legal_basis.value,
            }
        ],
        "pii_information": [
            {
                "service": str(g.service),
                "provider": str(g.service.member),
                "provider_name": names(g.service.member),
                "pii_attributes": list(g.fields),
            }
            for g in consent.services
        ],
        "pii_controllers": [
            {
                "party_id": str(consumer_member),
                "party_name": names(consumer_member),
                "party_role": "controller",
            }
        ],
        "recipients": [{"party_id": str(consent.consumer), "party_role": "recipient"}],
        "withdrawal_method": (
            "Revoke at any time in the Shahrah citizen portal, or "
            f"POST /v1/citizen/consents/{consent.id}/revoke on the consent service; "
            "gateways stop releasing data within one second."
        ),
        "validity": {
            "valid_from": _time(consent.valid_from),
            "expires_at": _time(consent.expires_at),
            "use_limit": consent.use_limit,
            "frequency": consent.frequency.model_dump(mode="json") if consent.frequency else None,
        },
        "status": consent.status.value,
        "event_state": EVENT_STATES[consent.status.value],
        "grantor": consent.grantor.model_dump(mode="json") if consent.grantor else None,
        "events": [
            {
                "event_time": _time(e.at),
                "event_type": e.action,
                "event_state": EVENT_STATES[e.status],
                "entity_id": e.actor,
                "entity_kind": e.actor_kind,
                "relation": e.relation,
                "log_index": e.leaf_index,
            }
            for e in events
        ],
    }


def sign_receipt(document: dict[str, Any], key: PrivateKey) -> str:
    return jws.sign_json(document, key, typ=RECEIPT_TYP)


class _Receipt(BaseModel):
    """The parts of a receipt a verifier relies on; other fields pass through."""

    model_config = ConfigDict(extra="allow")

    schema_version: str
    receipt_id: str
    record_id: str
    record_version: int
    pii_principal_id: str
    issued_at: str
    status: str


@dataclass(frozen=True)
class VerifiedReceipt:
    document: dict[str, Any]
    kid: str

    @property
    def record_id(self) -> str:
        return str(self.document["record_id"])

    @property
    def status(self) -> str:
        return str(self.document["status"])


def verify_receipt(token: str | bytes, keys: KeySet) -> VerifiedReceipt:
    """Check a receipt against the consent service's keys; InvalidSignatureError if it fails."""
    verified = jws.verify(token, keys, typ=RECEIPT_TYP)
    document = verified.json()
    try:
        _Receipt.model_validate(document)
    except ValidationError as e:
        raise InvalidSignatureError("signed document is not a Shahrah consent receipt") from e
    if document["schema_version"] != SCHEMA_VERSION:
        raise InvalidSignatureError(f"unknown receipt schema {document['schema_version']!r}")
    return VerifiedReceipt(document, verified.kid)
