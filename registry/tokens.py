"""Operator API tokens.

A token is 32 random bytes shown once when created; only its SHA-256 is
kept (a fast hash is enough for a 256-bit secret: there is nothing to
guess). :class:`TokenStore` keeps named tokens in any table with ``name``,
``token_sha256`` and ``revoked_at`` columns, so every central service with an
operator API (the registry, the consent service) keeps its own tokens the
same way. ``SHAHRAH_ADMIN_TOKEN``, when set, is accepted by the registry as
well, for automation that provisions a registry without a database step.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.db import utcnow
from core.errors import BadRequestError, ConflictError, NotFoundError, UnauthorizedError
from core.web import tokens_equal
from registry import models as m

__all__ = [
    "ENV_PRINCIPAL",
    "TOKEN_PREFIX",
    "TokenStore",
    "active",
    "check",
    "create",
    "names",
    "revoke",
]

TOKEN_PREFIX = "shr_op_"  # noqa: S105 (a recognisable prefix for secret scanners)
MAX_NAME = 100  # characters, as the token tables' name columns hold
#: Who presented ``SHAHRAH_ADMIN_TOKEN`` rather than a stored token.
ENV_PRINCIPAL = "env:SHAHRAH_ADMIN_TOKEN"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenStore:
    """Named tokens in ``model``'s table; ``prefix`` makes them recognisable to scanners."""

    def __init__(self, model: Any, prefix: str) -> None:
        self.model = model
        self.prefix = prefix

    async def create(self, s: AsyncSession, name: str) -> str:
        """Make a new token called ``name`` and return it; it is never shown again."""
        if not 1 <= len(name) <= MAX_NAME:
            raise BadRequestError(f"a token's name has 1 to {MAX_NAME} characters")
        if name.startswith("env:"):
            # The console tells the environment's admin token (ENV_PRINCIPAL) by its name: a
            # stored token so named would keep its sessions after it is revoked.
            raise BadRequestError("token names starting with 'env:' are reserved")
        token = self.prefix + secrets.token_urlsafe(32)
        s.add(self.model(name=name, token_sha256=_digest(token)))
        try:
            await s.flush()
        except IntegrityError as e:
            raise ConflictError(f"a token called {name!r} already exists") from e
        return token

    async def revoke(self, s: AsyncSession, name: str) -> None:
        row = await s.scalar(select(self.model).where(self.model.name == name))
        if row is None or row.revoked_at is not None:
            raise NotFoundError(f"no active token called {name!r}")
        row.revoked_at = utcnow()

    async def names(self, s: AsyncSession) -> list[tuple[str, bool]]:
        rows = await s.scalars(select(self.model).order_by(self.model.name))
        return [(r.name, r.revoked_at is None) for r in rows]

    async def active(self, s: AsyncSession, name: str) -> bool:
        """Whether the token called ``name`` exists and is not revoked (names are never
        reused, so a session that signed in with it can ask again on every page)."""
        row = await s.scalar(select(self.model.revoked_at.is_(None)).where(self.model.name == name))
        return bool(row)

    async def check(self, s: AsyncSession, presented: str, env_token: str | None = None) -> str:
        """The name of the operator ``presented`` belongs to, or UnauthorizedError.

        The lookup is by digest (a unique index), then the digests are compared in
        constant time, so timing reveals nothing about stored tokens.
        """
        if env_token and tokens_equal(presented, env_token):
            return ENV_PRINCIPAL
        digest = _digest(presented)
        row = await s.scalar(select(self.model).where(self.model.token_sha256 == digest))
        if row is None or row.revoked_at is not None or not tokens_equal(row.token_sha256, digest):
            raise UnauthorizedError("invalid operator token")
        return str(row.name)


_REGISTRY = TokenStore(m.OperatorToken, TOKEN_PREFIX)
create = _REGISTRY.create
revoke = _REGISTRY.revoke
names = _REGISTRY.names
check = _REGISTRY.check
active = _REGISTRY.active
