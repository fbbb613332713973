"""Database: declarative base, column types, one engine factory, transactions, migrations.

One URL names the database: ``sqlite:///path/to/file.db`` (the embedded
default) or ``postgresql://user@host:port/name`` (production). The factory
picks the async driver (aiosqlite, psycopg 3) and, for SQLite, turns on WAL,
foreign keys, full fsync and a busy timeout on every connection.

SQLite's Python driver opens transactions lazily, which lets a read-then-write
transaction fail with "database is locked" instead of waiting. Shahrah takes
transaction control itself: :func:`transaction` begins SQLite write
transactions with ``BEGIN IMMEDIATE`` (wait for the write lock up front) and
read transactions with a plain ``BEGIN`` under ``PRAGMA query_only``, so a write
slipped into a read transaction fails at once instead of under contention.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

from sqlalchemy import DateTime, Engine, MetaData, event
from sqlalchemy import create_engine as create_sync_engine_
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, mapped_column
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.types import TypeDecorator

from core.errors import BadRequestError, ShahrahError

__all__ = [
    "Base",
    "CreatedAt",
    "DatabaseError",
    "Sessions",
    "UTCDateTime",
    "WorkerConnection",
    "check",
    "create_engine",
    "create_sync_engine",
    "migrations_dir",
    "sessions",
    "sqlite_url",
    "transaction",
    "upgrade",
    "utcnow",
]

log = logging.getLogger(__name__)

Sessions = async_sessionmaker[AsyncSession]
R = TypeVar("R")

SQLITE_BUSY_TIMEOUT_MS = 10_000
_WRITE_OPTION = "shahrah_write"

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class DatabaseError(ShahrahError):
    """The database URL is unusable or the database cannot be reached."""

    xroad_type = "Server.DatabaseError"


class Base(DeclarativeBase):
    """Declarative base shared by every package, so one Alembic environment sees all tables."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> dt.datetime:
    """Timezone-aware now, truncated to microseconds as both databases store it."""
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp that is always timezone-aware UTC in Python.

    PostgreSQL keeps ``timestamptz``; SQLite has no time zones, so the value is
    stored as naive UTC and made aware again on the way out. Naive datetimes
    are refused on the way in: they are a bug waiting to be an off-by-five-hours.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


#: Column annotation for a creation timestamp set by Python.
CreatedAt = Annotated[dt.datetime, mapped_column(UTCDateTime(), default=utcnow)]


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


def _driver_urls(url: str) -> tuple[str, str]:
    """(async URL, sync URL) for a plain ``sqlite:`` or ``postgresql:`` URL."""
    try:
        parsed = make_url(url)
    except ArgumentError as e:
        raise BadRequestError(f"not a database URL: {e}") from e
    except ValueError as e:  # a port that is not a number; the message quotes no password
        raise BadRequestError("not a database URL: its port is not a number") from e
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise BadRequestError("SQLite needs a file path: sqlite:///path/to/file.db")
        folder = Path(parsed.database).parent
        if not folder.is_dir():
            # SQLite would fail to open it anyway, and a connection failing in aiosqlite's
            # thread can outlive the command's event loop.
            raise BadRequestError(f"cannot use the database: there is no folder {folder}")
        return (
            parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False),
            parsed.set(drivername="sqlite+pysqlite").render_as_string(hide_password=False),
        )
    if backend == "postgresql":
        pg = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
        return pg, pg
    raise BadRequestError(f"unsupported database {backend!r}: use sqlite:/// or postgresql://")


def _sqlite_on_connect(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    # Take transaction control away from the driver; see the module docstring.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in (
        "PRAGMA journal_mode=WAL",
        "PRAGMA foreign_keys=ON",
        # FULL: a commit is on disk when it returns, which the audit log promises.
        "PRAGMA synchronous=FULL",
        f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
    ):
        cursor.execute(pragma)
    cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    write = conn.get_execution_options().get(_WRITE_OPTION, True)
    # A write inside a transaction declared read-only would need the write lock it never
    # took, and fail only when another writer holds it: "database is locked", under load
    # alone. query_only makes it fail at once, every time, where a test sees it.
    conn.exec_driver_sql("PRAGMA query_only=" + ("OFF" if write else "ON"))
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _install_sqlite_hooks(engine: Engine) -> None:
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    """The async engine for ``url`` (``sqlite:///...`` or ``postgresql://...``)."""
    async_url, _ = _driver_urls(url)
    if async_url.startswith("sqlite"):
        engine = create_async_engine(
            async_url, pool_size=pool_size, max_overflow=0, pool_timeout=30
        )
        _install_sqlite_hooks(engine.sync_engine)
    else:
        engine = create_async_engine(
            async_url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
        )
    return engine


def create_sync_engine(url: str, *, pool_size: int = 5) -> Engine:
    """A synchronous engine for migrations, offline tools and :class:`WorkerConnection`, with
    the same SQLite settings."""
    _, sync_url = _driver_urls(url)
    engine = create_sync_engine_(sync_url, pool_size=pool_size)
    if engine.dialect.name == "sqlite":
        _install_sqlite_hooks(engine)
    return engine


