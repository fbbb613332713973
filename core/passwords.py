"""Password sign-in rules shared by every kind of account (citizens, regulators).

Hashes are argon2id (argon2-cffi's RFC 9106 defaults), checked in a worker
thread by the callers. After :data:`MAX_FAILURES` wrong passwords in a row an
account is locked for :data:`LOCKOUT`, kept in the account's own row so a
restart does not reset it. A table that takes part has three columns:
``password_hash``, ``failed_signins`` (int) and ``locked_until`` (aware
datetime or NULL).

Every attempt is counted *before* its password is checked (:func:`claim_attempt`),
in a write transaction that holds the account's row (``SELECT ... FOR UPDATE``
on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite): however many attempts arrive at
once, at most :data:`MAX_FAILURES` passwords are checked before the lock holds.
A success sets the count back to zero.

A locked account, an unknown one and a wrong password get one and the same
answer (:func:`wrong_credentials`), after the same hashing work, so sign-in
reveals neither who has an account, nor which accounts are locked, nor whether
a password tried against a locked account was right.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import UnauthorizedError

__all__ = [
    "LOCKOUT",
    "MAX_FAILURES",
    "claim_attempt",
    "clear_attempts",
    "is_locked",
    "lock_if_spent",
    "password_matches",
    "wrong_credentials",
]

MAX_FAILURES = 5
LOCKOUT = dt.timedelta(minutes=15)


def wrong_credentials(what: str) -> UnauthorizedError:
    """The one refusal for a wrong ``what`` ("CNIC", "username"), a wrong password or a
    locked account."""
    return UnauthorizedError(
        f"wrong {what} or password, or the account is locked after {MAX_FAILURES} wrong "
        f"passwords (for {int(LOCKOUT.total_seconds()) // 60} minutes)"
    )


def password_matches(hasher: PasswordHasher, stored: str, password: str) -> bool:
    """Whether ``password`` matches the argon2 hash ``stored`` (a malformed hash never does)."""
    try:
        return hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def is_locked(row: Any, now: dt.datetime) -> bool:
    locked_until: dt.datetime | None = row.locked_until
    return locked_until is not None and locked_until > now


async def claim_attempt(s: AsyncSession, key: Any, value: str, now: dt.datetime) -> str | None:
    """Count one sign-in attempt on the account whose ``key`` column equals ``value``, before
    its password is checked; the hash to check it against, or None if the account is unknown
    or locked (then the caller checks a decoy and refuses with :func:`wrong_credentials`).

    Run inside a write transaction. Once :data:`MAX_FAILURES` attempts are counted and not
    yet cleared by a success, the next one locks the account, even while those are still
    being checked: a burst of guesses cannot get more passwords checked than that.
    """
    row = await _locked_row(s, key, value)
    if row is None or is_locked(row, now):
        return None
    if row.failed_signins >= MAX_FAILURES:
        _lock(row, now)
        return None
    row.failed_signins += 1
    stored: str = row.password_hash
    return stored


async def lock_if_spent(s: AsyncSession, key: Any, value: str, now: dt.datetime) -> None:
    """After a wrong password (already counted): lock the account if that was the
    :data:`MAX_FAILURES`-th attempt in a row. Run inside a write transaction."""
    row = await _locked_row(s, key, value)
    if row is not None and row.failed_signins >= MAX_FAILURES and not is_locked(row, now):
        _lock(row, now)


async def clear_attempts(s: AsyncSession, key: Any, value: str, now: dt.datetime) -> Any:
    """After the right password: the account's row with its count cleared, or None if it
    is gone or was locked by concurrent attempts while the password was checked (refuse
    with :func:`wrong_credentials`). Run inside a write transaction."""
    row = await _locked_row(s, key, value)
    if row is None or is_locked(row, now):
        return None
    row.failed_signins = 0
    row.locked_until = None
    return row


async def _locked_row(s: AsyncSession, key: Any, value: str) -> Any:
    """The account's row, held for this transaction (FOR UPDATE; SQLite writes serialise)."""
    return await s.scalar(select(key.class_).where(key == value).with_for_update())


def _lock(row: Any, now: dt.datetime) -> None:
    row.locked_until = now + LOCKOUT
    row.failed_signins = 0
