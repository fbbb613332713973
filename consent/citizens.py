"""Citizens' accounts, sign-in sessions and guardianships.

Passwords are hashed with argon2id (memory-hard, RFC 9106) through
argon2-cffi; hashing runs in a worker thread so a sign-in never stalls the
event loop. Five wrong passwords in a row lock the account for fifteen
minutes; while it is locked even the right password is refused. Each attempt
is counted before its password is checked (:mod:`core.passwords`), so
concurrent guesses cannot outrun the lock. An unknown CNIC, a locked account
and a wrong password cost the same hashing work and get the same answer, so
sign-in reveals neither who has an account nor whether a guess at a locked
one was right.

A session token is 32 random bytes shown once; only its SHA-256 is stored.
Sessions end at a fixed time (no sliding renewal) or when signed out.

Guardianships are registered by the operator: the guardian may see and act
on the ward's consents while the guardianship is in force, and is recorded
as the grantor with the relation (parent, court-appointed guardian,
attorney).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from argon2 import PasswordHasher
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from consent import models as m
from consent.artefact import Relation
from core.db import Sessions, transaction, utcnow
from core.errors import (
    BadRequestError,
    ConflictError,
    NotFoundError,
    UnauthorizedError,
)
from core.fields import AwareDatetime, CnicField
from core.ids import Cnic
from core.passwords import (
    MAX_FAILURES,
    claim_attempt,
    clear_attempts,
    lock_if_spent,
    password_matches,
    wrong_credentials,
)
from core.web import tokens_equal

__all__ = [
    "MAX_FAILURES",
    "Accounts",
    "GuardianshipCreate",
    "GuardianshipView",
    "SignedIn",
    "add_guardianship",
    "authority",
    "end_guardianship",
    "guardianships",
    "wards",
]

SESSION_TTL = dt.timedelta(hours=1)
MIN_PASSWORD = 10  # characters
MAX_PASSWORD = 1024  # characters; bounds the hashing work an attacker can ask for
TOKEN_PREFIX = "shr_cz_"  # noqa: S105 (a recognisable prefix for secret scanners)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_password_rules(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise BadRequestError(f"a password needs at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise BadRequestError(f"a password may have at most {MAX_PASSWORD} characters")


@dataclass(frozen=True)
class SignedIn:
    token: str
    cnic: Cnic
    expires_at: dt.datetime


class Accounts:
    """Citizen accounts and sessions on one database.

    ``hasher`` defaults to argon2-cffi's argon2id parameters (RFC 9106's
    second recommendation: 64 MiB, 3 passes); tests pass a cheaper one.
    """

    def __init__(
        self,
        sessions: Sessions,
        *,
        hasher: PasswordHasher | None = None,
        session_ttl: dt.timedelta = SESSION_TTL,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.sessions = sessions
        self.hasher = hasher or PasswordHasher()
        self.session_ttl = session_ttl
        self.clock = clock
        # A hash of a random password: unknown CNICs are verified against it, costing the same.
        self._decoy = self.hasher.hash(secrets.token_urlsafe(16))

    async def add(self, cnic: Cnic, name: str, password: str) -> None:
        """Create a citizen's account (the operator's action)."""
        check_password_rules(password)
        if not name.strip() or len(name) > 300:
            raise BadRequestError("a citizen's name must have 1 to 300 characters")
        hashed = await asyncio.to_thread(self.hasher.hash, password)
        now = self.clock()
        try:
            async with transaction(self.sessions) as s:
                s.add(
                    m.Citizen(
                        cnic=str(cnic),
                        name=name.strip(),
                        password_hash=hashed,
                        failed_signins=0,
                        password_changed_at=now,
                    )
                )
        except IntegrityError as e:
            raise ConflictError(f"citizen {cnic} already has an account") from e

    async def set_password(self, cnic: Cnic, password: str) -> None:
        """Replace a citizen's password, unlock the account and end their sessions."""
        check_password_rules(password)
        hashed = await asyncio.to_thread(self.hasher.hash, password)
        now = self.clock()
        async with transaction(self.sessions) as s:
            row = await s.get(m.Citizen, str(cnic))
            if row is None:
                raise NotFoundError(f"citizen {cnic} has no account")
            row.password_hash = hashed
            row.password_changed_at = now
            row.failed_signins = 0
            row.locked_until = None
            await s.execute(
                update(m.CitizenSession)
                .where(m.CitizenSession.cnic == str(cnic), m.CitizenSession.ended_at.is_(None))
                .values(ended_at=now)
            )

    async def name(self, cnic: Cnic) -> str:
        async with transaction(self.sessions, write=False) as s:
            row = await s.get(m.Citizen, str(cnic))
            if row is None:
                raise NotFoundError(f"citizen {cnic} has no account")
            return row.name

    async def sign_in(self, cnic: Cnic, password: str) -> SignedIn:
        """A new session, or UnauthorizedError: the same one for a wrong CNIC, a wrong
        password and a locked account (see :mod:`core.passwords`)."""
        wrong = wrong_credentials("CNIC")
        if len(password) > MAX_PASSWORD:
            raise wrong
        # The attempt is counted before the password is checked, so a burst of guesses
        # cannot all be checked before the lock-out catches up with them.
        async with transaction(self.sessions) as s:
            stored = await claim_attempt(s, m.Citizen.cnic, str(cnic), self.clock())
        # Unknown and locked accounts cost the same hashing and get the same answer.
        ok = await asyncio.to_thread(self._verify, stored or self._decoy, password)
        if stored is None:
            raise wrong
        if not ok:
            async with transaction(self.sessions) as s:
                await lock_if_spent(s, m.Citizen.cnic, str(cnic), self.clock())
            raise wrong
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = self.clock()
        rehash = self.hasher.check_needs_rehash(stored)
        new_hash = await asyncio.to_thread(self.hasher.hash, password) if rehash else None
        async with transaction(self.sessions) as s:
            # A lock taken by concurrent attempts while we hashed still holds.
            current = await clear_attempts(s, m.Citizen.cnic, str(cnic), now)
            if current is None:
                raise wrong
            if new_hash is not None:
                current.password_hash = new_hash
            s.add(
                m.CitizenSession(
                    token_sha256=_digest(token),
                    cnic=str(cnic),
                    expires_at=now + self.session_ttl,
                )
            )
        return SignedIn(token, cnic, now + self.session_ttl)

    def _verify(self, stored: str, password: str) -> bool:
        return password_matches(self.hasher, stored, password)

    async def authenticate(self, token: str) -> Cnic:
        """The citizen a session token belongs to, or UnauthorizedError."""
        digest = _digest(token)
        async with transaction(self.sessions, write=False) as s:
            row = await s.get(m.CitizenSession, digest)
        if (
            row is None
            or not tokens_equal(row.token_sha256, digest)
            or row.ended_at is not None
            or row.expires_at <= self.clock()
        ):
            raise UnauthorizedError("the session has ended or is not valid; sign in again")
        return Cnic(row.cnic)

    async def sign_out(self, token: str) -> None:
        async with transaction(self.sessions) as s:
            await s.execute(
                update(m.CitizenSession)
                .where(
                    m.CitizenSession.token_sha256 == _digest(token),
                    m.CitizenSession.ended_at.is_(None),
                )
                .values(ended_at=self.clock())
            )

    async def unlock(self, cnic: Cnic) -> None:
        async with transaction(self.sessions) as s:
            row = await s.get(m.Citizen, str(cnic))
            if row is None:
                raise NotFoundError(f"citizen {cnic} has no account")
            row.failed_signins = 0
            row.locked_until = None


