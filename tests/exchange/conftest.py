"""A running loopback federation for each exchange test (on each database backend)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.exchange.harness import Federation, build, close, sqlite_copy


@pytest.fixture
async def fed(
    db_url: str,
    tmp_path: Path,
    serve: Any,
    http: aiohttp.ClientSession,
    request: pytest.FixtureRequest,
) -> AsyncIterator[Federation]:
    # Each gateway has its own SQLite file, as gateways do; on PostgreSQL they share the test
    # database, as a member's gateway cluster shares one.
    per_gateway = (
        sqlite_copy(request.getfixturevalue("sqlite_template"), tmp_path)
        if db_url.startswith("sqlite")
        else None
    )
    federation = await build(db_url, tmp_path, serve, http, gateway_db=per_gateway)
    yield federation
    await close(federation)
