"""The gateway's audit writer: durable group commit, signed checkpoints, witnessing.

:meth:`AuditWriter.append` returns only once the entry is committed (SQLite
with ``synchronous=FULL``, PostgreSQL's durable commit), so no exchange can
answer while its record could still be lost. Appends that arrive while a
transaction is being committed wait and go into the next one together: one
commit, one fsync for the whole batch. Under load the batches grow by
themselves; alone, an append costs one transaction as before. A batch is
written by a worker thread on a plain synchronous connection
(:class:`core.db.WorkerConnection`): a few driver statements, where the async
session cost several times the CPU, and the event loop serves on while the
commit waits for the disk.

Several processes may write one log through one PostgreSQL database: every
batch takes the log's row lock, so indices are assigned inside the
transaction and never collide.

Checkpoints are signed with the log's key every ``checkpoint_every`` entries
and every ``checkpoint_interval`` seconds if the log grew; consecutive
checkpoints are never more than ``checkpoint_every`` entries apart, which
bounds every witness submission. With a witness client, each new checkpoint
is submitted in order with its consistency proof and entries, and the
cosignature is stored beside it; a witness that is down delays cosigning,
never appending.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from audit import store
from audit.errors import AuditUnavailableError, WitnessConflictError, WitnessRefusedError
from audit.events import AuditEvent
from audit.models import AuditCheckpoint
from audit.note import Checkpoint, Note, log_key_id, sign_checkpoint
from audit.store import Appended
from audit.witness_client import WitnessClient
from core.canonical import canonical_json
from core.db import Sessions, WorkerConnection, transaction, utcnow
from core.errors import BadRequestError, ShahrahError
from core.keys import PrivateKey
from core.web import parse_json

__all__ = ["MAX_CHECKPOINT_GAP", "Appended", "AuditWriter", "WriterStatus"]

log = logging.getLogger(__name__)

#: The most entries one checkpoint may add to the previous one (bounds a witness submission).
MAX_CHECKPOINT_GAP = 1024
_RETRY_MIN, _RETRY_MAX = 1.0, 60.0  # seconds between witness attempts after a failure
_AFTER_RESTORE = (
    "a gateway's log is repaired with 'shahrah gateway repair-audit', the gateway stopped; "
    "see docs/consent.md for the consent service's"
)


@dataclass(frozen=True)
class WriterStatus:
    """What a health endpoint reports about the log."""

    size: int
    checkpoint_size: int
    witnessed_size: int
    witness_error: str | None


_Pending = tuple[bytes, "asyncio.Future[Appended]"]


class AuditWriter:
    """Appends entries to one log with durable group commit; checkpoints and witnesses it.

    Use as ``async with AuditWriter(...) as writer:`` (or ``start()``/``close()``).
    """

    def __init__(
        self,
        sessions: Sessions,
        log_id: str,
        signing_key: PrivateKey,
        *,
        origin: str,
        checkpoint_every: int = 1000,
        checkpoint_interval: float = 10.0,
        witness: WitnessClient | None = None,
        max_batch: int = 1000,
    ) -> None:
        if not 1 <= checkpoint_every <= MAX_CHECKPOINT_GAP:
            raise ValueError(f"checkpoint_every must be between 1 and {MAX_CHECKPOINT_GAP}")
        if checkpoint_interval <= 0 or max_batch < 1:
            raise ValueError("checkpoint_interval and max_batch must be positive")
        self.sessions = sessions
        self.log_id = log_id
        self.key = signing_key
        self.origin = origin
        self.every = checkpoint_every
        self.interval = checkpoint_interval
        self.witness = witness
        self.max_batch = max_batch
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._worker = WorkerConnection(sessions, name=f"audit {log_id}")
        self._tasks: list[asyncio.Task[None]] = []
        self._wake_witness = asyncio.Event()
        self._witness_lock = asyncio.Lock()  # one submission at a time, never cut off midway
        self._closed = True
        self._size = 0
        self._checkpointed = 0
        self._witnessed = 0
        self._witness_hint: int | None = None
        self._witness_error: str | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        async with transaction(self.sessions) as s:
            head = await store.create_log(s, self.log_id, store.LOCAL, self.origin)
            last = await store.latest_checkpoint(s, head)
            witnessed = await store.latest_checkpoint(s, head, cosigned=True)
        self._size = head.size
        self._checkpointed = last.size if last else 0
        self._witnessed = witnessed.size if witnessed else 0
        self._closed = False
        self._tasks = [asyncio.create_task(self._batches(), name=f"audit-batches {self.log_id}")]
        self._tasks.append(asyncio.create_task(self._ticker(), name=f"audit-ticker {self.log_id}"))
        if self.witness is not None:
            self._tasks.append(asyncio.create_task(self._witnessing(), name="audit-witnessing"))
            self._wake_witness.set()  # catch up on anything left from a previous run

    async def close(self, *, witness_timeout: float = 5.0) -> None:
        """Commit what is queued, sign a last checkpoint, try the witness once, stop."""
        if self._closed:
            return
        self._closed = True
        await self._queue.put(None)
        await self._tasks[0]
        await self._worker.close()
        for task in self._tasks[1:]:
            await self._stop(task, witness_timeout)
        try:
            await self.checkpoint()
            if self.witness is not None:
                await asyncio.wait_for(self.sync_witness(), timeout=witness_timeout)
        except (ShahrahError, TimeoutError) as e:
            log.warning("audit log %s closed with work left for the next start: %s", self.log_id, e)

    async def _stop(self, task: asyncio.Task[None], grace: float) -> None:
        """Cancel a background task, letting a witness submission in flight finish first:
        cutting it off could lose a cosignature the witness has already recorded."""
        try:
            await asyncio.wait_for(self._witness_lock.acquire(), grace)
        except TimeoutError:
            task.cancel()
        else:
            task.cancel()
            self._witness_lock.release()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def __aenter__(self) -> AuditWriter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def use_key(self, key: PrivateKey) -> None:
        """Sign checkpoints and witness submissions with ``key`` from now on: another of the
        log's registered keys (a gateway's key rotation, exchange.rotation)."""
        self.key = key
        if self.witness is not None:
            self.witness.use_key(key)

    def status(self) -> WriterStatus:
        return WriterStatus(self._size, self._checkpointed, self._witnessed, self._witness_error)

    # --- appending ----------------------------------------------------------------------------

    async def append(self, event: AuditEvent) -> Appended:
        """Append one audit event of this gateway; returns once it is durable.

        Raises AuditUnavailableError if it could not be stored (fail closed).
        """
        if str(event.gateway) != self.log_id:
            raise BadRequestError(f"event of gateway {event.gateway} offered to log {self.log_id}")
        return await self._enqueue(event.entry())

    async def append_json(self, document: Mapping[str, Any]) -> Appended:
        """Append any JSON object as its RFC 8785 canonical form (for logs of other events)."""
        return await self._enqueue(canonical_json(dict(document)))

    async def append_entry(self, entry: bytes) -> Appended:
        """Append entry bytes, which must be RFC 8785 canonical JSON; returns once durable."""
        try:
            canonical = canonical_json(parse_json(entry))
        except BadRequestError as e:
            raise BadRequestError(f"an audit entry must be canonical JSON: {e.message}") from e
        if canonical != entry:
            raise BadRequestError("an audit entry must be canonical JSON (RFC 8785)")
        return await self._enqueue(entry)

    async def _enqueue(self, entry: bytes) -> Appended:
        if self._closed:
            raise AuditUnavailableError(f"audit log {self.log_id} is not open")
        if len(entry) > store.MAX_ENTRY:
            raise BadRequestError(f"an audit entry is larger than {store.MAX_ENTRY} bytes")
        future: asyncio.Future[Appended] = asyncio.get_running_loop().create_future()
        await self._queue.put((entry, future))
        return await future

    async def _batches(self) -> None:
        """Commit whatever queued up while the previous commit ran, as one transaction."""
        stopping = False
        while not stopping:
            first = await self._queue.get()
            batch: list[_Pending] = []
            if first is None:
                stopping = True
            else:
                batch.append(first)
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
                if item is None:
                    stopping = True
                    continue
                batch.append(item)
            if batch:
                await self._commit(batch)

    async def _commit(self, batch: list[_Pending]) -> None:
        entries = [entry for entry, _ in batch]
        try:
            head, placed = await self._worker.write(
                lambda conn: store.append_locked(conn, self.log_id, entries)
            )
        except Exception as e:
            log.exception("audit log %s: %d entries could not be stored", self.log_id, len(batch))
            error = AuditUnavailableError(f"audit log {self.log_id} could not store the record")
            error.__cause__ = e
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), where in zip(batch, placed, strict=True):
            if not future.done():
                future.set_result(where)
        self._size = head.size
        if head.size - self._checkpointed >= self.every:
            await self._checkpoint_quietly(force=False)

    # --- checkpoints --------------------------------------------------------------------------

    async def checkpoint(self) -> Note | None:
        """Sign a checkpoint of the current size now (if the log grew); returns the newest."""
        return await self._sign(force=True)

    async def _checkpoint_quietly(self, *, force: bool) -> None:
        try:
            await self._sign(force=force)
        except Exception:
            # The entries are durable; the next batch or tick signs the checkpoint instead.
            log.exception("audit log %s: signing a checkpoint failed", self.log_id)

    async def _sign(self, *, force: bool) -> Note | None:
        async with transaction(self.sessions) as s:
            head = await store.get_log(s, self.log_id, lock=True)
            last = await store.latest_checkpoint(s, head)
            done = last.size if last else 0
            sizes = list(range(done + self.every, head.size + 1, self.every))
            if force and head.size > (sizes[-1] if sizes else done):
                sizes.append(head.size)
            newest: Note | None = Note.parse(last.note) if last else None
            for size in sizes:
                root = await store.root_at(s, head, size)
                newest = sign_checkpoint(Checkpoint(head.origin, size, root), self.key)
                await store.add_checkpoint(s, head, size, root, newest.render())
        self._checkpointed = max(self._checkpointed, sizes[-1] if sizes else done)
        if sizes:
            self._wake_witness.set()
        return newest

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if self._size > self._checkpointed:
                await self._checkpoint_quietly(force=True)

    # --- witnessing ---------------------------------------------------------------------------

    async def sync_witness(self) -> None:
        """Submit every checkpoint the witness has not cosigned yet, oldest first."""
        assert self.witness is not None
        async with self._witness_lock:
            while await self._submit_next(self.witness):
                pass

    async def _submit_next(self, witness: WitnessClient) -> bool:
        """Submit the checkpoint after the witnessed one; False when there is none."""
        async with transaction(self.sessions, write=False) as s:
            head = await store.get_log(s, self.log_id)
            witnessed = await store.latest_checkpoint(s, head, cosigned=True)
            old = witnessed.size if witnessed else 0
            if self._witness_hint is not None and self._witness_hint <= head.size:
                old = self._witness_hint
            pending = await store.checkpoints(s, head, after=old, limit=1)
            if not pending:
                self._witnessed = old
                return False
            target = pending[0]
            proof = await store.consistency_proof(s, head, old, target.size)
            entries = [e for _, e in await store.entries(s, head, old, target.size)]
        note = self._signed_now(head.origin, target)
        try:
            cosigned = await witness.add_checkpoint(self.log_id, old, proof, note, entries)
        except WitnessConflictError as e:
            if e.size > head.size:
                log.error(
                    "audit log %s: the witness holds size %d, larger than this log's %d: "
                    "restored from an older backup? %s",
                    self.log_id,
                    e.size,
                    head.size,
                    _AFTER_RESTORE,
                )
                raise
            if e.size == old:
                raise  # the witness contradicts itself; retry later rather than spin
            # Another process of this gateway got there first, or the witness lost state.
            self._witness_hint = e.size
            return True
        self._witness_hint = None
        async with transaction(self.sessions) as s:
            row = await store.checkpoint_at(s, head, target.size)
            assert row is not None
            row.note = note.render()
            row.cosigned = note.with_signatures([cosigned.signature]).render()
            row.cosigned_at = dt.datetime.fromtimestamp(cosigned.timestamp, dt.UTC)
        self._witnessed = target.size
        return True

    def _signed_now(self, origin: str, row: AuditCheckpoint) -> Note:
        """The checkpoint ``row`` as submitted: signed with the key the log signs with now.
        One signed before a key rotation and not yet cosigned is signed again, the same text:
        the witness checks the signature against the keys valid when it is submitted, and
        the old key may be revoked by then (exchange.rotation)."""
        note = Note.parse(row.note)
        current = log_key_id(self.key.public())
        if any(x.name == origin and x.key_id == current for x in note.signatures):
            return note
        return sign_checkpoint(Checkpoint(origin, row.size, bytes(row.root)), self.key)

    async def _witnessing(self) -> None:
        assert self.witness is not None
        delay = _RETRY_MIN
        while True:
            await self._wake_witness.wait()
            self._wake_witness.clear()
            try:
                await self.sync_witness()
            except Exception as e:
                if isinstance(e, WitnessRefusedError):
                    # After a restore, a log longer than the witnessed one is refused as a fork.
                    log.warning(
                        "audit log %s: witnessing failed: %s (if it was restored from a "
                        "backup: %s)",
                        self.log_id,
                        e.message,
                        _AFTER_RESTORE,
                    )
                elif isinstance(e, ShahrahError):
                    log.warning("audit log %s: witnessing failed: %s", self.log_id, e.message)
                else:
                    log.exception("audit log %s: witnessing failed", self.log_id)
                reason = e.message if isinstance(e, ShahrahError) else repr(e)
                self._witness_error = f"{utcnow().isoformat()}: {reason}"
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX)
                self._wake_witness.set()
                continue
            self._witness_error = None
            delay = _RETRY_MIN
