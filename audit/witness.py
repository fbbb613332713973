"""The witness: cosign a log's checkpoint only if it extends what was witnessed before.

For each log the witness holds the newest checkpoint it cosigned and, as the
mirror, every entry up to it. A submission (tlog-witness's add-checkpoint
plus the new entries) is checked in this order, and any failure leaves the
witness exactly as it was:

1. the log is a gateway or central service of the verified global
   configuration, and a gateway's submission is signed by its own member;
2. the note is well formed and its checkpoint names the log's origin;
3. a current key of the log verifies the checkpoint signature (403 if none);
4. the old size is the witnessed size (409 with the witnessed size if not);
5. the consistency proof leads from the witnessed root to the new root, and
   the new entries, appended to the mirror, produce the new root (422).

Only then is the checkpoint cosigned, and mirror, index and cosigned
checkpoint are committed in one transaction under the log's row lock, so two
submissions can never both extend the same state (the race tlog-witness
warns of). A signed checkpoint that contradicts the witnessed history (a
fork at the same or a smaller size, a failing consistency proof, entries
that do not produce the signed root) raises an alarm: a log line, the
``shahrah_audit_witness_alarms_total`` counter, and the refused note kept as
evidence in ``audit_alarm``.

A gateway may also read back what the mirror holds of its own log
(:meth:`Witness.read_back`): after a restore from a backup older than what was
witnessed, that is where the records the backup lacks still are (audit.repair).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from audit import merkle, mirror, store
from audit.identity import LogIdentity, resolve_log
from audit.merkle import ProofError
from audit.models import AuditAlarm
from audit.note import (
    MAX_NOTE,
    Checkpoint,
    Note,
    NoteError,
    b64decode_hash,
    cosign,
    log_key_id,
    verify_log_signature,
)
from audit.writer import MAX_CHECKPOINT_GAP
from core.db import Sessions, transaction, utcnow
from core.errors import (
    BadRequestError,
    ConflictError,
    ForbiddenError,
    InvalidSignatureError,
    NotFoundError,
    ShahrahError,
    UnauthorizedError,
    UnprocessableError,
)
from core.ids import ClientId, GatewayId
from core.keys import PrivateKey
from registry.globalconf import GlobalConfView

__all__ = [
    "MAX_READ_BACK",
    "MirroredEntries",
    "ReadBack",
    "Submission",
    "Witness",
    "WitnessMetrics",
]

#: Who signed a request to the witness: a member's client, a central service's name, or nobody.
Caller = ClientId | str | None

MAX_READ_BACK = 250  # entries a page: 16 KiB each, at most 6 bytes of JSON a byte: 24 MiB

log = logging.getLogger(__name__)

B64Hash = Annotated[str, Field(min_length=44, max_length=44)]


class Submission(BaseModel):
    """tlog-witness add-checkpoint, as JSON, with the entries the checkpoint adds."""

    model_config = ConfigDict(extra="forbid")

    log_id: str = Field(max_length=1100)
    old_size: int = Field(ge=0, lt=2**63, description="the size the witness last cosigned")
    consistency: list[B64Hash] = Field(max_length=63, description="base64 hashes, RFC 6962")
    checkpoint: str = Field(max_length=MAX_NOTE, description="the log-signed checkpoint note")
    entries: list[Annotated[str, Field(max_length=store.MAX_ENTRY)]] = Field(
        max_length=MAX_CHECKPOINT_GAP, description="entries old_size .. size - 1"
    )


class ReadBack(BaseModel):
    """Entries ``start`` to ``end`` (exclusive) of a mirrored log, asked by its own gateway."""

    model_config = ConfigDict(extra="forbid")

    log_id: str = Field(max_length=1100)
    start: int = Field(ge=0, lt=2**63)
    end: int = Field(gt=0, lt=2**63, description=f"exclusive; at most {MAX_READ_BACK} after start")


class MirroredEntries(BaseModel):
    checkpoint: str = Field(description="the newest cosigned checkpoint of the log, as a note")
    entries: list[str] = Field(description="entries start .. min(end, size) - 1")


class WitnessMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.submissions = Counter(
            "shahrah_audit_witness_submissions",
            "Checkpoint submissions by result",
            ["result"],
            registry=registry,
        )
        self.alarms = Counter(
            "shahrah_audit_witness_alarms",
            "Checkpoints refused because they contradict the witnessed history",
            ["log", "reason"],
            registry=registry,
        )


class _Alarm(ShahrahError):
    """A refusal that is also evidence of a misbehaving log."""

    def __init__(self, error: ShahrahError, reason: str, evidence: str) -> None:
        super().__init__(error.message, detail=error.detail)
        self.error = error
        self.reason = reason
        self.evidence = evidence


@dataclass
class Witness:
    """Checks, mirrors and cosigns checkpoints. One per audit server."""

    sessions: Sessions
    key: PrivateKey
    name: str
    view: Callable[[], GlobalConfView]
    metrics: WitnessMetrics
    clock: Callable[[], dt.datetime] = utcnow

    async def add_checkpoint(self, body: Submission, caller: Caller) -> list[str]:
        """Check a submission; returns the cosignature lines, or raises with the status
        tlog-witness prescribes. ``caller`` signed the request, if anyone did."""
        try:
            lines = await self._add(body, caller)
        except _Alarm as alarm:
            await self._raise_alarm(body.log_id, alarm)
            self.metrics.submissions.labels("alarm").inc()
            raise alarm.error from None
        except ShahrahError:
            self.metrics.submissions.labels("refused").inc()
            raise
        self.metrics.submissions.labels("cosigned").inc()
        return lines

    async def _add(self, body: Submission, caller: Caller) -> list[str]:
        now = self.clock()
        identity = resolve_log(self.view(), body.log_id, now)
        if identity.member is not None:
            _check_caller(identity, caller, "submit checkpoints of")
        note, checkpoint = _parse(body, identity)
        try:
            key = verify_log_signature(note, identity.origin, identity.keys)
        except InvalidSignatureError as e:
            raise ForbiddenError(f"checkpoint refused: {e.message}") from e
        if body.old_size > checkpoint.size:
            raise BadRequestError(
                f"old_size {body.old_size} is larger than the checkpoint size {checkpoint.size}"
            )
        if len(body.entries) != checkpoint.size - body.old_size:
            raise BadRequestError(
                f"{len(body.entries)} entries given; the checkpoint adds "
                f"{checkpoint.size - body.old_size}"
            )
        entries = [e.encode("utf-8") for e in body.entries]
        proof = [b64decode_hash(h, "consistency proof hash") for h in body.consistency]
        evidence = note.render()
        async with transaction(self.sessions) as s:
            head = await store.create_log(s, body.log_id, store.MIRROR, identity.origin)
            head = await store.get_log(s, body.log_id, store.MIRROR, lock=True)
            await self._against_history(s, head, checkpoint, body.old_size, evidence)
            try:
                merkle.verify_consistency(
                    head.size, checkpoint.size, proof, head.root, checkpoint.root
                )
            except ProofError as e:
                raise _Alarm(
                    UnprocessableError(f"consistency proof does not verify: {e.message}"),
                    "inconsistent",
                    evidence,
                ) from e
            grown, placed = await store.append(s, head, entries)
            if grown.root != checkpoint.root:
                raise _Alarm(
                    UnprocessableError("the entries do not produce the checkpoint's root hash"),
                    "entries-mismatch",
                    evidence,
                )
            gateway = GatewayId.parse(body.log_id) if identity.member is not None else None
            await mirror.write_index(s, mirror.index_entries(grown, gateway, entries, placed))
            timestamp = int(now.timestamp())
            cosignature = cosign(note, self.key, self.name, timestamp)
            # Keep only the signature that verified: a note carrying junk under the witness's
            # name would otherwise make every later check of this checkpoint fail.
            key_id = log_key_id(key)
            own = tuple(
                x for x in note.signatures if (x.name, x.key_id) == (identity.origin, key_id)
            )
            cosigned = Note(note.text, own).with_signatures([cosignature]).render()
            row = await store.checkpoint_at(s, grown, checkpoint.size)
            if row is None:
                await store.add_checkpoint(
                    s,
                    grown,
                    checkpoint.size,
                    checkpoint.root,
                    evidence,
                    cosigned=cosigned,
                    cosigned_at=dt.datetime.fromtimestamp(timestamp, dt.UTC),
                    key_jwk=json.dumps(key.to_jwk(), sort_keys=True),
                )
            else:  # the same checkpoint again: a fresh cosignature, the history unchanged
                # Signed again, perhaps with another key (a gateway re-signs after a key
                # rotation what it never heard cosigned): the key kept must be the one the
                # note now carries, or an export of an honest log fails verification.
                row.note, row.cosigned = evidence, cosigned
                row.cosigned_at = dt.datetime.fromtimestamp(timestamp, dt.UTC)
                row.key_jwk = json.dumps(key.to_jwk(), sort_keys=True)
        log.info("cosigned %s at size %d", body.log_id, checkpoint.size)
        return [cosignature.line()]

    async def read_back(self, query: ReadBack, caller: Caller) -> MirroredEntries:
        """What the mirror holds of a log, for the one that wrote it alone (the gateway's
        member, or the central service): entries are personal data."""
        identity = resolve_log(self.view(), query.log_id, self.clock())
        if identity.member is not None:
            _check_caller(identity, caller, "read back")
        elif caller != query.log_id:
            error = UnauthorizedError if caller is None else ForbiddenError
            raise error(
                f"only the central service {query.log_id} may read back its log "
                "(Authorization: Shahrah-Service ...)"
            )
        if not query.start < query.end <= query.start + MAX_READ_BACK:
            raise BadRequestError(
                f"end must be after start and at most {MAX_READ_BACK} entries after it",
                detail={"field": "end"},
            )
        async with transaction(self.sessions, write=False) as s:
            try:
                head = await store.get_log(s, query.log_id, store.MIRROR)
            except NotFoundError:
                raise NotFoundError(f"the witness holds nothing of {query.log_id}") from None
            row = await store.latest_checkpoint(s, head, cosigned=True)
            if row is None or row.cosigned is None or row.size != head.size:
                raise store.LogStorageError(
                    f"the mirror of {query.log_id} has no cosigned checkpoint at its size"
                )
            if query.start > head.size:
                raise BadRequestError(
                    f"start {query.start} is beyond the {head.size} entries witnessed",
                    detail={"field": "start", "size": head.size},
                )
            found = await store.entries(s, head, query.start, min(query.end, head.size))
        return MirroredEntries(
            checkpoint=row.cosigned, entries=[e.decode("utf-8") for _, e in found]
        )

    async def _against_history(
        self,
        s: AsyncSession,
        head: store.LogHead,
        checkpoint: Checkpoint,
        old_size: int,
        evidence: str,
    ) -> None:
        """Refuse a checkpoint that contradicts, or does not start from, the witnessed state."""
        if checkpoint.size <= head.size:
            witnessed = await store.root_at(s, head, checkpoint.size)
            if witnessed != checkpoint.root:
                reason = "fork" if checkpoint.size == head.size else "rollback"
                raise _Alarm(
                    ConflictError(
                        f"checkpoint at size {checkpoint.size} contradicts the witnessed log "
                        f"({reason})",
                        detail={"size": head.size, "alarm": reason},
                    ),
                    reason,
                    evidence,
                )
        if old_size != head.size:
            raise ConflictError(
                f"the witness holds size {head.size} for this log, not {old_size}",
                detail={"size": head.size},
            )

    async def _raise_alarm(self, log_id: str, alarm: _Alarm) -> None:
        """Keep the evidence once: a gateway retrying the same refused checkpoint (after a
        restore from backup, every minute) must not bury every other alarm under copies."""
        # The same checkpoint (origin, size, root), however often it was signed again; LIKE
        # only narrows the rows (SQLite's ignores case), the comparison is exact.
        signed_text = Note.parse(alarm.evidence).text + "\n"
        try:
            async with transaction(self.sessions) as s:
                candidates = await s.execute(
                    select(AuditAlarm.id, AuditAlarm.evidence).where(
                        AuditAlarm.log_name == log_id,
                        AuditAlarm.reason == alarm.reason,
                        AuditAlarm.evidence.startswith(signed_text, autoescape=True),
                    )
                )
                known = next((i for i, e in candidates if e.startswith(signed_text)), None)
                if known is None:
                    s.add(
                        AuditAlarm(
                            log_name=log_id,
                            reason=alarm.reason,
                            message=alarm.message,
                            evidence=alarm.evidence,
                        )
                    )
        except Exception:
            # Said and counted whatever the database does: an alarm must never go unheard.
            log.exception(
                "AUDIT ALARM %s for log %s: %s (its evidence could not be stored)",
                alarm.reason,
                log_id,
                alarm.message,
            )
            self.metrics.alarms.labels(log_id, alarm.reason).inc()
            raise
        if known is None:
            log.error("AUDIT ALARM %s for log %s: %s", alarm.reason, log_id, alarm.message)
            self.metrics.alarms.labels(log_id, alarm.reason).inc()
        else:
            log.warning("log %s sent again the checkpoint of alarm %d", log_id, known)


def _check_caller(identity: LogIdentity, caller: Caller, action: str) -> None:
    """A gateway's log is its member's business alone."""
    if not isinstance(caller, ClientId):
        raise UnauthorizedError(
            f"requests to {action} {identity.log_id} must be signed by "
            f"{identity.member} (Authorization: Shahrah-Member ...)"
        )
    if caller.member != identity.member:
        raise ForbiddenError(f"only {identity.member} may {action} {identity.log_id}")


def _parse(body: Submission, identity: LogIdentity) -> tuple[Note, Checkpoint]:
    try:
        note = Note.parse(body.checkpoint)
        checkpoint = Checkpoint.parse(note.text)
    except NoteError as e:
        raise BadRequestError(f"checkpoint: {e.message}") from e
    if checkpoint.origin != identity.origin:
        raise NotFoundError(
            f"checkpoint origin {checkpoint.origin!r} is not the origin of log {body.log_id} "
            f"({identity.origin!r})"
        )
    return note, checkpoint