# --- guardianships ---------------------------------------------------------------------------


class GuardianshipCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    guardian: CnicField
    ward: CnicField
    relation: Relation
    valid_from: AwareDatetime | None = Field(default=None, description="default: now")
    valid_until: AwareDatetime | None = Field(
        default=None, description="e.g. the ward's 18th birthday; default: until ended"
    )
    reference: str = Field(
        min_length=1, max_length=300, description="court order, deed or birth record number"
    )

    @model_validator(mode="after")
    def _sound(self) -> GuardianshipCreate:
        if self.relation is Relation.SELF:
            raise ValueError("relation 'self' is not a guardianship")
        if self.guardian == self.ward:
            raise ValueError("a citizen cannot be their own guardian")
        if (
            self.valid_from is not None
            and self.valid_until is not None
            and self.valid_until <= self.valid_from
        ):
            raise ValueError("valid_until must be later than valid_from")
        return self


class GuardianshipView(BaseModel):
    id: int
    guardian: CnicField
    ward: CnicField
    relation: Relation
    valid_from: AwareDatetime
    valid_until: AwareDatetime | None
    reference: str
    ended_at: AwareDatetime | None


def _view(row: m.Guardianship) -> GuardianshipView:
    return GuardianshipView(
        id=row.id,
        guardian=Cnic(row.guardian),
        ward=Cnic(row.ward),
        relation=Relation(row.relation),
        valid_from=row.valid_from,
        valid_until=row.valid_until,
        reference=row.reference,
        ended_at=row.ended_at,
    )


