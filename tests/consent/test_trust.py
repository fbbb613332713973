"""The cache-trust rule: however the feed, the questions and the answers are delayed, a cached
permit is never trusted past cache_trust after a change the gateway has not heard."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from consent.trust import CacheTrust

TRUST = 0.75
STEPS = st.lists(
    st.fixed_dictionaries(
        {
            "elapsed": st.integers(min_value=0, max_value=250).map(lambda ms: ms / 1000),
            "commits": st.integers(min_value=0, max_value=2),  # changes committed now
            "deliver": st.none() | st.floats(min_value=0, max_value=1),  # how far the feed gets
            "heartbeat": st.booleans(),
            "lost": st.sampled_from([False] * 9 + [True]),  # the stream ends
            "sync": st.booleans(),  # the sync question moves on by one stage
            "sync_first": st.booleans(),  # ... before this step's commits, or after them
            "drop": st.sampled_from([False] * 4 + [True]),  # its answer never comes
        }
    ),
    min_size=10,
    max_size=100,
)


@dataclass
class World:
    """The consent service's changes, the feed's progress and one sync question at a time."""

    now: float = 0.0
    commits: list[float] = field(default_factory=list)  # commit time of change n at [n - 1]
    delivered: int = 0  # the feed has delivered (and the client applied) changes 1..delivered
    sent: float | None = None  # when the question in flight was sent
    head: int | None = None  # the newest change when the service read it, after it arrived

    def advance_sync(self, trust: CacheTrust, drop: bool) -> None:
        if self.sent is None:
            self.sent = self.now
        elif self.head is None:
            self.head = len(self.commits)
        else:
            if not drop:
                trust.answered(self.sent, self.head)
            self.sent = self.head = None


@settings(max_examples=500)
@given(STEPS)
def test_trust_never_outlives_an_unheard_change_by_more_than_cache_trust(
    steps: list[dict[str, Any]],
) -> None:
    trust = CacheTrust(TRUST)
    w = World()
    for i, step in enumerate(steps):
        w.now += step["elapsed"]
        if step["sync"] and step["sync_first"]:
            w.advance_sync(trust, step["drop"])
        w.commits.extend([w.now] * step["commits"])
        if step["sync"] and not step["sync_first"]:
            w.advance_sync(trust, step["drop"])
        if step["deliver"] is not None:  # events in order, or a heartbeat naming a position
            w.delivered += round((len(w.commits) - w.delivered) * step["deliver"])
            trust.delivered(w.delivered)
        if step["heartbeat"]:
            trust.heartbeat(w.now)
        if step["lost"]:
            trust.lost()
        # Nothing changes until the next step: the last moment of trust before it is the
        # hardest to justify, with every change so far one moment older.
        upcoming = w.now + steps[i + 1]["elapsed"] if i + 1 < len(steps) else float("inf")
        last = min(trust.until, upcoming) - 1e-9
        if w.now <= last:
            unheard = list(range(w.delivered + 1, len(w.commits) + 1))
            assert all(w.commits[n - 1] >= last - TRUST for n in unheard), (
                f"trusted at {last:.3f} with change(s) {unheard} committed more than "
                f"{TRUST} s before and not heard"
            )


def test_a_sync_the_feed_has_caught_up_with_vouches_from_when_it_was_sent() -> None:
    trust = CacheTrust(TRUST)
    trust.delivered(5)
    trust.heartbeat(10.0)
    assert trust.live(10.5)
    trust.answered(9.9, 7)  # the feed is behind the head it names: not yet
    assert trust.until == 0.0
    trust.delivered(7)
    assert trust.until == 9.9 + TRUST  # from the sending, not the answer or the delivery
    trust.lost()
    assert trust.until == 0.0
