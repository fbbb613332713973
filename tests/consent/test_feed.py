"""The revocation feed and the gateway-side cache it keeps honest."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

import pytest

from consent import sse
from consent.client import ConsentClient
from consent.messages import FEED_TYP, FeedMessage
from consent.rules import ConsentDenied, DecisionQuery, DenyReason, Permit
from consent.state import STATE
from core import jws
from core.errors import OutdatedGlobalConfError
from core.ids import ClientId
from core.keys import KeySet, PrivateKey
from registry.globalconf import CentralServiceInfo, Jwks
from registry.memberauth import sign_request
from tests.consent.conftest import CONSENT_KEY, PLRA_KEY, Harness
from tests.consent.test_decisions import query
from tests.registry.federation import CIVIL, NADRA_KEY, PLRA_LAND


async def until(condition: Callable[[], bool], within: float = 3.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def caught_up(harness: Harness, client: ConsentClient) -> None:
    """Wait until ``client``'s feed is live and has delivered every change made so far.

    A fresh stream starts at the point the service's feed hub has read up to, which may lag
    the database by a poll: changes committed just before (the approval of the consent a
    test is about to use) can still arrive after the first heartbeat and, rightly, drop the
    permit the test has just cached.
    """
    head = await harness.feed_head()
    await until(lambda: client.status().feed_live and (client.status().last_seq or 0) >= head)


async def cached(client: ConsentClient, q: DecisionQuery) -> None:
    """Ask once (the permit is cached) and wait until a sync vouches for the cache."""
    await client.decide(q)
    await until(lambda: client.status().cache_trusted)


async def test_a_revoke_reaches_a_subscribed_gateway_within_a_second(harness: Harness) -> None:
    consent = await harness.active_consent()
    token = await harness.sign_in()
    async with harness.client() as client:
        await caught_up(harness, client)
        await cached(client, query(consent["id"]))
        for _ in range(100):
            await client.decide(query(consent["id"]))
        assert client.counters.hits == 100
        assert client.counters.asked == 1

        started = time.monotonic()
        status, _ = await harness.citizen(
            "POST", f"/v1/citizen/consents/{consent['id']}/revoke", token
        )
        assert status == 200
        denied: ConsentDenied | None = None
        while denied is None:
            try:
                await client.decide(query(consent["id"]))
            except ConsentDenied as e:
                denied = e
            await asyncio.sleep(0.001)
        elapsed = time.monotonic() - started
        assert denied.reason is DenyReason.REVOKED
        assert elapsed < 1.0, f"revoke took {elapsed:.3f} s to reach the gateway"
        assert client.counters.invalidations >= 1
        assert client.status().cached_permits == 0


@contextlib.asynccontextmanager
async def held_back(base: str, delay: float, *, only_feed: bool) -> AsyncIterator[str]:
    """A TCP relay to ``base`` that hands the service's bytes on ``delay`` seconds late, in
    order, altering nothing: what anyone on the network path can do, TLS or not. With
    ``only_feed`` only connections that open with ``GET /v1/feed`` are held back."""
    target = urlsplit(base)
    assert target.hostname is not None
    assert target.port is not None
    writers: list[asyncio.StreamWriter] = []

    async def relay(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(target.hostname, target.port)
        writers.extend((client_w, server_w))
        first = await client_r.read(65536)
        late = delay if not only_feed or first.startswith(b"GET /v1/feed") else 0.0
        server_w.write(first)

        async def up() -> None:
            while data := await client_r.read(65536):
                server_w.write(data)
                await server_w.drain()
            server_w.close()

        async def down() -> None:
            queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

            async def deliver() -> None:
                while True:
                    due, data = await queue.get()
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                    if not data:
                        client_w.close()
                        return
                    client_w.write(data)
                    await client_w.drain()

            deliverer = asyncio.create_task(deliver())
            try:
                while data := await server_r.read(65536):
                    queue.put_nowait((time.monotonic() + late, data))
                queue.put_nowait((time.monotonic() + late, b""))
                await deliverer
            finally:
                deliverer.cancel()

        await asyncio.gather(up(), down(), return_exceptions=True)

    server = await asyncio.start_server(relay, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()
        await asyncio.sleep(0)  # let the relays see their connections closed


@contextlib.asynccontextmanager
async def cached_behind_a_held_back_feed(
    harness: Harness, consent_id: str
) -> AsyncIterator[tuple[ConsentClient, Permit]]:
    """A client whose feed someone on the path holds back by 3 s (heartbeats and events
    alike, in order, unaltered), caught up, and a permit for ``consent_id`` it gave from
    its cache. Nothing has changed meanwhile: the held-back feed is as good as a prompt one."""
    async with held_back(harness.base, 3.0, only_feed=True) as url:
        info = harness.service_info.model_copy(update={"url": url})
        async with ConsentClient(lambda: info, key=NADRA_KEY, member=CIVIL) as client:
            head = await harness.feed_head()
            await until(
                lambda: client.status().feed_live and (client.status().last_seq or 0) >= head,
                within=10,
            )
            await cached(client, query(consent_id))
            permit = await client.decide(query(consent_id))
            assert client.counters.hits == 1
            yield client, permit


async def test_a_feed_held_back_in_transit_does_not_stretch_a_revoke(harness: Harness) -> None:
    """With the feed held back by 3 s, the cache must stop being trusted within cache_trust
    of a revoke: no permit may come from the cache later than that."""
    consent = await harness.active_consent()
    token = await harness.sign_in()
    async with cached_behind_a_held_back_feed(harness, consent["id"]) as (client, _):
        status, _ = await harness.citizen(
            "POST", f"/v1/citizen/consents/{consent['id']}/revoke", token
        )
        assert status == 200
        # Committed by now: the bound counts from the commit, which is no later.
        revoked = time.monotonic()
        last_hit = revoked
        denied: ConsentDenied | None = None
        while denied is None:
            now, hits = time.monotonic(), client.counters.hits
            try:
                await client.decide(query(consent["id"]))
            except ConsentDenied as e:
                denied = e
            if client.counters.hits > hits:
                last_hit = now
            assert now - revoked < 2.5, "the revoke was not enforced before the feed said so"
            await asyncio.sleep(0.005)
        assert denied.reason is DenyReason.REVOKED
        assert last_hit - revoked < client.cache_trust, (
            f"a cached permit answered {last_hit - revoked:.2f} s after the revoke"
        )


async def test_a_feed_held_back_during_a_slow_backend_call_stops_the_release(
    harness: Harness,
) -> None:
    """The consent is revoked while the backend takes 1.5 s to answer, and someone on the
    path holds the feed back by 3 s, so the gateway has not heard the revoke when the answer
    is ready. Released then, the answer would leave more than cache_trust after the revoke:
    confirm must refuse it instead (before the fix it let it go)."""
    consent = await harness.active_consent()
    token = await harness.sign_in()
    async with cached_behind_a_held_back_feed(harness, consent["id"]) as (client, permit):
        heard = client.counters.invalidations

        status, _ = await harness.citizen(
            "POST", f"/v1/citizen/consents/{consent['id']}/revoke", token
        )
        assert status == 200
        revoked = time.monotonic()
        await asyncio.sleep(1.5)  # the backend answering
        assert client.counters.invalidations == heard, "the feed was not held back"
        with pytest.raises(ConsentDenied) as caught:
            await client.confirm(permit)
        # Refused for want of a sync the feed has caught up with; only on a machine
        # slow enough for the held-back revoke to arrive first, for the revoke itself.
        assert caught.value.reason in (DenyReason.UNAVAILABLE, DenyReason.REVOKED)
        assert time.monotonic() - revoked < 3.0 or caught.value.reason is DenyReason.REVOKED


async def test_a_held_back_sync_answer_vouches_for_nothing(harness: Harness) -> None:
    """With every answer held back by longer than cache_trust, no sync can vouch for the
    cache: every decision goes to the service, and the syncs give up within cache_trust."""
    consent = await harness.active_consent()
    async with held_back(harness.base, 1.0, only_feed=False) as url:
        info = harness.service_info.model_copy(update={"url": url})
        async with ConsentClient(lambda: info, key=NADRA_KEY, member=CIVIL) as client:
            await until(lambda: client.status().feed_live, within=10)
            for _ in range(3):
                await client.decide(query(consent["id"]))  # asked, each through the delay
            status = client.status()
            assert status.cached_permits == 1
            assert not status.cache_trusted
            assert (client.counters.hits, client.counters.asked, client.counters.syncs) == (0, 3, 0)


async def test_heartbeats_keep_coming_while_changes_stream_without_pause(
    harness: Harness,
) -> None:
    """Changes concerning a provider more often than the heartbeat interval (any consumer
    with an access right can file requests) must not silence its heartbeats: the gateway
    would fail closed on a live feed."""
    consent = await harness.active_consent()
    # The bound is generous so that a machine pausing this process for a second (the suite
    # runs on every core) does not drop the stream; what is asserted is that heartbeats keep
    # arriving at all, every 0.1 s here, where before the fix none came while changes did.
    async with harness.client(cache_trust=0.5, feed_bound=5.0) as client:
        await caught_up(harness, client)
        stop = time.monotonic() + 2.0
        heard, since = 0, client.status().seconds_since_heartbeat
        while time.monotonic() < stop:
            await harness.request_consent()  # a change for NADRA's feed, every ~30 ms
            now = client.status().seconds_since_heartbeat
            heard += now < since  # a heartbeat arrived since the last look
            since = now
            await asyncio.sleep(0.02)
        assert client.status().connected
        assert heard >= 5, f"{heard} heartbeats in 2 s of streamed changes (one due each 0.1 s)"
        await client.decide(query(consent["id"]))  # not failing closed


async def test_the_cache_is_trusted_only_while_heartbeats_arrive(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    consent = await harness.active_consent()
    hub = harness.app[STATE].hub
    async with harness.client(cache_trust=0.3, feed_bound=0.8) as client:
        await caught_up(harness, client)
        await cached(client, query(consent["id"]))
        await client.decide(query(consent["id"]))
        assert client.counters.hits == 1

        healthy = hub.healthy
        hub.healthy = lambda: False  # the hub cannot read changes: it stops vouching
        await until(lambda: not client.status().cache_trusted)
        await client.decide(query(consent["id"]))  # still permitted, but asked centrally
        assert (client.counters.hits, client.counters.asked) == (1, 2)

        await until(lambda: client.status().failing_closed)
        with pytest.raises(ConsentDenied) as caught:
            await client.decide(query(consent["id"]))
        assert caught.value.reason is DenyReason.FEED_LOST
        assert "failing closed" in caught.value.message

        hub.healthy = healthy  # back: heartbeats resume and so does the cache
        await until(lambda: client.status().cache_trusted)
        await client.decide(query(consent["id"]))
        assert client.counters.hits == 2
    await asyncio.sleep(0.3)  # the service notices the gateway hung up: not an error
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_permits_cached_before_a_fresh_stream_are_not_trusted_by_it(
    harness: Harness,
) -> None:
    """A gateway asks (and caches) before its feed connects; the consent is revoked; the
    service's hub reads the revoke before the gateway subscribes. A fresh stream begins
    after that change and never carries it, so the permit cached before must not be
    vouched for by the stream's heartbeats."""
    consent = await harness.active_consent()
    other = await harness.active_consent()
    token = await harness.sign_in()
    test_task = asyncio.current_task()
    feed_blocked = True

    def locate() -> CentralServiceInfo:
        # Only the feed follower runs in another task: hold it back, let decisions through.
        if feed_blocked and asyncio.current_task() is not test_task:
            raise OutdatedGlobalConfError("held back by the test")
        return harness.service_info

    async with ConsentClient(locate, key=NADRA_KEY, member=CIVIL) as client:
        await client.decide(query(consent["id"]))  # asked and cached, feed not yet heard
        assert client.status().cached_permits == 1
        status, _ = await harness.citizen(
            "POST", f"/v1/citizen/consents/{consent['id']}/revoke", token
        )
        assert status == 200
        head = await harness.feed_head()
        await until(lambda: harness.app[STATE].hub.head >= head)
        feed_blocked = False
        await until(lambda: client.status().feed_live)
        # Another consent in use gets the cache vouched for by a sync (the stream is past the
        # revoke): the permit cached before the stream must not be among those it vouches for.
        await cached(client, query(other["id"]))
        with pytest.raises(ConsentDenied) as caught:
            await client.decide(query(consent["id"]))
        assert caught.value.reason is DenyReason.REVOKED


