"""The engine factory, the UTC column type, transactions and migrations, on both databases."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy import select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import StatementError

from core.db import (
    DatabaseError,
    Sessions,
    WorkerConnection,
    _alembic_config,
    check,
    create_engine,
    sessions,
    transaction,
    upgrade,
)
from core.errors import BadRequestError
from registry import models as m


def test_models_and_migrations_agree(db_url: str) -> None:
    check(db_url)


async def test_sqlite_connections_use_wal_foreign_keys_and_full_sync(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
            assert (await conn.execute(text("PRAGMA synchronous"))).scalar() == 2  # FULL
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    "url",
    [
        "mysql://x/y",
        "sqlite://",
        "sqlite:///:memory:",
        "not a url at all",
        # A port that is not a number escaped as a ValueError, a traceback from the CLIs.
        "postgresql://gw:db-secret@dbhost:5432x/gateway",
    ],
)
def test_unsupported_urls_are_refused(url: str) -> None:
    with pytest.raises(BadRequestError) as refused:
        create_engine(url)
    assert "db-secret" not in refused.value.message


async def _fed(db: Sessions) -> None:
    async with transaction(db) as s:
        s.add(m.Federation(id=1, instance="PK", globalconf_validity=600, globalconf_refresh=60))


async def test_timestamps_come_back_aware_utc_and_naive_ones_are_refused(db: Sessions) -> None:
    await _fed(db)
    karachi = dt.timezone(dt.timedelta(hours=5))
    when = dt.datetime(2026, 3, 23, 9, 0, tzinfo=karachi)
    async with transaction(db) as s:
        s.add(m.Member(member_class="FED", member_code="NADRA", name="N", created_at=when))
    async with transaction(db, write=False) as s:
        row = await s.scalar(select(m.Member))
        assert row is not None
        assert row.created_at == when
        assert row.created_at.utcoffset() == dt.timedelta(0)
    with pytest.raises(StatementError, match="naive"):
        async with transaction(db) as s:
            s.add(
                m.Member(
                    member_class="FED",
                    member_code="X",
                    name="N",
                    created_at=dt.datetime(2026, 1, 1),
                )
            )


async def test_a_failed_transaction_leaves_nothing_behind(db: Sessions) -> None:
    await _fed(db)

    async def fail_after_writing() -> None:
        async with transaction(db) as s:
            s.add(m.Member(member_class="FED", member_code="NADRA", name="N"))
            await s.flush()
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await fail_after_writing()
    async with transaction(db, write=False) as s:
        assert (await s.scalar(select(m.Member))) is None


async def test_foreign_keys_are_enforced(db: Sessions) -> None:
    await _fed(db)
    with pytest.raises(Exception, match=r"(?i)foreign key"):
        async with transaction(db) as s:
            s.add(m.Subsystem(member_id=999, code="x"))


@contextlib.asynccontextmanager
async def _sqlite(tmp_path: Path, *, pool_size: int) -> AsyncIterator[Sessions]:
    """A migrated SQLite database file holding the federation row."""
    url = f"sqlite:///{tmp_path / 'own.db'}"
    upgrade(url)
    engine = create_engine(url, pool_size=pool_size)
    try:
        db = sessions(engine)
        await _fed(db)
        yield db
    finally:
        await engine.dispose()


async def test_sqlite_write_transactions_wait_instead_of_failing(tmp_path: Path) -> None:
    """Read-then-write from many tasks: with BEGIN IMMEDIATE none fails with 'locked'
    and no increment is lost."""
    async with _sqlite(tmp_path, pool_size=5) as db:

        async def bump() -> None:
            async with transaction(db) as s:
                value = await s.scalar(select(m.Federation.globalconf_refresh))
                await asyncio.sleep(0.01)
                await s.execute(update(m.Federation).values(globalconf_refresh=value + 1))

        await asyncio.gather(*(bump() for _ in range(20)))
        async with transaction(db, write=False) as s:
            assert await s.scalar(select(m.Federation.globalconf_refresh)) == 80


async def test_sqlite_refuses_a_write_in_a_read_transaction_at_once(tmp_path: Path) -> None:
    """Without query_only such a write fails only when another writer holds the lock; the
    next write transaction on the same pooled connection writes again."""
    async with _sqlite(tmp_path, pool_size=1) as db:
        with pytest.raises(Exception, match="readonly database"):
            async with transaction(db, write=False) as s:
                await s.execute(update(m.Federation).values(globalconf_refresh=7))
        async with transaction(db) as s:
            await s.execute(update(m.Federation).values(globalconf_refresh=9))
        async with transaction(db, write=False) as s:
            assert await s.scalar(select(m.Federation.globalconf_refresh)) == 9


async def test_a_worker_keeps_its_connection_and_replaces_it_after_a_failure(db: Sessions) -> None:
    """The worker's transactions share one connection; one that fails rolls back and leaves
    nothing behind, and the next checks a connection out of the pool again and commits."""
    await _fed(db)
    worker = WorkerConnection(db, name="test")

    def bump(conn: Connection) -> int:
        conn.execute(
            update(m.Federation).values(globalconf_refresh=m.Federation.globalconf_refresh + 1)
        )
        return id(conn.connection.dbapi_connection)

    def bump_and_fail(conn: Connection) -> None:
        bump(conn)
        raise RuntimeError("boom")

    try:
        first, second = await worker.write(bump), await worker.write(bump)
        assert first == second
        with pytest.raises(RuntimeError):
            await worker.write(bump_and_fail)
        await worker.write(bump)
    finally:
        await worker.close()
    async with transaction(db, write=False) as s:
        assert await s.scalar(select(m.Federation.globalconf_refresh)) == 60 + 3


def test_the_pin_index_migration_names_gateways_that_share_a_certificate(
    tmp_path: Path,
) -> None:
    """A registry holding two gateways with one certificate (made before the registry
    checked) cannot take the unique index: the upgrade says why instead of failing on SQL."""
    from alembic import command

    url = f"sqlite:///{tmp_path / 'old.db'}"
    config = _alembic_config(url)
    command.upgrade(config, "reg0004")
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO registry_members (id, member_class, member_code, name, status, "
                "created_at) VALUES (1, 'FED', 'NADRA', 'NADRA', 'active', '2026-11-29')"
            )
        )
        for code in ("gw1", "gw2"):
            conn.execute(
                text(
                    "INSERT INTO registry_gateways (member_id, code, address, tls_certificate, "
                    "tls_sha256, status, created_at) VALUES (1, :code, 'https://x:1', 'pem', "
                    ":pin, 'active', '2026-11-29')"
                ),
                {"code": code, "pin": "ab" * 32},
            )
    engine.dispose()
    with pytest.raises(
        RuntimeError, match=r"gateways share TLS certificates \(abababababababab… \(2"
    ):
        upgrade(url)


def test_upgrading_a_registry_keeps_which_subsystems_each_gateway_serves(tmp_path: Path) -> None:
    """On SQLite, a migration that must rebuild ``registry_gateways`` (adding a constraint
    does) drops the old table with foreign keys on, and the cascade deletes every
    gateway's clients: after such an upgrade no gateway would serve anything. The renewal
    columns are added without a rebuild; this keeps any later change honest too."""
    from alembic import command

    url = f"sqlite:///{tmp_path / 'old.db'}"
    command.upgrade(_alembic_config(url), "reg0005")
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        for statement in (
            "INSERT INTO registry_members (id, member_class, member_code, name, status, "
            "created_at) VALUES (1, 'FED', 'NADRA', 'NADRA', 'active', '2026-11-29')",
            "INSERT INTO registry_subsystems (id, member_id, code, name, status, created_at) "
            "VALUES (1, 1, 'civil-registry', '', 'active', '2026-11-29')",
            "INSERT INTO registry_gateways (id, member_id, code, address, tls_certificate, "
            "tls_sha256, status, created_at) VALUES (1, 1, 'gw1', 'https://x:1', 'pem', "
            ":pin, 'active', '2026-11-29')",
            "INSERT INTO registry_gateway_clients (gateway_id, subsystem_id) VALUES (1, 1)",
        ):
            conn.execute(text(statement), {"pin": "ab" * 32} if ":pin" in statement else {})
    engine.dispose()
    upgrade(url)
    engine = sqlalchemy.create_engine(url)
    with engine.connect() as conn:
        served = conn.execute(text("SELECT gateway_id, subsystem_id FROM registry_gateway_clients"))
        assert served.all() == [(1, 1)]
    engine.dispose()


def _registry_at_reg0006_with_schemas(url: str, *, broken: bool = False) -> None:
    """Schemas 1 and 3 (2 permanently deleted before), 3 referring to 1, each a version."""
    from alembic import command

    command.upgrade(_alembic_config(url), "reg0006")
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        for id_ in (1, 3):
            conn.execute(
                text(
                    "INSERT INTO registry_schemas (id, fingerprint, identity, schema_type, "
                    "schema_text, \"references\", created_at) VALUES (:id, :f, :i, 'JSON', "
                    "'{}', '[]', '2026-11-29')"
                ),
                {"id": id_, "f": f"{id_:064}", "i": f"{id_:064}"},
            )
            conn.execute(
                text(
                    "INSERT INTO registry_schema_versions (subject, version, schema_id, "
                    "deleted, created_at) VALUES (:s, 1, :id, 0, '2026-11-29')"
                ),
                {"s": f"pk.s{id_}", "id": id_},
            )
        conn.execute(
            text(
                "INSERT INTO registry_schema_references (schema_id, name, subject, version) "
                "VALUES (3, 'a.json', 'pk.s1', 1)"
            )
        )
        if broken:  # a row SQLite took with foreign keys off (their default)
            conn.execute(
                text(
                    "INSERT INTO registry_schema_versions (subject, version, schema_id, "
                    "deleted, created_at) VALUES ('pk.lost', 1, 99, 0, '2026-11-29')"
                )
            )
    engine.dispose()


def test_upgrading_keeps_schemas_and_never_gives_an_id_again(tmp_path: Path) -> None:
    """The upgrade that stops SQLite reusing schema ids rebuilds ``registry_schemas``: with
    foreign keys on, dropping the old table would refuse (versions) or cascade (references)."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    _registry_at_reg0006_with_schemas(url)
    upgrade(url)
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        assert conn.execute(text("SELECT id FROM registry_schemas ORDER BY id")).all() == [
            (1,),
            (3,),
        ]
        assert conn.execute(text("SELECT schema_id FROM registry_schema_references")).all() == [
            (3,)
        ]
        assert conn.execute(text("SELECT count(*) FROM registry_schema_versions")).scalar() == 2
        conn.execute(text("DELETE FROM registry_schema_references"))
        conn.execute(text("DELETE FROM registry_schema_versions WHERE schema_id = 3"))
        conn.execute(text("DELETE FROM registry_schemas WHERE id = 3"))
        new = conn.execute(
            text(
                "INSERT INTO registry_schemas (fingerprint, identity, schema_type, schema_text, "
                "\"references\", created_at) VALUES ('f', 'i', 'JSON', '{}', '[]', "
                "'2026-11-30') RETURNING id"
            )
        ).scalar()
        assert new == 4
    engine.dispose()


