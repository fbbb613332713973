"""TLS for gateways: certificates, pins, and contexts that trust exactly the registered peers.

Gateways authenticate each other with mutual TLS. The global configuration
publishes each gateway's certificate and its SHA-256 pin. Rather than trusting
a certificate authority and checking pins afterwards, each side's trust store
holds *only the registered leaf certificates* (OpenSSL's partial-chain mode
lets a leaf be its own trust anchor), so the handshake itself fails against an
unregistered or wrong peer, before a byte of a message is sent. Certificates
may be self-signed or issued by any CA: only the registered leaf is trusted.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from core.errors import BadRequestError
from core.keys import KeyFileError, read_private_pem

__all__ = [
    "Certificate",
    "client_context",
    "make_certificate",
    "peer_pin",
    "server_context",
]

MIN_TLS = ssl.TLSVersion.TLSv1_2


@dataclass(frozen=True)
class Certificate:
    """One parsed X.509 certificate with its pin (hex SHA-256 of the DER form)."""

    pem: str
    der: bytes
    sha256: str
    subject: str
    not_after: dt.datetime

    @classmethod
    def from_pem(cls, text: str, *, now: dt.datetime | None = None) -> Certificate:
        """Parse exactly one PEM certificate with an acceptable key; refuse expired ones."""
        if not isinstance(text, str) or text.count("-----BEGIN CERTIFICATE-----") != 1:
            raise BadRequestError("expected exactly one PEM certificate")
        try:
            cert = x509.load_pem_x509_certificate(text.encode("ascii"))
        except (ValueError, UnicodeEncodeError) as e:
            raise BadRequestError(f"not a readable PEM certificate: {e}") from e
        key = cert.public_key()
        if isinstance(key, ec.EllipticCurvePublicKey):
            if key.curve.name not in ("secp256r1", "secp384r1"):
                raise BadRequestError("TLS certificates must use P-256, P-384 or RSA >= 2048 keys")
        elif isinstance(key, rsa.RSAPublicKey):
            if key.key_size < 2048:
                raise BadRequestError("RSA TLS keys must have at least 2048 bits")
        else:
            raise BadRequestError("TLS certificates must use P-256, P-384 or RSA >= 2048 keys")
        now = now or dt.datetime.now(dt.UTC)
        if cert.not_valid_after_utc <= now:
            raise BadRequestError(f"certificate expired at {cert.not_valid_after_utc.isoformat()}")
        der = cert.public_bytes(serialization.Encoding.DER)
        return cls(
            pem=cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
            der=der,
            sha256=hashlib.sha256(der).hexdigest(),
            subject=cert.subject.rfc4514_string(),
            not_after=cert.not_valid_after_utc,
        )


def make_certificate(
    common_name: str,
    key: ec.EllipticCurvePrivateKey,
    *,
    days: int = 825,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
    ca: bool = False,
) -> x509.Certificate:
    """A TLS certificate for ``key``: self-signed, or issued by ``issuer`` (certificate, key).

    Gateways use self-signed certificates by default: trust comes from the
    registry publishing them, not from who signed them.
    """
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage(
                [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH, x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def _base(purpose: ssl._SSLMethod) -> ssl.SSLContext:
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = MIN_TLS
    ctx.verify_mode = ssl.CERT_REQUIRED
    # A registered leaf certificate is a trust anchor on its own.
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return ctx


def server_context(
    cert_file: str, key_file: str, trusted: Iterable[str], *, password: bytes | None = None
) -> ssl.SSLContext:
    """Server side of gateway mTLS: require a client certificate among ``trusted`` (PEMs).

    More certificates can be added later with ``load_verify_locations``
    (a newly registered gateway); removed ones are refused by the pin check
    against the current configuration.
    """
    ctx = _base(ssl.PROTOCOL_TLS_SERVER)
    _load_key_pair(ctx, cert_file, key_file, password)
    pems = "".join(trusted)
    if pems:
        ctx.load_verify_locations(cadata=pems)
    return ctx


def client_context(
    cert_file: str, key_file: str, peer_pem: str, *, password: bytes | None = None
) -> ssl.SSLContext:
    """Client side: present our certificate and accept only the one registered peer certificate.

    Host names are not checked: gateways are identified by their pinned
    certificate, and may be reached by IP address.
    """
    ctx = _base(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cadata=peer_pem)
    _load_key_pair(ctx, cert_file, key_file, password)
    return ctx


def _load_key_pair(
    ctx: ssl.SSLContext, cert_file: str, key_file: str, password: bytes | None
) -> None:
    """``load_cert_chain``, with errors that name the file and the fault.

    OpenSSL says only "PEM lib" for a wrong passphrase, a damaged key and a key that does
    not match its certificate alike, and a missing file without its name; the key is
    read here first so that the operator learns which.
    """
    read_private_pem(Path(key_file), password, what="TLS key file")
    try:
        ctx.load_cert_chain(cert_file, key_file, password=password)
    except ssl.SSLError as e:
        raise KeyFileError(
            f"TLS certificate {cert_file} is not a PEM certificate or does not match {key_file}"
        ) from e
    except OSError as e:
        raise KeyFileError(f"cannot read TLS certificate {cert_file}: {e.strerror}") from e


def peer_pin(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str | None:
    """Hex SHA-256 of the peer's certificate on an established TLS connection."""
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return hashlib.sha256(der).hexdigest() if der else None
