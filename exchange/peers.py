"""Outgoing mutual-TLS connections from a consumer gateway to provider gateways.

Each provider gateway gets an SSL context that trusts only its registered
certificates (the current one, and a renewed one while it is registered
beside it: exchange.renewal) and completes a handshake only with a peer whose
certificate has one of their pins (see core.tls), so no byte of a request goes
to any other. Contexts are cached by the peer's pins, so connection pools are
kept per peer and a peer's certificate change (a new pin in the
configuration) gets a fresh context and fresh connections. A registered
certificate that could sign others (a configuration made by an older registry
may hold one) is not trusted at all: if it is the only one, that gateway's
handshakes fail, as an unreachable gateway's connections do.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass

import aiohttp

from core.tls import client_context, leaf_fault
from core.web import never_twice
from exchange.envelope import ENVELOPE_FIELD_SIZE
from registry.globalconf import GatewayInfo

__all__ = ["PeerPool", "TlsFiles", "pinnable"]

log = logging.getLogger(__name__)


def pinnable(peer: GatewayInfo, pin: str, refusing: str) -> bool:
    """Whether ``peer``'s registered certificate ``pin`` can be pinned; if not, the log says
    so, naming what this gateway will not do (``"sending to"``, ``"accepting"``). Callers
    ask once per certificate."""
    fault = leaf_fault(peer.certificates()[pin])
    if fault is not None:
        log.warning(
            "not %s gateway %s: its registered TLS certificate %s cannot be pinned: %s",
            refusing,
            peer.id,
            pin,
            fault,
        )
    return fault is None


@dataclass(frozen=True)
class TlsFiles:
    cert: str
    key: str
    password: bytes | None = None  # of the key file; never logged (repr=False below)

    def __repr__(self) -> str:
        return f"TlsFiles(cert={self.cert!r}, key={self.key!r})"


class PeerPool:
    def __init__(
        self, tls: TlsFiles, *, connect_timeout: float, limit: int = 400, per_peer: int = 100
    ) -> None:
        """``per_peer`` bounds the connections to one provider gateway, so that a slow one
        cannot hold every connection and starve the exchanges with the others."""
        self.tls = tls
        self.connect_timeout = connect_timeout
        self._contexts: dict[tuple[str, str | None], ssl.SSLContext] = {}  # by the peer's pins
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=limit, limit_per_host=per_peer),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            # The provider's answer carries its envelope as a header.
            max_field_size=ENVELOPE_FIELD_SIZE,
        )
        never_twice(self.session)

    def context(self, peer: GatewayInfo) -> ssl.SSLContext:
        """A context that completes a handshake only with ``peer``: with its current
        certificate, or the renewed one registered beside it."""
        pins = (peer.tls_sha256, peer.next_tls_sha256)  # per exchange: no dict built for it
        ctx = self._contexts.get(pins)
        if ctx is None:
            ctx = client_context(self.tls.cert, self.tls.key, None, password=self.tls.password)
            ctx.trust_exactly(
                {
                    pin: pem
                    for pin, pem in peer.certificates().items()
                    if pinnable(peer, pin, "sending to")
                }
            )
            self._contexts[pins] = ctx
        return ctx

    def present(self, tls: TlsFiles) -> None:
        """Present ``tls`` (a renewed certificate) from the next connection on; connections
        already open keep the one they were made with, which peers still accept."""
        self.tls = tls
        self._contexts.clear()

    async def close(self) -> None:
        await self.session.close()