def test_an_upgrade_leaving_a_broken_reference_is_rolled_back(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    _registry_at_reg0006_with_schemas(url, broken=True)
    with pytest.raises(DatabaseError, match=r"not there \(registry_schema_versions -> registry"):
        upgrade(url)
    engine = sqlalchemy.create_engine(url)
    with engine.connect() as conn:
        revisions = {v for (v,) in conn.execute(text("SELECT version_num FROM alembic_version"))}
        assert "reg0006" in revisions
        table = conn.execute(
            text("SELECT sql FROM sqlite_master WHERE name = 'registry_schemas'")
        ).scalar()
        assert "AUTOINCREMENT" not in table
    engine.dispose()


async def test_a_worker_waits_for_the_disk_only_when_its_writes_must_outlive_a_crash(
    db: Sessions, db_url: str
) -> None:
    """Audit entries wait for the flush; signed-request nonces need only be seen by every
    process at once, and their commits must not wait behind other writers' flushes (a
    consent sync answers within 0.75 s or the gateway's cache is not trusted)."""

    def setting(conn: Connection) -> str:
        if conn.dialect.name == "postgresql":
            return str(conn.exec_driver_sql("SHOW synchronous_commit").scalar())
        return {2: "full", 1: "normal"}[conn.exec_driver_sql("PRAGMA synchronous").scalar()]

    durable, quick = WorkerConnection(db, name="d"), WorkerConnection(db, name="q", durable=False)
    try:
        assert await durable.write(setting) in ("on", "full")
        assert await quick.write(setting) in ("off", "normal")
        assert await durable.write(setting) in ("on", "full")  # each keeps its own
    finally:
        await durable.close()
        await quick.close()
