"""TLS for gateways: certificates, pins, and contexts that trust exactly the registered peers.

Gateways authenticate each other with mutual TLS. The global configuration
publishes each gateway's certificate and its SHA-256 pin. Rather than trusting
a certificate authority and checking pins afterwards, each side's trust store
holds *only the registered leaf certificates* (OpenSSL's partial-chain mode
lets a leaf be its own trust anchor), and the handshake completes only if the
peer's certificate is one of the pinned ones, so it fails against an
unregistered or wrong peer before either side reads a byte of a message.
Certificates may be self-signed or issued by any CA: only the registered leaf
is trusted.

The pin check matters beside the trust store: a trust anchor vouches for
every certificate it signed, and OpenSSL takes as an issuer not only a
certificate marked as a CA but also, for one, a self-signed X.509 v1
certificate. Certificates that can sign others are refused for gateways
(:func:`leaf_fault`), and the pin holds even for one that slipped through.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from core.errors import BadRequestError
from core.keys import KeyFileError, read_private_pem

__all__ = [
    "Certificate",
    "PinnedContext",
    "backend_context",
    "client_context",
    "leaf_fault",
    "local_context",
    "make_certificate",
    "peer_pin",
    "pin_of",
    "read_pinned",
    "server_context",
]

log = logging.getLogger(__name__)

_E = TypeVar("_E", bound=x509.ExtensionType)

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
        fault = _leaf_fault(cert)
        if fault is not None:
            raise BadRequestError(
                f"not a gateway's own certificate: {fault}; a gateway registers the leaf "
                "certificate it presents (basicConstraints CA:FALSE, without keyCertSign or "
                "cRLSign), as `shahrah gateway init` makes it"
            )
        der = cert.public_bytes(serialization.Encoding.DER)
        return cls(
            pem=cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
            der=der,
            sha256=hashlib.sha256(der).hexdigest(),
            subject=cert.subject.rfc4514_string(),
            not_after=cert.not_valid_after_utc,
        )


def leaf_fault(pem: str) -> str | None:
    """Why ``pem`` cannot be pinned as a gateway's certificate, or None if it can.

    A pinned certificate is a trust anchor, and an anchor that may sign certificates would
    make every certificate it signed a trusted peer.
    """
    try:
        _leaf(pem)
    except ValueError as e:
        return str(e)
    return None


def pin_of(cert: x509.Certificate) -> str:
    """A certificate's pin: the hex SHA-256 of its DER form, as the registry publishes it."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _leaf(pem: str) -> x509.Certificate:
    """The one certificate ``pem`` holds, if it can be pinned; else ValueError saying why."""
    if pem.count("-----BEGIN CERTIFICATE-----") != 1:
        raise ValueError("it is not exactly one PEM certificate")
    try:
        cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as e:
        raise ValueError("it is not a readable PEM certificate") from e
    fault = _leaf_fault(cert)
    if fault is not None:
        raise ValueError(fault)
    return cert


