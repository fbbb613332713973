"""Repairing a log restored from a backup older than what the witness cosigned.

Such a log (a gateway's, or the consent service's: consent.restore) lacks
records the witness already holds, and what was recorded since the restore
took their places: its checkpoints now contradict the witnessed history, so
the witness refuses every one of them (a fork alarm), and nothing more of the
log reaches regulators. The mirror still holds every witnessed entry, so the
log can be made whole again:

1. find where the local log leaves the witnessed one (``diverged``): the
   entries after the newest local checkpoint the witness cosigned are compared
   with the mirror's, read back from the witness;
2. set aside the local entries from there on (the exchanges recorded since the
   restore);
3. write the mirror's entries in their places up to the witnessed size, and
   check that they produce the witnessed root;
4. append the set-aside entries after them, in their order: nothing recorded
   is lost, and none is recorded twice;
5. drop the local checkpoints of the abandoned history and record the
   witness's cosigned checkpoint, so witnessing resumes from it.

All of it is one transaction under the log's row lock: a failure anywhere
(the witness unreachable, entries that do not produce the cosigned root)
leaves the log exactly as it was. The writer then signs checkpoints of the
new head as usual and the witness accepts them, since they extend what it
cosigned.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from audit import merkle, store
from audit.models import AuditCheckpoint, AuditEntry, AuditNode
from audit.note import Note
from audit.witness import MAX_READ_BACK
from audit.witness_client import Mirrored
from core.db import Sessions, transaction
from core.errors import ConflictError, UnprocessableError

__all__ = ["MirrorReader", "Progress", "Repair", "RepairError", "Within", "repair"]


class RepairError(UnprocessableError):
    """The log cannot be repaired from the witness's mirror as it stands."""


@dataclass(frozen=True)
class Repair:
    """What a repair did to a log."""

    witnessed: int  # the size the witness cosigned, now the local log's prefix
    diverged: int  # the first index where the local log differed from the witnessed one
    moved: int  # local entries from ``diverged`` on, appended again after ``witnessed``
    size: int  # the log's size afterwards: witnessed + moved

    @property
    def restored(self) -> int:
        """Entries written from the mirror."""
        return self.witnessed - self.diverged


#: Called with (entries done, entries to do) while a repair reads the mirror.
Progress = Callable[[int, int], None]


#: Runs last inside a repair's transaction, with what the repair did.
Within = Callable[[AsyncSession, Repair], Awaitable[None]]


class MirrorReader(Protocol):
    """Where the witnessed entries are read back from: audit.witness_client.WitnessClient."""

    async def read_back(self, log_id: str, start: int, end: int) -> Mirrored: ...


async def repair(
    sessions: Sessions,
    log_id: str,
    witness: MirrorReader,
    *,
    progress: Progress | None = None,
    within: Within | None = None,
) -> Repair | None:
    """Make the local log ``log_id`` extend what the witness cosigned (see the module's
    docstring); None if it already does. Run it while the log's writer is stopped: a log
    that grows meanwhile is refused rather than repaired. ``within`` runs last in the
    repair's transaction, for what else the owner of the log keeps by index (consent)."""
    async with transaction(sessions, write=False) as s:
        head = await store.get_log(s, log_id)
        cosigned = await store.latest_checkpoint(s, head, cosigned=True)
    start = cosigned.size if cosigned else 0
    first = await witness.read_back(log_id, start, start + MAX_READ_BACK)
    witnessed = first.checkpoint
    if witnessed.origin != head.origin:
        raise RepairError(f"the witness's checkpoint names {witnessed.origin}, not {head.origin}")
    if witnessed.size <= head.size:
        async with transaction(sessions, write=False) as s:
            if await store.root_at(s, head, witnessed.size) == witnessed.root:
                return None
    diverged, page = await _divergence(sessions, head, witness, first, progress)
    return await _rewrite(sessions, head, witness, page, diverged, progress, within)


async def _divergence(
    sessions: Sessions,
    head: store.LogHead,
    witness: MirrorReader,
    page: Mirrored,
    progress: Progress | None,
) -> tuple[int, Mirrored]:
    """The first index from the page's start on where the local entry is not the mirror's,
    and the last page read."""
    end = min(head.size, page.checkpoint.size)
    at = page.start
    while at < end:
        if at >= page.start + len(page.entries):
            page = await _page(witness, head.name, at, page)
        async with transaction(sessions, write=False) as s:
            local = await store.entries(s, head, at, min(end, page.start + len(page.entries)))
        for _, mine in local:
            if mine != page.entries[at - page.start]:
                return at, page
            at += 1
        if progress:
            progress(at, page.checkpoint.size)
    return at, page


