"""The consent service's rules: requests, the lifecycle, decisions and expiry.

Every action is one transaction. A change locks the consent's row, moves it
through :mod:`consent.lifecycle`, takes the next feed number, appends to the
consent log and records the event, all before commit; after commit the
revocation feed is woken so subscribed gateways hear of it at once.

Who may do what:

* a member requests consents only for its own subsystems and lists only
  theirs;
* a decision about a service is asked only by the member that provides it
  (its gateway);
* a citizen sees and acts on consents about themselves or a ward the
  operator registered; any other consent is "not found", so nobody learns
  that someone else's consent exists.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from consent import citizens, history, store
from consent import models as m
from consent.artefact import MAX_VALIDITY, ConsentPage, ConsentRequest, ConsentView
from consent.history import ConsentLog
from consent.lifecycle import FINAL, Action, IllegalTransitionError, Status, transition
from consent.rules import (
    CLOCK_SKEW,
    ConsentDenied,
    DecisionQuery,
    DenyReason,
    Permit,
    check_counts,
    evaluate,
)
from consent.schemafields import FieldChecker
from core.db import Sessions, transaction, utcnow
from core.errors import (
    AccessDeniedError,
    BadRequestError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    UnprocessableError,
)
from core.ids import ClientId, Cnic
from core.pseudonym import Pseudonymizer
from registry.globalconf import GlobalConfView

__all__ = ["ConsentService", "Decision"]

MAX_PAGE = 200
SWEEP_BATCH = 200

_LIVE = (Status.PENDING, Status.ACTIVE, Status.PAUSED)


@dataclass(frozen=True)
class Decision:
    permit: Permit
    consent: ConsentView


#: The changes a restore may re-apply: those that only ever take permission away.
_RESTRICTING = {
    Status.REVOKED: Action.REVOKE,
    Status.REJECTED: Action.REJECT,
    Status.PAUSED: Action.PAUSE,
    Status.EXPIRED: Action.EXPIRE,
}


def _not_found(cid: str) -> NotFoundError:
    return NotFoundError(f"no consent {cid!r} is visible to you", detail={"consent_id": cid})


@dataclass
class ConsentService:
    sessions: Sessions
    log: ConsentLog
    pseudonymize: Pseudonymizer
    conf: Callable[[], GlobalConfView]  # the verified global configuration; fails closed
    fields: FieldChecker
    clock: Callable[[], dt.datetime] = utcnow
    #: Called after every committed change (wakes the revocation feed).
    on_change: Callable[[], None] = field(default=lambda: None)

    # --- consumers ------------------------------------------------------------------------

    async def request(self, principal: ClientId, body: ConsentRequest) -> ConsentView:
        """Record a consumer's request (PENDING) after checking it against the federation."""
        if body.consumer.member != principal.member:
            raise ForbiddenError(
                f"{principal.member} may only request consents for its own subsystems, "
                f"not for {body.consumer}",
                detail={"field": "consumer"},
            )
        view = self.conf()
        await self._check_against_federation(view, body)
        now = self.clock()
        valid_from = body.valid_from or now
        if body.expires_at <= now:
            raise BadRequestError("expires_at is in the past", detail={"field": "expires_at"})
        if body.expires_at - valid_from > MAX_VALIDITY:
            raise BadRequestError(
                f"a consent may last at most {MAX_VALIDITY.days} days",
                detail={"field": "expires_at"},
            )
        cid = "cns-" + uuid.uuid4().hex
        row = m.Consent(
            id=cid,
            subject=str(body.subject),
            consumer=str(body.consumer),
            consumer_member=str(body.consumer.member),
            requested_by=str(principal),
            purpose=body.purpose,
            legal_basis=body.legal_basis.value,
            valid_from=valid_from,
            expires_at=body.expires_at,
            use_limit=body.use_limit,
            freq_max=body.frequency.max if body.frequency else None,
            freq_per=body.frequency.per.value if body.frequency else None,
            uses=0,
            notice=body.notice,
            status=Status.PENDING.value,
            version=0,
            requested_at=now,
            updated_at=now,
        )
        services = [
            m.ConsentService(
                consent_id=cid,
                position=i,
                service=str(g.service),
                provider=str(g.service.member),
                fields=json.dumps(list(g.fields)),
            )
            for i, g in enumerate(body.services)
        ]
        async with transaction(self.sessions) as s:
            s.add(row)
            await s.flush()
            s.add_all(services)
            await s.flush()
            result = await self._record(
                s, row, services, Action.REQUEST, "consumer", str(principal), None, now
            )
        self.on_change()
        return result

    async def _check_against_federation(self, view: GlobalConfView, body: ConsentRequest) -> None:
        try:
            view.require_active_client(body.consumer)
        except AccessDeniedError as e:
            raise UnprocessableError(e.message, detail={"field": "consumer"}) from e
        if body.purpose not in view.purposes:
            raise UnprocessableError(
                f"purpose {body.purpose!r} is not in the federation's catalogue",
                detail={"field": "purpose"},
            )
        allowed = set(view.allowed_services(body.consumer))
        for i, grant in enumerate(body.services):
            where = f"services.{i}"
            info = view.services.get(grant.service)
            if info is None or info.status != "active":
                raise UnprocessableError(
                    f"service {grant.service} is not registered",
                    detail={"field": f"{where}.service"},
                )
            if info.purposes and body.purpose not in info.purposes:
                raise UnprocessableError(
                    f"purpose {body.purpose!r} is not allowed for {grant.service} "
                    f"(allowed: {', '.join(info.purposes)})",
                    detail={"field": "purpose"},
                )
            if grant.service not in allowed:
                raise UnprocessableError(
                    f"{body.consumer} holds no access right on {grant.service}",
                    detail={"field": f"{where}.service"},
                )
            if info.response_schema is None:
                raise UnprocessableError(
                    f"{grant.service} has no registered response schema, so no field of it "
                    "can be consented to",
                    detail={"field": f"{where}.service"},
                )
            await self.fields.check(info.response_schema, grant.fields, where=f"{where}.fields")

    async def consumer_page(
        self,
        principal: ClientId,
        *,
        consumer: ClientId | None,
        subject: Cnic | None,
        status: Status | None,
        after: str | None,
        limit: int,
    ) -> ConsentPage:
        if consumer is not None and consumer.member != principal.member:
            raise ForbiddenError(f"{consumer} is not a subsystem of {principal.member}")
        async with transaction(self.sessions, write=False) as s:
            items, next_after = await store.page(
                s,
                consumer_member=str(principal.member),
                consumer=str(consumer) if consumer else None,
                subject=str(subject) if subject else None,
                status=status,
                after=after,
                limit=min(limit, MAX_PAGE),
            )
        return ConsentPage(items=items, next_after=next_after)

    async def consumer_get(self, principal: ClientId, cid: str) -> ConsentView:
        async with transaction(self.sessions, write=False) as s:
            row = await store.consent(s, cid)
            if row is None or row.consumer_member != str(principal.member):
                raise _not_found(cid)
            return (await store.views(s, [row]))[0]

    # --- gateways -------------------------------------------------------------------------

    async def decide(self, principal: ClientId, query: DecisionQuery) -> Decision:
        """Permit or ConsentDenied for one exchange; counts a use if the consent has limits."""
        if principal.member != query.service.member:
            raise ForbiddenError(
                f"only {query.service.member}, which provides {query.service}, may ask "
                "for decisions about it"
            )
        now = self.clock()
        if abs(query.at - now) > CLOCK_SKEW:
            raise BadRequestError(
                f"decision time {query.at.isoformat()} is more than "
                f"{int(CLOCK_SKEW.total_seconds())} s from the consent service's clock",
                detail={"field": "at"},
            )
        async with transaction(self.sessions, write=False) as s:
            row = await store.consent(s, query.consent_id)
            found = (await store.views(s, [row]))[0] if row is not None else None
        if found is None or not any(
            grant.service.member == query.service.member for grant in found.services
        ):
            # A consent none of the caller's services is in is none of its business: it is
            # told what it would be told of an id that does not exist.
            raise ConsentDenied(DenyReason.UNKNOWN_CONSENT, query.consent_id, "no such consent")
        try:
            fields = evaluate(found, query, now)
        except ConsentDenied as e:
            if e.reason is DenyReason.EXPIRED and found.status in _LIVE and now >= found.expires_at:
                await self._expire(found.id)
            raise
        if found.counted:
            found = await self._count_use(found, now)
        permit = Permit(
            consent_id=found.id,
            released_fields=fields,
            legal_basis=found.legal_basis.value,
            subject_pseudonym=self.pseudonymize(query.subject),
        )
        return Decision(permit, found)

    async def feed_head(self) -> int:
        """The number of the newest committed change, read now (for a gateway's sync)."""
        async with transaction(self.sessions, write=False) as s:
            return await store.head(s)

    async def _count_use(self, consent: ConsentView, now: dt.datetime) -> ConsentView:
        async with transaction(self.sessions) as s:
            if not await store.claim_use(s, consent.id, now):
                # Lost: find out why from the committed row.
                row = await store.consent(s, consent.id)
                current = (await store.views(s, [row]))[0] if row is not None else consent
                reason = {
                    Status.PAUSED: DenyReason.PAUSED,
                    Status.REVOKED: DenyReason.REVOKED,
                    Status.EXPIRED: DenyReason.EXPIRED,
                }.get(current.status)
                if reason is not None:
                    raise ConsentDenied(reason, consent.id, f"it is {current.status.value}")
                if now >= current.expires_at:
                    raise ConsentDenied(DenyReason.EXPIRED, consent.id, "it has just expired")
                check_counts(current, current.uses, 0)
                raise ConflictError("use could not be counted; try again")
            row = await store.consent(s, consent.id)
            assert row is not None
            in_window = 0
            if consent.frequency is not None:
                since = now - consent.frequency.per.length
                in_window = await store.count_uses_since(s, consent.id, since)
            # The total was checked by the claim; the window is checked under its row lock.
            check_counts(consent.model_copy(update={"use_limit": None}), 0, in_window)
            await store.add_use(s, consent.id, now)
            return (await store.views(s, [row]))[0]

    async def _expire(self, cid: str) -> None:
        async with transaction(self.sessions) as s:
            row = await store.consent(s, cid, lock=True)
            now = self.clock()
            if row is None or Status(row.status) not in _LIVE or row.expires_at > now:
                return
            await self._change(s, row, Action.EXPIRE, "system", "expiry", None, now)
        self.on_change()

    async def sweep(self) -> int:
        """Expire every consent whose time is up; returns how many changed."""
        done = 0
        while True:
            async with transaction(self.sessions, write=False) as s:
                due = await store.due_for_expiry(s, self.clock(), SWEEP_BATCH)
            for cid in due:
                await self._expire(cid)
            done += len(due)
            if len(due) < SWEEP_BATCH:
                return done

    # --- citizens -------------------------------------------------------------------------

    async def citizen_page(
        self,
        citizen: Cnic,
        *,
        subject: Cnic | None,
        status: Status | None,
        after: str | None,
        limit: int,
    ) -> ConsentPage:
        """Consents about the citizen and their wards (or one of them), newest first."""
        now = self.clock()
        async with transaction(self.sessions, write=False) as s:
            subjects = [str(citizen), *(await citizens.wards(s, citizen, now))]
            if subject is not None:
                if str(subject) not in subjects:
                    raise NotFoundError(f"{subject} is not you or one of your wards")
                subjects = [str(subject)]
            items, next_after = await store.page(
                s, subjects=subjects, status=status, after=after, limit=min(limit, MAX_PAGE)
            )
        return ConsentPage(items=items, next_after=next_after)

    async def citizen_get(self, citizen: Cnic, cid: str) -> ConsentView:
        async with transaction(self.sessions, write=False) as s:
            row = await self._visible(s, citizen, cid)
            return (await store.views(s, [row]))[0]

    async def citizen_history(self, citizen: Cnic, cid: str) -> list[m.ConsentEvent]:
        async with transaction(self.sessions, write=False) as s:
            await self._visible(s, citizen, cid)
            return await store.events_of(s, cid)

    async def citizen_act(self, citizen: Cnic, cid: str, action: Action) -> ConsentView:
        """Approve, reject, pause, resume or revoke, as the subject or for a ward."""
        async with transaction(self.sessions) as s:
            row = await self._visible(s, citizen, cid, lock=True)
            now = self.clock()
            relation = await citizens.authority(s, citizen, Cnic(row.subject), now)
            assert relation is not None  # _visible checked it
            if action is Action.APPROVE and now >= row.expires_at:
                raise ConflictError(
                    f"this request expired at {row.expires_at.isoformat()} and can no longer "
                    "be approved",
                    detail={"status": row.status, "action": action.value},
                )
            if action in (Action.APPROVE, Action.REJECT):
                row.grantor_cnic = str(citizen)
                row.grantor_relation = relation.value
                row.decided_at = now
            result = await self._change(
                s, row, action, "citizen", str(citizen), relation.value, now
            )
        self.on_change()
        return result

    async def _visible(
        self, s: AsyncSession, citizen: Cnic, cid: str, *, lock: bool = False
    ) -> m.Consent:
        row = await store.consent(s, cid, lock=lock)
        if row is None:
            raise _not_found(cid)
        relation = await citizens.authority(s, citizen, Cnic(row.subject), self.clock())
        if relation is None:
            raise _not_found(cid)
        return row

    # --- after a restore from a backup (consent.restore) ---------------------------------------

    async def reapply(
        self, s: AsyncSession, cid: str, status: Status, now: dt.datetime, *, changed_here: bool
    ) -> Status | None:
        """Take consent ``cid`` to ``status``, where a change a restore from a backup lost
        left it, if that takes permission away (revoked, rejected, expired, paused) and the
        lifecycle allows it from where the consent stands; a final status it does not allow
        directly is reached by the final move it does allow (a consent still pending is
        rejected). A consent ``changed_here`` since the restore and active now stays so: the
        citizen decided on what the restored service showed. Recorded as the system's, in the
        caller's transaction; the status it moved to, or None."""
        row = await store.consent(s, cid, lock=True)
        if row is None or status not in _RESTRICTING:
            return None
        current = Status(row.status)
        if changed_here and current is Status.ACTIVE:
            return None
        moves = [_RESTRICTING[status]]
        if status in FINAL:
            moves += [Action.REVOKE, Action.REJECT, Action.EXPIRE]
        for action in moves:
            try:
                moved = transition(current, action)
            except IllegalTransitionError:
                continue
            if action is Action.REJECT:
                row.decided_at = now
            await self._change(s, row, action, "system", "restore", None, now)
            return moved
        return None

    # --- recording changes ------------------------------------------------------------------

    async def _change(
        self,
        s: AsyncSession,
        row: m.Consent,
        action: Action,
        actor_kind: str,
        actor: str,
        relation: str | None,
        now: dt.datetime,
    ) -> ConsentView:
        row.status = transition(Status(row.status), action).value
        services = await store.services_of(s, row.id)
        return await self._record(s, row, services, action, actor_kind, actor, relation, now)

    async def _record(
        self,
        s: AsyncSession,
        row: m.Consent,
        services: list[m.ConsentService],
        action: Action,
        actor_kind: str,
        actor: str,
        relation: str | None,
        now: dt.datetime,
    ) -> ConsentView:
        seq = await store.next_seq(s)
        row.version = seq
        row.updated_at = now
        view = store.to_view(row, services)
        entry = history.entry(
            seq=seq,
            consent=view,
            action=action.value,
            actor_kind=actor_kind,
            # The log is shared with auditors: a citizen appears there only as a pseudonym.
            actor=self.pseudonymize(Cnic(actor)) if actor_kind == "citizen" else actor,
            relation=relation,
            at=now,
            pseudonymize=self.pseudonymize,
        )
        leaf = await self.log.append(s, entry)
        s.add(
            m.ConsentEvent(
                seq=seq,
                consent_id=row.id,
                action=action.value,
                status=row.status,
                actor_kind=actor_kind,
                actor=actor,
                relation=relation,
                at=now,
                entry=entry.decode("utf-8"),
                leaf_index=leaf,
            )
        )
        await s.flush()
        return view

    def pseudonym(self, subject: Cnic) -> str:
        return self.pseudonymize(subject)
