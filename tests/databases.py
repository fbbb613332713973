"""A database of its own for each pytest-xdist worker.

``.ci/run`` creates one PostgreSQL database and one MariaDB database for a run. The suite
is split across the machine's cores (``pytest -n 2``), and two workers wiping and
truncating the same database would empty each other's tables mid-test; so each worker
works in a database of its own, named after the configured one and the worker
(``shahrah_ci_123_gw0``), created fresh when the worker first needs it and dropped when the
worker ends. Without xdist the configured database is used as it is.
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from adapters.legacy.systems import _driver

# Each database this worker created, with the configured one it was created from.
_created: dict[str, URL] = {}


def for_this_worker(url: str) -> str:
    """The database this worker uses in place of ``url``: ``url`` itself outside xdist."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return url
    configured = make_url(url)
    mine = configured.set(database=f"{configured.database}_{worker}")
    key = mine.render_as_string(hide_password=False)
    if key not in _created:
        _administer(configured, "DROP DATABASE IF EXISTS", mine.database or "")
        _administer(configured, "CREATE DATABASE", mine.database or "")
        _created[key] = configured
    return key


def drop_created() -> None:
    """Drop the databases this worker created (at the end of its session)."""
    while _created:
        key, configured = _created.popitem()
        _administer(configured, "DROP DATABASE IF EXISTS", make_url(key).database or "", force=True)


def _administer(url: URL, verb: str, name: str, *, force: bool = False) -> None:
    """Create or drop database ``name`` from a connection to ``url``, outside a transaction
    (neither server runs these in one). A name cannot be a bound parameter: it is the
    configured database's, which whoever runs the suite set, and xdist's worker id, quoted.
    ``force`` drops a PostgreSQL database even if a test left a connection open to it."""
    mysql = url.get_backend_name() == "mysql"
    quoted = f"`{name}`" if mysql else f'"{name}"'
    if force and not mysql:
        quoted += " WITH (FORCE)"
    engine = sa.create_engine(_driver(url.render_as_string(hide_password=False)))
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text(f"{verb} {quoted}"))
    finally:
        engine.dispose()
