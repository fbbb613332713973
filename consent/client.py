"""The gateway's side of the consent service: decisions with a cache kept honest by the feed.

A provider's gateway calls :meth:`ConsentClient.decide` on every exchange
that needs consent. Permits for consents without use limits are cached
(uses of the others must be counted centrally, so those always ask). The
client follows the revocation feed and drops a consent's cached permits
the moment a change to it arrives (:mod:`consent.cache`), so a revoke is
enforced within about the feed's delivery time (milliseconds; the test
asserts under a second). Before the provider releases an answer,
:meth:`ConsentClient.confirm` tells whether the consent changed since its
decision, and waits for the feed to vouch for what it has heard when the
backend took longer than ``cache_trust``.

Cached permits are used only while :mod:`consent.trust` vouches for them: a
heartbeat arrived within ``cache_trust`` seconds, and a signed round trip
(``POST /v1/feed/sync``, every ``sync_interval`` while the cache is in use)
sent less than ``cache_trust`` seconds ago named a newest change the feed
has since delivered. A feed held back in transit therefore stops the cache
being trusted instead of stretching a revoke. Otherwise the client asks the
service for every decision; when it has heard no heartbeat for
``feed_bound`` seconds it denies every decision (fail closed) until the
feed is back. Every answer is a JWS signed by the consent service and bound
to the request (:mod:`consent.messages`); anything else is a denial.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from pydantic import BaseModel, ValidationError

from consent import sse
from consent.cache import CacheKey, PermitCache
from consent.messages import (
    DECISION_TYP,
    FEED_TYP,
    PSEUDONYM_TYP,
    SYNC_TYP,
    DecisionAnswer,
    FeedMessage,
    PseudonymAnswer,
    SyncAnswer,
    body_digest,
)
from consent.rules import ConsentDenied, DecisionQuery, DenyReason, Permit
from consent.trust import CacheTrust
from core import jws
from core.errors import InvalidSignatureError, ServiceFailedError, ShahrahError
from core.ids import ClientId, Cnic
from core.keys import KeySet, PrivateKey
from core.web import describe_failure, read_up_to
from registry.globalconf import CentralServiceInfo
from registry.globalconf_client import GlobalConfClient
from registry.memberauth import sign_request

__all__ = [
    "ConsentClient",
    "ConsentUnavailableError",
    "FeedStatus",
    "Pseudonym",
    "stated_pseudonym",
]

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
MAX_ANSWER = 64 * 1024  # bytes
SYNC_IDLE = 2.0  # seconds without a decision after which the client stops syncing


class ConsentUnavailableError(ServiceFailedError):
    """The consent service could not be asked, or its answer did not verify."""


@dataclass(frozen=True, slots=True)
class Pseudonym:
    """A data subject's federation pseudonym (``value``) and, when it was looked up, the
    consent service's signed answer stating it (``statement``, a compact JWS of a
    :class:`consent.messages.PseudonymAnswer`, signed with key ``kid``), which anyone
    holding the service's public key can check with :func:`stated_pseudonym`."""

    value: str
    statement: str | None = None
    kid: str | None = None


def stated_pseudonym(statement: str, keys: KeySet, subject: Cnic) -> str:
    """The pseudonym of ``subject`` that the consent service's signed ``statement`` gives;
    InvalidSignatureError if it does not verify with ``keys`` or is about someone else."""
    try:
        answer = PseudonymAnswer.model_validate_json(
            jws.verify(statement, keys, typ=PSEUDONYM_TYP).payload
        )
    except ValidationError as e:
        raise InvalidSignatureError("the pseudonym statement is malformed") from e
    if answer.subject != subject:
        raise InvalidSignatureError("the pseudonym statement is about another subject")
    return answer.pseudonym


@dataclass(frozen=True)
class FeedStatus:
    connected: bool
    last_seq: int | None
    seconds_since_heartbeat: float
    feed_live: bool  # a heartbeat arrived within cache_trust
    cache_trusted: bool  # live, and vouched for by a recent sync the feed has caught up with
    failing_closed: bool
    cached_permits: int


@dataclass
class _Counters:
    hits: int = 0
    asked: int = 0
    invalidations: int = 0
    reconnects: int = 0
    syncs: int = 0  # sync round trips answered


