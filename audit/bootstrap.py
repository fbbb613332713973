"""Creating an audit server's folder: witness key, pseudonym key, anchor, database."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from core.db import upgrade
from core.errors import ConflictError
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
    "AuditInitialised",
    "default_db_url",
    "init_audit_server",
]

ANCHOR_FILE = "anchor.json"
KEY_FILE = "witness-key.pem"
JWKS_FILE = "witness.jwks.json"
PSEUDONYM_FILE = "pseudonym.key"
GLOBALCONF_FILE = "globalconf.jws"
DB_FILE = "audit.db"


@dataclass(frozen=True)
class AuditInitialised:
    key: PrivateKey
    jwks: dict[str, list[dict[str, str]]]
    anchor: Anchor
    new_pseudonym_key: bool


def default_db_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / DB_FILE).resolve()}"


def init_audit_server(
    data_dir: Path,
    anchor_file: Path,
    *,
    passphrase: bytes | None,
    db_url: str | None = None,
    pseudonym_key: Path | None = None,
) -> AuditInitialised:
    """Make the witness key, take (or make) the federation's pseudonym key, copy the anchor,
    migrate the database and write the witness's JWK Set. Refuses an existing audit server."""
    key_path = data_dir / KEY_FILE
    if key_path.exists():
        raise ConflictError(f"{key_path} exists: {data_dir} already holds an audit server")
    anchor = Anchor.load(anchor_file)
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    upgrade(db_url or default_db_url(data_dir))
    key = PrivateKey.generate()
    key.save(key_path, passphrase)
    if pseudonym_key is not None:
        Pseudonymizer.load(pseudonym_key)  # refuses a file too short to be one
        write_atomic(data_dir / PSEUDONYM_FILE, pseudonym_key.read_bytes(), mode=0o600)
    else:
        Pseudonymizer.generate(data_dir / PSEUDONYM_FILE)
    if anchor_file.resolve() != (data_dir / ANCHOR_FILE).resolve():
        shutil.copyfile(anchor_file, data_dir / ANCHOR_FILE)
    jwks = KeySet([key.public()]).to_jwks()
    write_atomic(data_dir / JWKS_FILE, (json.dumps(jwks, indent=2) + "\n").encode("utf-8"))
    return AuditInitialised(key, jwks, anchor, pseudonym_key is None)