async def test_a_gateway_that_never_hears_the_feed_fails_closed(harness: Harness) -> None:
    consent = await harness.active_consent()
    info = harness.service_info.model_copy(update={"url": "http://127.0.0.1:1"})
    async with ConsentClient(
        lambda: info, key=NADRA_KEY, member=CIVIL, cache_trust=0.1, feed_bound=0.3
    ) as client:
        with pytest.raises(ConsentDenied) as caught:
            await client.decide(query(consent["id"]))
        assert caught.value.reason is DenyReason.UNAVAILABLE
        await asyncio.sleep(0.35)
        with pytest.raises(ConsentDenied) as caught:
            await client.decide(query(consent["id"]))
        assert caught.value.reason is DenyReason.FEED_LOST


async def test_answers_signed_by_another_key_are_refused(harness: Harness) -> None:
    consent = await harness.active_consent()
    impostor = CentralServiceInfo(
        name="consent",
        url=harness.base,
        keys=Jwks.model_validate(KeySet([PrivateKey.generate().public()]).to_jwks()),
    )
    async with ConsentClient(lambda: impostor, key=NADRA_KEY, member=CIVIL) as client:
        with pytest.raises(ConsentDenied) as caught:
            await client.decide(query(consent["id"]))
        assert caught.value.reason is DenyReason.UNAVAILABLE
        assert "refused" in caught.value.message
        await asyncio.sleep(0.3)
        assert not client.status().cache_trusted  # its feed never verifies either


