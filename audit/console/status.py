"""An entry's verification status, worked out the way an outside verifier would.

The console does not take the mirror's word that an entry is witnessed: it
recomputes the entry's leaf hash from the stored bytes, builds the inclusion
proof from the stored subtrees, and checks it against the root of the
smallest checkpoint that the witness cosigned and that covers the entry,
after checking that checkpoint's log signature (with a key the global
configuration publishes for the log, valid when it was cosigned) and the
witness's cosignature. Any damage to the stored entry, subtrees or
checkpoint therefore shows as FAILED with the reason.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from audit import merkle, store
from audit.identity import resolve_log
from audit.models import AuditCheckpoint, AuditEntry
from audit.note import (
    Checkpoint,
    Note,
    log_origin,
    verify_cosignature,
    verify_log_signature,
)
from core.errors import NotFoundError, ShahrahError
from core.keys import PublicKey
from registry.globalconf import GlobalConfView

__all__ = ["EntryStatus", "MirroredEntry", "State", "load_entry", "verify_entry"]


_SECOND = dt.timedelta(seconds=1) - dt.timedelta(microseconds=1)


class State(StrEnum):
    VERIFIED = "verified"
    PENDING = "pending"  # not yet in a checkpoint the witness cosigned
    FAILED = "failed"


@dataclass(frozen=True)
class MirroredEntry:
    log_id: str
    index: int
    entry: bytes  # exactly as logged
    leaf_hash: bytes  # as stored beside it
    event: dict[str, Any] | None  # the parsed entry, None if it is not JSON


@dataclass(frozen=True)
class EntryStatus:
    state: State
    tree_size: int | None = None  # the checkpoint that includes the entry
    witnessed_at: dt.datetime | None = None
    reason: str | None = None  # why it failed


async def load_entry(s: AsyncSession, log_id: str, index: int) -> MirroredEntry:
    """Entry ``index`` of the mirrored log ``log_id``, or NotFoundError."""
    head = await store.get_log(s, log_id, store.MIRROR)
    row = await s.get(AuditEntry, (head.id, index)) if 0 <= index < head.size else None
    if row is None:
        raise NotFoundError(f"log {log_id} has no entry {index}")
    entry = bytes(row.entry)
    try:
        event = json.loads(entry)
    except ValueError:
        event = None
    return MirroredEntry(
        log_id, index, entry, bytes(row.leaf_hash), event if isinstance(event, dict) else None
    )


async def verify_entry(
    s: AsyncSession,
    found: MirroredEntry,
    *,
    view: GlobalConfView,
    witness_name: str,
    witness_key: PublicKey,
) -> EntryStatus:
    """Whether ``found`` is provably in a checkpoint the witness cosigned."""
    head = await store.get_log(s, found.log_id, store.MIRROR)
    row = await s.scalar(
        select(AuditCheckpoint)
        .where(
            AuditCheckpoint.log_id == head.id,
            AuditCheckpoint.size > found.index,
            AuditCheckpoint.cosigned.is_not(None),
        )
        .order_by(AuditCheckpoint.size)
        .limit(1)
    )
    if row is None or row.cosigned is None or row.cosigned_at is None:
        return EntryStatus(State.PENDING)
    size = row.size
    try:
        note = Note.parse(row.cosigned)
        checkpoint = Checkpoint.parse(note.text)
        if head.origin != log_origin(found.log_id):
            # Gateways of one member share keys: a log under another's name would verify.
            raise _Failed(f"the log {found.log_id} carries the origin {head.origin}")
        if checkpoint.origin != head.origin or checkpoint.size != size:
            raise _Failed(f"the stored checkpoint does not state size {size} of {head.origin}")
        # The cosignature's time has whole seconds, so it was made within [t, t + 1 s): a
        # key valid at either end of that second may have signed.
        keys = {
            key.kid: key
            for at in (row.cosigned_at, row.cosigned_at + _SECOND)
            for key in resolve_log(view, found.log_id, at).keys
        }
        verify_log_signature(note, head.origin, keys.values())
        timestamp = verify_cosignature(note, witness_name, witness_key)
        leaf = merkle.leaf_hash(found.entry)
        if leaf != found.leaf_hash:
            raise _Failed("the entry's content does not hash to its stored leaf hash")
        proof = await store.inclusion_proof(s, head, found.index, size)
        merkle.verify_inclusion(leaf, found.index, size, proof, checkpoint.root)
    except _Failed as e:
        return EntryStatus(State.FAILED, size, reason=str(e))
    except ShahrahError as e:
        return EntryStatus(State.FAILED, size, reason=e.message)
    return EntryStatus(State.VERIFIED, size, dt.datetime.fromtimestamp(timestamp, dt.UTC))


class _Failed(Exception):
    pass
