"""Creating a registry: operator key, database, first operator token and the anchor."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

from core.db import create_engine, sessions, transaction, upgrade, utcnow
from core.errors import ConflictError
from core.files import write_atomic
from core.ids import validate_part
from core.keys import KeySet, PrivateKey
from registry import service, tokens
from registry.globalconf import Anchor, Jwks
from registry.schemareg.records import register_records

KEY_FILE = "operator-key.pem"
DB_FILE = "registry.db"
ANCHOR_FILE = "anchor.json"


@dataclass(frozen=True)
class Initialised:
    anchor: Anchor
    operator_token: str
    key: PrivateKey
    db_url: str


def default_db_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / DB_FILE).resolve()}"


async def init_registry(
    data_dir: Path,
    instance: str,
    *,
    url: str,
    passphrase: bytes | None,
    db_url: str | None = None,
    validity: int = service.DEFAULT_VALIDITY,
    refresh: int = service.DEFAULT_REFRESH,
) -> Initialised:
    """Create the operator key, migrate the database, record the instance, mint the first
    operator token, register the canonical record schemas and write ``anchor.json``.
    Refuses to touch an existing registry."""
    validate_part(instance, "instance")
    key_path = data_dir / KEY_FILE
    db_url = db_url or default_db_url(data_dir)
    await asyncio.to_thread(_prepare, data_dir, key_path, db_url)
    engine = create_engine(db_url)
    try:
        async with transaction(sessions(engine)) as s:
            await service.init_federation(s, instance, validity=validity, refresh=refresh)
            token = await tokens.create(s, "initial")
            await register_records(s)
    finally:
        await engine.dispose()
    key = PrivateKey.generate()
    key.save(key_path, passphrase)
    anchor = Anchor(
        instance=instance,
        url=url,
        keys=Jwks.model_validate(KeySet([key.public()]).to_jwks()),
        generated_at=utcnow().replace(microsecond=0),
    )
    write_atomic(data_dir / ANCHOR_FILE, anchor.dumps().encode("utf-8"))
    return Initialised(anchor, token, key, db_url)


def _prepare(data_dir: Path, key_path: Path, db_url: str) -> None:
    """Blocking set-up: refuse an existing registry, make the private folder, migrate."""
    if key_path.exists():
        raise ConflictError(f"{key_path} exists: {data_dir} already holds a registry")
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    upgrade(db_url)
