"""SQL backends: any SQLAlchemy URL, a parameterised read-only query per route.

Parameters are always bound (``:cnic`` in the query), never written into SQL
text; a query must be one ``SELECT`` (or ``WITH … SELECT``) statement and may
only use declared parameters, which the configuration check enforces.

Columns are matched without regard to case (``CNIC_NO`` finds PostgreSQL's
``cnic_no``), since each database folds unquoted names its own way.

Each backend has its own connection pool and a thread pool of the same size
(drivers are synchronous, so any SQLAlchemy dialect works). Where the
database allows, every connection is opened read-only and with a statement
timeout, so a slow query is stopped by the database itself:

==========  ===========================================  ==================================
database    read-only                                    statement timeout
==========  ===========================================  ==================================
PostgreSQL  ``default_transaction_read_only=on``         ``statement_timeout``
MariaDB     ``SET SESSION TRANSACTION READ ONLY``        ``max_statement_time``
MySQL       ``SET SESSION TRANSACTION READ ONLY``        ``max_execution_time``
SQLite      ``mode=ro`` and ``PRAGMA query_only``        a progress handler that interrupts
others      the query check only                         the call's deadline only
==========  ===========================================  ==================================
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import sqlalchemy as sa
import sqlparse
from pydantic import Field, field_validator
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Engine, make_url
from sqlparse import tokens as sql_tokens

from adapters.base import BackendRequest
from adapters.errors import BackendFailure
from adapters.mapping import Node, RowsNode
from adapters.routes import CompiledRoute, placeholders
from adapters.spec import BuildContext, MappedRouteSpec, ServiceSpec

__all__ = ["SqlRoute", "SqlService", "SqlSource", "check_query", "database_url"]

_DEFAULT_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}
_TIMEOUT_CODES = {1969, 3024}  # MariaDB max_statement_time, MySQL max_execution_time
_KEEPALIVE_PROBES = 3  # unanswered TCP keepalive probes before PostgreSQL's connection is dead


class SqlRoute(MappedRouteSpec):
    query: str  # one SELECT with :name bound parameters
    rows: Literal["one", "many"] = "one"  # one: more than one row is an error
    max_rows: int = Field(default=1000, gt=0, le=100_000)

    @property
    def fetch_limit(self) -> int:
        """Rows read at most: one more than allowed, to tell "too many" from "all of them"."""
        return 2 if self.rows == "one" else self.max_rows + 1


class SqlService(ServiceSpec):
    kind: Literal["sql"]
    url: str  # any SQLAlchemy URL; postgresql:// and mysql:// use psycopg and PyMySQL
    pool_size: int = Field(default=5, gt=0, le=100)  # connections (and threads)
    statement_timeout: float = Field(default=5.0, gt=0, le=300)  # seconds, enforced by the database
    connect_timeout: float = Field(default=5.0, gt=0, le=120)  # seconds, also the pool's wait
    routes: dict[str, SqlRoute]

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return database_url(value)


def database_url(value: str) -> str:
    """``value`` if SQLAlchemy can parse it; the error repeats no part of it (a password)."""
    try:
        make_url(value)
    except (sa_exc.ArgumentError, ValueError):
        # A password with an unencoded "@" and ":" leaves its tail where the port goes, and
        # the parser's own error would quote it.
        raise ValueError(
            "not a database URL (percent-encode special characters in the user name and password)"
        ) from None
    return value


def check_query(query: str, declared: set[str]) -> None:
    """ValueError unless ``query`` is one SELECT that reads only, using only ``declared``
    parameters.

    The statement is tokenised (sqlparse), so a ';' or '--' inside a string literal is
    text, and a writing statement hidden after one is found. This holds on every database,
    including those that cannot open a read-only session.
    """
    statements = [s for s in sqlparse.parse(query) if s.value.strip()]
    if len(statements) != 1:
        raise ValueError("a query is one statement")
    statement = statements[0]
    if statement.get_type() != "SELECT":  # type: ignore[no-untyped-call]
        raise ValueError("a query must be a SELECT (or WITH ... SELECT)")
    tokens = statement.flatten()  # type: ignore[no-untyped-call]
    words = [t for t in tokens if t.ttype not in sql_tokens.Comment]
    for token in words:
        if token.ttype in sql_tokens.Keyword.DDL or (
            token.ttype in sql_tokens.Keyword.DML and token.normalized != "SELECT"
        ):
            raise ValueError(f"a query only reads: {token.normalized} is not allowed")
        if token.ttype in sql_tokens.Keyword and token.normalized == "INTO":
            raise ValueError("a query only reads: SELECT ... INTO writes a table or a file")
    bare = "".join(t.value for t in words)
    binds = set(sa.text(query).compile().binds)
    unknown = binds - declared
    if unknown:
        raise ValueError(f"binds undeclared parameters: {sorted(unknown)}")
    if placeholders(bare) & declared:
        raise ValueError("parameters are bound with :name, never written as {name}")


def _engine(spec: SqlService) -> Engine:
    url: URL = make_url(spec.url)
    backend = url.get_backend_name()
    if url.drivername in _DEFAULT_DRIVERS:
        url = url.set(drivername=_DEFAULT_DRIVERS[url.drivername])
    timeout_ms = max(1, math.ceil(spec.statement_timeout * 1000))
    connect_args: dict[str, Any] = {}
    if backend == "sqlite":
        connect_args["check_same_thread"] = False
        if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
            url = url.set(database=f"file:{url.database}?mode=ro", query={"uri": "true"})
    elif backend == "postgresql":
        connect_args["connect_timeout"] = max(1, math.ceil(spec.connect_timeout))
        connect_args["options"] = (
            f"-c statement_timeout={timeout_ms} -c default_transaction_read_only=on"
        )
        # psycopg waits for an answer with no timeout of its own: a network that died mid-query
        # held the worker thread until the system's TCP gave up (hours). With these the kernel
        # probes a silent connection once a statement would have timed out and drops it when
        # the probes go unanswered for connect_timeout, or when sent data has gone unacknowledged
        # for both timeouts. A frozen server's kernel still answers, so its connection is held
        # (a slow query is statement_timeout's). Connection arguments override the URL's: what
        # the operator wrote there is left out of them.
        tcp = {
            "keepalives": 1,
            "keepalives_idle": max(1, math.ceil(spec.statement_timeout)),
            "keepalives_interval": max(1, math.ceil(spec.connect_timeout / _KEEPALIVE_PROBES)),
            "keepalives_count": _KEEPALIVE_PROBES,
            "tcp_user_timeout": math.ceil((spec.statement_timeout + spec.connect_timeout) * 1000),
        }
        connect_args.update({k: v for k, v in tcp.items() if k not in url.query})
    elif backend in ("mysql", "mariadb"):
        connect_args["connect_timeout"] = max(1, math.ceil(spec.connect_timeout))
        connect_args["read_timeout"] = max(
            1, math.ceil(spec.statement_timeout + spec.connect_timeout)
        )
    engine = sa.create_engine(
        url,
        pool_size=spec.pool_size,
        max_overflow=0,
        pool_timeout=spec.connect_timeout,
        pool_pre_ping=True,
        connect_args=connect_args,
    )
    if backend == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite(dbapi: Any, record: Any) -> None:
            deadline = [math.inf]
            dbapi.execute("PRAGMA query_only = ON")
            # Called every 1000 virtual machine steps: past the deadline, SQLite interrupts.
            dbapi.set_progress_handler(lambda: int(time.monotonic() > deadline[0]), 1000)
            record.info["deadline"] = deadline

    elif backend in ("mysql", "mariadb"):
        # PyMySQL reads a whole result before the first row is fetched (and its streaming
        # cursor reads the rest when closed): the server is told to send no more than this.
        most_rows = max((route.fetch_limit for route in spec.routes.values()), default=2)

        @event.listens_for(engine, "connect")
        def _mysql(dbapi: Any, record: Any) -> None:
            cursor = dbapi.cursor()
            try:
                cursor.execute("SELECT VERSION()")
                version = str(cursor.fetchone()[0])
                if "mariadb" in version.lower():
                    cursor.execute(f"SET SESSION max_statement_time = {spec.statement_timeout:.3f}")
                else:
                    cursor.execute(f"SET SESSION max_execution_time = {timeout_ms}")
                cursor.execute("SET SESSION TRANSACTION READ ONLY")
                cursor.execute(f"SET SESSION sql_select_limit = {most_rows}")
            finally:
                cursor.close()

    return engine


class SqlSource:
    kind = "sql"

    def __init__(self, spec: SqlService, ctx: BuildContext) -> None:
        self.spec = spec
        self._routes: dict[str, tuple[sa.TextClause, frozenset[str], SqlRoute]] = {}
        self._by_key = dict(spec.routes)
        for key, route in spec.routes.items():
            declared = set(route.params) | placeholders(key.partition(" ")[2])
            try:
                check_query(route.query, declared)
            except ValueError as e:
                raise ctx.fail(["routes", key, "query"], str(e)) from None
        try:
            self.engine = _engine(spec)
        except (sa_exc.NoSuchModuleError, ImportError):
            driver = make_url(spec.url).drivername
            raise ctx.fail(
                ["url"], f"cannot use this database URL: no driver for {driver!r} is installed"
            ) from None
        self.dialect = self.engine.dialect.name
        self._pool = ThreadPoolExecutor(spec.pool_size, thread_name_prefix=f"sql-{ctx.service}")

    def check_path(self, path: str, repeated: bool) -> None:
        if repeated and path != "*":
            raise ValueError("SQL rows are repeated with each: '*'")
        if not repeated and not path:
            raise ValueError("name a column")

    def plan(self, route: CompiledRoute, key: str) -> None:
        spec = self._by_key[key]
        clause = sa.text(spec.query)
        self._routes[route.label] = (clause, frozenset(clause.compile().binds), spec)

    def _run(
        self, clause: sa.TextClause, params: Mapping[str, Any], limit: int
    ) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            deadline = conn.info.get("deadline")
            if deadline is not None:
                deadline[0] = time.monotonic() + self.spec.statement_timeout
            try:
                # A server-side cursor where the driver has one (psycopg): a client-side one
                # holds every row of the result in memory before the first is fetched.
                streamed = conn.execution_options(stream_results=True, max_row_buffer=limit)
                with streamed.execute(clause, dict(params)) as result:  # closes the cursor
                    return [
                        {str(k).casefold(): v for k, v in r.items()}
                        for r in result.mappings().fetchmany(limit)
                    ]
            finally:
                if deadline is not None:
                    deadline[0] = math.inf

    async def fetch(
        self, route: CompiledRoute, params: dict[str, str | None], request: BackendRequest
    ) -> Node | None:
        clause, names, spec = self._routes[route.label]
        limit = spec.fetch_limit
        binds = {k: v for k, v in params.items() if k in names}
        loop = asyncio.get_running_loop()
        try:
            rows = await loop.run_in_executor(self._pool, self._run, clause, binds, limit)
        except sa_exc.TimeoutError as e:
            raise BackendFailure(
                "no database connection became free in time",
                detail={"backend": "sql", "dialect": self.dialect},
                retryable=True,
            ) from e
        except sa_exc.DBAPIError as e:
            raise self._failure(e) from e
        except sa_exc.SQLAlchemyError as e:
            raise BackendFailure(
                f"the query failed: {type(e).__name__}",
                detail={"backend": "sql", "dialect": self.dialect},
            ) from e
        if not rows:
            return None
        if spec.rows == "one" and len(rows) > 1:
            raise BackendFailure(
                "the query returned more than one row for a single record",
                detail={"backend": "sql", "route": route.label},
            )
        if len(rows) > spec.max_rows:
            raise BackendFailure(
                f"the query returned more than {spec.max_rows} rows",
                detail={"backend": "sql", "route": route.label},
            )
        return RowsNode(rows, fold=True)

    def _failure(self, e: sa_exc.DBAPIError) -> BackendFailure:
        orig = e.orig
        sqlstate = getattr(orig, "sqlstate", None)
        first = orig.args[0] if orig is not None and orig.args else None
        errno = first if isinstance(first, int) else None
        detail = {
            "backend": "sql",
            "dialect": self.dialect,
            "error": type(orig).__name__,
            "sqlstate": sqlstate,
            "errno": errno,
        }
        timed_out = (
            sqlstate == "57014"
            or errno in _TIMEOUT_CODES
            or (self.dialect == "sqlite" and "interrupted" in str(orig))
        )
        if timed_out:
            return BackendFailure(
                "the query ran longer than the statement timeout "
                f"({self.spec.statement_timeout:g} s)",
                detail=detail,
            )
        # Python's sqlite3 reads a stored text that is not UTF-8 (a legacy code page) as an
        # OperationalError, the class of a lost connection, though every read of the row fails
        # alike: not retryable. Its message quotes the text, so only its kind is said.
        if self.dialect == "sqlite" and str(orig).startswith("Could not decode to UTF-8"):
            return BackendFailure(
                "the database holds text that is not UTF-8 where the query reads", detail=detail
            )
        transient = e.connection_invalidated or isinstance(
            e, sa_exc.OperationalError | sa_exc.InterfaceError
        )
        return BackendFailure(
            f"the database refused the query: {type(orig).__name__}",
            detail=detail,
            retryable=transient,
        )

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(self.engine.dispose)
