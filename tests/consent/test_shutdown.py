"""Stopping the consent service while its background jobs write."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from consent.server import ConsentConfig, build_app
from consent.service import ConsentService
from core.db import Sessions, transaction
from core.web import listening
from tests.consent.conftest import (
    CONSENT_KEY,
    FAST_HASH,
    PSEUDONYMS,
    schema_fields,
    seed_federation,
)


async def test_shutdown_lets_a_running_sweep_finish(
    db: Sessions, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sweep cut off inside its transaction could leave SQLite's write lock held, and the
    consent log's final checkpoint would then find the database locked (seen once in CI).
    Shutdown waits for the job's run to end instead."""
    began = asyncio.Event()
    finished: list[bool] = []

    async def slow_sweep(self: ConsentService) -> int:
        async with transaction(self.sessions) as s:
            await s.execute(text("SELECT 1"))
            began.set()
            await asyncio.sleep(0.5)
        finished.append(True)
        return 0

    monkeypatch.setattr(ConsentService, "sweep", slow_sweep)
    config = ConsentConfig(
        db_url=db_url,
        signing_key=CONSENT_KEY,
        pseudonymizer=PSEUDONYMS,
        globalconf=await seed_federation(db),
        fields=schema_fields(db),
        hasher=FAST_HASH,
        refresh_globalconf=False,
    )
    async with listening(build_app(config), "127.0.0.1", 0):
        await asyncio.wait_for(began.wait(), timeout=10)
    assert finished == [True]
