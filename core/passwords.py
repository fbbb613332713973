"""Password sign-in rules shared by every kind of account (citizens, regulators).

Hashes are argon2id (argon2-cffi's RFC 9106 defaults), checked in a worker
thread by the callers. After :data:`MAX_FAILURES` wrong passwords in a row an
account is locked for :data:`LOCKOUT`, kept in the account's own row so a
restart does not reset it. A table that takes part has two columns:
``failed_signins`` (int) and ``locked_until`` (aware datetime or NULL).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import ShahrahError

__all__ = [
    "LOCKOUT",
    "MAX_FAILURES",
    "AccountLockedError",
    "count_failure",
    "password_matches",
    "refuse_if_locked",
]

MAX_FAILURES = 5
LOCKOUT = dt.timedelta(minutes=15)


class AccountLockedError(ShahrahError):
    """Too many wrong passwords: the account is locked until ``detail['locked_until']``."""

    status = 429
    xroad_type = "Client.AccountLocked"


def password_matches(hasher: PasswordHasher, stored: str, password: str) -> bool:
    """Whether ``password`` matches the argon2 hash ``stored`` (a malformed hash never does)."""
    try:
        return hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def refuse_if_locked(locked_until: dt.datetime | None, now: dt.datetime) -> None:
    """Raise AccountLockedError while a lock-out holds."""
    if locked_until is not None and locked_until > now:
        when = locked_until.isoformat().replace("+00:00", "Z")
        raise AccountLockedError(
            f"this account is locked after {MAX_FAILURES} wrong passwords; try again after {when}",
            detail={"locked_until": when},
        )


async def count_failure(s: AsyncSession, key: Any, value: str, now: dt.datetime) -> None:
    """Count one wrong password for the account whose ``key`` column equals ``value``; the
    :data:`MAX_FAILURES`-th in a row locks it (atomically, whoever else is failing at once)."""
    table = key.class_
    count = await s.scalar(
        update(table)
        .where(key == value)
        .values(failed_signins=table.failed_signins + 1)
        .returning(table.failed_signins)
    )
    if count is not None and count >= MAX_FAILURES:
        await s.execute(
            update(table).where(key == value).values(locked_until=now + LOCKOUT, failed_signins=0)
        )
