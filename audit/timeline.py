"""One citizen's timeline: every mirrored exchange about them, for the citizen portal.

The consent service asks (signed as itself, registry.serviceauth) with the
citizen's CNIC; the audit server turns it into the keyed pseudonym the
entries carry and answers newest first. Both gateways of an exchange log it
(the consumer's and the provider's); the two records of one exchange are
shown as one item, the provider's account first, since only it knows which
fields were released. The pair is merged when both records fall on the same
page, which they do unless a page ends between them.

A record speaks only for the member whose gateway's log holds it: a provider
record counts only from a gateway of the service's member, a consumer record
only from a gateway of the client's member. Otherwise a consumer's gateway
could log, under the same message id, a "provider" record saying the
exchange was denied and so hide its own access from the citizen. Records
from any other member's log are left out (and logged, without the subject).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from audit.events import AuditEvent
from audit.mirror import Found, SearchQuery, search
from core.errors import ShahrahError
from core.fields import AwareDatetime, ClientIdField, CnicField, ServiceIdField
from core.ids import GatewayId
from core.pseudonym import Pseudonymizer

__all__ = [
    "MAX_CURSOR",
    "MAX_ITEMS",
    "Timeline",
    "TimelineItem",
    "TimelineQuery",
    "merge",
    "timeline",
]

MAX_ITEMS = 200
MAX_CURSOR = 200  # characters; the cursors search issues are under 80

log = logging.getLogger(__name__)


class TimelineQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cnic: CnicField = Field(description="the citizen; pseudonymised here, never stored or logged")
    limit: Annotated[int, Field(ge=1, le=MAX_ITEMS)] = 50
    cursor: str | None = Field(
        None, max_length=MAX_CURSOR, description="next_cursor of the last page"
    )


class TimelineItem(BaseModel):
    time: AwareDatetime
    client: ClientIdField = Field(description="who asked: the consumer subsystem")
    service: ServiceIdField
    purpose: str | None
    legal_basis: str | None
    consent_id: str | None
    outcome: Literal["delivered", "denied"]
    error_type: str | None = Field(description="why it was denied (X-Road error type)")
    fields_released: list[str]
    witnessed: bool = Field(description="whether a witness-cosigned checkpoint includes it")


class Timeline(BaseModel):
    items: list[TimelineItem]
    next_cursor: str | None


async def timeline(s: AsyncSession, query: TimelineQuery, pseudonymize: Pseudonymizer) -> Timeline:
    """One page of the citizen's exchanges, newest first."""
    page = await search(
        s,
        SearchQuery(cnic=query.cnic, limit=query.limit, cursor=query.cursor),
        pseudonymize,
    )
    return Timeline(items=merge(page.results), next_cursor=page.next_cursor)


def merge(results: Sequence[Found]) -> list[TimelineItem]:
    """One item per exchange, in the order of ``results``, from the records that may speak."""
    merged: dict[tuple[str, ...], list[tuple[AuditEvent, bool]]] = {}
    for found in results:
        event = AuditEvent.model_validate(found.event)
        if not _speaks_for(found, event):
            continue
        # The request id, which both gateways record and the provider admits once: not the
        # X-Road-Id, which the calling system chooses and may repeat, so that a refusal
        # would stand for another exchange's delivery. A record without one (a refusal
        # before any envelope was made) is an item of its own.
        key = (
            ("request", event.request_id, str(event.client), str(event.service))
            if event.request_id
            else ("record", found.log_id, str(found.index))
        )
        merged.setdefault(key, []).append((event, found.witnessed is not None))
    items = []
    for records in merged.values():
        providers = [r for r in records if r[0].role == "provider"]
        if len(providers) <= 1:
            items.append(_item(records))
            continue
        # The provider admits a request id once, but refuses it again when it is replayed
        # (or, its replay cache purged, admits it anew): each of its records is an attempt
        # of its own, so a refused replay never stands for the delivery before it.
        consumers = [r for r in records if r[0].role != "provider"]
        items.extend(_item([p, *(consumers if n == 0 else [])]) for n, p in enumerate(providers))
    return items


def _speaks_for(found: Found, event: AuditEvent) -> bool:
    """Whether the log holding ``event`` belongs to the member its role speaks for.

    The log, not the record's own ``gateway`` field, says who wrote it: the
    witness only accepts a gateway's checkpoints signed by that gateway's member.
    """
    party = event.service.member if event.role == "provider" else event.client.member
    try:
        writer = GatewayId.parse(found.log_id).member
    except ShahrahError:
        writer = None  # a central service's log speaks for no member
    if writer == party:
        return True
    log.warning(
        "timeline: left out %s entry #%d, a %s record of %s about %s: only %s's gateways "
        "may log that role",
        found.log_id,
        found.index,
        event.role,
        event.client,
        event.service,
        party,
    )
    return False


def _item(records: list[tuple[AuditEvent, bool]]) -> TimelineItem:
    # Provider first: it decided on the consent and knows what it released.
    records.sort(key=lambda r: r[0].role != "provider")
    first = records[0][0]
    # The outcome is the provider's when it logged one; a consumer's claim cannot override it.
    account = [e for e, _ in records if e.role == first.role]
    denied = next((e for e in account if e.outcome == "denied"), None)
    return TimelineItem(
        time=first.time,
        client=first.client,
        service=first.service,
        purpose=next((e.purpose for e, _ in records if e.purpose), None),
        legal_basis=next((e.legal_basis for e, _ in records if e.legal_basis), None),
        consent_id=next((e.consent_id for e, _ in records if e.consent_id), None),
        outcome="denied" if denied else "delivered",
        error_type=denied.error_type if denied else None,
        fields_released=[] if denied else first.fields_released,
        witnessed=all(w for _, w in records),
    )