async def add_guardianship(
    s: AsyncSession, body: GuardianshipCreate, now: dt.datetime
) -> GuardianshipView:
    valid_from = body.valid_from or now
    if body.valid_until is not None and body.valid_until <= valid_from:
        raise BadRequestError("valid_until must be later than valid_from")
    row = m.Guardianship(
        guardian=str(body.guardian),
        ward=str(body.ward),
        relation=body.relation.value,
        valid_from=valid_from,
        valid_until=body.valid_until,
        reference=body.reference,
    )
    s.add(row)
    await s.flush()
    return _view(row)


async def end_guardianship(s: AsyncSession, gid: int, now: dt.datetime) -> GuardianshipView:
    row = await s.get(m.Guardianship, gid)
    if row is None or row.ended_at is not None:
        raise NotFoundError(f"no guardianship {gid} in force")
    row.ended_at = now
    return _view(row)


async def guardianships(s: AsyncSession, cnic: Cnic | None = None) -> list[GuardianshipView]:
    query = select(m.Guardianship).order_by(m.Guardianship.id)
    if cnic is not None:
        query = query.where(
            or_(m.Guardianship.guardian == str(cnic), m.Guardianship.ward == str(cnic))
        )
    return [_view(r) for r in await s.scalars(query)]


def _in_force(now: dt.datetime) -> list[ColumnElement[bool]]:
    return [
        m.Guardianship.ended_at.is_(None),
        m.Guardianship.valid_from <= now,
        or_(m.Guardianship.valid_until.is_(None), m.Guardianship.valid_until > now),
    ]


async def wards(s: AsyncSession, guardian: Cnic, now: dt.datetime) -> dict[str, Relation]:
    """The citizens ``guardian`` may act for at ``now``, with the relation."""
    rows = await s.scalars(
        select(m.Guardianship).where(m.Guardianship.guardian == str(guardian), *_in_force(now))
    )
    return {r.ward: Relation(r.relation) for r in rows}


async def authority(
    s: AsyncSession, citizen: Cnic, subject: Cnic, now: dt.datetime
) -> Relation | None:
    """How ``citizen`` may act for ``subject`` at ``now``: themselves, a guardianship, or not."""
    if citizen == subject:
        return Relation.SELF
    row = await s.scalar(
        select(m.Guardianship)
        .where(
            m.Guardianship.guardian == str(citizen),
            m.Guardianship.ward == str(subject),
            *_in_force(now),
        )
        .limit(1)
    )
    return Relation(row.relation) if row is not None else None
