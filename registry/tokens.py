"""Operator API tokens.

A token is 32 random bytes shown once when created; the registry keeps only
its SHA-256 (a fast hash is enough for a 256-bit secret: there is nothing to
guess). ``SHAHRAH_ADMIN_TOKEN``, when set, is accepted as well, for
automation that provisions a registry without a database step.
"""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.db import utcnow
from core.errors import ConflictError, NotFoundError, UnauthorizedError
from core.web import tokens_equal
from registry import models as m

TOKEN_PREFIX = "shr_op_"  # noqa: S105 (a recognisable prefix for secret scanners)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


async def create(s: AsyncSession, name: str) -> str:
    """Make a new operator token called ``name`` and return it; it is never shown again."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    s.add(m.OperatorToken(name=name, token_sha256=_digest(token)))
    try:
        await s.flush()
    except IntegrityError as e:
        raise ConflictError(f"a token called {name!r} already exists") from e
    return token


async def revoke(s: AsyncSession, name: str) -> None:
    row = await s.scalar(select(m.OperatorToken).where(m.OperatorToken.name == name))
    if row is None or row.revoked_at is not None:
        raise NotFoundError(f"no active token called {name!r}")
    row.revoked_at = utcnow()


async def names(s: AsyncSession) -> list[tuple[str, bool]]:
    rows = await s.scalars(select(m.OperatorToken).order_by(m.OperatorToken.name))
    return [(r.name, r.revoked_at is None) for r in rows]


async def check(s: AsyncSession, presented: str, env_token: str | None) -> str:
    """The name of the operator ``presented`` belongs to, or UnauthorizedError.

    The lookup is by digest (a unique index), then the digests are compared in
    constant time, so timing reveals nothing about stored tokens.
    """
    if env_token and tokens_equal(presented, env_token):
        return "env:SHAHRAH_ADMIN_TOKEN"
    digest = _digest(presented)
    row = await s.scalar(select(m.OperatorToken).where(m.OperatorToken.token_sha256 == digest))
    if row is None or row.revoked_at is not None or not tokens_equal(row.token_sha256, digest):
        raise UnauthorizedError("invalid operator token")
    return row.name
