"""The audit writer: durable group commit, several writers on one log, checkpoints."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncEngine

from audit import merkle, store
from audit.errors import AuditUnavailableError
from audit.note import Checkpoint, Note, log_origin, verify_log_signature
from audit.writer import AuditWriter
from core.db import Sessions, create_engine, sessions, transaction
from core.errors import BadRequestError
from core.keys import PrivateKey
from tests.audit.events import GATEWAY, event
from tests.audit.trees import MemoryTree

KEY = PrivateKey.generate()
LOG = str(GATEWAY)


def writer(db: Sessions, **options: object) -> AuditWriter:
    return AuditWriter(db, LOG, KEY, origin=log_origin(LOG), **options)  # type: ignore[arg-type]


async def _stored(db: Sessions) -> tuple[store.LogHead, list[tuple[int, bytes]]]:
    async with transaction(db, write=False) as s:
        head = await store.get_log(s, LOG)
        return head, await store.entries(s, head, 0, head.size)


async def test_concurrent_appends_share_transactions_and_return_once_committed(
    db: Sessions, engine: AsyncEngine
) -> None:
    # Batches are committed by the writer's worker connection, an engine of its own.
    commits: list[int] = []

    def count(conn: Connection) -> None:
        if conn.engine is not engine.sync_engine:
            commits.append(1)

    sa_event.listen(Engine, "commit", count)
    try:
        async with writer(db) as w:
            events = [event(n) for n in range(200)]
            placed = await asyncio.gather(*(w.append(e) for e in events))
            head, rows = await _stored(db)  # visible to another transaction: committed
    finally:
        sa_event.remove(Engine, "commit", count)
    assert sorted(p.index for p in placed) == list(range(200))
    assert head.size == 200
    stored = dict(rows)
    for e, p in zip(events, placed, strict=True):
        assert stored[p.index] == e.entry()
        assert p.leaf_hash == merkle.leaf_hash(e.entry())
    assert head.root == MemoryTree([e for _, e in rows]).root(200)
    assert 1 <= len(commits) <= 10, f"{len(commits)} transactions for 200 concurrent appends"


async def test_one_transaction_per_append_when_batching_is_off(db: Sessions) -> None:
    async with writer(db, max_batch=1) as w:
        placed = await asyncio.gather(*(w.append(event(n)) for n in range(20)))
    assert sorted(p.index for p in placed) == list(range(20))


async def test_several_writers_on_one_log_never_collide(db_url: str) -> None:
    """Three gateway processes (separate engines, so separate connections) on one database."""
    engines = [create_engine(db_url, pool_size=2) for _ in range(3)]
    try:
        writers = [writer(sessions(e), max_batch=7) for e in engines]
        for w in writers:
            await w.start()
        placed = await asyncio.gather(*(writers[n % 3].append(event(n)) for n in range(150)))
        for w in writers:
            await w.close()
        head, rows = await _stored(sessions(engines[0]))
    finally:
        for e in engines:
            await e.dispose()
    assert sorted(p.index for p in placed) == list(range(150)) == [i for i, _ in rows]
    assert head.root == MemoryTree([e for _, e in rows]).root(150)


async def test_checkpoints_every_n_entries_never_further_apart(db: Sessions) -> None:
    async with writer(db, checkpoint_every=10, max_batch=25) as w:
        await asyncio.gather(*(w.append(event(n)) for n in range(25)))
        await asyncio.gather(*(w.append(event(n)) for n in range(25, 37)))
    async with transaction(db, write=False) as s:
        head = await store.get_log(s, LOG)
        rows = await store.checkpoints(s, head)
        tree = MemoryTree([e for _, e in await store.entries(s, head, 0, head.size)])
    assert [r.size for r in rows] == [10, 20, 30, 37]  # the last one signed on close
    for r in rows:
        note = Note.parse(r.note)
        assert Checkpoint.parse(note.text) == Checkpoint(log_origin(LOG), r.size, tree.root(r.size))
        verify_log_signature(note, log_origin(LOG), [KEY.public()])


async def test_a_checkpoint_is_signed_after_the_interval(db: Sessions) -> None:
    async with writer(db, checkpoint_interval=0.05) as w:
        await w.append(event(1))
        for _ in range(100):
            if w.status().checkpoint_size == 1:
                break
            await asyncio.sleep(0.02)
        assert w.status().checkpoint_size == 1


async def test_a_failed_commit_fails_the_append_and_stores_nothing(db: Sessions) -> None:
    async with writer(db) as w:
        await w.append(event(0))
        async with transaction(db) as s:
            await s.execute(text("ALTER TABLE audit_entry RENAME TO audit_entry_away"))
        try:
            with pytest.raises(AuditUnavailableError, match="could not store the record"):
                await asyncio.gather(w.append(event(1)), w.append(event(2)))
        finally:
            async with transaction(db) as s:
                await s.execute(text("ALTER TABLE audit_entry_away RENAME TO audit_entry"))
        assert (await w.append(event(3))).index == 1
    head, _ = await _stored(db)
    assert head.size == 2


async def test_events_of_another_gateway_and_closed_writers_are_refused(db: Sessions) -> None:
    w = writer(db)
    with pytest.raises(AuditUnavailableError, match="not open"):
        await w.append(event(0))
    async with w:
        with pytest.raises(BadRequestError, match="offered to log"):
            await w.append(event(0, gateway=GATEWAY.member.gateway("gw2")))
    with pytest.raises(ValueError, match="checkpoint_every"):
        writer(db, checkpoint_every=0)


async def test_other_logs_append_any_canonical_json(db: Sessions) -> None:
    """The consent service keeps its own log of its own events through the same writer."""
    async with AuditWriter(db, "consent", KEY, origin=log_origin("consent")) as w:
        first = await w.append_json({"b": [1, 2], "a": "granted"})
        second = await w.append_entry(b'{"a":"revoked","b":[]}')
        for bad in (b'{"b":1,"a":2}', b'{"a": 2}', b"not json", rb'{"a":"\u00e9"}'):
            with pytest.raises(BadRequestError, match="canonical JSON"):
                await w.append_entry(bad)
    assert (first.index, second.index) == (0, 1)
    assert first.leaf_hash == merkle.leaf_hash(b'{"a":"granted","b":[1,2]}')
