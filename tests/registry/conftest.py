"""Fixtures for registry tests."""

from __future__ import annotations

import pytest

from core.db import Sessions
from tests.registry.federation import seed


@pytest.fixture
async def seeded(db: Sessions) -> Sessions:
    """The database holding the small federation of :mod:`tests.registry.federation`."""
    await seed(db)
    return db
