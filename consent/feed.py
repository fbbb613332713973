"""The revocation feed: consent changes pushed to gateways as server-sent events.

One :class:`FeedHub` per process reads new rows of ``consent_events`` (at
once when this process made the change, otherwise within its poll interval,
so several consent service processes on one PostgreSQL all serve every
change) and hands each to the streams of the members it concerns: the
providers of the consent's services and the consumer's member.

A stream (``GET /v1/feed``) is resumable: each change goes out with its
change number as the SSE ``id``; a gateway that reconnects sends
``Last-Event-ID`` (or ``?after=``) and first receives what it missed. After
any backlog, and then every heartbeat interval, the stream sends a
heartbeat saying "everything up to change n that concerns you has been
sent", but only while the hub itself is reading the database; a gateway
trusts its cache only while heartbeats arrive and a signed sync round trip
shows the feed has caught up (see :mod:`consent.trust`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from aiohttp import web

from consent import sse, store
from consent.messages import FEED_TYP, FeedMessage
from core import jws
from core.db import Sessions, transaction, utcnow
from core.errors import TooManyRequestsError
from core.keys import PrivateKey

__all__ = ["FeedHub", "stream"]

log = logging.getLogger(__name__)

QUEUE = 10_000  # changes a slow stream may lag before it is closed (it then resumes)
#: Streams one member may hold open at once: one per gateway process, with room for many.
MAX_STREAMS_PER_MEMBER = 32
BACKLOG_PAGE = 500


@dataclass(eq=False)
class _Subscription:
    member: str
    queue: asyncio.Queue[store.FeedEvent | None] = field(
        default_factory=lambda: asyncio.Queue[store.FeedEvent | None](QUEUE)
    )
    overflowed: bool = False

    def put(self, event: store.FeedEvent | None) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True


class FeedHub:
    """Reads changes from the database once per process and fans them out to streams."""

    def __init__(
        self,
        sessions: Sessions,
        *,
        poll_interval: float = 0.2,
        streams_per_member: int = MAX_STREAMS_PER_MEMBER,
    ) -> None:
        self.sessions = sessions
        self.poll_interval = poll_interval
        self.streams_per_member = streams_per_member
        self._streams: Counter[str] = Counter()
        self.head = 0
        self._wake = asyncio.Event()
        self._subs: set[_Subscription] = set()
        self._last_ok = 0.0
        self._closed = False

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def healthy(self) -> bool:
        """Whether the hub has read the database recently enough to vouch for a heartbeat."""
        return time.monotonic() - self._last_ok < max(1.0, 5 * self.poll_interval)

    def wake(self) -> None:
        """A change was committed by this process: read it now."""
        self._wake.set()

    async def start(self) -> None:
        async with transaction(self.sessions, write=False) as s:
            self.head = await store.head(s)
        self._last_ok = time.monotonic()

    async def run(self) -> None:
        """Poll until cancelled; a failing database only pauses heartbeats."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_interval)
            self._wake.clear()
            try:
                await self.poll()
            except Exception:
                log.exception("revocation feed cannot read changes; heartbeats pause")
                await asyncio.sleep(self.poll_interval)

    async def poll(self) -> None:
        while True:
            async with transaction(self.sessions, write=False) as s:
                events = await store.feed_after(s, self.head, limit=BACKLOG_PAGE)
            for event in events:
                for sub in self._subs:
                    if sub.member in event.members:
                        sub.put(event)
                self.head = event.seq
            self._last_ok = time.monotonic()
            if len(events) < BACKLOG_PAGE:
                return

    def close(self) -> None:
        """End every stream (server shutdown)."""
        self._closed = True
        for sub in self._subs:
            sub.put(None)

    @contextlib.contextmanager
    def stream_slot(self, member: str) -> Iterator[None]:
        """One of ``member``'s open streams, refused beyond ``streams_per_member``: every
        stream costs a signature each heartbeat, and a member opening thousands would slow
        everyone's feed (and so make other gateways fail closed)."""
        if self._streams[member] >= self.streams_per_member:
            raise TooManyRequestsError(
                f"{member} has {self.streams_per_member} feed streams open already: "
                "close one first (a gateway process needs one)"
            )
        self._streams[member] += 1
        try:
            yield
        finally:
            self._streams[member] -= 1
            if not self._streams[member]:
                del self._streams[member]

    @contextlib.contextmanager
    def subscribe(self, member: str) -> Iterator[_Subscription]:
        sub = _Subscription(member)
        self._subs.add(sub)
        try:
            yield sub
        finally:
            self._subs.discard(sub)


async def stream(
    request: web.Request,
    hub: FeedHub,
    key: PrivateKey,
    *,
    member: str,
    nonce: str,
    after: int | None,
    heartbeat: float,
) -> web.StreamResponse:
    """Serve one subscriber's stream until it disconnects or the server stops."""
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",  # proxies must not hold events back
        }
    )
    await response.prepare(request)
    counter = 0

    async def send(
        kind: Literal["event", "heartbeat", "reset"], seq: int, event: store.FeedEvent | None = None
    ) -> None:
        nonlocal counter
        counter += 1
        message = FeedMessage(
            stream=nonce,
            n=counter,
            kind=kind,
            seq=seq,
            consent_id=event.consent_id if event else None,
            status=event.status if event else None,
            at=event.at if event else utcnow(),
        )
        token = jws.sign_json(message.model_dump(mode="json"), key, typ=FEED_TYP)
        ident = str(seq) if kind == "event" else None
        await response.write(sse.encode(sse.Message(kind, token, ident)))

    try:
        with hub.subscribe(member) as sub:
            last = hub.head
            if after is not None:
                async with transaction(hub.sessions, write=False) as s:
                    newest = await store.head(s)
                if after > newest:
                    await send("reset", newest)
                else:
                    last = after
                    while True:
                        async with transaction(hub.sessions, write=False) as s:
                            backlog = await store.feed_after(
                                s, last, member=member, limit=BACKLOG_PAGE
                            )
                        for event in backlog:
                            await send("event", event.seq, event)
                            last = event.seq
                        if len(backlog) < BACKLOG_PAGE:
                            break
                    last = max(last, newest)
            if hub.healthy():
                await send("heartbeat", last)
            beat_due = time.monotonic() + heartbeat
            while not sub.overflowed:
                # A heartbeat is due every interval, busy or quiet: changes arriving more often
                # than that must not starve the gateway of them, or it would fail closed.
                if time.monotonic() >= beat_due and sub.queue.empty():
                    # The hub queues a change before it advances its head, with no pause in
                    # between: with our queue empty, every change up to its head has been sent.
                    if hub.healthy():
                        await send("heartbeat", max(last, hub.head))
                    beat_due = time.monotonic() + heartbeat
                if not sub.queue.empty():
                    item = sub.queue.get_nowait()
                else:
                    try:
                        wait = max(0.0, beat_due - time.monotonic())
                        item = await asyncio.wait_for(sub.queue.get(), timeout=wait)
                    except TimeoutError:
                        continue
                if item is None:
                    break
                if item.seq > last:
                    await send("event", item.seq, item)
                    last = item.seq
    except ConnectionResetError:
        pass  # the gateway went away; it resumes with Last-Event-ID when it comes back
    return response
