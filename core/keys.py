"""Signing keys: the only module that parses, makes, stores or loads them.

Shahrah signs with ES256 (ECDSA over P-256 with SHA-256). It was chosen over
EdDSA by measurement on the project's machines: see docs/signatures.md. The
algorithm is tied to the key type here, so no caller ever chooses one.

A key's id is its RFC 7638 JWK thumbprint, so the same public key has the same
id everywhere without anyone assigning it. Private keys are written as
PKCS#8 PEM, encrypted with a passphrase unless the caller explicitly asks for
none.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from core.errors import BadRequestError, InvalidSignatureError, ShahrahError
from core.files import write_atomic

__all__ = [
    "ALGORITHM",
    "KeyFileError",
    "KeySet",
    "PrivateKey",
    "PublicKey",
    "read_private_pem",
]

#: The one JWS algorithm Shahrah signs and verifies with.
ALGORITHM = "ES256"
_CURVE = "P-256"

_T = TypeVar("_T")


class KeyFileError(ShahrahError):
    """A key file is missing, unreadable, of the wrong type, or the passphrase is wrong."""


@dataclass(frozen=True)
class PublicKey:
    """A P-256 public key with its RFC 7638 thumbprint as ``kid``."""

    jose: ECKey
    kid: str

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any]) -> PublicKey:
        """Import a public JWK, refusing private material and other key types.

        A ``kid`` in the JWK, if present, must equal the thumbprint: a key is
        never known under a name it did not earn.
        """
        if not isinstance(jwk, Mapping):
            raise BadRequestError("a JWK must be a JSON object")
        if jwk.get("kty") != "EC" or jwk.get("crv") != _CURVE:
            raise BadRequestError(f"only EC {_CURVE} keys are accepted (kty=EC, crv={_CURVE})")
        if "d" in jwk:
            raise BadRequestError("a private key was given where a public key is expected")
        if jwk.get("alg", ALGORITHM) != ALGORITHM:
            raise BadRequestError(f"key algorithm must be {ALGORITHM}")
        try:
            key = ECKey.import_key({"kty": "EC", "crv": _CURVE, "x": jwk["x"], "y": jwk["y"]})
        except (KeyError, TypeError, ValueError, JoseError) as e:
            raise BadRequestError(f"malformed EC public key: {e}") from e
        kid = key.thumbprint()
        if "kid" in jwk and jwk["kid"] != kid:
            raise BadRequestError("JWK 'kid' does not match its RFC 7638 thumbprint")
        return cls(key, kid)

    def to_jwk(self) -> dict[str, str]:
        """Public JWK with ``kid``, ``alg`` and ``use``: what the global configuration publishes."""
        jwk = self.jose.as_dict(private=False)
        return {
            "kty": "EC",
            "crv": _CURVE,
            "x": str(jwk["x"]),
            "y": str(jwk["y"]),
            "kid": self.kid,
            "alg": ALGORITHM,
            "use": "sig",
        }

    @property
    def cryptography_key(self) -> ec.EllipticCurvePublicKey:
        key = self.jose.public_key
        assert isinstance(key, ec.EllipticCurvePublicKey)
        return key


@dataclass(frozen=True)
class PrivateKey:
    """A P-256 private signing key. Its ``repr`` never shows the key."""

    jose: ECKey
    kid: str

    def __repr__(self) -> str:
        return f"PrivateKey(kid={self.kid!r})"

    @classmethod
    def generate(cls) -> PrivateKey:
        key = ECKey.generate_key(_CURVE, private=True)
        return cls(key, key.thumbprint())

    @classmethod
    def from_cryptography(cls, key: ec.EllipticCurvePrivateKey) -> PrivateKey:
        if not isinstance(key.curve, ec.SECP256R1):
            raise KeyFileError(f"only {_CURVE} private keys are accepted")
        jose = ECKey.import_key(key)
        return cls(jose, jose.thumbprint())

    def public(self) -> PublicKey:
        return PublicKey.from_jwk(self.jose.as_dict(private=False))

    @property
    def cryptography_key(self) -> ec.EllipticCurvePrivateKey:
        key = self.jose.private_key
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key

    def to_pem(self, passphrase: bytes | None) -> bytes:
        """PKCS#8 PEM, encrypted with ``passphrase`` unless it is None."""
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase)
            if passphrase
            else serialization.NoEncryption()
        )
        return self.cryptography_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )

    @classmethod
    def from_pem(cls, data: bytes, passphrase: bytes | None) -> PrivateKey:
        key = _parse_private_pem(data, passphrase)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise KeyFileError(f"only EC {_CURVE} private keys are accepted")
        return cls.from_cryptography(key)

    def save(self, path: Path, passphrase: bytes | None) -> None:
        """Write the key atomically with mode 0600; refuse to overwrite an existing key."""
        if path.exists():
            raise KeyFileError(f"{path} already exists; refusing to overwrite a key")
        write_atomic(path, self.to_pem(passphrase), mode=0o600)

    @classmethod
    def load(cls, path: Path, passphrase: bytes | None) -> PrivateKey:
        return _read_key_file(path, "key file", lambda data: cls.from_pem(data, passphrase))


def _parse_private_pem(data: bytes, passphrase: bytes | None) -> PrivateKeyTypes:
    """Any private key in PEM, with the fault in words (OpenSSL and cryptography say little)."""
    try:
        return serialization.load_pem_private_key(data, password=passphrase or None)
    except TypeError as e:
        # cryptography says TypeError when a passphrase is missing or superfluous.
        if passphrase:
            raise KeyFileError("the key is not encrypted, but a passphrase was given") from e
        raise KeyFileError("the key is encrypted: a passphrase is needed") from e
    except (ValueError, UnsupportedAlgorithm) as e:
        raise KeyFileError("the key could not be read: wrong passphrase or not a PEM key") from e


def read_private_pem(path: Path, passphrase: bytes | None, *, what: str) -> PrivateKeyTypes:
    """The private key of any type in the PEM file ``path`` (``what`` it is, for messages),
    as :meth:`PrivateKey.load` reads its own: errors name the file and the fault."""
    return _read_key_file(path, what, lambda data: _parse_private_pem(data, passphrase))


def _read_key_file(path: Path, what: str, parse: Callable[[bytes], _T]) -> _T:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise KeyFileError(f"cannot read {what} {path}: {e.strerror}") from e
    try:
        return parse(data)
    except KeyFileError as e:
        # A gateway holds several keys: the operator must know which one to look at.
        raise KeyFileError(f"{what} {path}: {e.message}") from e


class KeySet(Mapping[str, PublicKey]):
    """Public keys by ``kid``: a JWK Set."""

    def __init__(self, keys: Iterable[PublicKey] = ()) -> None:
        self._keys = {k.kid: k for k in keys}

    def __getitem__(self, kid: str) -> PublicKey:
        return self._keys[kid]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def resolve(self, kid: str) -> PublicKey:
        """The key named ``kid``, or :class:`InvalidSignatureError` if there is none."""
        try:
            return self._keys[kid]
        except KeyError:
            raise InvalidSignatureError(f"no trusted key has id {kid!r}") from None

    @classmethod
    def from_jwks(cls, jwks: Mapping[str, Any]) -> KeySet:
        keys = jwks.get("keys") if isinstance(jwks, Mapping) else None
        if not isinstance(keys, list):
            raise BadRequestError("a JWK Set must be an object with a 'keys' array")
        return cls(PublicKey.from_jwk(k) for k in keys)

    def to_jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [self._keys[kid].to_jwk() for kid in sorted(self._keys)]}
