"""Gateway TLS: which certificates may be pinned, and handshakes that complete only with a
pinned peer, over real sockets with certificates made here."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import NameOID

from core.errors import BadRequestError
from core.tls import (
    Certificate,
    PinnedContext,
    client_context,
    leaf_fault,
    make_certificate,
    server_context,
)

# A self-signed X.509 v1 certificate (made with `openssl x509 -req -signkey`; the library
# here makes only v3): no extensions, and OpenSSL takes a self-signed one as a CA.
V1_PEM = """-----BEGIN CERTIFICATE-----
MIIBJjCBzQIUEUDPhJGnxu7jXlC/2X5X9SkMEGEwCgYIKoZIzj0EAwIwFTETMBEG
A1UEAwwKdjEtZ2F0ZXdheTAgFw0yNjExMjkxMTU2MzRaGA8yMTI2MTEwNTExNTYz
NFowFTETMBEGA1UEAwwKdjEtZ2F0ZXdheTBZMBMGByqGSM49AgEGCCqGSM49AwEH
A0IABNguhZ3OjPCfYjxIuzgFZ3cnAirWAODVftR1D2MDTBRogGM7mKnH8Lp1vAZ7
XfG0C0XosMNE0EWlkIO4HAN7zNswCgYIKoZIzj0EAwIDSAAwRQIgTEz60x8Br+9n
uu9OjpKmqSGYGezAos+evstMGG+Nm/YCIQDnZwTNzAT8+kJn0I2nGtr5RpPeQ51O
Eq73uGP1CIXByg==
-----END CERTIFICATE-----
"""


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(Encoding.PEM).decode()


def _with_usage(**usage: bool) -> str:
    """A self-signed v3 certificate with only a keyUsage extension (no basicConstraints)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gw")])
    now = dt.datetime.now(dt.UTC)
    flags = dict.fromkeys(
        (
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        ),
        False,
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.KeyUsage(**{**flags, **usage}), critical=True)
        .sign(key, hashes.SHA256())
    )
    return _pem(cert)


def _self_signed(ca: bool = False) -> str:
    return _pem(make_certificate("gw", ec.generate_private_key(ec.SECP256R1()), ca=ca))


@pytest.mark.parametrize(
    ("make", "fault"),
    [
        (lambda: _self_signed(), None),
        (lambda: _with_usage(digital_signature=True), None),
        (lambda: _self_signed(ca=True), "a CA certificate (basicConstraints CA:TRUE)"),
        (lambda: _with_usage(key_cert_sign=True), "keyUsage allows keyCertSign"),
        (lambda: _with_usage(digital_signature=True, crl_sign=True), "keyUsage allows cRLSign"),
        (lambda: V1_PEM, "an X.509 v1 certificate"),
        (lambda: V1_PEM + _self_signed(), "not exactly one PEM certificate"),
        (lambda: "-----BEGIN CERTIFICATE-----\nAAAA", "not a readable PEM certificate"),
    ],
)
def test_only_a_certificate_that_signs_no_others_can_be_pinned(
    make: Callable[[], str], fault: str | None
) -> None:
    found = leaf_fault(make())
    assert found == fault if fault is None else fault in (found or "")


def test_a_certificate_that_can_sign_others_is_refused_as_a_gateways() -> None:
    with pytest.raises(BadRequestError, match=r"basicConstraints CA:TRUE.*leaf certificate"):
        Certificate.from_pem(_self_signed(ca=True))
    with pytest.raises(BadRequestError, match="keyCertSign"):
        Certificate.from_pem(_with_usage(key_cert_sign=True))
    assert Certificate.from_pem(_self_signed()).sha256


# --- handshakes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Party:
    cert_file: str
    key_file: str
    cert: x509.Certificate

    @property
    def pem(self) -> str:
        return _pem(self.cert)

    @property
    def pin(self) -> str:
        return Certificate.from_pem(self.pem).sha256


@pytest.fixture
def ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    return make_certificate("test CA", key, ca=True), key


@pytest.fixture
def party(
    tmp_path: Path, ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]
) -> Callable[[str], Party]:
    """A gateway's key and leaf certificate, all issued by the same CA."""

    def make(name: str) -> Party:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = make_certificate(name, key, issuer=ca)
        cert_file, key_file = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
        cert_file.write_bytes(cert.public_bytes(Encoding.PEM))
        key_file.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
        return Party(str(cert_file), str(key_file), cert)

    return make


