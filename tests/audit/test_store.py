"""The Merkle log in SQL agrees with the in-memory tree, reads O(log n) rows, and refuses
out-of-range requests and damaged storage."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, event, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from audit import merkle, store
from audit.models import AuditEntry, AuditNode
from core.db import Sessions, WorkerConnection, transaction
from core.errors import BadRequestError, ConflictError, NotFoundError
from tests.audit.trees import MemoryTree

ENTRIES = [f'{{"n":{i}}}'.encode() for i in range(70)]


async def _fill(db: Sessions, batches: list[int]) -> store.LogHead:
    async with transaction(db) as s:
        await store.create_log(s, "PK/FED/NADRA/gw1", store.LOCAL, "shahrah/PK/FED/NADRA/gw1")
    done = 0
    for n in batches:
        async with transaction(db) as s:
            log = await store.get_log(s, "PK/FED/NADRA/gw1", lock=True)
            log, placed = await store.append(s, log, ENTRIES[done : done + n])
            assert [p.index for p in placed] == list(range(done, done + n))
            done += n
    return log


async def test_roots_and_proofs_match_the_rfc_tree_for_every_size(db: Sessions) -> None:
    log = await _fill(db, [1, 2, 13, 1, 17, 36])
    tree = MemoryTree(ENTRIES)
    assert (log.size, log.root) == (70, tree.root(70))
    async with transaction(db, write=False) as s:
        for size in range(0, 71, 3):
            assert await store.root_at(s, log, size) == tree.root(size)
        for size in (1, 5, 8, 33, 70):
            for index in range(0, size, 4):
                assert await store.inclusion_proof(s, log, index, size) == tree.inclusion(
                    index, size
                )
            for size1 in range(0, size + 1, 5):
                assert await store.consistency_proof(s, log, size1, size) == tree.consistency(
                    size1, size
                )
        assert await store.leaf_index(s, log, merkle.leaf_hash(ENTRIES[42])) == 42
        assert await store.leaf_index(s, log, b"\0" * 32) is None
        assert await store.entries(s, log, 68, 80) == [(68, ENTRIES[68]), (69, ENTRIES[69])]


async def test_a_proof_reads_logarithmically_many_rows(db: Sessions, engine: AsyncEngine) -> None:
    log = await _fill(db, [70])
    statements: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        async with transaction(db, write=False) as s:
            statements.clear()
            proof = await store.inclusion_proof(s, log, 37, 70)
            await store.consistency_proof(s, log, 37, 70)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)
    assert len(proof) == 7
    assert len([q for q in statements if "audit_" in q]) == 2  # one query per proof


async def test_out_of_range_requests_are_refused_with_the_reason(db: Sessions) -> None:
    log = await _fill(db, [10])
    async with transaction(db, write=False) as s:
        with pytest.raises(BadRequestError, match="tree_size 11 is outside the log"):
            await store.inclusion_proof(s, log, 0, 11)
        with pytest.raises(BadRequestError, match="leaf index 5 is not in a tree of 5"):
            await store.inclusion_proof(s, log, 5, 5)
        with pytest.raises(BadRequestError, match="first 7 must be between 0 and second 6"):
            await store.consistency_proof(s, log, 7, 6)
        with pytest.raises(NotFoundError, match="no audit log 'x'"):
            await store.get_log(s, "x")
    with pytest.raises(ConflictError, match="has origin"):
        async with transaction(db) as s:
            await store.create_log(s, "PK/FED/NADRA/gw1", store.LOCAL, "elsewhere")
    async with transaction(db) as s:
        log = await store.get_log(s, "PK/FED/NADRA/gw1", lock=True)
        with pytest.raises(BadRequestError, match="larger than"):
            await store.append(s, log, [b"x" * (store.MAX_ENTRY + 1)])


async def test_damaged_storage_is_reported_not_answered(db: Sessions) -> None:
    log = await _fill(db, [10])
    async with transaction(db) as s:
        await s.execute(delete(AuditNode).where(AuditNode.key == merkle.node_key((1, 1))))
        await s.execute(delete(AuditEntry).where(AuditEntry.idx == 9))
    async with transaction(db, write=False) as s:
        with pytest.raises(store.LogStorageError, match="1 tree node"):
            await store.inclusion_proof(s, log, 0, 8)
        with pytest.raises(store.LogStorageError, match="missing entries"):
            await store.entries(s, log, 0, 10)
    async with transaction(db) as s:
        await s.execute(update(AuditEntry).where(AuditEntry.idx == 5).values(leaf_hash=b"\0" * 32))
    async with transaction(db, write=False) as s:
        proof = await store.inclusion_proof(s, log, 4, 8)
    with pytest.raises(merkle.ProofError):
        merkle.verify_inclusion(
            merkle.leaf_hash(ENTRIES[4]), 4, 8, proof, MemoryTree(ENTRIES).root(8)
        )


_example = iter(range(10**6))


@settings(max_examples=15)
@given(
    batches=st.lists(
        st.tuples(st.booleans(), st.lists(st.binary(max_size=40), min_size=1, max_size=9)),
        min_size=1,
        max_size=6,
    )
)
async def test_the_worker_path_builds_the_same_tree_as_the_session_path(
    db: Sessions, batches: list[tuple[bool, list[bytes]]]
) -> None:
    """Appends through a worker connection and through a session, in any mix, store the very
    tree (every node and the head) that appending everything through the session stores."""
    n = next(_example)
    mixed, reference = f"PK/FED/NADRA/mixed{n}", f"PK/FED/NADRA/reference{n}"
    async with transaction(db) as s:
        for name in (mixed, reference):
            await store.create_log(s, name, store.LOCAL, f"shahrah/{name}")
    worker = WorkerConnection(db, name="test")
    try:
        for in_worker, entries in batches:
            if in_worker:
                await worker.write(lambda conn, e=entries: store.append_locked(conn, mixed, e))
            else:
                async with transaction(db) as s:
                    await store.append(s, await store.get_log(s, mixed, lock=True), entries)
            async with transaction(db) as s:
                await store.append(s, await store.get_log(s, reference, lock=True), entries)
    finally:
        await worker.close()
    everything = [e for _, entries in batches for e in entries]
    async with transaction(db, write=False) as s:
        heads = [await store.get_log(s, name) for name in (mixed, reference)]
        nodes = []
        for h in heads:
            rows = await s.execute(
                select(AuditNode.key, AuditNode.hash).where(AuditNode.log_id == h.id)
            )
            nodes.append({(key, bytes(value)) for key, value in rows})
        stored = [await store.entries(s, h, 0, h.size) for h in heads]
    assert heads[0].size == heads[1].size == len(everything)
    assert heads[0].root == heads[1].root == MemoryTree(everything).root(len(everything))
    assert nodes[0] == nodes[1]
    assert stored[0] == stored[1] == list(enumerate(everything))


async def test_the_worker_path_refuses_an_unknown_log_and_rolls_back(db: Sessions) -> None:
    worker = WorkerConnection(db, name="test")
    try:
        with pytest.raises(NotFoundError):
            await worker.write(lambda conn: store.append_locked(conn, "PK/FED/NADRA/none", [b"x"]))
        await _fill(db, [3])
        with pytest.raises(BadRequestError, match="larger than"):
            await worker.write(
                lambda conn: store.append_locked(
                    conn, "PK/FED/NADRA/gw1", [b"ok", b"x" * (store.MAX_ENTRY + 1)]
                )
            )
    finally:
        await worker.close()
    async with transaction(db, write=False) as s:
        assert (await store.get_log(s, "PK/FED/NADRA/gw1")).size == 3