async def _page(witness: MirrorReader, log_id: str, at: int, previous: Mirrored) -> Mirrored:
    """The mirror's page from ``at``, which must be of the same witnessed checkpoint."""
    page = await witness.read_back(log_id, at, min(previous.checkpoint.size, at + MAX_READ_BACK))
    if page.checkpoint != previous.checkpoint:
        raise ConflictError(
            f"the witness's newest checkpoint of {log_id} changed during the repair: is the "
            "gateway still running? Stop every process of it and repair again"
        )
    if not page.entries:
        raise RepairError(f"the witness read back no entries at {at} of {log_id}")
    return page


def _straddling(index: int, size: int) -> list[int]:
    """The keys of the stored inner nodes of a ``size``-entry log that cover both an entry
    before ``index`` and ``index`` itself: its ancestors that began earlier. With every
    node from the key ``2 * index`` on (those that begin at ``index`` or later, and some of
    these), they are the nodes a log cut back to ``index`` entries must not keep."""
    keys = []
    level = 1
    while (1 << level) <= size:
        begin = (index >> level) << level
        if begin < index and begin + (1 << level) <= size:
            keys.append(merkle.node_key((level, index >> level)))
        level += 1
    return keys


async def _rewrite(
    sessions: Sessions,
    head: store.LogHead,
    witness: MirrorReader,
    page: Mirrored,
    diverged: int,
    progress: Progress | None,
    within: Within | None,
) -> Repair:
    witnessed, note, cosigned_at = page.checkpoint, page.note, page.cosigned_at
    async with transaction(sessions) as s:
        locked = await store.get_log(s, head.name, lock=True)
        if (locked.size, locked.root) != (head.size, head.root):
            raise ConflictError(
                f"audit log {head.name} grew during the repair: stop every process of the "
                "gateway and repair again"
            )
        # Set aside: index i goes to -1 - i, out of the way of the entries written in its place.
        await s.execute(
            update(AuditEntry)
            .where(AuditEntry.log_id == head.id, AuditEntry.idx >= diverged)
            .values(idx=-1 - AuditEntry.idx)
        )
        # An inner node's key lies between its first and last leaf's (2i and 2j), so every
        # node that begins at ``diverged`` or later has a key from 2 * diverged on.
        await s.execute(
            delete(AuditNode).where(
                AuditNode.log_id == head.id,
                or_(
                    AuditNode.key >= 2 * diverged,
                    AuditNode.key.in_(_straddling(diverged, head.size)),
                ),
            )
        )
        root = await store.root_at(s, head, diverged)
        grown = store.LogHead(head.id, head.name, head.kind, head.origin, diverged, root)
        while grown.size < witnessed.size:
            if not page.start <= grown.size < page.start + len(page.entries):
                page = await _page(witness, head.name, grown.size, page)
            grown, _ = await store.append(s, grown, page.entries[grown.size - page.start :])
            if progress:
                progress(grown.size, witnessed.size)
        if grown.root != witnessed.root:
            raise RepairError(
                f"the mirror's entries of {head.name} do not produce the root the witness "
                "cosigned; nothing was changed"
            )
        for begin in range(diverged, head.size, MAX_READ_BACK):
            end = min(head.size, begin + MAX_READ_BACK)
            aside = (
                AuditEntry.log_id == head.id,
                AuditEntry.idx <= -1 - begin,
                AuditEntry.idx >= -end,
            )
            rows = await s.scalars(
                select(AuditEntry.entry).where(*aside).order_by(AuditEntry.idx.desc())
            )
            grown, _ = await store.append(s, grown, [bytes(e) for e in rows])
            await s.execute(delete(AuditEntry).where(*aside))
        await s.execute(
            delete(AuditCheckpoint).where(
                AuditCheckpoint.log_id == head.id, AuditCheckpoint.size > diverged
            )
        )
        signed = Note(note.text, tuple(x for x in note.signatures if x.name == head.origin))
        await store.add_checkpoint(
            s,
            grown,
            witnessed.size,
            witnessed.root,
            signed.render(),
            cosigned=note.render(),
            cosigned_at=dt.datetime.fromtimestamp(cosigned_at, dt.UTC),
        )
        done = Repair(witnessed.size, diverged, head.size - diverged, grown.size)
        if within is not None:
            await within(s, done)
    return done