@asynccontextmanager
async def _listener(ctx: ssl.SSLContext) -> AsyncIterator[tuple[int, list[bytes]]]:
    """A TLS server that records every byte the application layer reads."""
    received: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read(100))
        writer.write(b"pong")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    async with server:
        yield server.sockets[0].getsockname()[1], received


async def _exchange(port: int, ctx: ssl.SSLContext) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    try:
        writer.write(b"ping")
        await writer.drain()
        return await asyncio.wait_for(reader.read(100), 10)
    finally:
        writer.close()


async def test_a_client_completes_a_handshake_only_with_the_registered_pin(
    party: Callable[[str], Party],
) -> None:
    """The trust store alone would accept the server here: the pin decides, before the
    request is written."""
    server, client = party("provider"), party("consumer")
    async with _listener(server_context(server.cert_file, server.key_file, [client.pem])) as (
        port,
        received,
    ):
        good = client_context(client.cert_file, client.key_file, server.pem, pin=server.pin)
        assert await _exchange(port, good) == b"pong"
        wrong = client_context(client.cert_file, client.key_file, server.pem, pin="0" * 64)
        with pytest.raises(ssl.SSLCertVerificationError, match="not a pinned one"):
            await _exchange(port, wrong)
        nobody = client_context(client.cert_file, client.key_file, None)
        with pytest.raises(ssl.SSLCertVerificationError):
            await _exchange(port, nobody)
        await asyncio.sleep(0.1)
    assert received == [b"ping"]


async def test_a_blocking_socket_is_held_to_the_pin_too(party: Callable[[str], Party]) -> None:
    server, client = party("provider"), party("consumer")

    def connect(ctx: ssl.SSLContext, port: int) -> None:
        with socket.create_connection(("127.0.0.1", port)) as raw, ctx.wrap_socket(raw):
            pass

    async with _listener(server_context(server.cert_file, server.key_file, [client.pem])) as (
        port,
        _,
    ):
        wrong = client_context(client.cert_file, client.key_file, server.pem, pin="0" * 64)
        with pytest.raises(ssl.SSLCertVerificationError, match="not a pinned one"):
            await asyncio.to_thread(connect, wrong, port)


@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["TLSv1.2", "TLSv1.3"]
)
async def test_a_server_refuses_a_certificate_removed_from_its_trust(
    party: Callable[[str], Party], version: ssl.TLSVersion
) -> None:
    """OpenSSL's trust store only grows; the pins follow the configuration both ways."""
    server, client, other = party("provider"), party("consumer"), party("other")
    ctx = server_context(server.cert_file, server.key_file, [client.pem])
    to_server = client_context(client.cert_file, client.key_file, server.pem)
    to_server.maximum_version = version
    async with _listener(ctx) as (port, received):
        assert await _exchange(port, to_server) == b"pong"
        assert ctx.trust_exactly({other.pin: other.pem}) == (1, 1)
        if version is ssl.TLSVersion.TLSv1_2:
            # The server never sends its Finished: the client's handshake fails.
            with pytest.raises((ssl.SSLError, ConnectionError)):
                await _exchange(port, to_server)
        else:
            # TLS 1.3 clients finish first and may write at once: the server closes unread.
            assert await _exchange(port, to_server) == b""
        assert ctx.trust_exactly({client.pin: client.pem, other.pin: other.pem}) == (1, 0)
        assert await _exchange(port, to_server) == b"pong"
        await asyncio.sleep(0.1)
    assert received == [b"ping", b"ping"]


def test_a_certificate_that_can_sign_others_is_never_pinned(
    party: Callable[[str], Party], ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]
) -> None:
    client = party("consumer")
    with pytest.raises(ValueError, match="basicConstraints CA:TRUE"):
        client_context(client.cert_file, client.key_file, _pem(ca[0]))
    ctx = server_context(client.cert_file, client.key_file, [])
    assert isinstance(ctx, PinnedContext)
    with pytest.raises(ValueError, match=r"X\.509 v1"):
        ctx.trust_exactly({"0" * 64: V1_PEM})
    assert ctx.pins == frozenset()
