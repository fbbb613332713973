"""Typed JWS signatures over canonical JSON.

Every signature carries the type of what it signs in the protected ``typ``
header (as python-tuf types its metadata), and verification demands the
expected type: a signature made for a global configuration can never pass as
one on an exchange envelope or a consent receipt.

Two shapes, both plain RFC 7515 compact serialization so that any JOSE
library can check them:

* attached: ``header.payload.signature`` (the global configuration);
* detached: ``header..signature`` with the payload sent beside it (RFC 7515
  appendix F), used where the signed bytes already travel on their own.

Verification always works on the bytes received and returns a
:class:`Verified` result; every failure is an :class:`InvalidSignatureError`
with the reason.

ES256 being the only algorithm, the framing is done here on ``cryptography``
directly (signature as raw ``r || s``, RFC 7518 section 3.4): a general JOSE
library spent more time choosing and checking algorithms and re-encoding
segments than the ECDSA operation took, on every exchange. Tests hold the
tokens to joserfc's and jwcrypto's verdicts both ways.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from core.canonical import b64url, b64url_decode, canonical_json, parse_json
from core.errors import BadRequestError, InvalidSignatureError
from core.keys import ALGORITHM, KeySet, PrivateKey, PublicKey

__all__ = ["KeyResolver", "Verified", "key_id", "sign", "sign_json", "verify"]

#: Maps a ``kid`` to the public key that may verify it, or raises InvalidSignatureError.
KeyResolver = Callable[[str], PublicKey]

# Header parameters that would make a verifier fetch or trust keys named by the
# signer itself, or change how the payload is read; never accepted.
_FORBIDDEN_HEADERS = frozenset({"jku", "jwk", "x5u", "x5c", "b64", "crit"})
_MAX_TOKEN = 64 * 2**20  # characters; far above any configuration we publish
#: Characters of a protected header: ours hold alg, typ and kid, about 150. Bounded so that
#: no one can have the JSON parser recurse into a deeply nested header.
_MAX_HEADER = 1024
#: Every key id is a key's RFC 7638 thumbprint (core.keys), so one that is not cannot name a
#: trusted key, and a message quoting it quotes nothing the sender chose freely.
_KID = re.compile(r"[A-Za-z0-9_-]{43}")
_ECDSA = ec.ECDSA(hashes.SHA256())
_COORDINATE = 32  # bytes of r and of s in an ES256 signature (P-256)


@dataclass(frozen=True)
class Verified:
    """A signature that checked out: what was signed, by which key, with which header."""

    payload: bytes
    header: dict[str, Any]
    kid: str

    def json(self) -> Any:
        """The payload parsed as JSON."""
        try:
            return json.loads(self.payload)
        except (ValueError, UnicodeDecodeError) as e:
            raise InvalidSignatureError("signed payload is not JSON") from e


def sign(
    payload: bytes,
    key: PrivateKey,
    *,
    typ: str,
    detached: bool = False,
    headers: Mapping[str, Any] | None = None,
) -> str:
    """Sign ``payload`` as a compact JWS of type ``typ``; optionally detach the payload."""
    protected: dict[str, Any] = dict(headers or {})
    if _FORBIDDEN_HEADERS & protected.keys():
        raise ValueError(
            f"header parameters {sorted(_FORBIDDEN_HEADERS & protected.keys())} not allowed"
        )
    protected.update({"alg": ALGORITHM, "typ": typ, "kid": key.kid})
    head = b64url(json.dumps(protected, ensure_ascii=True, separators=(",", ":")).encode())
    body = b64url(payload)
    r, s = decode_dss_signature(key.cryptography_key.sign(f"{head}.{body}".encode(), _ECDSA))
    sig = b64url(r.to_bytes(_COORDINATE, "big") + s.to_bytes(_COORDINATE, "big"))
    return f"{head}..{sig}" if detached else f"{head}.{body}.{sig}"


def sign_json(value: Any, key: PrivateKey, *, typ: str, detached: bool = False) -> str:
    """Sign the RFC 8785 canonical form of ``value``."""
    return sign(canonical_json(value), key, typ=typ, detached=detached)


def verify(
    token: str | bytes,
    keys: KeySet | KeyResolver,
    *,
    typ: str,
    payload: bytes | None = None,
) -> Verified:
    """Check a compact JWS of type ``typ`` against trusted ``keys``.

    Pass ``payload`` for a detached signature; an attached token must then
    not carry one. Returns what was verified or raises InvalidSignatureError.
    """
    if isinstance(token, bytes):
        try:
            token = token.decode("ascii")
        except UnicodeDecodeError as e:
            raise InvalidSignatureError("signature is not ASCII") from e
    if len(token) > _MAX_TOKEN:
        raise InvalidSignatureError("signature is too large")
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidSignatureError("signature is not a compact JWS (three dot-separated parts)")
    try:
        # Only canonical base64url: otherwise one signature has many spellings.
        signed_payload = b64url_decode(parts[1])
        signature = b64url_decode(parts[2])
    except BadRequestError as e:
        raise InvalidSignatureError("signature segment is not canonical base64url") from e
    header = _decode_header(parts[0])
    if header.get("alg") != ALGORITHM:
        raise InvalidSignatureError(f"signature algorithm must be {ALGORITHM}")
    if header.get("typ") != typ:
        # Not the header's typ: the sender chose it, and this message is logged.
        raise InvalidSignatureError(f"signature is not of type {typ!r}")
    forbidden = sorted(_FORBIDDEN_HEADERS & header.keys())
    if forbidden:
        raise InvalidSignatureError(f"signature header uses forbidden parameters {forbidden}")
    kid = header.get("kid")
    if not isinstance(kid, str):
        raise InvalidSignatureError("signature header has no key id")
    if not _KID.fullmatch(kid):
        raise InvalidSignatureError("signature header's key id is not a key thumbprint")
    if payload is not None and parts[1]:
        raise InvalidSignatureError("expected a detached signature, but it carries a payload")
    if payload is None and not parts[1]:
        raise InvalidSignatureError("detached signature given without its payload")
    resolve = keys.resolve if isinstance(keys, KeySet) else keys
    key = resolve(kid)
    if len(signature) != 2 * _COORDINATE:
        raise InvalidSignatureError(f"an {ALGORITHM} signature is {2 * _COORDINATE} bytes")
    der = encode_dss_signature(
        int.from_bytes(signature[:_COORDINATE], "big"),
        int.from_bytes(signature[_COORDINATE:], "big"),
    )
    # Every segment passed the base64url check above, so the signing input is ASCII.
    signing_input = f"{parts[0]}.{parts[1] if payload is None else b64url(payload)}".encode()
    try:
        key.cryptography_key.verify(der, signing_input, _ECDSA)
    except InvalidSignature as e:
        raise InvalidSignatureError("signature does not verify: bad signature") from e
    return Verified(payload=signed_payload if payload is None else payload, header=header, kid=kid)


def key_id(token: str) -> str:
    """The key id a compact JWS's header names, unverified: to tell, for a token verified
    before, whether its key is still among the trusted ones. InvalidSignatureError if the
    token names none."""
    kid = _decode_header(token.split(".", 1)[0]).get("kid")
    if not isinstance(kid, str):
        raise InvalidSignatureError("signature header has no key id")
    return kid


def strict_json(raw: bytes, what: str = "signed payload") -> Any:
    """``raw`` parsed by :func:`core.canonical.parse_json`, as every reader must agree on it
    (UTF-8 without a byte-order mark, no repeated key, no NaN): one signed object must not
    say two things to two readers."""
    try:
        return parse_json(raw)
    except BadRequestError as e:
        raise InvalidSignatureError(f"{what} is not strict JSON: {e.message}") from e


def _decode_header(segment: str) -> dict[str, Any]:
    if len(segment) > _MAX_HEADER:
        raise InvalidSignatureError("signature header is too large")
    try:
        raw = b64url_decode(segment)
    except BadRequestError as e:
        raise InvalidSignatureError("signature header is not base64url JSON") from e
    header = strict_json(raw, "signature header")
    if not isinstance(header, dict):
        raise InvalidSignatureError("signature header is not a JSON object")
    return header
