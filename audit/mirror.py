"""The audit server's mirror: a search index over every witnessed entry of every log.

The mirror keeps a full copy of each log it witnesses (audit.store, kind
``mirror``) and indexes each entry that is an audit event by gateway,
member, client, service, time, outcome and data subject. Searches answer
with the exact entries, their verification status (the smallest cosigned
checkpoint that includes them) and, on request, inclusion proofs against
the newest cosigned checkpoint of each log, so a console or the citizen
timeline can check every result itself.

A CNIC given to a search is turned into its pseudonym with the federation's
key here and goes no further: it is never stored or logged.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy import and_, func, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from audit import store
from audit.events import AuditEvent, Pseudonym
from audit.models import AuditCheckpoint, AuditEntry, AuditEventIndex, AuditLog
from audit.note import b64encode_hash
from audit.store import Appended, LogHead
from core.canonical import b64url, b64url_decode
from core.errors import BadRequestError
from core.fields import (
    AwareDatetime,
    ClientIdField,
    CnicField,
    GatewayIdField,
    MemberIdField,
    ServiceIdField,
)
from core.ids import GatewayId
from core.pseudonym import Pseudonymizer

__all__ = [
    "Filters",
    "Found",
    "SearchPage",
    "SearchQuery",
    "Witnessed",
    "index_entries",
    "parse_cursor",
    "search",
    "write_index",
]

log = logging.getLogger(__name__)

MAX_PAGE = 1000


class Filters(BaseModel):
    """Which events: every filter is optional, and they combine with AND."""

    model_config = ConfigDict(extra="forbid")

    gateway: GatewayIdField | None = None
    member: MemberIdField | None = None
    client: ClientIdField | None = None
    service: ServiceIdField | None = None
    outcome: Literal["delivered", "denied"] | None = None
    subject: Pseudonym | None = Field(None, description="the data subject's pseudonym")
    cnic: CnicField | None = Field(None, description="a CNIC, pseudonymised by the server")
    since: AwareDatetime | None = Field(None, description="events at or after this time")
    until: AwareDatetime | None = Field(None, description="events before this time")

    @model_validator(mode="after")
    def _one_subject(self) -> Filters:
        if self.subject is not None and self.cnic is not None:
            raise ValueError("give the subject's pseudonym or CNIC, not both")
        if self.since and self.until and self.since >= self.until:
            raise ValueError("since must be before until")
        return self

    def whole_logs(self) -> bool:
        """Whether the filters only choose logs (so whole logs match)."""
        return self.model_dump(exclude_none=True).keys() <= {"gateway", "member"}

    def conditions(self, pseudonymize: Pseudonymizer | None) -> list[Any]:
        """SQL conditions on the index; a CNIC is pseudonymised here and goes no further."""
        i = AuditEventIndex
        subject = self.subject
        if self.cnic is not None:
            if pseudonymize is None:
                raise BadRequestError("this server has no pseudonym key: search by subject")
            subject = pseudonymize(self.cnic)
        conditions: list[Any] = [
            column == str(value)
            for column, value in (
                (i.gateway, self.gateway),
                (i.member, self.member),
                (i.client, self.client),
                (i.service, self.service),
                (i.outcome, self.outcome),
                (i.subject, subject),
            )
            if value is not None
        ]
        if self.since is not None:
            conditions.append(i.time >= self.since)
        if self.until is not None:
            conditions.append(i.time < self.until)
        return conditions


class SearchQuery(Filters):
    """Filters plus paging; results come newest first."""

    limit: Annotated[int, Field(ge=1, le=MAX_PAGE)] = 100
    cursor: str | None = Field(None, max_length=200, description="next_cursor of the last page")
    with_proofs: bool = Field(False, description="add inclusion proofs to the results")


class Witnessed(BaseModel):
    """The smallest cosigned checkpoint that includes an entry."""

    tree_size: int
    root: str = Field(description="base64 RFC 6962 root hash")
    cosigned_at: AwareDatetime


class Found(BaseModel):
    log_id: str
    index: int
    leaf_hash: str = Field(description="base64 RFC 6962 leaf hash")
    entry: str = Field(description="the entry exactly as logged (canonical JSON)")
    event: dict[str, Any]
    witnessed: Witnessed | None = Field(description="null if no cosigned checkpoint covers it")
    proof: list[str] | None = Field(
        None, description="inclusion proof against checkpoints[log_id], when asked for"
    )


class SearchPage(BaseModel):
    results: list[Found]
    checkpoints: dict[str, str] = Field(
        default={}, description="newest cosigned checkpoint of each log, when proofs were asked for"
    )
    next_cursor: str | None


def index_entries(
    head: LogHead, gateway: GatewayId | None, entries: Sequence[bytes], placed: Sequence[Appended]
) -> list[dict[str, Any]]:
    """Index rows for the entries of a gateway's log that are audit events.

    The gateway and member come from the log, not the entry: a log speaks only
    for its own gateway. Entries that are not audit events stay unindexed (they
    are still mirrored, witnessed and exported).
    """
    if gateway is None:
        return []
    rows = []
    for entry, where in zip(entries, placed, strict=True):
        try:
            event = AuditEvent.model_validate_json(entry)
        except ValidationError:
            log.warning(
                "log %s entry %d is not an audit event; not indexed", head.name, where.index
            )
            continue
        rows.append(
            {
                "log_id": head.id,
                "idx": where.index,
                "time": event.time,
                "gateway": str(gateway),
                "member": str(gateway.member),
                "client": str(event.client),
                "service": str(event.service),
                "role": event.role,
                "outcome": event.outcome,
                "error_type": event.error_type,
                "subject": event.subject,
            }
        )
    return rows


async def write_index(s: AsyncSession, rows: list[dict[str, Any]]) -> None:
    if rows:
        await s.execute(insert(AuditEventIndex), rows)


def _cursor(time: dt.datetime, row_id: int) -> str:
    return b64url(json.dumps([time.isoformat(), row_id]).encode())


def parse_cursor(text: str) -> tuple[dt.datetime, int]:
    """The position a page's ``next_cursor`` names; BadRequestError for any other text."""
    try:
        when, row_id = json.loads(b64url_decode(text))
        parsed = dt.datetime.fromisoformat(when)
        # Row ids are positive signed 64-bit integers: anything else never came from here,
        # and a larger number would fail in the database driver instead of being refused.
        if type(row_id) is not int or not 0 < row_id < 2**63 or parsed.tzinfo is None:
            raise ValueError
        # In UTC, as the database compares it: a time at the calendar's edge (year 1 at
        # +01:00) has no UTC form, and failed in the driver instead of being refused here.
        return parsed.astimezone(dt.UTC), row_id
    except (BadRequestError, ValueError, TypeError, OverflowError) as e:
        raise BadRequestError(
            "cursor is not one this server issued", detail={"field": "cursor"}
        ) from e


