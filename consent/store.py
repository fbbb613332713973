"""Queries over the consent tables.

Rows become :class:`consent.artefact.ConsentView` here and nowhere else.
Functions take the caller's session; :mod:`consent.service` decides where a
transaction begins and ends and which rows it locks.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, func, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from consent import models as m
from consent.artefact import (
    ConsentView,
    Frequency,
    Grantor,
    LegalBasis,
    Period,
    Relation,
    ServiceGrant,
)
from consent.lifecycle import Status
from core.errors import BadRequestError
from core.ids import ClientId, Cnic, ServiceId

__all__ = [
    "FeedEvent",
    "add_use",
    "claim_use",
    "consent",
    "count_uses_since",
    "due_for_expiry",
    "events_of",
    "feed_after",
    "head",
    "next_seq",
    "page",
    "services_of",
    "to_view",
    "views",
]


def to_view(row: m.Consent, services: Sequence[m.ConsentService]) -> ConsentView:
    return ConsentView(
        id=row.id,
        subject=Cnic(row.subject),
        consumer=ClientId.parse(row.consumer),
        services=[
            ServiceGrant(service=ServiceId.parse(sv.service), fields=json.loads(sv.fields))
            for sv in sorted(services, key=lambda sv: sv.position)
        ],
        purpose=row.purpose,
        legal_basis=LegalBasis(row.legal_basis),
        valid_from=row.valid_from,
        expires_at=row.expires_at,
        use_limit=row.use_limit,
        frequency=(
            Frequency(max=row.freq_max, per=Period(row.freq_per))
            if row.freq_max is not None and row.freq_per is not None
            else None
        ),
        uses=row.uses,
        notice=row.notice,
        status=Status(row.status),
        grantor=(
            Grantor(cnic=Cnic(row.grantor_cnic), relation=Relation(row.grantor_relation or ""))
            if row.grantor_cnic is not None
            else None
        ),
        version=row.version,
        requested_at=row.requested_at,
        decided_at=row.decided_at,
        updated_at=row.updated_at,
    )


async def consent(s: AsyncSession, cid: str, *, lock: bool = False) -> m.Consent | None:
    """The row of consent ``cid``; ``lock`` takes its row lock (FOR UPDATE on PostgreSQL)."""
    query = select(m.Consent).where(m.Consent.id == cid)
    if lock:
        query = query.with_for_update()
    return await s.scalar(query)


async def services_of(s: AsyncSession, cid: str) -> list[m.ConsentService]:
    rows = await s.scalars(
        select(m.ConsentService)
        .where(m.ConsentService.consent_id == cid)
        .order_by(m.ConsentService.position)
    )
    return list(rows)


async def views(s: AsyncSession, rows: Sequence[m.Consent]) -> list[ConsentView]:
    """Views of ``rows`` with their services, in two queries."""
    if not rows:
        return []
    found = await s.scalars(
        select(m.ConsentService).where(m.ConsentService.consent_id.in_([r.id for r in rows]))
    )
    by_consent: dict[str, list[m.ConsentService]] = defaultdict(list)
    for sv in found:
        by_consent[sv.consent_id].append(sv)
    return [to_view(r, by_consent[r.id]) for r in rows]


async def page(
    s: AsyncSession,
    *,
    subjects: Sequence[str] | None = None,
    consumer_member: str | None = None,
    consumer: str | None = None,
    subject: str | None = None,
    status: Status | None = None,
    after: str | None = None,
    limit: int,
) -> tuple[list[ConsentView], str | None]:
    """Newest first, keyset-paginated by (requested_at, id); ``after`` is the last id seen.

    ``subjects`` and ``consumer_member`` say what the caller may see; ``after`` must be one
    of those consents too.
    """
    visible: list[ColumnElement[bool]] = []
    if subjects is not None:
        visible.append(m.Consent.subject.in_(list(subjects)))
    if consumer_member is not None:
        visible.append(m.Consent.consumer_member == consumer_member)
    query = select(m.Consent).where(*visible)
    if consumer is not None:
        query = query.where(m.Consent.consumer == consumer)
    if subject is not None:
        query = query.where(m.Consent.subject == subject)
    if status is not None:
        query = query.where(m.Consent.status == status.value)
    if after is not None:
        # Anyone else's consent as the cursor would tell that it exists and, page by page,
        # when it was requested: it is refused exactly like one that does not exist.
        last = await s.scalar(select(m.Consent).where(m.Consent.id == after, *visible))
        if last is None:
            raise BadRequestError(f"'after' names no consent in this list: {after!r}")
        query = query.where(
            tuple_(m.Consent.requested_at, m.Consent.id) < tuple_(last.requested_at, last.id)
        )
    query = query.order_by(m.Consent.requested_at.desc(), m.Consent.id.desc()).limit(limit + 1)
    rows = list(await s.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    return await views(s, rows), (rows[-1].id if more and rows else None)


async def next_seq(s: AsyncSession) -> int:
    """The next change number. The head's row lock is held until commit, so numbers are
    handed out in commit order on every database."""
    seq = await s.scalar(
        update(m.FeedHead)
        .where(m.FeedHead.id == 1)
        .values(seq=m.FeedHead.seq + 1)
        .returning(m.FeedHead.seq)
    )
    if seq is None:
        s.add(m.FeedHead(id=1, seq=1))
        await s.flush()
        return 1
    return int(seq)


async def advance_head(s: AsyncSession, seq: int) -> None:
    """Number the next change after ``seq`` at least: after a restore from a backup, past
    every change gateways may have heard of (consent.restore)."""
    await s.execute(
        update(m.FeedHead).where(m.FeedHead.id == 1, m.FeedHead.seq < seq).values(seq=seq)
    )


async def head(s: AsyncSession) -> int:
    """The number of the newest change (0 before any)."""
    return int(await s.scalar(select(m.FeedHead.seq).where(m.FeedHead.id == 1)) or 0)


async def events_of(s: AsyncSession, cid: str) -> list[m.ConsentEvent]:
    rows = await s.scalars(
        select(m.ConsentEvent).where(m.ConsentEvent.consent_id == cid).order_by(m.ConsentEvent.seq)
    )
    return list(rows)


@dataclass(frozen=True)
class FeedEvent:
    """One change as the revocation feed carries it, with the members it concerns."""

    seq: int
    consent_id: str
    status: str
    at: dt.datetime
    members: frozenset[str]  # providers of its services and the consumer's member


async def feed_after(
    s: AsyncSession, after: int, *, member: str | None = None, limit: int = 500
) -> list[FeedEvent]:
    """Changes numbered above ``after``, oldest first; only those concerning ``member`` if given."""
    query = select(m.ConsentEvent).where(m.ConsentEvent.seq > after)
    if member is not None:
        query = query.where(
            or_(
                m.ConsentEvent.consent_id.in_(
                    select(m.ConsentService.consent_id).where(m.ConsentService.provider == member)
                ),
                m.ConsentEvent.consent_id.in_(
                    select(m.Consent.id).where(m.Consent.consumer_member == member)
                ),
            )
        )
    events = list(await s.scalars(query.order_by(m.ConsentEvent.seq).limit(limit)))
    if not events:
        return []
    ids = list({e.consent_id for e in events})
    members: dict[str, set[str]] = defaultdict(set)
    for cid, provider in await s.execute(
        select(m.ConsentService.consent_id, m.ConsentService.provider).where(
            m.ConsentService.consent_id.in_(ids)
        )
    ):
        members[cid].add(provider)
    for cid, consumer_member in await s.execute(
        select(m.Consent.id, m.Consent.consumer_member).where(m.Consent.id.in_(ids))
    ):
        members[cid].add(consumer_member)
    return [
        FeedEvent(e.seq, e.consent_id, e.status, e.at, frozenset(members[e.consent_id]))
        for e in events
    ]


async def claim_use(s: AsyncSession, cid: str, now: dt.datetime) -> bool:
    """Count one use if the consent is active, unexpired and under its total limit, atomically.

    The conditional UPDATE takes the row lock; a concurrent claimant waits for
    it and then re-evaluates the condition on the committed row, so of two
    gateways racing for the last use exactly one sees a row updated.
    """
    result = await s.execute(
        update(m.Consent)
        .where(
            m.Consent.id == cid,
            m.Consent.status == Status.ACTIVE.value,
            m.Consent.expires_at > now,
            or_(m.Consent.use_limit.is_(None), m.Consent.uses < m.Consent.use_limit),
        )
        .values(uses=m.Consent.uses + 1)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def count_uses_since(s: AsyncSession, cid: str, since: dt.datetime) -> int:
    return int(
        await s.scalar(
            select(func.count())
            .select_from(m.ConsentUse)
            .where(m.ConsentUse.consent_id == cid, m.ConsentUse.at > since)
        )
        or 0
    )


async def add_use(s: AsyncSession, cid: str, at: dt.datetime) -> None:
    s.add(m.ConsentUse(consent_id=cid, at=at))
    await s.flush()


async def due_for_expiry(s: AsyncSession, now: dt.datetime, limit: int) -> list[str]:
    """Ids of consents still PENDING, ACTIVE or PAUSED whose time is up."""
    rows = await s.scalars(
        select(m.Consent.id)
        .where(
            and_(
                m.Consent.status.in_(
                    [Status.PENDING.value, Status.ACTIVE.value, Status.PAUSED.value]
                ),
                m.Consent.expires_at <= now,
            )
        )
        .order_by(m.Consent.expires_at)
        .limit(limit)
    )
    return list(rows)
