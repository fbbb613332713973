"""Shared fixtures: real databases (SQLite always, PostgreSQL when configured) and real servers.

Every test that takes ``db_url`` (or ``sessions``) runs once per backend. PostgreSQL joins
when ``SHAHRAH_TEST_POSTGRES_URL`` names a database, as ``.ci/run`` always does; that
database is wiped and migrated at session start, and emptied after each test. If the
variable is set and the database cannot be reached, the run fails rather than skipping.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import HealthCheck, settings
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from core.db import Sessions, create_engine, create_sync_engine, sessions, upgrade
from core.web import listening
from shahrah.models import metadata
from tests.databases import drop_created, for_this_worker

PG_ENV = "SHAHRAH_TEST_POSTGRES_URL"
BACKENDS = ["sqlite"] + (["postgresql"] if os.environ.get(PG_ENV) else [])

settings.register_profile(
    "default",
    deadline=None,  # shared 2-core machines: timing is not what these tests assert
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def pytest_report_header() -> str:
    return f"database backends: {', '.join(BACKENDS)}"


def pytest_sessionfinish() -> None:
    drop_created()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite database that each test copies, so migrations run once per session."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_url() -> str:
    url = for_this_worker(os.environ[PG_ENV])
    engine = create_sync_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    finally:
        engine.dispose()
    upgrade(url)
    return url


def _truncate_postgres(url: str) -> None:
    engine = create_sync_engine(url)
    try:
        names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
        with engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    finally:
        engine.dispose()


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database of each backend."""
    if request.param == "sqlite":
        path = tmp_path / "test.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
    else:
        url = request.getfixturevalue("postgres_url")
        try:
            yield url
        finally:
            _truncate_postgres(url)


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(db_url)
    yield eng
    await eng.dispose()


@pytest.fixture
def db(engine: AsyncEngine) -> Sessions:
    """A session factory on the test database."""
    return sessions(engine)


@pytest.fixture
async def serve() -> AsyncIterator[Any]:
    """Start aiohttp applications on real loopback sockets, as the components serve them
    (:func:`core.web.listening`); returns ``start(app, ssl_context, error_header=...) -> URL``."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(
            app: web.Application,
            ssl_context: ssl.SSLContext | None = None,
            *,
            error_header: str | None = None,
        ) -> str:
            port = await stack.enter_async_context(
                listening(app, "127.0.0.1", 0, ssl_context, error_header=error_header)
            )
            return f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"

        yield start


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