@dataclass
class _Outage:
    """Failures in a row of one recurring round trip, so that the log says the news once: the
    first failure as a warning, the retries while it lasts at debug level, and the return."""

    what: str  # "consent feed", "consent feed sync"
    failures: int = 0

    def failed(self, reason: str) -> None:
        self.failures += 1
        level = logging.WARNING if self.failures == 1 else logging.DEBUG
        log.log(level, "%s lost: %s", self.what, reason)

    def recovered(self) -> None:
        if self.failures > 1:
            log.info("%s back after %d failed attempts", self.what, self.failures)
        self.failures = 0


class ConsentClient:
    """Decisions, pseudonyms and the revocation feed for one member's gateway.

    ``locate`` returns the consent service's entry from the current global
    configuration (URL and JWK Set); :meth:`for_globalconf` builds it from a
    :class:`GlobalConfClient`. ``key`` is one of ``member``'s registered
    signing keys: the service authenticates the gateway as that member.
    """

    def __init__(
        self,
        locate: Callable[[], CentralServiceInfo],
        *,
        key: PrivateKey,
        member: ClientId,
        feed_bound: float = 10.0,
        cache_trust: float = 0.75,
        cache_size: int = 100_000,
        timeout: float = 5.0,
        sync_interval: float | None = None,
    ) -> None:
        if not 0 < cache_trust < feed_bound:
            raise ValueError("cache_trust must be positive and shorter than feed_bound")
        if sync_interval is None:
            sync_interval = cache_trust / 3
        if not 0 < sync_interval < cache_trust:
            raise ValueError("sync_interval must be positive and shorter than cache_trust")
        self._locate = locate
        self._key = key
        self._member = member
        self.feed_bound = feed_bound  # seconds without a heartbeat before denying everything
        self.cache_trust = cache_trust  # seconds a heartbeat or a sync vouches for the cache
        # Seconds between sync round trips while the cache is in use; each vouches for
        # cache_trust from when it was sent, so a few fit in and trust does not lapse.
        self.sync_interval = sync_interval
        self._cache_size = cache_size
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._sync_limit = aiohttp.ClientTimeout(total=cache_trust)
        self._cache = PermitCache(cache_size)
        self._pseudonyms: OrderedDict[Cnic, Pseudonym] = OrderedDict()
        self._heartbeat_at = time.monotonic()  # the bound counts from start until the first one
        self._trust = CacheTrust(cache_trust)
        self._last_decide = -SYNC_IDLE
        self._sync_wake = asyncio.Event()
        self._catching_up = 0  # confirms waiting for a sync to vouch for the present
        self._trust_moved = asyncio.Event()  # set, and replaced, when trust may have grown
        self._sync_outage = _Outage("consent feed sync")
        self._last_seq: int | None = None
        self._connected = False
        self._stream_heard = False  # whether the current stream delivered a verified message
        self._feed_outage = _Outage("consent feed")
        self._http: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._sync_task: asyncio.Task[None] | None = None
        self.counters = _Counters()

    @classmethod
    def for_globalconf(cls, conf: GlobalConfClient, **kwargs: Any) -> ConsentClient:
        """A client that finds the consent service in the current global configuration."""
        return cls(lambda: conf.current().central_service("consent"), **kwargs)

    # --- life -------------------------------------------------------------------------------

    def use_key(self, key: PrivateKey) -> None:
        """Sign requests with ``key`` from now on (a gateway's key rotation, exchange.rotation):
        another of the member's registered keys."""
        self._key = key

    async def start(self) -> None:
        """Open the HTTP session and subscribe to the feed (in the background)."""
        if self._task is not None:
            return
        self._http = aiohttp.ClientSession()
        self._heartbeat_at = time.monotonic()
        self._task = asyncio.create_task(self._follow())
        self._sync_task = asyncio.create_task(self._keep_vouched())

    async def close(self) -> None:
        for task in (self._task, self._sync_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._sync_task = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def __aenter__(self) -> ConsentClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def status(self) -> FeedStatus:
        now = time.monotonic()
        return FeedStatus(
            connected=self._connected,
            last_seq=self._last_seq,
            seconds_since_heartbeat=now - self._heartbeat_at,
            feed_live=self._trust.live(now),
            cache_trusted=now < self._trust.until,
            failing_closed=now - self._heartbeat_at > self.feed_bound,
            cached_permits=len(self._cache),
        )

    # --- decisions --------------------------------------------------------------------------

    async def decide(self, query: DecisionQuery) -> Permit:
        """Permit with the released fields, or raise ConsentDenied with the reason."""
        now = time.monotonic()
        self._last_decide = now
        self._sync_wake.set()  # the cache is in use: keep it vouched for
        if now - self._heartbeat_at > self.feed_bound:
            raise self._feed_lost(query.consent_id, now)
        key = (query.consent_id, query.subject, query.consumer, query.service, query.purpose)
        if now < self._trust.until:
            hit = self._cache.hit(key, query.at, self._trust.heard_before(), now)
            if hit is not None:
                self.counters.hits += 1
                return hit
        return await self._ask(query, key)

    async def confirm(self, permit: Permit) -> None:
        """Raise the ConsentDenied the next decision would get if a change to the permit's
        consent has been heard since :meth:`decide` gave it (a revoke while the backend was
        answering), or if the feed failed closed meanwhile.

        It never asks for a decision again, since that would count a use twice; a consent
        paused and resumed meanwhile is in force again and passes. Usually it is local and
        cheap. But the feed may be held back in transit, so a permit released later than
        ``cache_trust`` after the moment it speaks for (``Permit.as_of``) could outlive a
        revoke the client has not heard yet. Then confirm waits, at most ``cache_trust`` +
        ``sync_interval``, for a sync the feed has caught up with to vouch for the present
        (as cached permits need), and refuses with ``unavailable`` if none does.
        """
        now = time.monotonic()
        if now - self._heartbeat_at > self.feed_bound:
            raise self._feed_lost(permit.consent_id, now)
        self._cache.check(permit)
        if now - self.cache_trust < max(permit.as_of, self._trust.heard_before()):
            return  # every change made before now - cache_trust has been checked
        await self._vouched_now(permit.consent_id)
        self._cache.check(permit)

    async def _vouched_now(self, consent_id: str) -> None:
        """Wait until a sync the feed has caught up with vouches for the present."""
        deadline = time.monotonic() + self.cache_trust + self.sync_interval
        self._catching_up += 1
        try:
            while (now := time.monotonic()) >= self._trust.until:
                self._sync_wake.set()  # again after each move: the feed may just be back
                if now >= deadline:
                    raise ConsentDenied(
                        DenyReason.UNAVAILABLE,
                        consent_id,
                        "the revocation feed has not caught up with the consent service "
                        "since the decision; cannot confirm the consent still holds",
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._trust_moved.wait(), deadline - now)
        finally:
            self._catching_up -= 1

    def _feed_lost(self, consent_id: str, now: float) -> ConsentDenied:
        return ConsentDenied(
            DenyReason.FEED_LOST,
            consent_id,
            f"this gateway has not heard the consent service's revocation feed for "
            f"{now - self._heartbeat_at:.0f} s (bound {self.feed_bound:g} s); "
            "failing closed until it is back",
        )

    async def _ask(self, query: DecisionQuery, key: CacheKey) -> Permit:
        self.counters.asked += 1
        body = json.dumps(
            {
                "consent_id": query.consent_id,
                "subject": str(query.subject),
                "consumer": str(query.consumer),
                "service": str(query.service),
                "purpose": query.purpose,
                "at": query.at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
                "nonce": secrets.token_urlsafe(16),
            }
        ).encode("utf-8")
        sent = time.monotonic()
        with self._cache.watch(query.consent_id) as watch:
            try:
                answer, _ = await self._post("/v1/decisions", body, DECISION_TYP, DecisionAnswer)
            except ConsentUnavailableError as e:
                raise ConsentDenied(DenyReason.UNAVAILABLE, query.consent_id, e.message) from e
        if answer.consent_id != query.consent_id:
            raise ConsentDenied(
                DenyReason.UNAVAILABLE, query.consent_id, "the answer is about another consent"
            )
        if answer.decision == "deny":
            try:
                reason = DenyReason(answer.reason or "")
            except ValueError:
                reason = DenyReason.UNAVAILABLE
            raise ConsentDenied(reason, query.consent_id, answer.message or reason.value)
        if answer.subject_pseudonym is None or answer.legal_basis is None:
            raise ConsentDenied(DenyReason.UNAVAILABLE, query.consent_id, "incomplete permit")
        permit = self._cache.keep(key, watch, answer, sent)
        self._keep_pseudonym(query.subject, answer.subject_pseudonym)
        self._sync_wake.set()  # permits may be cached now: keep them vouched for
        return permit

    # --- pseudonyms -------------------------------------------------------------------------

    async def pseudonym(self, subject: Cnic) -> Pseudonym:
        """The federation pseudonym of ``subject`` with the service's signed statement of it
        (stable, so cached). Looked up again when the cached one has no statement (a permit
        brought it) or its key has left the configuration: nobody could check it then."""
        known = self._pseudonyms.get(subject)
        if known is not None and known.statement is not None and known.kid in self._service()[1]:
            return known
        body = json.dumps({"subject": str(subject), "nonce": secrets.token_urlsafe(16)}).encode()
        answer, statement = await self._post("/v1/pseudonyms", body, PSEUDONYM_TYP, PseudonymAnswer)
        if answer.subject != subject:
            raise ConsentUnavailableError("the consent service's answer is about another subject")
        token = statement.decode("ascii")
        found = Pseudonym(answer.pseudonym, token, jws.key_id(token))
        self._pseudonyms[subject] = found
        self._trim_pseudonyms(subject)
        return found

    def known_pseudonym(self, subject: Cnic) -> str | None:
        """The pseudonym of ``subject`` if this client has it already (looked up, or brought
        by a permit); asks nobody."""
        known = self._pseudonyms.get(subject)
        return known.value if known is not None else None

    def _keep_pseudonym(self, subject: Cnic, pseudonym: str) -> None:
        if subject not in self._pseudonyms:
            self._pseudonyms[subject] = Pseudonym(pseudonym)
        self._trim_pseudonyms(subject)

    def _trim_pseudonyms(self, subject: Cnic) -> None:
        self._pseudonyms.move_to_end(subject)
        while len(self._pseudonyms) > self._cache_size:
            self._pseudonyms.popitem(last=False)

    # --- transport ----------------------------------------------------------------------------

    def _service(self) -> tuple[str, KeySet]:
        try:
            info = self._locate()
        except ShahrahError as e:
            raise ConsentUnavailableError(f"consent service unknown: {e.message}") from e
        return info.url.rstrip("/"), info.keys.keyset()

    def _headers(self, method: str, path: str, body: bytes) -> dict[str, str]:
        auth = sign_request(
            self._key, self._member, audience="consent", method=method, path=path, body=body
        )
        return {"Authorization": auth, "Content-Type": "application/json"}

    async def _post(
        self,
        path: str,
        body: bytes,
        typ: str,
        model: type[M],
        within: aiohttp.ClientTimeout | None = None,
    ) -> tuple[M, bytes]:
        """The verified answer to ``body``, and the signed answer as received."""
        if self._http is None:
            raise ConsentUnavailableError("the consent client is not started")
        base, keys = self._service()
        try:
            async with self._http.post(
                base + path,
                data=body,
                headers=self._headers("POST", path, body),
                timeout=within or self._timeout,
                allow_redirects=False,
            ) as resp:
                data = await read_up_to(resp.content, MAX_ANSWER + 1)
                if resp.status != 200:
                    raise ConsentUnavailableError(
                        f"consent service answered HTTP {resp.status}: {_error_message(data)}"
                    )
        except (aiohttp.ClientError, TimeoutError) as e:
            raise ConsentUnavailableError(
                f"cannot reach the consent service: {describe_failure(e)}"
            ) from e
        if len(data) > MAX_ANSWER:
            raise ConsentUnavailableError("the consent service's answer is too large")
        answer = _verified(data, keys, typ, model)
        if getattr(answer, "request_sha256", None) != body_digest(body):
            raise ConsentUnavailableError("the consent service's answer is for another request")
        return answer, data

    # --- the feed -----------------------------------------------------------------------------

    async def _follow(self) -> None:
        backoff = 0.05
        while True:
            self._stream_heard = False
            try:
                await self._stream()  # returns only by raising: the feed is endless
            except asyncio.CancelledError:
                raise
            except (ShahrahError, aiohttp.ClientError, TimeoutError, ValueError) as e:
                # Losing the feed is news; each retry while the service stays away is not.
                self._feed_outage.failed(
                    e.message if isinstance(e, ShahrahError) else describe_failure(e)
                )
            except Exception:
                # Whatever went wrong, keep trying: a dead follower would fail closed forever.
                log.exception("consent feed failed unexpectedly; reconnecting")
            finally:
                self._connected = False
                self._trust.lost()
            if self._stream_heard:
                backoff = 0.05  # the feed worked until it dropped: come back promptly
            self.counters.reconnects += 1
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def _stream(self) -> None:
        assert self._http is not None
        base, keys = self._service()
        nonce = secrets.token_urlsafe(24)
        path = f"/v1/feed?stream={nonce}"
        headers = self._headers("GET", path, b"")
        headers["Accept"] = "text/event-stream"
        # With nothing to resume from, the stream starts wherever the service's hub has read
        # up to, and changes before that point never come: permits cached until the stream
        # speaks (asked before, or in flight) cannot be vouched for by its heartbeats.
        fresh = self._last_seq is None
        if not fresh:
            headers["Last-Event-ID"] = str(self._last_seq)
        timeout = aiohttp.ClientTimeout(total=None, connect=5.0, sock_read=self.feed_bound)
        async with self._http.get(base + path, headers=headers, timeout=timeout) as resp:
            if resp.status != 200:
                raise ConsentUnavailableError(f"feed refused: HTTP {resp.status}")
            self._connected = True
            self._feed_outage.recovered()
            parser = sse.Parser()
            expected = 1
            while True:
                raw = await resp.content.readline()
                if not raw:
                    raise ConsentUnavailableError("the consent service closed the feed")
                if len(raw) > sse.MAX_LINE:
                    raise ConsentUnavailableError("feed line too long")
                message = parser.line(raw.decode("utf-8").rstrip("\r\n"))
                if message is None:
                    continue
                feed = _verified(message.data.encode("ascii"), keys, FEED_TYP, FeedMessage)
                if feed.stream != nonce or feed.n != expected:
                    raise ConsentUnavailableError(
                        "feed message out of order or from another stream"
                    )
                if fresh:
                    self._cache.clear()
                    fresh = False
                self._stream_heard = True
                expected += 1
                self._apply(feed)

    def _apply(self, message: FeedMessage) -> None:
        if message.kind == "event" and message.consent_id is not None:
            self._cache.heard(message.consent_id, message.status)
            self.counters.invalidations += 1
            self._last_seq = message.seq
        elif message.kind == "reset":
            self._cache.clear()
            self._last_seq = message.seq
        else:
            now = time.monotonic()
            self._heartbeat_at = now
            self._trust.heartbeat(now)
            if self._last_seq is None or message.seq > self._last_seq:
                self._last_seq = message.seq
        self._trust.delivered(self._last_seq)
        self._tell_waiting()

    # --- sync round trips ---------------------------------------------------------------------

    async def sync(self) -> int:
        """Ask the service for its newest change now, in one signed round trip limited to
        cache_trust (a later answer could vouch for nothing), and let the answer vouch for
        the cache once the feed has delivered that far (:mod:`consent.trust`). Returns the
        head; raises ConsentUnavailableError. The client does this by itself while the cache
        is in use."""
        sent = time.monotonic()
        body = json.dumps({"nonce": secrets.token_urlsafe(16)}).encode()
        answer, _ = await self._post("/v1/feed/sync", body, SYNC_TYP, SyncAnswer, self._sync_limit)
        self.counters.syncs += 1
        self._trust.answered(sent, answer.head)
        self._tell_waiting()
        return answer.head

    async def _keep_vouched(self) -> None:
        """Sync every ``sync_interval`` while the feed is connected and either permits are
        cached and decisions asked, or a confirm waits; one question at a time."""
        while True:
            in_use = self._cache and self._recently_asked()
            if not self._connected or not (in_use or self._catching_up):
                self._sync_wake.clear()
                await self._sync_wake.wait()
                continue
            started = time.monotonic()
            try:
                await self.sync()
            except ShahrahError as e:
                self._sync_outage.failed(f"{e.message}; the cache waits for it")
            except Exception:
                log.exception("consent feed sync failed unexpectedly")
            else:
                self._sync_outage.recovered()
            await asyncio.sleep(max(0.0, started + self.sync_interval - time.monotonic()))

    def _tell_waiting(self) -> None:
        if self._catching_up:
            self._trust_moved.set()
            self._trust_moved = asyncio.Event()

    def _recently_asked(self) -> bool:
        return time.monotonic() - self._last_decide < SYNC_IDLE


def _verified(data: bytes, keys: KeySet, typ: str, model: type[M]) -> M:
    try:
        verified = jws.verify(data, keys, typ=typ)
        return model.model_validate_json(verified.payload)
    except InvalidSignatureError as e:
        raise ConsentUnavailableError(f"consent service answer refused: {e.message}") from e
    except ValidationError as e:
        raise ConsentUnavailableError("consent service answer is malformed") from e


def _error_message(data: bytes) -> str:
    try:
        value = json.loads(data)
        return str(value.get("message", ""))[:300] if isinstance(value, dict) else ""
    except ValueError:
        return ""
