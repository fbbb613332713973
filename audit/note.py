"""C2SP signed notes and transparency-log checkpoints, signed with Shahrah's ES256 keys.

A checkpoint (c2sp.org/tlog-checkpoint) is a signed note (c2sp.org/signed-note)
whose text is three lines: the log's *origin*, the tree size in decimal and
the base64 root hash. Shahrah's keys are ECDSA P-256, so:

* **Log signatures** use signed-note type ``0x02``, "ECDSA signatures as
  implemented by github.com/transparency-dev/witness": the key ID is the
  first four bytes of SHA-256 over the key's DER SubjectPublicKeyInfo, the
  signature is an ASN.1 DER ECDSA signature over SHA-256 of the note text.
  Any tool that reads transparency-dev notes can check them given the key's
  vkey (:func:`vkey`).
* **Witness cosignatures** follow c2sp.org/tlog-cosignature's Ed25519 v1
  construction with ES256 in its place. The signed message is
  ``cosignature/v1\\ntime <T>\\n`` followed by the checkpoint text, the
  signature is the 8-byte big-endian timestamp followed by the DER ECDSA
  signature, and the key ID is ``SHA-256(name || 0x0A || 0xFF ||
  "shahrah/es256-cosignature/v1" || SPKI)[:4]``: type byte ``0xFF`` is the
  one signed-note reserves for types without an assigned byte, followed by a
  long identifier, as it recommends.

The same member key also signs JWS (core.jws). The two can never be confused:
a JWS signing input is base64url and dots, never a newline, while every note
text ends with one and every cosigned message starts with ``cosignature/v1``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from core.errors import BadRequestError, InvalidSignatureError
from core.keys import PrivateKey, PublicKey

__all__ = [
    "Checkpoint",
    "Note",
    "NoteError",
    "NoteSignature",
    "b64decode_hash",
    "b64encode_hash",
    "cosign",
    "cosignature_key_id",
    "log_key_id",
    "log_origin",
    "sign_checkpoint",
    "verify_cosignature",
    "verify_log_signature",
    "vkey",
    "witness_name",
]

MAX_NOTE = 64 * 1024  # bytes; a checkpoint with a few signatures is under 1 KiB
MAX_SIGNATURES = 32  # signed-note: verifiers must accept at least 16
LOG_SIG_TYPE = 0x02
COSIG_TYPE = b"\xff" + b"shahrah/es256-cosignature/v1"
COSIG_HEADER = "cosignature/v1\n"
_EM_DASH = "\u2014 "
_ECDSA = ec.ECDSA(hashes.SHA256())
_SIZE = re.compile(r"0|[1-9][0-9]{0,18}")
_NAME_UNSAFE = re.compile(r"[\s+]")


class NoteError(BadRequestError):
    """A note or checkpoint is malformed (as opposed to signed by the wrong key)."""


def _name_part(value: str) -> str:
    # Note key names must not hold spaces or '+'; X-Road parts may hold '+'.
    return quote(value, safe="/'(),-.=?:@")


def log_origin(log_id: str) -> str:
    """The checkpoint origin (and log key name) of the log ``log_id``: ``shahrah/<log id>``."""
    return "shahrah/" + _name_part(log_id)


def witness_name(instance: str) -> str:
    """The key name of the audit witness of ``instance``: ``shahrah/<instance>/audit-witness``."""
    return f"shahrah/{_name_part(instance)}/audit-witness"


def b64decode_hash(text: str, what: str = "hash") -> bytes:
    """Strict standard base64 of a 32-byte hash, as RFC 6962 and C2SP write them."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise BadRequestError(f"{what} is not base64") from e
    if len(raw) != 32 or base64.b64encode(raw).decode() != text:
        raise BadRequestError(f"{what} must be the base64 of 32 bytes")
    return raw