def sessions(engine: AsyncEngine) -> Sessions:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def transaction(factory: Sessions, *, write: bool = True) -> AsyncIterator[AsyncSession]:
    """One unit of work: commit when the block ends, roll back on any exception.

    ``write=False`` declares a read-only transaction, which on SQLite does not
    take the write lock. It reads one snapshot on either database: SQLite's
    transactions do, and PostgreSQL's are then REPEATABLE READ (a read-only one
    never fails to serialize), so that a long read, such as an export, never
    sees a row committed after its first read beside one from before it.
    """
    options: dict[str, Any] = {_WRITE_OPTION: write}
    bind = factory.kw.get("bind")
    if not write and isinstance(bind, AsyncEngine) and bind.dialect.name == "postgresql":
        options["isolation_level"] = "REPEATABLE READ"
    async with factory() as session:
        await session.connection(execution_options=options)
        try:
            yield session
            # Commit even a read: a rollback would expire the objects the caller now holds.
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


class WorkerConnection:
    """Write transactions on the database behind ``factory``, run in one worker thread.

    For the hot batch writers (audit group commit, :class:`core.once.OnceLedger`): a batch is a
    handful of driver calls on a plain synchronous connection, which costs a
    fraction of the CPU the same statements take through the async adapter,
    session and greenlet machinery, and the event loop keeps serving while the
    thread waits for the commit's fsync. Each transaction gets the same
    guarantees as :func:`transaction`: SQLite begins it IMMEDIATE with
    ``synchronous=FULL``, PostgreSQL commits it with ``synchronous_commit``
    on whatever the server's default; :meth:`write` returns only after the
    commit, and rolls back if ``work`` raises.

    ``durable=False`` is for rows every process must see at once but that need not outlive
    a crash of the database itself (signed-request nonces): the commit does not wait for
    the disk (PostgreSQL ``synchronous_commit`` off, SQLite ``synchronous=NORMAL`` in WAL),
    so it never waits behind other writers' flushes.
    """

    def __init__(self, factory: Sessions, *, name: str, durable: bool = True) -> None:
        bind = factory.kw.get("bind")
        if not isinstance(bind, AsyncEngine):
            raise TypeError("the session factory is not bound to an engine")
        self._url = bind.url.render_as_string(hide_password=False)
        self._name = name
        self._durable = durable
        self._engine: Engine | None = None
        self._conn: Connection | None = None  # the worker thread's own, between transactions
        self._executor: ThreadPoolExecutor | None = None

    async def write(self, work: Callable[[Connection], R]) -> R:
        """Run ``work(connection)`` in a write transaction in the worker; commit; return."""
        if self._executor is None:
            # One thread: a connection stays on the thread that opened it (sqlite3's rule).
            self._executor = ThreadPoolExecutor(1, thread_name_prefix=self._name)
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._run, work)

    def _run(self, work: Callable[[Connection], R]) -> R:
        if self._conn is None:
            if self._engine is None:
                self._engine = create_sync_engine(self._url, pool_size=1)
            # Kept from one transaction to the next: when commits are quick, batches are a
            # few entries, and checking the connection out of the pool and resetting it
            # for each cost about as much as the batch's own statements.
            self._conn = self._engine.connect()
            if not self._durable and self._conn.dialect.name == "sqlite":
                # Outside a transaction, where SQLite takes it (the connect hook set FULL).
                driver = self._conn.connection.driver_connection
                assert driver is not None
                driver.execute("PRAGMA synchronous=NORMAL")
        conn = self._conn
        try:
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    flush = "on" if self._durable else "off"
                    conn.exec_driver_sql(f"SET LOCAL synchronous_commit TO {flush}")
                return work(conn)
        except BaseException:
            # After any failure the next transaction starts on a fresh connection, as a pool
            # checkout per transaction would give it (a broken one is not reused).
            self._conn = None
            conn.close()
            raise

    async def close(self) -> None:
        """Wait for the transaction in progress, if any, then close the connection."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        # In the worker, behind any transaction still queued there.
        await asyncio.get_running_loop().run_in_executor(executor, self._dispose)
        executor.shutdown(wait=True)

    def _dispose(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def migrations_dir() -> Path:
    """The top-level ``alembic/`` directory of the source tree (installed editable)."""
    path = Path(__file__).resolve().parent.parent / "alembic"
    if not (path / "env.py").is_file():
        raise DatabaseError(f"migration scripts not found at {path}; install Shahrah with pip -e")
    return path


def _alembic_config(url: str) -> Any:
    from alembic.config import Config

    here = migrations_dir()
    cfg = Config(str(here.parent / "alembic.ini"))
    cfg.set_main_option("script_location", str(here))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["shahrah_url"] = url
    return cfg


def upgrade(url: str) -> None:
    """Bring the database at ``url`` to the newest revision of every package."""
    from alembic import command

    log.info("upgrading database schema")
    try:
        command.upgrade(_alembic_config(url), "heads")
    except OperationalError as e:
        # The first thing a server does with its database: say which one failed and why, in
        # one line, and never with the password the URL may carry.
        where = make_url(url).render_as_string(hide_password=True)
        raise DatabaseError(f"cannot use the database {where}: {driver_said(e)}") from e


def check(url: str) -> None:
    """Raise DatabaseError if the models and the migrations disagree (``alembic check``), or
    the database cannot be used or is not migrated to the newest revision."""
    from alembic.util import CommandError

    from alembic import command

    where = make_url(url).render_as_string(hide_password=True)
    try:
        command.check(_alembic_config(url))
    except OperationalError as e:
        raise DatabaseError(f"cannot use the database {where}: {driver_said(e)}") from e
    except CommandError as e:
        raise DatabaseError(f"{where}: {e}") from e


def driver_said(e: DBAPIError) -> str:
    """What the database driver said, first line only: never the statement or parameters."""
    said = str(e.orig).strip().splitlines() if e.orig else []
    return said[0] if said else type(e).__name__
