"""Canonical JSON (RFC 8785, JCS) and the digests taken over it.

Signatures, fingerprints and audit entries are all computed over the one
canonical byte form that :func:`canonical_json` makes, never over whatever a
serializer happened to emit. Verify and hash the bytes you *received*; use
this only to make bytes you are about to sign or hash.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import rfc8785

from core.errors import BadRequestError

__all__ = ["b64url", "b64url_decode", "canonical_digest", "canonical_json", "sha256"]


def canonical_json(value: Any) -> bytes:
    """Serialize ``value`` per RFC 8785: sorted keys, no whitespace, ECMAScript numbers.

    Raises :class:`BadRequestError` for values JCS cannot represent (NaN,
    integers beyond IEEE 754 precision, non-string keys).
    """
    try:
        return rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as e:
        raise BadRequestError(f"value has no canonical JSON form: {e}") from e


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def canonical_digest(value: Any) -> str:
    """Hex SHA-256 of the canonical form: a fingerprint that ignores key order."""
    return hashlib.sha256(canonical_json(value)).hexdigest()


def b64url(data: bytes) -> str:
    """Unpadded base64url, as JOSE writes it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict inverse of :func:`b64url`; raises :class:`BadRequestError` on bad input."""
    if not isinstance(text, str) or any(c in text for c in "=+/ \n"):
        raise BadRequestError("value is not unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError as e:
        raise BadRequestError("value is not unpadded base64url") from e
    if b64url(data) != text:
        raise BadRequestError("value is not in canonical base64url form")
    return data