def b64encode_hash(digest: bytes) -> str:
    """Standard base64, as RFC 6962's JSON API and C2SP notes write hashes."""
    return base64.b64encode(digest).decode("ascii")


def _spki(key: PublicKey) -> bytes:
    return key.cryptography_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def log_key_id(key: PublicKey) -> bytes:
    """Signed-note key ID of a log key (type 0x02): SHA-256 of its SPKI, first 4 bytes."""
    return hashlib.sha256(_spki(key)).digest()[:4]


def cosignature_key_id(name: str, key: PublicKey) -> bytes:
    """Signed-note key ID of a witness key under ``name``."""
    return hashlib.sha256(name.encode() + b"\n" + COSIG_TYPE + _spki(key)).digest()[:4]


def vkey(name: str, key: PublicKey) -> str:
    """The transparency-dev verifier key string for a log key: ``name+hash+base64(0x02||SPKI)``."""
    material = base64.b64encode(bytes([LOG_SIG_TYPE]) + _spki(key)).decode()
    return f"{name}+{log_key_id(key).hex()}+{material}"


# --- notes --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoteSignature:
    name: str
    key_id: bytes
    signature: bytes

    def line(self) -> str:
        return f"{_EM_DASH}{self.name} {base64.b64encode(self.key_id + self.signature).decode()}\n"


@dataclass(frozen=True)
class Note:
    """A signed note: its text (ending in a newline) and its signatures."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def render(self) -> str:
        return self.text + "\n" + "".join(s.line() for s in self.signatures)

    def with_signatures(self, extra: Iterable[NoteSignature]) -> Note:
        """This note with ``extra`` signatures added (ones it already carries are kept once)."""
        sigs = list(self.signatures)
        for s in extra:
            if s not in sigs:
                sigs.append(s)
        return Note(self.text, tuple(sigs))

    @classmethod
    def parse(cls, data: str | bytes) -> Note:
        """Parse a signed note strictly; raises :class:`NoteError` naming the problem."""
        if isinstance(data, bytes):
            if len(data) > MAX_NOTE:
                raise NoteError(f"note is larger than {MAX_NOTE} bytes")
            try:
                data = data.decode("utf-8")
            except UnicodeDecodeError as e:
                raise NoteError("note is not UTF-8") from e
        try:
            encoded = data.encode("utf-8")
        except UnicodeEncodeError as e:  # a lone surrogate: text no signature can cover
            raise NoteError("note is not UTF-8 (it holds a lone surrogate)") from e
        if len(encoded) > MAX_NOTE:
            raise NoteError(f"note is larger than {MAX_NOTE} bytes")
        if any(ord(c) < 0x20 and c != "\n" for c in data):
            raise NoteError("note holds a control character")
        split = data.rfind("\n\n")
        if split < 0 or not data.endswith("\n"):
            raise NoteError("note has no blank line before its signatures")
        text, block = data[: split + 1], data[split + 2 :]
        lines = block.split("\n")[:-1]
        if not lines:
            raise NoteError("note has no signatures")
        if len(lines) > MAX_SIGNATURES:
            raise NoteError(f"note has more than {MAX_SIGNATURES} signatures")
        return cls(text, tuple(_parse_signature(line) for line in lines))


def _parse_signature(line: str) -> NoteSignature:
    if not line.startswith(_EM_DASH):
        raise NoteError("a signature line must start with an em dash and a space")
    name, sep, encoded = line[len(_EM_DASH) :].partition(" ")
    if not sep or not name or _NAME_UNSAFE.search(name):
        raise NoteError("a signature line needs a key name without spaces or '+'")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as e:
        raise NoteError(f"signature of {name!r} is not base64") from e
    if len(raw) < 5 or base64.b64encode(raw).decode() != encoded:
        raise NoteError(f"signature of {name!r} is not canonical base64 of a key ID and signature")
    return NoteSignature(name, raw[:4], raw[4:])


# --- checkpoints --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """The tree head a checkpoint states: origin, size and RFC 6962 root hash."""

    origin: str
    size: int
    root: bytes

    def text(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parse checkpoint note text; extension lines are refused (Shahrah writes none)."""
        lines = text.split("\n")
        if lines[-1] != "" or len(lines) < 4:
            raise NoteError("checkpoint text must be origin, size and root hash lines")
        lines = lines[:-1]
        if len(lines) > 3:
            raise NoteError("checkpoint extension lines are not accepted")
        origin, size, root = lines
        if not origin or _NAME_UNSAFE.search(origin):
            raise NoteError("checkpoint origin must be non-empty, without spaces or '+'")
        if not _SIZE.fullmatch(size) or int(size) >= 2**63:
            raise NoteError("checkpoint size must be a decimal number without leading zeros")
        try:
            digest = b64decode_hash(root, "checkpoint root hash")
        except BadRequestError as e:
            raise NoteError(e.message) from e
        return cls(origin, int(size), digest)


