"""Creating a gateway's data directory: keys, certificate, configuration, anchor."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    NoEncryption,
    PrivateFormat,
)

from core.errors import BadRequestError, ConflictError
from core.files import write_atomic
from core.ids import GatewayId
from core.keys import PrivateKey
from core.tls import make_certificate
from exchange.config import check_host, https_address
from registry.globalconf import Anchor

__all__ = ["CONFIG_FILE", "Created", "init_gateway", "write_tls_pair"]

CONFIG_FILE = "gateway.toml"


@dataclass(frozen=True)
class Created:
    config: Path
    signing_jwk: Path
    tls_certificate: Path
    key: PrivateKey


def init_gateway(
    data_dir: Path,
    gateway: GatewayId,
    anchor_file: Path,
    *,
    passphrase: bytes | None,
    local_port: int = 8080,
    remote_port: int = 8443,
    remote_host: str = "127.0.0.1",
) -> Created:
    """Make the member signing key, the TLS key and self-signed certificate, and gateway.toml.

    Refuses a folder that already holds a gateway. Private keys are encrypted
    with ``passphrase`` unless it is None.
    """
    try:
        check_host(remote_host)  # it is written into gateway.toml and the printed address
    except ValueError as e:
        raise BadRequestError(f"remote host: {e}") from e
    config = data_dir / CONFIG_FILE
    if config.exists():
        raise ConflictError(f"{config} exists: {data_dir} already holds a gateway")
    anchor = Anchor.load(anchor_file)  # refuse a bad anchor before creating anything
    if anchor.instance != gateway.instance:
        raise ConflictError(
            f"the anchor is for instance {anchor.instance!r}, the gateway for {gateway.instance!r}"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    shutil.copyfile(anchor_file, data_dir / "anchor.json")

    key = PrivateKey.generate()
    key.save(data_dir / "signing-key.pem", passphrase)
    jwk_path = data_dir / "signing-key.jwk"
    write_atomic(jwk_path, (json.dumps(key.public().to_jwk(), indent=2) + "\n").encode())

    cert_path = data_dir / "tls-cert.pem"
    write_tls_pair(gateway, cert_path, data_dir / "tls-key.pem", passphrase=passphrase)

    write_atomic(
        config, _config_text(gateway, local_port, remote_host, remote_port).encode("utf-8")
    )
    return Created(config, jwk_path, cert_path, key)


def write_tls_pair(gateway: GatewayId, cert: Path, key: Path, *, passphrase: bytes | None) -> None:
    """A new P-256 TLS key (mode 0600, encrypted with ``passphrase`` unless None) and a
    self-signed leaf certificate for ``gateway``. The key is written first: a certificate
    file, which is what gets registered, is only ever there with its key."""
    private = ec.generate_private_key(ec.SECP256R1())
    encryption = BestAvailableEncryption(passphrase) if passphrase else NoEncryption()
    write_atomic(
        key, private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, encryption), mode=0o600
    )
    write_atomic(cert, make_certificate(str(gateway), private).public_bytes(Encoding.PEM))


def _config_text(gateway: GatewayId, local_port: int, remote_host: str, remote_port: int) -> str:
    member = gateway.member
    return f"""\
# Shahrah gateway {gateway}. Paths are relative to this file.
id = "{gateway}"
anchor = "anchor.json"
signing_key = "signing-key.pem"
tls_certificate = "tls-cert.pem"
tls_key = "tls-key.pem"
# database = "postgresql://user@host/name"   # default: gateway.db beside this file

[local]    # X-Road REST protocol r1 for this member's own systems
host = "127.0.0.1"
port = {local_port}
# Over plain HTTP the X-Road-Client header is a caller's only claim: keep this listener
# where only your own systems reach it, or serve HTTPS and list each client below.
# tls = true   # presents tls_certificate; or set certificate = "..." and key = "..."

[remote]   # mutual TLS from other gateways; register {https_address(remote_host, remote_port)}
host = "{remote_host}"
port = {remote_port}

[limits]
max_body = 10485760        # bytes, request and response bodies
backend_timeout = 30.0     # seconds for a backend to answer
peer_timeout = 60.0        # seconds to wait for a provider gateway
connect_timeout = 5.0      # seconds to open a connection to a peer gateway
body_timeout = 30.0        # seconds for a request body to arrive
freshness = 120.0          # seconds an envelope's time may be off

# One section per service this gateway provides, named by its service id:
# [services."{member}/SUBSYSTEM/CODE/VERSION"]
# url = "http://127.0.0.1:9000"
# An https:// backend gets the local listener's certificate; pin its own with
# certificates = ["systems/backend.pem"]   (default: the system's CAs and its host name)

# With tls = true under [local], how each client subsystem's systems connect:
# [clients."{member}/SUBSYSTEM"]
# connection = "HTTPS"            # present one of these; or "HTTPS_NO_AUTH": no certificate
# certificates = ["systems/tax-office.pem"]
"""
