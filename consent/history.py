"""The consent log: every change of every consent, appended to a Merkle log.

The consent service keeps its own append-only log (log id :data:`LOG_ID`)
so that its history cannot be rewritten without the log's tree heads
showing it. Each change is appended in the same transaction that makes it,
so a change is either both applied and logged or neither.

Entries are RFC 8785 canonical JSON and carry no CNIC: subjects and citizen
actors appear as federation pseudonyms, and the terms of the consent as the
SHA-256 of their canonical form (which never changes over a consent's life).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from audit import store as logstore
from audit.note import log_origin
from consent.artefact import ConsentView
from core.canonical import canonical_digest, canonical_json
from core.db import Sessions, transaction
from core.pseudonym import Pseudonymizer

__all__ = [
    "ENTRY_FORMAT",
    "LOG_ID",
    "ConsentLog",
    "MerkleConsentLog",
    "entry",
    "terms_digest",
]

log = logging.getLogger(__name__)

LOG_ID = "consent"
ENTRY_FORMAT = "shahrah-consent-event/1"

#: Fields of a consent that change over its life; the rest are its terms.
_MUTABLE = {"status", "grantor", "uses", "version", "decided_at", "updated_at"}


class ConsentLog(Protocol):
    """Where changes are appended; the Merkle log of :mod:`audit` in production."""

    async def append(self, s: AsyncSession, entry: bytes) -> int:
        """Append ``entry`` inside the caller's transaction and return its leaf index."""
        ...


class MerkleConsentLog:
    """The consent log on :mod:`audit`'s SQL Merkle log storage (RFC 6962 hashing).

    Appends take the log's row lock inside the change's transaction, after
    the consent's row and the feed head, the same order on every path (the
    audit writer's own appends commit separately, so they cannot serve here).
    Checkpoints (C2SP signed notes, origin ``shahrah/consent``, signed with
    the consent service's key) and their witnessing are an
    :class:`audit.writer.AuditWriter`'s job (:mod:`consent.server`).
    """

    def __init__(self, log_id: str = LOG_ID) -> None:
        self.log_id = log_id
        self.origin = log_origin(log_id)

    async def create(self, sessions: Sessions) -> None:
        """Make the log if it is not there yet (at start, before any append)."""
        async with transaction(sessions) as s:
            await logstore.create_log(s, self.log_id, logstore.LOCAL, self.origin)

    async def append(self, s: AsyncSession, entry: bytes) -> int:
        head = await logstore.get_log(s, self.log_id, lock=True)
        _, placed = await logstore.append(s, head, [entry])
        return placed[0].index


def terms_digest(consent: ConsentView, pseudonymize: Pseudonymizer) -> str:
    """Hex SHA-256 of the consent's fixed terms, with the subject as a pseudonym."""
    terms: dict[str, Any] = consent.model_dump(mode="json", exclude=_MUTABLE)
    terms["subject"] = pseudonymize(consent.subject)
    return canonical_digest(terms)


def entry(
    *,
    seq: int,
    consent: ConsentView,
    action: str,
    actor_kind: str,
    actor: str,
    relation: str | None,
    at: dt.datetime,
    pseudonymize: Pseudonymizer,
) -> bytes:
    """The canonical log entry for one change; ``actor`` is already pseudonymous."""
    return canonical_json(
        {
            "format": ENTRY_FORMAT,
            "seq": seq,
            "consent_id": consent.id,
            "subject": pseudonymize(consent.subject),
            "terms_sha256": terms_digest(consent, pseudonymize),
            "action": action,
            "status": consent.status.value,
            "actor_kind": actor_kind,
            "actor": actor,
            "relation": relation,
            "at": at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
        }
    )
