"""Fixtures for the adapters: real databases of each kind, schemas, and config files on disk.

SQL adapters are tested against SQLite always, PostgreSQL when
``SHAHRAH_TEST_POSTGRES_URL`` is set and MariaDB when ``SHAHRAH_TEST_MARIADB_URL``
is set (``.ci/run`` sets both). A configured database that cannot be reached
fails the run rather than skipping.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from adapters.legacy.synthetic import Person, make_people
from adapters.legacy.systems import create_nadra_database
from tests.databases import for_this_worker

MARIADB_ENV = "SHAHRAH_TEST_MARIADB_URL"
PG_ENV = "SHAHRAH_TEST_POSTGRES_URL"
SCHEMAS = Path(__file__).resolve().parents[2] / "schemas" / "records"
PERSON_SCHEMA = SCHEMAS / "pk.nadra.person.json"

SQL_BACKENDS = (
    ["sqlite"]
    + (["postgresql"] if os.environ.get(PG_ENV) else [])
    + (["mariadb"] if os.environ.get(MARIADB_ENV) else [])
)


def write(path: Path, text: str) -> Path:
    """Write a dedented text file (a configuration, a CSV) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def people() -> list[Person]:
    return make_people(30, seed=7)


def _drop_legacy(url: str) -> None:
    from adapters.legacy.systems import _driver

    engine = sa.create_engine(_driver(url))
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE IF EXISTS CITIZEN_MASTER"))
    finally:
        engine.dispose()


@pytest.fixture(params=SQL_BACKENDS)
def legacy_sql(
    request: pytest.FixtureRequest, tmp_path: Path, people: list[Person]
) -> Iterator[str]:
    """NADRA's legacy registry, filled with ``people``, on each database: its URL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'nadra.db'}"
    elif request.param == "postgresql":
        url = for_this_worker(os.environ[PG_ENV])
    else:
        url = for_this_worker(os.environ[MARIADB_ENV])
    create_nadra_database(url, people, seed=7)
    try:
        yield url
    finally:
        if request.param != "sqlite":
            _drop_legacy(url)
