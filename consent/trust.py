"""When a gateway may answer decisions from its cache: the rule, without the I/O.

The revocation feed drops a consent's cached permits when a change to it
arrives; the question is how long the gateway may assume that nothing has
been left unsaid. Heartbeats alone cannot tell: they are bound to the stream
and numbered, but anyone on the network path can hold the whole stream back
by D seconds, heartbeats and revokes alike, and a heartbeat's signed time
cannot tell such a delay from clock skew.

So the gateway asks, in an authenticated round trip, "which change is the
newest now?" (``POST /v1/feed/sync``; a signed answer bound to the
question's nonce). Every change committed before the question left the
gateway is among the ones the answer counts, whatever the clocks say, since
the service read its head after the question arrived. Once the feed has
delivered up to that head, the gateway has heard every such change, and
may answer from its cache until ``cache_trust`` seconds after the question
was *sent*, by its own monotonic clock. A delayed stream, question or answer
only shortens that time, never lengthens it: no cached permit outlives a
revoke by more than ``cache_trust``.

Heartbeats still matter: the cache is trusted only while one arrived within
``cache_trust`` too (a stream whose service cannot read its database stops
vouching), and the client fails closed after ``feed_bound`` without one.
"""

from __future__ import annotations

from collections import deque

__all__ = ["CacheTrust"]

PENDING = 8  # answered syncs kept while the feed catches up to their head


class CacheTrust:
    """Tracks heartbeats, syncs and the feed's position; ``until`` is when trust ends.

    Times are the caller's monotonic clock in seconds. ``until`` is an attribute, not a
    method, so the cache's fast path is one comparison.
    """

    def __init__(self, cache_trust: float) -> None:
        self.cache_trust = cache_trust
        self.until = 0.0  # the cache is trusted while now < until
        self._live_until = 0.0  # a heartbeat vouches for the stream until then
        self._vouched_until = 0.0  # a sync whose head the feed has reached vouches until then
        self._delivered: int | None = None  # the feed has delivered every change up to this
        # (sent + cache_trust, head) of answered syncs whose head the feed has not reached.
        self._pending: deque[tuple[float, int]] = deque(maxlen=PENDING)

    def heartbeat(self, now: float) -> None:
        """A heartbeat of the current stream arrived."""
        self._live_until = now + self.cache_trust
        self._update()

    def lost(self) -> None:
        """The stream ended: nothing vouches for it until a new one speaks."""
        self._live_until = 0.0
        self._update()

    def delivered(self, seq: int) -> None:
        """Every change up to ``seq`` concerning this gateway has been applied to the cache
        (an event or heartbeat with that number; a reset, whose number may be lower)."""
        self._delivered = seq
        while self._pending and self._pending[0][1] <= seq:
            until, _ = self._pending.popleft()
            self._vouched_until = max(self._vouched_until, until)
        self._update()

    def answered(self, sent: float, head: int) -> None:
        """A sync question sent at ``sent`` was answered: the newest change was ``head``."""
        until = sent + self.cache_trust
        if until <= self._vouched_until:
            return
        if self._delivered is not None and head <= self._delivered:
            self._vouched_until = until
            self._update()
        else:
            self._pending.append((until, head))

    def heard_before(self) -> float:
        """While the cache is trusted, every change made before this time (the send time of
        the sync vouching for it, or earlier) has been delivered."""
        return self.until - self.cache_trust

    def live(self, now: float) -> bool:
        """Whether a heartbeat of the current stream arrived within cache_trust."""
        return now < self._live_until

    def _update(self) -> None:
        self.until = min(self._live_until, self._vouched_until)
