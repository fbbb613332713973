"""Creating and loading a consent service's folder.

``DIR`` (mode 0700) holds:

=====================  =========================================================
``consent-key.pem``     the service's ES256 signing key (receipts, decisions, feed,
                        log checkpoints), encrypted unless ``--no-passphrase``
``pseudonym.key``       the federation pseudonym key (32 random bytes, mode 0600);
                        the regulator's audit server is configured with a copy
``jwks.json``           the public JWK Set to publish as central service ``consent``
``anchor.json``         the configuration anchor the service trusts
``globalconf.jws``      the last verified global configuration (written by serve)
``consent.db``          the SQLite database, unless ``--db`` names another
=====================  =========================================================
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from consent.history import MerkleConsentLog
from core.db import create_engine, sessions, upgrade
from core.errors import BadRequestError, ConflictError
from core.files import write_atomic
from core.keys import KeySet, PrivateKey
from core.pseudonym import Pseudonymizer
from registry.globalconf import Anchor

__all__ = [
    "ANCHOR_FILE",
    "DB_FILE",
    "GLOBALCONF_FILE",
    "JWKS_FILE",
    "KEY_FILE",
    "PSEUDONYM_FILE",
    "Initialised",
    "init_consent",
    "registry_base_url",
]

KEY_FILE = "consent-key.pem"
PSEUDONYM_FILE = "pseudonym.key"
JWKS_FILE = "jwks.json"
ANCHOR_FILE = "anchor.json"
GLOBALCONF_FILE = "globalconf.jws"
DB_FILE = "consent.db"


@dataclass(frozen=True)
class Initialised:
    key: PrivateKey
    jwks: dict[str, list[dict[str, str]]]
    db_url: str


def default_db_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / DB_FILE).resolve()}"


async def init_consent(
    data_dir: Path,
    anchor: Path,
    *,
    passphrase: bytes | None,
    db_url: str | None = None,
    pseudonym_key: Path | None = None,
) -> Initialised:
    """Make the keys, copy the anchor, migrate the database, create the consent log and write
    the JWK Set. Refuses a folder that already holds a consent service.

    ``pseudonym_key`` is the federation's pseudonym key if another service (the audit
    server) made it first; there must be one key for the whole federation."""
    Anchor.load(anchor)  # refuse a file that is not an anchor before touching anything
    key_path = data_dir / KEY_FILE
    if key_path.exists() or (data_dir / PSEUDONYM_FILE).exists():
        raise ConflictError(f"{data_dir} already holds a consent service")
    db_url = db_url or default_db_url(data_dir)
    await asyncio.to_thread(_prepare, data_dir, anchor, db_url)
    engine = create_engine(db_url, pool_size=1)
    try:
        await MerkleConsentLog().create(sessions(engine))
    finally:
        await engine.dispose()
    key, jwks = await asyncio.to_thread(_write_keys, data_dir, passphrase, pseudonym_key)
    return Initialised(key, jwks, db_url)


def _write_keys(
    data_dir: Path, passphrase: bytes | None, pseudonym_key: Path | None
) -> tuple[PrivateKey, dict[str, list[dict[str, str]]]]:
    key = PrivateKey.generate()
    key.save(data_dir / KEY_FILE, passphrase)
    if pseudonym_key is not None:
        Pseudonymizer.load(pseudonym_key)  # refuses a file too short to be one
        write_atomic(data_dir / PSEUDONYM_FILE, pseudonym_key.read_bytes(), mode=0o600)
    else:
        Pseudonymizer.generate(data_dir / PSEUDONYM_FILE)
    jwks = KeySet([key.public()]).to_jwks()
    write_atomic(data_dir / JWKS_FILE, (json.dumps(jwks, indent=2) + "\n").encode("utf-8"))
    return key, jwks


def _prepare(data_dir: Path, anchor: Path, db_url: str) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    if anchor.resolve() != (data_dir / ANCHOR_FILE).resolve():
        shutil.copyfile(anchor, data_dir / ANCHOR_FILE)
    upgrade(db_url)


def registry_base_url(anchor: Anchor) -> str:
    """Where the registry serves its APIs: the anchor's configuration URL without its last
    path segment (``http://h:8080/globalconf`` → ``http://h:8080``)."""
    parts = urlsplit(anchor.url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise BadRequestError(f"the anchor's URL {anchor.url!r} is not an http(s) URL")
    path = parts.path.rsplit("/", 1)[0]
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))