def read_pinned(path: Path, where: str) -> tuple[str, str]:
    """(pin, PEM) of the certificate file ``path`` to pin, or BadRequestError naming
    ``where`` (the configuration entry) and the file."""
    named = f"{where}: {path}"
    try:
        pem = path.read_text("ascii")
    except OSError as e:
        raise BadRequestError(f"{named}: cannot read: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise BadRequestError(f"{named}: not a PEM certificate") from e
    try:
        # A trusted certificate that may sign others would make every one it signed trusted.
        cert = _leaf(pem)
    except ValueError as e:
        raise BadRequestError(f"{named}: a certificate that cannot be pinned: {e}") from e
    expires = cert.not_valid_after_utc
    if expires <= dt.datetime.now(dt.UTC):
        # Every handshake with it would fail: said once at start, not per request.
        raise BadRequestError(f"{named}: the certificate expired at {expires.isoformat()}")
    return pin_of(cert), pem


def _anchor(pem: str) -> tuple[str, bytes]:
    """(pin, DER form) of a certificate to pin; ValueError if it cannot be pinned."""
    try:
        cert = _leaf(pem)
    except ValueError as e:
        raise ValueError(f"a certificate that cannot be pinned: {e}") from e
    return pin_of(cert), cert.public_bytes(serialization.Encoding.DER)


def _leaf_fault(cert: x509.Certificate) -> str | None:
    if cert.version is x509.Version.v1:
        return (
            "it is an X.509 v1 certificate: it has no extensions to say it is no CA, and "
            "OpenSSL accepts a self-signed one as a CA"
        )
    try:
        extensions = cert.extensions
    except (ValueError, x509.DuplicateExtension) as e:
        return f"its extensions cannot be read ({e})"
    constraints = _extension(extensions, x509.BasicConstraints)
    if constraints is not None and constraints.ca:
        return "it is a CA certificate (basicConstraints CA:TRUE)"
    usage = _extension(extensions, x509.KeyUsage)
    if usage is not None and usage.key_cert_sign:
        return "its keyUsage allows keyCertSign (signing certificates)"
    if usage is not None and usage.crl_sign:
        return "its keyUsage allows cRLSign (signing revocation lists)"
    return None


def _extension(extensions: x509.Extensions, kind: type[_E]) -> _E | None:
    try:
        return extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


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


def _require_pin(conn: ssl.SSLObject | ssl.SSLSocket) -> None:
    """After OpenSSL's own verification: the peer's certificate must be one of the pins.

    Raised as a certificate verification error so that asyncio fails the handshake as it
    does for OpenSSL's own, and aiohttp reports it as one (a connection never made).
    """
    ctx = conn.context
    pin = peer_pin(conn)
    if isinstance(ctx, PinnedContext) and pin is not None and pin in ctx.pins:
        return
    if isinstance(ctx, PinnedContext) and ctx.verify_mode == ssl.CERT_OPTIONAL and pin is None:
        return  # a server that asks for a certificate but does not require one
    side = "client" if conn.server_side else "server"
    log.info("TLS handshake refused: the %s's certificate %s is not pinned", side, pin)
    raise ssl.SSLCertVerificationError(f"the {side}'s TLS certificate is not a pinned one")


class _PinnedObject(ssl.SSLObject):
    """What asyncio's TLS transport wraps a connection in (``SSLContext.wrap_bio``)."""

    def do_handshake(self) -> None:
        super().do_handshake()
        _require_pin(self)


class _PinnedSocket(ssl.SSLSocket):
    """The same for a blocking socket (``SSLContext.wrap_socket``), so no use escapes it."""

    def do_handshake(self, block: bool = False) -> None:
        super().do_handshake(block)
        _require_pin(self)


class PinnedContext(ssl.SSLContext):
    """A context whose handshakes complete only with a peer presenting a pinned certificate.

    ``pins`` (hex SHA-256 of the DER certificates) is read when each handshake ends, so
    replacing it (:meth:`trust_exactly`) takes effect for the next connection: OpenSSL's
    trust store can only grow, the pins follow the configuration both ways.
    """

    sslobject_class = _PinnedObject
    sslsocket_class = _PinnedSocket

    def __init__(self, protocol: ssl._SSLMethod) -> None:
        super().__init__()  # ssl.SSLContext.__new__ took the protocol
        self.minimum_version = MIN_TLS
        self.verify_mode = ssl.CERT_REQUIRED
        # A registered leaf certificate is a trust anchor on its own.
        self.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        self.pins: frozenset[str] = frozenset()
        self._loaded: set[str] = set()  # pins whose certificate is in OpenSSL's store

    def trust_exactly(self, certificates: Mapping[str, str]) -> tuple[int, int]:
        """From the next handshake on, accept exactly these peers (pin -> PEM certificate).

        Returns how many pins were added and removed. A certificate that could sign others
        is refused with ValueError (:func:`leaf_fault`): callers skip those, saying whose.
        """
        for pin, pem in certificates.items():
            if pin not in self._loaded:
                # The DER form of the one certificate checked, whatever else the text holds.
                self.load_verify_locations(cadata=_anchor(pem)[1])
                self._loaded.add(pin)
        pins = frozenset(certificates)
        added, removed = len(pins - self.pins), len(self.pins - pins)
        self.pins = pins
        return added, removed


def server_context(
    cert_file: str, key_file: str, trusted: Iterable[str], *, password: bytes | None = None
) -> PinnedContext:
    """Server side of gateway mTLS: require a client certificate among ``trusted`` (PEMs).

    The trusted set is replaced with :meth:`PinnedContext.trust_exactly` as the
    configuration changes (a gateway registered, removed, or given a new certificate).
    """
    ctx = PinnedContext(ssl.PROTOCOL_TLS_SERVER)
    _load_key_pair(ctx, cert_file, key_file, password)
    ctx.trust_exactly({_anchor(pem)[0]: pem for pem in trusted})
    return ctx


def local_context(
    cert_file: str, key_file: str, trusted: Iterable[str], *, password: bytes | None = None
) -> PinnedContext:
    """Server side of a gateway's local listener: a client may present a certificate or not
    (X-Road's HTTPS and HTTPS_NO_AUTH connection types share it), but one it presents must
    be among ``trusted`` (PEMs); whose it is, is checked per request against the client the
    request names."""
    ctx = server_context(cert_file, key_file, trusted, password=password)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def backend_context(
    cert_file: str, key_file: str, pinned: Mapping[str, str], *, password: bytes | None = None
) -> ssl.SSLContext:
    """Client side toward an HTTPS system behind a service: present the gateway's certificate
    (the backend may require it), and trust the backend's certificate if it is one of
    ``pinned`` (pin -> PEM, as :func:`read_pinned` gives them), or, with none pinned, as the
    system's certificate authorities and its host name vouch for it."""
    ctx: ssl.SSLContext
    if pinned:
        ctx = PinnedContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False  # the pin names the backend
        ctx.trust_exactly(pinned)
    else:
        ctx = ssl.create_default_context()
        ctx.minimum_version = MIN_TLS
    _load_key_pair(ctx, cert_file, key_file, password)
    return ctx


def client_context(
    cert_file: str,
    key_file: str,
    peer_pem: str | None,
    *,
    pin: str | None = None,
    password: bytes | None = None,
) -> PinnedContext:
    """Client side: present our certificate and accept only the one registered peer certificate.

    ``pin`` is the peer's registered SHA-256 (by default that of ``peer_pem``); the
    handshake fails, before a byte of the request is written, unless the peer's
    certificate has it. ``peer_pem`` None trusts no peer: every handshake fails.

    Host names are not checked: gateways are identified by their pinned
    certificate, and may be reached by IP address.
    """
    ctx = PinnedContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    if peer_pem is not None:
        ctx.trust_exactly({(pin or _anchor(peer_pem)[0]).lower(): peer_pem})
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


def listener_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A plain TLS server context (no client certificates) from PEM files, for the central
    services' listeners; BadRequestError naming the files if they do not load."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as e:
        reason = e.strerror or str(e)  # SSLError is an OSError too
        raise BadRequestError(f"cannot load TLS certificate {cert} and key {key}: {reason}") from e
    return ctx