async def search(
    s: AsyncSession, query: SearchQuery, pseudonymize: Pseudonymizer | None
) -> SearchPage:
    """One page of matching events, newest first, with their verification status."""
    i = AuditEventIndex
    conditions = query.conditions(pseudonymize)
    if query.cursor is not None:
        when, row_id = parse_cursor(query.cursor)
        conditions.append(or_(i.time < when, and_(i.time == when, i.id < row_id)))
    witnessed_size = (
        select(func.min(AuditCheckpoint.size))
        .where(
            AuditCheckpoint.log_id == i.log_id,
            AuditCheckpoint.size > i.idx,
            AuditCheckpoint.cosigned.is_not(None),
        )
        .scalar_subquery()
    )
    rows = (
        await s.execute(
            select(i.id, i.time, i.log_id, i.idx, AuditLog, AuditEntry, witnessed_size)
            .join(AuditLog, AuditLog.id == i.log_id)
            .join(AuditEntry, and_(AuditEntry.log_id == i.log_id, AuditEntry.idx == i.idx))
            .where(*conditions)
            .order_by(i.time.desc(), i.id.desc())
            .limit(query.limit + 1)
        )
    ).all()
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    witnesses = await _checkpoints(s, {(r[2], r[6]) for r in rows if r[6] is not None})
    page = SearchPage(
        results=[
            Found(
                log_id=r[4].name,
                index=r[3],
                leaf_hash=b64encode_hash(r[5].leaf_hash),
                entry=bytes(r[5].entry).decode("utf-8"),
                event=json.loads(r[5].entry),
                witnessed=witnesses.get((r[2], r[6])),
            )
            for r in rows
        ],
        next_cursor=_cursor(rows[-1][1], rows[-1][0]) if more else None,
    )
    if query.with_proofs:
        await _add_proofs(s, page, {r[4].name: store.head_of(r[4]) for r in rows})
    return page


async def _checkpoints(
    s: AsyncSession, keys: set[tuple[int, int]]
) -> dict[tuple[int, int], Witnessed]:
    found: dict[tuple[int, int], Witnessed] = {}
    for log_id, size in keys:
        row = await s.get(AuditCheckpoint, (log_id, size))
        if row is not None and row.cosigned_at is not None:
            found[(log_id, size)] = Witnessed(
                tree_size=size,
                root=b64encode_hash(row.root),
                cosigned_at=row.cosigned_at,
            )
    return found


async def _add_proofs(s: AsyncSession, page: SearchPage, heads: dict[str, LogHead]) -> None:
    for name, head in heads.items():
        latest = await store.latest_checkpoint(s, head, cosigned=True)
        if latest is not None and latest.cosigned is not None:
            page.checkpoints[name] = latest.cosigned
    for found in page.results:
        note = page.checkpoints.get(found.log_id)
        latest_size = int(note.split("\n")[1]) if note else 0
        if found.index < latest_size:
            proof = await store.inclusion_proof(s, heads[found.log_id], found.index, latest_size)
            found.proof = [b64encode_hash(h) for h in proof]
