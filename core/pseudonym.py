"""Keyed pseudonyms for citizens' CNICs.

Audit records never hold a CNIC: they hold ``HMAC-SHA256(federation key, CNIC)``.
The key belongs to the federation (the consent service and the regulator's
audit server hold it), not to members, so a member cannot turn an exported
audit trail back into identities by hashing every possible CNIC, while the
citizen portal and the regulator can still find one person's records.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path

from core.canonical import b64url
from core.errors import ShahrahError
from core.files import write_atomic
from core.ids import Cnic

__all__ = ["KEY_BYTES", "Pseudonymizer"]

KEY_BYTES = 32
_DOMAIN = b"shahrah-subject-v1\x00"  # separates this use of the key from any other
PREFIX = "ps1:"


class Pseudonymizer:
    def __init__(self, key: bytes) -> None:
        if len(key) < KEY_BYTES:
            raise ShahrahError(f"a pseudonym key needs at least {KEY_BYTES} bytes")
        self._key = key

    def __repr__(self) -> str:
        return "Pseudonymizer(<key hidden>)"

    def __call__(self, cnic: Cnic) -> str:
        """The pseudonym of ``cnic``: stable for this key, ``ps1:`` + base64url HMAC."""
        mac = hmac.new(self._key, _DOMAIN + cnic.digits.encode("ascii"), hashlib.sha256)
        return PREFIX + b64url(mac.digest())

    @classmethod
    def generate(cls, path: Path) -> Pseudonymizer:
        """Make a new key and store it at ``path`` (mode 0600, never overwritten)."""
        if path.exists():
            raise ShahrahError(f"{path} exists; refusing to overwrite a pseudonym key")
        key = secrets.token_bytes(KEY_BYTES)
        write_atomic(path, key, mode=0o600)
        return cls(key)

    @classmethod
    def load(cls, path: Path) -> Pseudonymizer:
        try:
            return cls(path.read_bytes())
        except OSError as e:
            raise ShahrahError(f"cannot read pseudonym key {path}: {e.strerror}") from e
