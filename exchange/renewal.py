"""Moving a gateway to a renewed TLS certificate without one refused handshake.

Peers pin a gateway's certificate from the global configuration, so a gateway
that simply started presenting a new one would be refused by every peer until
each had fetched a configuration listing it. As X-Road lets a security server
hold several authentication certificates, the registry lists a renewed
certificate beside the current one (``registry gateway set --next-tls-cert``)
and peers accept either. The steps:

1. ``shahrah gateway renew-tls`` writes the renewed pair beside the current
   one (:func:`renew`: ``tls-cert.next.pem``, ``tls-key.next.pem``);
2. the operator registers the renewed certificate;
3. the gateway moves to it (:class:`Renewal`) once every working peer accepts
   it (exchange.acceptance says when). If the registry stops listing the
   current certificate first (the renewal promoted early), the gateway moves at
   once: nobody accepts the old one any more;
4. the operator promotes the renewed certificate (``--tls-cert``), which drops
   the old one from the configuration.

Moving replaces the current files with the renewed ones, the key first, so
that a crash between the two renames leaves a state :func:`finish_interrupted`
completes at the next start; then the remote listener presents the renewed
certificate from the next handshake, and new connections to peers do too.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import ssl
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from core.db import utcnow
from core.errors import BadRequestError, ConflictError
from core.ids import GatewayId
from core.keys import read_private_pem
from core.tls import Certificate, pin_of, server_context
from exchange.acceptance import Acceptance
from exchange.peers import PeerPool, TlsFiles
from exchange.setup import write_tls_pair
from registry.globalconf import GlobalConfView

__all__ = ["Renewal", "finish_interrupted", "renew", "renewed"]

log = logging.getLogger(__name__)


def renewed(path: Path) -> Path:
    """Where the renewed counterpart of ``path`` is kept: ``tls-cert.pem`` ->
    ``tls-cert.next.pem``."""
    return path.with_name(f"{path.stem}.next{path.suffix}")


def renew(gateway: GatewayId, cert: Path, key: Path, *, passphrase: bytes | None) -> Path:
    """Write a renewed TLS key and self-signed certificate beside ``cert`` and ``key``;
    returns the certificate's path, for the operator to register.

    Refuses while a renewal is under way (its files exist): replacing a registered renewed
    certificate would leave the registry listing one no gateway holds.
    """
    next_cert, next_key = renewed(cert), renewed(key)
    for path in (next_cert, next_key):
        if path.exists():
            raise ConflictError(
                f"{path} exists: a renewal is under way. Register it, or remove both "
                f"{next_cert.name} and {next_key.name} to start again"
            )
    write_tls_pair(gateway, next_cert, next_key, passphrase=passphrase)
    return next_cert


def finish_interrupted(cert: Path, key: Path, *, password: bytes | None) -> None:
    """Complete a move that stopped between its two renames (the key already moved, the
    certificate not): without this the current files would not be a pair. Only if the
    current key is the renewed certificate's: a renewal abandoned halfway (its key removed
    first) leaves the same files, and must not replace the certificate in use."""
    next_cert, next_key = renewed(cert), renewed(key)
    if not next_cert.exists() or next_key.exists():
        return
    try:
        waiting = x509.load_pem_x509_certificate(next_cert.read_bytes()).public_key()
    except (OSError, ValueError):
        return  # not a certificate to move to; loading the current pair says what is wrong
    current = read_private_pem(key, password, what="TLS key file").public_key()
    if _spki(current) != _spki(waiting):
        log.warning(
            "%s is there without its key and is not the current key's: a renewal abandoned "
            "halfway; left as it is",
            next_cert,
        )
        return
    log.warning("completing the move to the renewed TLS certificate that was interrupted")
    os.replace(next_cert, cert)


def _spki(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _pin(path: Path) -> str | None:
    """The pin of the renewed certificate file ``path``; None if it is not one to move to
    (unreadable, expired, or one the registry would refuse)."""
    try:
        return Certificate.from_pem(path.read_text("ascii")).sha256
    except (OSError, UnicodeDecodeError, BadRequestError):
        return None


def _presented(path: Path) -> tuple[str, dt.datetime] | None:
    """Pin and expiry of the certificate file ``path`` in use, expired or not (an expired
    one is what the expiry metric must show); None if it cannot be read."""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None
    return pin_of(cert), cert.not_valid_after_utc


class Renewal:
    """Moves this gateway to its renewed certificate when the configuration allows."""

    def __init__(
        self,
        gateway: GatewayId,
        tls: TlsFiles,
        *,
        listener: ssl.SSLContext,
        peers: PeerPool,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.gateway = gateway
        self.tls = tls
        self.listener = listener
        self.peers = peers
        current = _presented(Path(tls.cert))
        # The pin and expiry of the certificate presented to peers (for /metrics).
        self.presented: str | None = current[0] if current else None
        self.expires: dt.datetime | None = current[1] if current else None
        self._acceptance = Acceptance("the renewed TLS certificate", clock)
        # Whether the held configuration registers the presented certificate (for /metrics).
        self.registered: bool | None = None

    def sync(self, view: GlobalConfView) -> bool:
        """Move to the renewed certificate if ``view`` shows every working peer accepts it
        (or none accepts the current one any more); returns whether it moved."""
        me = view.gateways.get(self.gateway)
        registered = me.certificates() if me is not None else {}
        pending = _pin(renewed(Path(self.tls.cert)))
        self.registered = self.presented in registered
        if pending is None or pending == self.presented or pending not in registered:
            self._acceptance.forget()
            if self.presented not in registered:
                log.error(
                    "peers refuse this gateway: the TLS certificate it presents, %s, is not "
                    "registered for it (the gateway is not in the configuration, or the "
                    "certificate was dropped or replaced by one this gateway does not hold)",
                    self.presented,
                )
            return False
        # Promoted early, nobody accepts the old one: move at once.
        if self.presented in registered and not self._acceptance.accepted(pending, view):
            return False
        self._move(pending)
        return True

    def _move(self, pin: str) -> None:
        cert, key = Path(self.tls.cert), Path(self.tls.key)
        # Loaded before any file changes: a pair that does not load (a key that is not the
        # certificate's, another passphrase) stays where it is, and the current one in use.
        server_context(str(renewed(cert)), str(renewed(key)), [], password=self.tls.password)
        os.replace(renewed(key), key)
        os.replace(renewed(cert), cert)
        self.listener.load_cert_chain(cert, key, password=self.tls.password)
        self.peers.present(self.tls)
        current = _presented(cert)
        self.presented, self.expires = current if current else (pin, None)
        self.registered = True  # moved to a registered one
        self._acceptance.done()
        log.warning(
            "now presenting the renewed TLS certificate %s; have the registry operator drop "
            "the old one: shahrah registry gateway set %s --tls-cert %s",
            pin,
            self.gateway,
            cert,
        )
