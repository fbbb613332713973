"""What the citizen portal shows: consents and timeline entries in words a citizen reads.

Identifiers become the names the global configuration gives them (member
names, service titles, purpose titles); JSON Pointers become field names.
Without a current configuration the identifiers are shown as they are: names
are a courtesy, the decisions stand without them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from audit.timeline import TimelineItem
from consent import models as m
from consent.artefact import ConsentView, Relation
from consent.lifecycle import TRANSITIONS, Action, Status
from core.errors import OutdatedGlobalConfError
from core.ids import ClientId, Cnic, MemberId, ServiceId
from registry.globalconf import GlobalConfView

__all__ = [
    "CITIZEN_ACTIONS",
    "Card",
    "Names",
    "Translate",
    "card",
    "field_label",
    "history_rows",
    "timeline_rows",
]

Translate = Callable[..., str]

#: What a citizen may do, in the order the buttons are shown.
CITIZEN_ACTIONS = (Action.APPROVE, Action.RESUME, Action.PAUSE, Action.REJECT, Action.REVOKE)


class Names:
    """Names of members, services and purposes from the global configuration, if held."""

    def __init__(self, view: Callable[[], GlobalConfView]) -> None:
        try:
            self._view: GlobalConfView | None = view()
        except OutdatedGlobalConfError:
            self._view = None

    def member(self, member: MemberId) -> str:
        info = self._view.members.get(member) if self._view else None
        return info.name if info else str(member)

    def client(self, client: ClientId) -> str:
        """The agency's name; its subsystem (which office) in brackets."""
        name = self.member(client.member)
        return f"{name} ({client.subsystem})" if client.subsystem else name

    def service(self, service: ServiceId) -> str:
        info = self._view.services.get(service) if self._view else None
        return info.title if info else str(service)

    def purpose(self, code: str | None) -> str:
        if code is None:
            return "—"
        info = self._view.purposes.get(code) if self._view else None
        return info.name if info else code


def field_label(pointer: str, t: Translate, known: set[str]) -> str:
    """``/permanent_address`` as "permanent address"; ``/address/city`` as "address › city".

    ``known`` holds the message keys of the language, so common fields read in it."""
    parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer.strip("/").split("/")]
    words = []
    for part in parts:
        key = f"portal.field.{part}"
        words.append(t(key) if key in known else part.replace("_", " ").replace("-", " "))
    return " › ".join(words)


def spoken_list(items: Sequence[str], t: Translate) -> str:
    """ "a, b and c" in the page's language."""
    if len(items) <= 1:
        return "".join(items)
    return t("portal.list.comma").join(items[:-1]) + t("portal.list.and") + items[-1]


@dataclass(frozen=True)
class Grant:
    service: str
    provider: str
    fields: list[str]


@dataclass(frozen=True)
class Card:
    """One consent as the portal shows it."""

    id: str
    subject: str
    for_ward: bool
    consumer: str
    grants: list[Grant]
    fields: str  # every field of every service, as one phrase
    providers: str
    purpose: str
    notice: str
    status: Status
    valid_from: dt.datetime
    expires_at: dt.datetime
    uses_left: int | None
    frequency: tuple[int, str] | None
    grantor: str | None
    actions: list[Action]


def card(consent: ConsentView, me: Cnic, names: Names, t: Translate, known: set[str]) -> Card:
    grants = [
        Grant(
            service=names.service(g.service),
            provider=names.member(g.service.member),
            fields=[field_label(f, t, known) for f in g.fields],
        )
        for g in consent.services
    ]
    every_field = list(dict.fromkeys(f for g in grants for f in g.fields))
    return Card(
        id=consent.id,
        subject=str(consent.subject),
        for_ward=consent.subject != me,
        consumer=names.client(consent.consumer),
        grants=grants,
        fields=spoken_list(every_field, t),
        providers=spoken_list(list(dict.fromkeys(g.provider for g in grants)), t),
        purpose=names.purpose(consent.purpose),
        notice=consent.notice,
        status=consent.status,
        valid_from=consent.valid_from,
        expires_at=consent.expires_at,
        uses_left=None if consent.use_limit is None else max(consent.use_limit - consent.uses, 0),
        frequency=(consent.frequency.max, consent.frequency.per.value)
        if consent.frequency
        else None,
        grantor=str(consent.grantor.cnic) if consent.grantor else None,
        actions=[a for a in CITIZEN_ACTIONS if (consent.status, a) in TRANSITIONS],
    )


@dataclass(frozen=True)
class HistoryRow:
    at: dt.datetime
    action: str
    status: Status
    by: str


def history_rows(events: Sequence[m.ConsentEvent], me: Cnic, t: Translate) -> list[HistoryRow]:
    def by(e: m.ConsentEvent) -> str:
        if e.actor_kind == "citizen":
            who = t("portal.actor.you") if e.actor == str(me) else e.actor
            if e.relation and e.relation != Relation.SELF.value:
                who += f" ({t('portal.relation.' + e.relation)})"
            return who
        return t(f"portal.actor.{e.actor_kind}")

    return [
        HistoryRow(at=e.at, action=t(f"portal.event.{e.action}"), status=Status(e.status), by=by(e))
        for e in events
    ]


@dataclass(frozen=True)
class TimelineRow:
    time: dt.datetime
    agency: str
    service: str
    provider: str
    purpose: str
    fields: str
    delivered: bool
    reason: str | None
    witnessed: bool


def timeline_rows(
    items: Sequence[TimelineItem], names: Names, t: Translate, known: set[str]
) -> list[TimelineRow]:
    def reason(item: TimelineItem) -> str | None:
        if item.outcome == "delivered":
            return None
        key = f"portal.denied.{item.error_type}"
        return t(key) if key in known else t("portal.denied.other", type=item.error_type)

    return [
        TimelineRow(
            time=i.time,
            agency=names.client(i.client),
            service=names.service(i.service),
            provider=names.member(i.service.member),
            purpose=names.purpose(i.purpose),
            fields=spoken_list([field_label(f, t, known) for f in i.fields_released], t)
            or t("portal.timeline.nothing"),
            delivered=i.outcome == "delivered",
            reason=reason(i),
            witnessed=i.witnessed,
        )
        for i in items
    ]