async def _read_stream(
    harness: Harness, *, after: int | None, key: PrivateKey, client: object, count: int
) -> list[tuple[str | None, FeedMessage]]:
    nonce = "s" * 22
    path = f"/v1/feed?stream={nonce}" + (f"&after={after}" if after is not None else "")
    headers = {
        "Authorization": sign_request(
            key,
            client,
            audience="consent",
            method="GET",
            path=path,  # type: ignore[arg-type]
        )
    }
    got: list[tuple[str | None, FeedMessage]] = []
    parser = sse.Parser()
    async with harness.http.get(harness.base + path, headers=headers) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/event-stream"
        while len(got) < count:
            line = await asyncio.wait_for(resp.content.readline(), timeout=3)
            message = parser.line(line.decode().rstrip("\n"))
            if message is not None:
                verified = jws.verify(message.data, KeySet([CONSENT_KEY.public()]), typ=FEED_TYP)
                got.append((message.id, FeedMessage.model_validate_json(verified.payload)))
    return got


async def test_the_feed_resumes_after_a_change_number_and_filters_by_member(
    harness: Harness,
) -> None:
    first = await harness.active_consent()  # changes 1 (request) and 2 (approve)
    await harness.request_consent()  # change 3
    messages = await _read_stream(harness, after=1, key=NADRA_KEY, client=CIVIL, count=3)
    kinds = [(m.kind, m.seq, m.consent_id, ident) for ident, m in messages]
    assert kinds[0] == ("event", 2, first["id"], "2")
    assert kinds[1][:2] == ("event", 3)
    assert kinds[2][:2] == ("heartbeat", 3)
    assert [m.n for _, m in messages] == [1, 2, 3]
    assert {m.stream for _, m in messages} == {"s" * 22}
    assert json.dumps(messages[0][1].model_dump(mode="json")).count("35202") == 0  # no CNIC

    # PLRA neither provides nor consumes these consents: it hears only heartbeats.
    theirs = await _read_stream(harness, after=0, key=PLRA_KEY, client=PLRA_LAND, count=2)
    assert [m.kind for _, m in theirs] == ["heartbeat", "heartbeat"]

    # A resume point the service never issued: the gateway is told to drop its cache.
    reset = await _read_stream(harness, after=999, key=NADRA_KEY, client=CIVIL, count=1)
    assert (reset[0][1].kind, reset[0][1].seq) == ("reset", 3)


