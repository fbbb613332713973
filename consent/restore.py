"""Repairing the consent service after a restore from a backup older than what the witness
cosigned.

Such a restore loses every change made since the backup, revocations included,
so a consent revoked since would permit again; and the changes made after the
restore take the lost ones' places in the consent log, which the witness then
refuses. The witness's mirror still holds the lost entries: each names the
consent, the action, the status it led to and when (not the terms: those are
only a digest). :func:`repair` makes the log whole again (audit.repair: the
mirror's entries in their places, the changes since the restore after them)
and, in the same transaction:

* moves the leaf index of each change recorded since the restore with its entry
  (a citizen's history proves each change by its index);
* re-applies every lost change that takes permission away (revoke, reject,
  pause, expiry: ConsentService.reapply says how), numbered after every lost
  change, so that a gateway that heard of those is sent it. It is recorded as
  the system's, appended to the log and sent on the revocation feed like any
  change.

What only gave permission (a request, an approval, a resume) is not re-applied:
the consent stays as the backup has it, which allows less, and the citizen or
the member makes it again. Uses counted since the backup are not restored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from audit import store as logstore
from audit.repair import MirrorReader, Progress, Repair
from audit.repair import repair as repair_log
from consent import models as m
from consent import store as cstore
from consent.history import ENTRY_FORMAT, LOG_ID
from consent.lifecycle import Status
from consent.service import ConsentService

__all__ = ["ConsentRepair", "repair"]

_PAGE = 1000  # lost entries read at a time


@dataclass(frozen=True)
class ConsentRepair:
    """What a repair did: to the log, and to the consents."""

    log: Repair
    reapplied: dict[str, str] = field(default_factory=dict)  # consent id -> status
    left: int = 0  # consents with lost changes not re-applied (see the module's docstring)


def _lost_change(entry: bytes) -> tuple[str, Status, int] | None:
    """The consent, status and change number of a consent log entry; None if it is not one."""
    try:
        doc = json.loads(entry)
        if doc.get("format") != ENTRY_FORMAT or not isinstance(doc.get("consent_id"), str):
            return None
        seq = doc.get("seq")
        if type(seq) is not int or seq < 0:
            return None
        return doc["consent_id"], Status(doc["status"]), seq
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


async def repair(
    service: ConsentService, witness: MirrorReader, *, progress: Progress | None = None
) -> ConsentRepair | None:
    """Repair the consent log and re-apply the lost restrictive changes (see the module's
    docstring); None if the log already extends what the witness cosigned. The consent
    service must be stopped."""
    reapplied: dict[str, str] = {}
    left: list[str] = []

    async def within(s: AsyncSession, done: Repair) -> None:
        # Changed here since the restore: their entries are the ones the repair moved.
        changed = set(
            await s.scalars(
                select(m.ConsentEvent.consent_id)
                .where(m.ConsentEvent.leaf_index >= done.diverged)
                .distinct()
            )
        )
        await s.execute(
            update(m.ConsentEvent)
            .where(m.ConsentEvent.leaf_index >= done.diverged)
            .values(leaf_index=m.ConsentEvent.leaf_index + done.restored)
        )
        head = await logstore.get_log(s, LOG_ID)
        lost: dict[str, Status] = {}
        heard = 0
        for begin in range(done.diverged, done.witnessed, _PAGE):
            page = await logstore.entries(s, head, begin, min(done.witnessed, begin + _PAGE))
            for _, entry in page:
                change = _lost_change(entry)
                if change is not None:
                    cid, status, seq = change
                    lost[cid] = status  # the last lost change of each consent
                    heard = max(heard, seq)
        # Gateways may have heard the lost changes' numbers: number what is re-applied after
        # them, or a gateway resuming from one of them would never be sent it.
        await cstore.advance_head(s, heard)
        now = service.clock()
        for cid, status in lost.items():
            moved = await service.reapply(s, cid, status, now, changed_here=cid in changed)
            if moved is not None:
                reapplied[cid] = moved.value
            else:
                left.append(cid)

    done = await repair_log(service.sessions, LOG_ID, witness, progress=progress, within=within)
    if done is None:
        return None
    service.on_change()
    return ConsentRepair(done, reapplied, len(left))
