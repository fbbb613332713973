"""How local systems connect to a gateway: X-Road's connection types for client subsystems.

Over plain HTTP the ``X-Road-Client`` header is a caller's only claim, so a
gateway keeps such a listener where only its own systems reach it (the
default 127.0.0.1). With TLS on the local listener, each client subsystem
connects as ``gateway.toml`` says: ``HTTPS`` (the default), presenting one of
the certificates registered for it, or ``HTTPS_NO_AUTH``, over TLS without
one. A certificate proves the client only if it is one of *that* client's:
another subsystem's certificate, though trusted by the listener, is refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from core.errors import BadRequestError
from core.ids import ClientId
from core.tls import leaf_fault, peer_pin
from exchange.config import GatewayConfig
from exchange.errors import LocalSslAuthenticationFailedError

__all__ = ["LocalClients"]


@dataclass(frozen=True)
class LocalClients:
    tls: bool = False
    pins: Mapping[ClientId, frozenset[str]] = field(default_factory=dict)  # hex SHA-256
    unauthenticated: frozenset[ClientId] = frozenset()  # HTTPS_NO_AUTH
    certificates: tuple[str, ...] = ()  # PEMs the listener's handshake accepts

    @classmethod
    def from_config(cls, config: GatewayConfig) -> LocalClients:
        """Read every client's certificate files; a file that is not one certificate a
        listener may trust is named with its client."""
        pins: dict[ClientId, frozenset[str]] = {}
        pems: dict[str, str] = {}
        for client, settings in config.clients.items():
            mine = set()
            for path in settings.certificates:
                pin, pem = _read(path, client)
                mine.add(pin)
                pems[pin] = pem
            pins[client] = frozenset(mine)
        unauthenticated = frozenset(
            c for c, s in config.clients.items() if s.connection == "HTTPS_NO_AUTH"
        )
        return cls(config.local.tls, pins, unauthenticated, tuple(pems.values()))

    def check(self, client: ClientId, request: web.BaseRequest) -> None:
        """Refuse a request whose connection does not prove ``client`` as its type needs."""
        if not self.tls or client in self.unauthenticated:
            return
        transport = request.transport
        pin = peer_pin(transport.get_extra_info("ssl_object") if transport else None)
        if pin is None:
            raise LocalSslAuthenticationFailedError(
                f"{client} connects with HTTPS: its system must present its TLS certificate"
            )
        if pin not in self.pins.get(client, frozenset()):
            raise LocalSslAuthenticationFailedError(
                f"the TLS certificate presented is not one registered for {client}"
            )


def _read(path: Path, client: ClientId) -> tuple[str, str]:
    where = f"clients.{client}: {path}"
    try:
        pem = path.read_text("ascii")
    except OSError as e:
        raise BadRequestError(f"{where}: cannot read: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise BadRequestError(f"{where}: not a PEM certificate") from e
    fault = leaf_fault(pem)
    if fault is not None:
        # A trusted certificate that may sign others would make every one it signed a client.
        raise BadRequestError(f"{where}: cannot be trusted: {fault}")
    der = x509.load_pem_x509_certificate(pem.encode("ascii")).public_bytes(
        serialization.Encoding.DER
    )
    return hashlib.sha256(der).hexdigest(), pem
