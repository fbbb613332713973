"""Operator tokens for the consent service's operator API (guardianships).

Same scheme as the registry's: 32 random bytes shown once, stored as
SHA-256 (a 256-bit secret needs no slow hash), looked up by digest and
compared in constant time. The consent service is run by the federation
operator but keeps its own tokens, so a registry token opens nothing here.
"""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from consent import models as m
from core.db import utcnow
from core.errors import ConflictError, NotFoundError, UnauthorizedError
from core.web import tokens_equal

__all__ = ["TOKEN_PREFIX", "check", "create", "names", "revoke"]

TOKEN_PREFIX = "shr_cop_"  # noqa: S105 (a recognisable prefix for secret scanners)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


async def create(s: AsyncSession, name: str) -> str:
    """A new token called ``name``; it is shown only now."""
    if not name or len(name) > 100:
        raise ConflictError("a token name has 1 to 100 characters")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    s.add(m.OperatorToken(name=name, token_sha256=_digest(token)))
    try:
        await s.flush()
    except IntegrityError as e:
        raise ConflictError(f"a token called {name!r} already exists") from e
    return token


async def revoke(s: AsyncSession, name: str) -> None:
    row = await s.get(m.OperatorToken, name)
    if row is None or row.revoked_at is not None:
        raise NotFoundError(f"no active token called {name!r}")
    row.revoked_at = utcnow()


async def names(s: AsyncSession) -> list[tuple[str, bool]]:
    rows = await s.scalars(select(m.OperatorToken).order_by(m.OperatorToken.name))
    return [(r.name, r.revoked_at is None) for r in rows]


async def check(s: AsyncSession, presented: str) -> str:
    """The name of the token ``presented`` is, or UnauthorizedError."""
    digest = _digest(presented)
    row = await s.scalar(select(m.OperatorToken).where(m.OperatorToken.token_sha256 == digest))
    if row is None or row.revoked_at is not None or not tokens_equal(row.token_sha256, digest):
        raise UnauthorizedError("invalid operator token")
    return row.name
