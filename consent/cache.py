"""What a gateway knows about consents: cached permits, and which changes it has heard.

:class:`consent.client.ConsentClient` asks the consent service and follows
its revocation feed; this is the memory in between. Permits of consents
without use limits are kept (LRU) and answer while the consent is in force
by every clock the service may have (:func:`consent.rules.cache_window`);
every change heard on the feed drops the consent's permits and spoils any
question about it still in flight, so a permit computed before a revoke is
never kept after it. Each permit handed out carries how many changes had
been heard when it was decided (``Permit.generation``), so :meth:`check`
can tell later, without asking anyone, whether its consent changed since.
Whether the cache may be used at all is :mod:`consent.trust`'s question.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

from consent.lifecycle import Status
from consent.messages import DecisionAnswer
from consent.rules import ConsentDenied, DenyReason, Permit, cache_window, state_reason
from core.ids import ClientId, Cnic, ServiceId

__all__ = ["CacheKey", "PermitCache", "Watch"]

#: (consent, subject, consumer, service, purpose): what a decision is about.
CacheKey = tuple[str, Cnic, ClientId, ServiceId, str]
CHANGES_KEPT = 100_000  # consents whose latest change heard is remembered for check()


@dataclass(frozen=True, slots=True)
class _Grant:
    """What a permit answer grants, whoever hands it out."""

    consent_id: str
    fields: tuple[str, ...]
    legal_basis: str
    pseudonym: str

    def permit(self, generation: int, as_of: float) -> Permit:
        return Permit(
            self.consent_id,
            list(self.fields),
            self.legal_basis,
            self.pseudonym,
            generation=generation,
            as_of=as_of,
        )


@dataclass(frozen=True, slots=True)
class _Cached:
    grant: _Grant
    answers_from: dt.datetime  # consent.rules.cache_window
    answers_until: dt.datetime
    # The same end on this process's monotonic clock: the time the consent had left by the
    # service's clock when it answered, counted from before the question left. A gateway
    # whose wall clock falls behind (within the envelope's freshness window) would otherwise
    # keep answering from a permit whose consent has expired.
    lasts_until: float


@dataclass(eq=False)
class Watch:
    """An outstanding question about one consent; a change heard meanwhile spoils it."""

    consent_id: str
    since: int  # changes heard when the question left
    spoiled: bool = False


class PermitCache:
    """Up to ``size`` permits (0 keeps none) and the changes heard about their consents."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._permits: OrderedDict[CacheKey, _Cached] = OrderedDict()
        self._by_consent: dict[str, set[CacheKey]] = {}
        self._watches: dict[str, list[Watch]] = {}
        # Changes heard so far (events and clears), when the last clear was, each consent's
        # latest change as (generation, status), and the newest generation forgotten to
        # keep that bounded.
        self._generation = 0
        self._cleared_at = 0
        self._changes: OrderedDict[str, tuple[int, str | None]] = OrderedDict()
        self._forgotten = 0

    def __len__(self) -> int:
        return len(self._permits)

    def hit(self, key: CacheKey, at: dt.datetime, as_of: float, now: float) -> Permit | None:
        """The kept permit for ``key`` if it may answer at gateway time ``at`` and monotonic
        time ``now``; the feed has delivered every change made before ``as_of``
        (``Permit.as_of``)."""
        kept = self._permits.get(key)
        if kept is None or not kept.answers_from <= at < kept.answers_until:
            return None
        if now >= kept.lasts_until:
            return None
        self._permits.move_to_end(key)
        return kept.grant.permit(self._generation, as_of)

    @contextlib.contextmanager
    def watch(self, consent_id: str) -> Iterator[Watch]:
        """Watch for changes to ``consent_id`` while a question about it is in flight."""
        watch = Watch(consent_id, self._generation)
        self._watches.setdefault(consent_id, []).append(watch)
        try:
            yield watch
        finally:
            watches = self._watches[consent_id]
            watches.remove(watch)
            if not watches:
                del self._watches[consent_id]

    def keep(self, key: CacheKey, watch: Watch, answer: DecisionAnswer, as_of: float) -> Permit:
        """The permit a verified ``answer`` gives, kept if it may be and nothing was heard
        about its consent while it was asked (sent at ``as_of``, monotonic: ``Permit.as_of``)."""
        assert answer.legal_basis is not None
        assert answer.subject_pseudonym is not None
        grant = _Grant(
            answer.consent_id,
            tuple(answer.released_fields),
            answer.legal_basis,
            answer.subject_pseudonym,
        )
        if (
            answer.cacheable
            and not watch.spoiled
            and answer.valid_from is not None
            and answer.expires_at is not None
            and self._size > 0
        ):
            left = (answer.expires_at - answer.issued_at).total_seconds()
            self._permits[key] = _Cached(
                grant, *cache_window(answer.valid_from, answer.expires_at), as_of + left
            )
            self._permits.move_to_end(key)
            self._by_consent.setdefault(answer.consent_id, set()).add(key)
            while len(self._permits) > self._size:
                old, dropped = self._permits.popitem(last=False)
                keys = self._by_consent.get(dropped.grant.consent_id)
                if keys is not None:
                    keys.discard(old)
                    if not keys:
                        del self._by_consent[dropped.grant.consent_id]
        return grant.permit(watch.since, as_of)

    def heard(self, consent_id: str, status: str | None) -> None:
        """Consent ``consent_id`` changed (to ``status``): drop its permits, spoil questions."""
        for key in self._by_consent.pop(consent_id, ()):
            self._permits.pop(key, None)
        for watch in self._watches.get(consent_id, ()):
            watch.spoiled = True
        self._generation += 1
        self._changes[consent_id] = (self._generation, status)
        self._changes.move_to_end(consent_id)
        while len(self._changes) > CHANGES_KEPT:
            _, (forgotten, _) = self._changes.popitem(last=False)
            self._forgotten = max(self._forgotten, forgotten)

    def clear(self) -> None:
        """The feed started over (a reset, or a fresh stream): what was kept is unvouched."""
        self._generation += 1
        self._cleared_at = self._generation
        self._permits.clear()
        self._by_consent.clear()
        for watches in self._watches.values():
            for watch in watches:
                watch.spoiled = True

    def check(self, permit: Permit) -> None:
        """Raise the ConsentDenied the next decision would get if a change to the permit's
        consent has been heard since it was given; a consent paused and resumed meanwhile is
        in force again and passes. What cannot be known (the feed started over, or the
        change was forgotten among too many) refuses."""
        cid = permit.consent_id
        since = permit.generation
        if self._cleared_at > since:
            raise ConsentDenied(
                DenyReason.UNAVAILABLE,
                cid,
                "the revocation feed started over since the decision; its state is unknown",
            )
        heard = self._changes.get(cid)
        if heard is None:
            if self._forgotten > since:
                raise ConsentDenied(
                    DenyReason.UNAVAILABLE,
                    cid,
                    "too many consent changes since the decision to know about this one",
                )
            return
        generation, status = heard
        if generation <= since:
            return
        try:
            reason = state_reason(Status(status or ""))
        except ValueError:
            reason = DenyReason.UNAVAILABLE
        if reason is not None:
            raise ConsentDenied(reason, cid, f"it is {status}")
