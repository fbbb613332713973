"""Canonical JSON (RFC 8785, JCS) and the digests taken over it.

Signatures, fingerprints and audit entries are all computed over the one
canonical byte form that :func:`canonical_json` makes, never over whatever a
serializer happened to emit. Verify and hash the bytes you *received*; use
this only to make bytes you are about to sign or hash.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from typing import Any

import rfc8785

from core.errors import BadRequestError

__all__ = [
    "MAX_INT_DIGITS",
    "MAX_JSON_DEPTH",
    "b64url",
    "b64url_decode",
    "canonical_digest",
    "canonical_json",
    "parse_json",
    "sha256",
]


def canonical_json(value: Any) -> bytes:
    """Serialize ``value`` per RFC 8785: sorted keys, no whitespace, ECMAScript numbers.

    Raises :class:`BadRequestError` for values JCS cannot represent (NaN,
    integers beyond IEEE 754 precision, non-string keys).

    Documents without floats and without keys beyond the Basic Multilingual
    Plane (every envelope, event and configuration Shahrah signs) go through
    the standard library's C encoder, whose output is then byte for byte the
    JCS form: the same escapes, and code-point order equals UTF-16 order below
    U+10000. A property test holds the two to that. Anything else goes to the
    ``rfc8785`` library.
    """
    try:
        if _plain(value, 0):
            return _STDLIB.encode(value).encode("utf-8")
        return rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as e:
        raise BadRequestError(f"value has no canonical JSON form: {e}") from e
    except UnicodeEncodeError as e:  # a lone surrogate has no UTF-8 form
        raise BadRequestError("value has no canonical JSON form: a lone UTF-16 surrogate") from e


_STDLIB = json.JSONEncoder(
    ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
)
_SAFE_INT = 2**53 - 1
_MAX_DEPTH = 100


# Leaves the standard library always writes in their JCS form.
_PLAIN_LEAVES = frozenset({str, bool, type(None)})


def _plain(value: Any, depth: int) -> bool:
    """Whether the standard library's encoding of ``value`` is its JCS form.

    Every exchange runs this over an envelope and an audit event, so the common leaves are
    tested inline by exact type (no call per string); anything unusual takes the general
    checks, which accept subclasses the encoder writes the same way.
    """
    if depth > _MAX_DEPTH:
        return False
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str) or not (k.isascii() or max(k) <= "\uffff"):
                return False
            if type(v) not in _PLAIN_LEAVES and not _plain(v, depth + 1):
                return False
        return True
    if isinstance(value, list | tuple):
        return all(type(v) in _PLAIN_LEAVES or _plain(v, depth + 1) for v in value)
    if isinstance(value, str) or value is None or isinstance(value, bool):
        return True
    if isinstance(value, int):
        return -_SAFE_INT <= value <= _SAFE_INT
    return False


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def canonical_digest(value: Any) -> str:
    """Hex SHA-256 of the canonical form: a fingerprint that ignores key order."""
    return hashlib.sha256(canonical_json(value)).hexdigest()


def b64url(data: bytes) -> str:
    """Unpadded base64url, as JOSE writes it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
# The last character of a 2- or 3-character tail may only use its high bits; anything else
# decodes to the same bytes as another spelling.
_TAIL_MASK = {2: 0b001111, 3: 0b000011}


def b64url_decode(text: str) -> bytes:
    """Strict inverse of :func:`b64url`: unpadded, and in the one canonical spelling of its
    bytes; raises :class:`BadRequestError` otherwise."""
    if not isinstance(text, str) or _B64URL.fullmatch(text) is None:
        raise BadRequestError("value is not unpadded base64url")
    tail = len(text) % 4
    if tail == 1:
        raise BadRequestError("value is not unpadded base64url")
    if tail and _ALPHABET.index(text[-1]) & _TAIL_MASK[tail]:
        raise BadRequestError("value is not in canonical base64url form")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# --- strict parsing ------------------------------------------------------------------------
# What every JSON the project takes in is held to (API bodies, signed headers, envelopes and
# assertions): readers differ on the rest, so one text could mean two things.

MAX_JSON_DEPTH = 64
# Python's own default bound on int(str) (sys.int_info.default_max_str_digits).
MAX_INT_DIGITS = 4300


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise BadRequestError(f"duplicate key {key!r} in JSON object")
        obj[key] = value
    return obj


def _reject_constant(name: str) -> Any:
    raise BadRequestError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    # json.loads reads 1e999 as infinity: a value no other JSON reader agrees on, and one
    # canonical JSON (RFC 8785) cannot write, so it could be neither signed nor hashed.
    value = float(text)
    if not math.isfinite(value):
        raise BadRequestError(f"number {text[:40]} is out of range for a JSON number")
    return value


def _bounded_int(text: str) -> int:
    # Python refuses more than sys.get_int_max_str_digits() digits with a bare ValueError.
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise BadRequestError(f"integer of {digits} digits is too long (at most {MAX_INT_DIGITS})")
    return int(text)


_STRICT_TEXT = json.JSONEncoder(ensure_ascii=False)

#: json's decoder made strict: no repeated key (which one wins differs between readers), no
#: NaN or infinity, integers of at most MAX_INT_DIGITS digits; each refusal a
#: BadRequestError. :func:`parse_json` adds its other checks; a reader of many small
#: documents it has bounded otherwise (the offline verifier's lines) may use it alone.
STRICT_DECODER = json.JSONDecoder(
    object_pairs_hook=_reject_duplicates,
    parse_constant=_reject_constant,
    parse_float=_finite_float,
    parse_int=_bounded_int,
)


def _depth(value: Any, limit: int) -> None:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            raise BadRequestError(f"JSON nests deeper than {limit} levels")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


# An escaped UTF-16 surrogate: the only way a lone one can enter text decoded from UTF-8.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def parse_json(data: bytes | str) -> Any:
    """Strict JSON: UTF-8, no duplicate keys, no NaN or Infinity (written, or overflowing
    like 1e999), integers of at most MAX_INT_DIGITS digits, bounded nesting, and no lone
    surrogates (I-JSON, RFC 7493): a string that holds one has no UTF-8 form, so it could be
    neither stored, signed nor hashed."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        if not isinstance(data, bytes):
            text.encode("utf-8")
        value = STRICT_DECODER.decode(text)
        if _SURROGATE_ESCAPE.search(text):  # pairs decode to one character; lone ones stay
            _STRICT_TEXT.encode(value).encode("utf-8")
    except UnicodeEncodeError as e:
        raise BadRequestError("JSON string holds a lone UTF-16 surrogate (U+D800 to U+DFFF)") from e
    except UnicodeDecodeError as e:
        raise BadRequestError("request body is not UTF-8") from e
    except RecursionError as e:
        raise BadRequestError("JSON nests too deeply") from e
    except json.JSONDecodeError as e:
        raise BadRequestError(f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from e
    _depth(value, MAX_JSON_DEPTH)
    return value
