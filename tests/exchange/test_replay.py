"""The replay guard: fresh ids pass once, in one batch or across restarts, and expire."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from sqlalchemy import select

from core.db import Sessions, transaction
from exchange.models import SeenRequest
from exchange.replay import ReplayError, ReplayGuard, StaleRequestError

WINDOW = dt.timedelta(seconds=300)
NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
CLIENT = "PK/LG/LMC/property-tax"


def rid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


async def test_each_id_passes_once_within_a_batch_and_after_a_restart(db: Sessions) -> None:
    guard = ReplayGuard(db, window=WINDOW)
    ids = [rid(n % 30) for n in range(60)]  # every id twice, concurrently: one batch or more
    outcomes = await asyncio.gather(
        *(guard.admit(i, CLIENT, NOW, NOW) for i in ids), return_exceptions=True
    )
    await guard.close()
    passed = [i for i, o in zip(ids, outcomes, strict=True) if o is None]
    assert sorted(passed) == sorted({*ids})
    assert all(isinstance(o, ReplayError) for o in outcomes if o is not None)

    again = ReplayGuard(db, window=WINDOW)  # a restarted gateway on the same database
    try:
        for i in (rid(0), rid(29)):
            with pytest.raises(ReplayError, match="already received"):
                await again.admit(i, CLIENT, NOW, NOW)
        await again.admit(rid(30), CLIENT, NOW, NOW)
    finally:
        await again.close()


async def test_ids_are_kept_for_twice_the_window_then_purged(db: Sessions) -> None:
    guard = ReplayGuard(db, window=WINDOW)
    try:
        await guard.admit(rid(1), CLIENT, NOW, NOW)
        with pytest.raises(StaleRequestError):
            await guard.admit(rid(2), CLIENT, NOW - 2 * WINDOW, NOW)
        async with transaction(db, write=False) as s:
            stored = (await s.execute(select(SeenRequest))).scalar_one()
        assert (stored.request_id, stored.client) == (rid(1), CLIENT)
        assert stored.expires_at == NOW + 2 * WINDOW  # read back as written, in UTC
        assert await guard.purge(NOW + 2 * WINDOW) == 0
        assert await guard.purge(NOW + 2 * WINDOW + dt.timedelta(microseconds=1)) == 1
        await guard.admit(rid(1), CLIENT, NOW, NOW)  # forgotten: its window has long passed
    finally:
        await guard.close()
