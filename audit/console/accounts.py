"""Regulator console accounts: a person's username and password, acting for an organisation.

The organisation is a regulator subsystem (``audit.regulators``): it must be
in the global group ``audit-regulators`` of the current configuration for the
person to sign in or use the console, so the operator ends access for a whole
agency by taking it out of the group, and the audit server's administrator ends
one person's access with ``shahrah audit regulator disable``.

Passwords are argon2id (argon2-cffi's RFC 9106 defaults) hashed in a worker
thread. After ``MAX_FAILURES`` wrong passwords in a row the account is locked
for ``LOCKOUT``, stored in the database so a restart does not reset it; each
attempt is counted before its password is checked (``core.passwords``). An
unknown username, a locked or disabled account and a wrong password cost the
same hashing and get the same answer, so sign-in does not tell who has an
account or whether a guess at a locked one was right.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from argon2 import PasswordHasher
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from audit.models import AuditRegulator
from core.db import Sessions, transaction, utcnow
from core.errors import (
    BadRequestError,
    ConflictError,
    NotFoundError,
    UnauthorizedError,
)
from core.ids import ClientId
from core.passwords import (
    LOCKOUT,
    MAX_FAILURES,
    claim_attempt,
    clear_attempts,
    lock_if_spent,
    password_matches,
    wrong_credentials,
)

__all__ = [
    "LOCKOUT",
    "MAX_FAILURES",
    "Regulator",
    "RegulatorAccounts",
    "RegulatorView",
    "parse_username",
]

MIN_PASSWORD = 12  # characters: regulators read everyone's audit trail
MAX_PASSWORD = 1024  # characters; bounds the hashing work a caller can ask for
_USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]{1,63}")


def parse_username(text: str) -> str:
    """A username: 2 to 64 of lower-case letters, digits, ``.``, ``_``, ``-``, starting
    with a letter or digit."""
    if not _USERNAME.fullmatch(text):
        raise BadRequestError(
            "a username has 2 to 64 characters: a-z, 0-9, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return text


@dataclass(frozen=True)
class Regulator:
    """A signed-in regulator: who, and for which organisation."""

    username: str
    organisation: ClientId


@dataclass(frozen=True)
class RegulatorView:
    username: str
    organisation: str
    disabled_at: dt.datetime | None
    locked_until: dt.datetime | None
    created_at: dt.datetime


class RegulatorAccounts:
    """The console's accounts on the audit server's database.

    ``hasher`` defaults to argon2-cffi's argon2id parameters; tests pass a cheaper one.
    """

    def __init__(
        self,
        sessions: Sessions,
        *,
        hasher: PasswordHasher | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.sessions = sessions
        self.hasher = hasher or PasswordHasher()
        self.clock = clock
        # Unknown usernames are checked against this, so they cost what a known one costs.
        self._decoy = self.hasher.hash(secrets.token_urlsafe(16))

    async def add(self, username: str, organisation: ClientId, password: str) -> None:
        """Create an account (the audit server administrator's action)."""
        parse_username(username)
        if len(password) < MIN_PASSWORD:
            raise BadRequestError(f"a password needs at least {MIN_PASSWORD} characters")
        if len(password) > MAX_PASSWORD:
            raise BadRequestError(f"a password may have at most {MAX_PASSWORD} characters")
        hashed = await asyncio.to_thread(self.hasher.hash, password)
        try:
            async with transaction(self.sessions) as s:
                s.add(
                    AuditRegulator(
                        username=username,
                        organisation=str(organisation),
                        password_hash=hashed,
                        failed_signins=0,
                        password_changed_at=self.clock(),
                    )
                )
        except IntegrityError as e:
            raise ConflictError(f"regulator account {username!r} exists already") from e

    async def disable(self, username: str) -> None:
        """Close an account for good; a signed-in session of it stops at its next page."""
        async with transaction(self.sessions) as s:
            row = await s.get(AuditRegulator, username)
            if row is None:
                raise NotFoundError(f"no regulator account {username!r}")
            if row.disabled_at is None:
                row.disabled_at = self.clock()

    async def list(self) -> list[RegulatorView]:
        async with transaction(self.sessions, write=False) as s:
            rows = await s.scalars(select(AuditRegulator).order_by(AuditRegulator.username))
            return [
                RegulatorView(
                    r.username, r.organisation, r.disabled_at, r.locked_until, r.created_at
                )
                for r in rows
            ]

    async def active(self, username: str) -> Regulator:
        """The account if it may still use the console, else UnauthorizedError."""
        async with transaction(self.sessions, write=False) as s:
            row = await s.get(AuditRegulator, username)
        if row is None or row.disabled_at is not None:
            raise UnauthorizedError("this regulator account is closed; sign in again")
        return Regulator(row.username, ClientId.parse(row.organisation))

    async def sign_in(self, username: str, password: str) -> Regulator:
        """The account, or UnauthorizedError: the same one for a wrong username, a wrong
        password, a locked account and a disabled one (see :mod:`core.passwords`)."""
        wrong = wrong_credentials("username")
        if len(password) > MAX_PASSWORD or not _USERNAME.fullmatch(username):
            raise wrong
        # Counted before the password is checked, so concurrent guesses cannot outrun the lock.
        async with transaction(self.sessions) as s:
            stored = await claim_attempt(s, AuditRegulator.username, username, self.clock())
        # Unknown and locked accounts cost the same hashing and get the same answer.
        ok = await asyncio.to_thread(self._verify, stored or self._decoy, password)
        if stored is None:
            raise wrong
        if not ok:
            async with transaction(self.sessions) as s:
                await lock_if_spent(s, AuditRegulator.username, username, self.clock())
            raise wrong
        rehash = self.hasher.check_needs_rehash(stored)
        new_hash = await asyncio.to_thread(self.hasher.hash, password) if rehash else None
        async with transaction(self.sessions) as s:
            # A disabled account answers like a wrong password; a lock taken by concurrent
            # attempts while this password was hashed still holds.
            current = await clear_attempts(s, AuditRegulator.username, username, self.clock())
            if current is None or current.disabled_at is not None:
                raise wrong
            if new_hash is not None:
                current.password_hash = new_hash
            return Regulator(username, ClientId.parse(current.organisation))

    def _verify(self, stored: str, password: str) -> bool:
        return password_matches(self.hasher, stored, password)
