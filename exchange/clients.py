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

from collections.abc import Mapping
from dataclasses import dataclass, field

from aiohttp import web

from core.ids import ClientId
from core.tls import peer_pin, read_pinned
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
        listener may trust is named with its client (BadRequestError)."""
        pins: dict[ClientId, frozenset[str]] = {}
        pems: dict[str, str] = {}
        for client, settings in config.clients.items():
            mine = set()
            for path in settings.certificates:
                pin, pem = read_pinned(path, f"clients.{client}")
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