@pytest.mark.parametrize("last_id", ["\u00b2", "12a", "1" * 19])
async def test_a_malformed_last_event_id_is_a_precise_400(harness: Harness, last_id: str) -> None:
    """'²' is a digit to ``str.isdigit`` but not to ``int``: refused, not an internal error."""
    path = "/v1/feed?stream=" + "s" * 22
    headers = {
        "Authorization": sign_request(
            NADRA_KEY, CIVIL, audience="consent", method="GET", path=path
        ),
        "Last-Event-ID": last_id,
    }
    async with harness.http.get(harness.base + path, headers=headers) as resp:
        answer = await resp.json()
    assert (resp.status, answer["type"]) == (400, "Client.BadRequest"), answer
    assert "Last-Event-ID" in answer["message"]


async def test_a_feed_away_for_a_while_is_logged_once_and_its_return_noted(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """An operator reads one warning with the cause in words, not one per retry (every 2 s
    while the service stays away), and a line when the feed is back."""
    where = {"url": "http://127.0.0.1:1"}  # nothing listens there

    def info() -> CentralServiceInfo:
        return harness.service_info.model_copy(update=where)

    with caplog.at_level(logging.DEBUG, logger="consent.client"):
        async with ConsentClient(info, key=NADRA_KEY, member=CIVIL) as client:
            await until(lambda: client.counters.reconnects >= 4)
            lost = [r for r in caplog.records if "consent feed lost" in r.getMessage()]
            assert [r.levelno for r in lost[:4]] == [logging.WARNING] + [logging.DEBUG] * 3
            assert "127.0.0.1:1" in lost[0].getMessage()
            assert "ConnectionKey" not in lost[0].getMessage()  # words, not a repr
            where["url"] = harness.base
            await until(lambda: client.status().feed_live, within=5.0)
    back = [r for r in caplog.records if "consent feed back" in r.getMessage()]
    assert len(back) == 1
    assert back[0].levelno == logging.INFO


async def test_a_member_holds_only_so_many_feed_streams_open(harness: Harness) -> None:
    """Each open stream costs a signature every heartbeat: a member opening thousands slowed
    every other member's feed. Beyond the bound a stream is refused (429) before it starts;
    other members are not affected, and a closed stream frees its place."""
    harness.app[STATE].hub.streams_per_member = 2

    def opened(key: PrivateKey, client: ClientId, n: int) -> Any:
        path = f"/v1/feed?stream={'s' * 21}{n}"
        auth = sign_request(key, client, audience="consent", method="GET", path=path)
        return harness.http.get(harness.base + path, headers={"Authorization": auth})

    async with contextlib.AsyncExitStack() as held:
        for n in range(2):
            assert (await held.enter_async_context(opened(NADRA_KEY, CIVIL, n))).status == 200
        async with opened(NADRA_KEY, CIVIL, 2) as refused:
            assert refused.status == 429
            assert "2 feed streams open already" in (await refused.json())["message"]
        async with opened(PLRA_KEY, PLRA_LAND, 3) as theirs:
            assert theirs.status == 200
    await asyncio.sleep(0.3)  # the server sees the streams closed at its next write
    async with opened(NADRA_KEY, CIVIL, 4) as again:
        assert again.status == 200
