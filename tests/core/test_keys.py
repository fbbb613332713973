"""Key generation, storage with a passphrase, JWK import rules and thumbprints."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from jwcrypto import jwk as jwcrypto_jwk

from core.errors import BadRequestError
from core.keys import KeyFileError, KeySet, PrivateKey, PublicKey
from core.tls import make_certificate, server_context


def test_saved_key_is_encrypted_private_and_loads_back(tmp_path: Path) -> None:
    key = PrivateKey.generate()
    path = tmp_path / "k.pem"
    key.save(path, b"correct horse")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert b"ENCRYPTED PRIVATE KEY" in path.read_bytes()
    assert PrivateKey.load(path, b"correct horse").kid == key.kid


def test_wrong_or_missing_passphrase_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    PrivateKey.generate().save(path, b"right")
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        PrivateKey.load(path, b"wrong")
    with pytest.raises(KeyFileError, match="passphrase is needed"):
        PrivateKey.load(path, None)


def test_unencrypted_key_refuses_superfluous_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    PrivateKey.generate().save(path, None)
    with pytest.raises(KeyFileError, match="not encrypted"):
        PrivateKey.load(path, b"x")


def test_existing_key_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    PrivateKey.generate().save(path, None)
    before = path.read_bytes()
    with pytest.raises(KeyFileError, match="refusing"):
        PrivateKey.generate().save(path, None)
    assert path.read_bytes() == before


def test_other_key_types_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "ed.pem"
    path.write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
        )
    )
    with pytest.raises(KeyFileError, match="P-256"):
        PrivateKey.load(path, None)
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(KeyFileError, match="P-256"):
        PrivateKey.from_cryptography(p384)


def test_kid_is_the_rfc7638_thumbprint_as_another_library_computes_it() -> None:
    key = PrivateKey.generate().public()
    other = jwcrypto_jwk.JWK(
        **{k: v for k, v in key.to_jwk().items() if k in ("kty", "crv", "x", "y")}
    )
    assert key.kid == other.thumbprint()


def test_jwk_import_refuses_private_material_other_curves_and_false_kids() -> None:
    jwk = PrivateKey.generate().public().to_jwk()
    assert PublicKey.from_jwk(jwk).kid == jwk["kid"]
    with pytest.raises(BadRequestError, match="private key"):
        PublicKey.from_jwk({**jwk, "d": "AAAA"})
    with pytest.raises(BadRequestError, match="P-256"):
        PublicKey.from_jwk({**jwk, "crv": "P-384"})
    with pytest.raises(BadRequestError, match="thumbprint"):
        PublicKey.from_jwk({**jwk, "kid": "someone-else"})
    with pytest.raises(BadRequestError, match="malformed"):
        PublicKey.from_jwk({**jwk, "x": "not-a-point"})
    with pytest.raises(BadRequestError, match="ES256"):
        PublicKey.from_jwk({**jwk, "alg": "RS256"})


def test_private_key_repr_hides_the_key() -> None:
    key = PrivateKey.generate()
    assert repr(key) == f"PrivateKey(kid={key.kid!r})"


def test_keyset_round_trips_as_jwks() -> None:
    keys = KeySet([PrivateKey.generate().public() for _ in range(3)])
    again = KeySet.from_jwks(keys.to_jwks())
    assert set(again) == set(keys)
    with pytest.raises(BadRequestError, match="'keys'"):
        KeySet.from_jwks({"key": []})


def test_a_tls_key_pair_is_refused_with_the_file_and_the_fault(tmp_path: Path) -> None:
    """TLS contexts read their key as the signing keys are read (OpenSSL alone says only
    'PEM lib' for all of these)."""
    key = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    key_file, cert_file = tmp_path / "tls-key.pem", tmp_path / "tls-cert.pem"
    key_file.write_bytes(PrivateKey.from_cryptography(key).to_pem(b"right"))
    cert_file.write_bytes(make_certificate("gw", other).public_bytes(Encoding.PEM))
    for password, fault in ((None, "passphrase is needed"), (b"wrong", "wrong passphrase")):
        with pytest.raises(KeyFileError, match=f"^TLS key file {key_file}: .*{fault}"):
            server_context(str(cert_file), str(key_file), [], password=password)
    with pytest.raises(KeyFileError, match=f"does not match {key_file}"):
        server_context(str(cert_file), str(key_file), [], password=b"right")
    cert_file.write_bytes(make_certificate("gw", key).public_bytes(Encoding.PEM))
    assert server_context(str(cert_file), str(key_file), [], password=b"right")
