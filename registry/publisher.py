"""Publishing the signed global configuration.

A new version (serial + 1) is signed when the registry's content changed
since the last one, or when the last one has used up half its validity, so
gateways always hold a configuration with time to spare. Versions are kept
in the database so a restarted or second registry process continues the
serial instead of reusing one.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from core import jws
from core.canonical import canonical_digest
from core.db import Sessions, transaction, utcnow
from core.keys import KeySet, PrivateKey
from registry import models as m
from registry import store
from registry.globalconf import FORMAT, GLOBALCONF_TYP, GlobalConf

log = logging.getLogger(__name__)

#: Versions kept in the database; older ones are pruned (gateways only need the newest).
KEEP_VERSIONS = 50


@dataclass(frozen=True)
class Published:
    serial: int
    issued_at: dt.datetime
    expires_at: dt.datetime
    signed: str
    etag: str


def _published(row: m.GlobalConfVersion) -> Published:
    return Published(
        serial=row.serial,
        issued_at=row.issued_at,
        expires_at=row.expires_at,
        signed=row.signed,
        etag=f'"{row.serial}-{row.content_sha256[:16]}"',
    )


async def latest(sessions: Sessions) -> Published | None:
    async with transaction(sessions, write=False) as s:
        row = await s.scalar(
            select(m.GlobalConfVersion).order_by(m.GlobalConfVersion.serial.desc())
        )
        return _published(row) if row else None


async def publish(
    sessions: Sessions,
    key: PrivateKey,
    *,
    now: dt.datetime | None = None,
    force: bool = False,
) -> Published:
    """Sign a new version if the content changed or the current one is half-way to expiry."""
    now = (now or utcnow()).replace(microsecond=0)
    async with transaction(sessions) as s:
        fed = await store.federation(s)
        snap = await store.snapshot(s)
        content = {
            "format": FORMAT,
            "instance": snap.instance,
            "refresh_interval": fed.globalconf_refresh,
            "operator_keys": KeySet([key.public()]).to_jwks(),
            "members": snap.members,
            "gateways": snap.gateways,
            "global_groups": snap.global_groups,
            "local_groups": snap.local_groups,
            "purposes": snap.purposes,
            "services": snap.services,
            # The view's database id is registry bookkeeping; gateways get the grant only.
            "access_rights": [r.model_dump(exclude={"id"}) for r in snap.access_rights],
            "central_services": snap.central_services,
        }
        draft = GlobalConf.model_validate(
            {**content, "serial": 1, "issued_at": now, "expires_at": now + dt.timedelta(seconds=1)}
        )
        body = draft.model_dump(mode="json", exclude={"serial", "issued_at", "expires_at"})
        digest = canonical_digest(body)
        last = await s.scalar(
            select(m.GlobalConfVersion).order_by(m.GlobalConfVersion.serial.desc())
        )
        if last is not None and not force and last.content_sha256 == digest:
            half_life = (last.expires_at - last.issued_at) / 2
            if now < last.issued_at + half_life:
                return _published(last)
        serial = (last.serial + 1) if last else 1
        expires = now + dt.timedelta(seconds=fed.globalconf_validity)
        document = {**body, "serial": serial, "issued_at": _z(now), "expires_at": _z(expires)}
        GlobalConf.model_validate(document)  # the document we sign is one gateways will accept
        signed = jws.sign_json(document, key, typ=GLOBALCONF_TYP)
        row = m.GlobalConfVersion(
            serial=serial, issued_at=now, expires_at=expires, content_sha256=digest, signed=signed
        )
        s.add(row)
        try:
            await s.flush()
        except IntegrityError:
            # Another registry process published this serial first; serve theirs.
            await s.rollback()
            newest = await latest(sessions)
            assert newest is not None
            return newest
        await s.execute(
            delete(m.GlobalConfVersion).where(m.GlobalConfVersion.serial <= serial - KEEP_VERSIONS)
        )
        log.info("published global configuration serial %d (expires %s)", serial, _z(expires))
        return _published(row)


def _z(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


async def run(sessions: Sessions, key: PrivateKey, wake: asyncio.Event, *, interval: float) -> None:
    """Keep publishing: on every ``wake`` (an operator change) and at least every ``interval`` s."""
    while True:
        try:
            await publish(sessions, key)
        except Exception:
            # The registry keeps serving the last version; the next round tries again.
            log.exception("publishing the global configuration failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=interval)
        wake.clear()


__all__ = ["KEEP_VERSIONS", "Published", "latest", "publish", "run"]