def sign_checkpoint(checkpoint: Checkpoint, key: PrivateKey) -> Note:
    """The checkpoint as a note signed by the log's key, under the origin as key name."""
    text = checkpoint.text()
    signature = key.cryptography_key.sign(text.encode(), _ECDSA)
    return Note(text, (NoteSignature(checkpoint.origin, log_key_id(key.public()), signature),))


def verify_log_signature(note: Note, origin: str, keys: Iterable[PublicKey]) -> PublicKey:
    """The key among ``keys`` whose signature on ``note`` (named ``origin``) verifies.

    Signatures from other names or unknown key IDs are ignored, as signed-note
    requires; a signature from a known key that fails makes the whole note
    fail, and so does the absence of any verifying one.
    """
    by_id = {log_key_id(k): k for k in keys}
    verified: PublicKey | None = None
    for sig in note.signatures:
        key = by_id.get(sig.key_id)
        if sig.name != origin or key is None:
            continue
        try:
            key.cryptography_key.verify(sig.signature, note.text.encode(), _ECDSA)
        except InvalidSignature as e:
            raise InvalidSignatureError(f"the signature of {origin} does not verify") from e
        verified = key
    if verified is None:
        raise InvalidSignatureError(f"the note carries no signature by a known key of {origin}")
    return verified


def _cosigned_message(text: str, timestamp: int) -> bytes:
    return f"{COSIG_HEADER}time {timestamp}\n{text}".encode()


def cosign(note: Note, key: PrivateKey, name: str, timestamp: int) -> NoteSignature:
    """A witness cosignature on the checkpoint ``note`` at POSIX time ``timestamp``."""
    if not 0 <= timestamp < 2**63:
        raise ValueError("cosignature timestamp out of range")
    signature = key.cryptography_key.sign(_cosigned_message(note.text, timestamp), _ECDSA)
    return NoteSignature(
        name,
        cosignature_key_id(name, key.public()),
        struct.pack(">Q", timestamp) + signature,
    )


def verify_cosignature(note: Note, name: str, key: PublicKey) -> int:
    """The timestamp of the verifying cosignature by ``key`` under ``name`` on ``note``."""
    key_id = cosignature_key_id(name, key)
    for sig in note.signatures:
        if sig.name != name or sig.key_id != key_id:
            continue
        if len(sig.signature) < 9:
            raise InvalidSignatureError(f"the cosignature of {name} is truncated")
        (timestamp,) = struct.unpack(">Q", sig.signature[:8])
        if timestamp >= 2**63:
            raise InvalidSignatureError(f"the cosignature of {name} has an impossible time")
        try:
            key.cryptography_key.verify(
                sig.signature[8:], _cosigned_message(note.text, timestamp), _ECDSA
            )
        except InvalidSignature as e:
            raise InvalidSignatureError(f"the cosignature of {name} does not verify") from e
        return int(timestamp)
    raise InvalidSignatureError(f"the note carries no cosignature by {name}")
