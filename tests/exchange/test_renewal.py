"""Renewing a gateway's TLS certificate with no handshake refused: the renewed certificate
registered beside the current one, both accepted by peers, the gateway moving to it when
every working peer accepts it, and the old one dropped. Real sockets, real mutual TLS."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import os
import re
import shutil
import ssl
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from core.db import transaction, utcnow
from core.errors import ConflictError
from core.ids import GatewayId
from core.keys import KeyFileError
from core.tls import Certificate, client_context, make_certificate, server_context
from exchange import envelope as env_
from exchange.peers import TlsFiles
from exchange.renewal import Renewal, finish_interrupted, renew, renewed
from exchange.server import run_background
from exchange.setup import write_tls_pair
from registry import service as ops
from registry.globalconf import CLOCK_SKEW
from registry.payloads import GatewayUpdate
from tests.exchange.harness import LMC, Federation, Node
from tests.exchange.test_refusals import _envelope, _raw

ECHO_PATH = "/r1/PK/FED/NADRA/civil-registry/echo"
LMC_GW = LMC.gateway("gw1")


def _pem(path: str | Path) -> str:
    return Path(path).read_text("ascii")


def _pin(path: str | Path) -> str:
    return Certificate.from_pem(_pem(path)).sha256


async def _register(
    fed: Federation,
    gateway: GatewayId = LMC_GW,
    *,
    issued: dt.datetime | None = None,
    **update: str | bool,
) -> None:
    async with transaction(fed.registry_db) as s:
        await ops.update_gateway(s, gateway, GatewayUpdate.model_validate(update))
    await fed.refresh(issued=issued)


def _later() -> dt.datetime:
    """A minute ahead (within the clock skew gateways allow): a configuration published
    now that expires after the one just published."""
    return utcnow() + dt.timedelta(minutes=1)


async def _presents(fed: Federation, node: Node, cert: str | Path) -> bool:
    """Whether ``node``'s remote listener completes a handshake presenting ``cert`` (NADRA,
    a registered peer, connecting and trusting only that certificate)."""
    nadra = fed.nodes["nadra"].tls
    ctx = client_context(nadra.cert, nadra.key, _pem(cert))
    where = urlsplit(node.remote_url)
    try:
        _, writer = await asyncio.open_connection(where.hostname, where.port, ssl=ctx)
    except ssl.SSLError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


class _Now:
    def __init__(self) -> None:
        self.value = utcnow()

    def __call__(self) -> dt.datetime:
        return self.value


def _renewal(fed: Federation, now: _Now, node: str = "lmc") -> Renewal:
    n = fed.nodes[node]
    renewal = Renewal(
        n.gateway.id, n.tls, listener=n.trust.context, peers=n.gateway.peers, clock=now
    )
    n.gateway.metrics.follow_certificate(lambda: renewal.expires)
    return renewal


async def _expiry_reported(fed: Federation) -> float:
    text = await (await fed.http.get(fed.nodes["lmc"].local_url + "/metrics")).text()
    name = "shahrah_gateway_tls_certificate_expiry_timestamp_seconds"
    [value] = re.findall(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(value)


def _not_after(path: str | Path) -> float:
    return x509.load_pem_x509_certificate(Path(path).read_bytes()).not_valid_after_utc.timestamp()


def _write_certificate(path: str | Path, name: str, *, days: int = 825) -> None:
    """A certificate at ``path`` for a key of its own (the key beside it not matching)."""
    key = ec.generate_private_key(ec.SECP256R1())
    Path(path).write_bytes(make_certificate(name, key, days=days).public_bytes(Encoding.PEM))


def _keep_old_pair(tmp: Path, tls: TlsFiles) -> TlsFiles:
    shutil.copy(tls.cert, tmp / "old.crt")
    shutil.copy(tls.key, tmp / "old.key")
    return TlsFiles(str(tmp / "old.crt"), str(tmp / "old.key"))


async def test_a_gateway_moves_to_its_renewed_certificate_without_a_refused_exchange(
    fed: Federation, tmp_path: Path
) -> None:
    lmc = fed.nodes["lmc"]
    old = _keep_old_pair(tmp_path, lmc.tls)
    now = _Now()
    renewal = _renewal(fed, now)
    new_cert = renew(LMC_GW, Path(lmc.tls.cert), Path(lmc.tls.key), passphrase=None)
    assert new_cert == renewed(Path(lmc.tls.cert))

    # Not registered yet: the gateway keeps presenting the current certificate.
    await fed.refresh()
    assert await _expiry_reported(fed) == _not_after(old.cert)
    assert renewal.sync(lmc.gateway.globalconf.current()) is False
    assert await _presents(fed, lmc, old.cert)

    await _register(fed, next_tls_certificate=_pem(new_cert))
    first = lmc.gateway.globalconf.current()
    assert first.gateway_by_pin(_pin(new_cert)) == first.gateway_by_pin(_pin(old.cert))
    # Registered, but a peer may still hold a valid configuration that does not list it.
    assert renewal.sync(first) is False
    assert await _presents(fed, lmc, old.cert)
    assert (await fed.call("lmc", "GET", ECHO_PATH + "/a")).status == 200
    await fed.refresh(issued=_later())  # newer ones come out meanwhile: they delay nothing
    latest = lmc.gateway.globalconf.current()
    assert latest.conf.expires_at > first.conf.expires_at
    assert renewal.sync(latest) is False

    # Once the first configuration listing it has expired, every serving peer accepts it,
    # even one whose clock is behind as much as gateways allow while this one's is ahead.
    now.value = first.conf.expires_at + CLOCK_SKEW
    assert renewal.sync(latest) is False
    now.value = first.conf.expires_at + 2 * CLOCK_SKEW
    assert renewal.sync(latest) is True
    assert _pin(lmc.tls.cert) == renewal.presented != _pin(old.cert)
    assert not renewed(Path(lmc.tls.cert)).exists()
    assert not renewed(Path(lmc.tls.key)).exists()
    assert await _presents(fed, lmc, lmc.tls.cert)
    assert not await _presents(fed, lmc, old.cert)
    assert await _expiry_reported(fed) == _not_after(lmc.tls.cert)
    # LMC's new connections to NADRA present the renewed certificate, which NADRA accepts.
    resp = await fed.call("lmc", "GET", ECHO_PATH + "/b")
    assert resp.status == 200, await resp.text()

    # The operator promotes it: the old certificate is dropped, and NADRA refuses it.
    await _register(fed, tls_certificate=_pem(lmc.tls.cert))
    info = lmc.gateway.globalconf.current().gateways[LMC_GW]
    assert info.certificates() == {_pin(lmc.tls.cert): _pem(lmc.tls.cert)}
    assert (await _raw(fed, env_.seal(_envelope(fed), fed.member_keys[LMC]))).status == 200
    fed.nodes["old-lmc"] = dataclasses.replace(lmc, tls=old)
    try:
        with pytest.raises(aiohttp.ClientError):
            await _raw(fed, env_.seal(_envelope(fed), fed.member_keys[LMC]), tls_node="old-lmc")
    finally:
        del fed.nodes["old-lmc"]
    assert (await fed.call("lmc", "GET", ECHO_PATH + "/c")).status == 200
    assert renewal.sync(lmc.gateway.globalconf.current()) is False  # nothing left to move


async def test_a_consumer_reaches_a_provider_that_moved_to_its_renewed_certificate(
    fed: Federation,
) -> None:
    """The other side of the move: LMC's connection to NADRA accepts NADRA's renewed
    certificate as soon as the configuration lists it, before it is promoted."""
    nadra = fed.nodes["nadra"]
    now = _Now()
    renewal = _renewal(fed, now, "nadra")
    new_cert = renew(nadra.gateway.id, Path(nadra.tls.cert), Path(nadra.tls.key), passphrase=None)
    assert (await fed.call("lmc", "GET", ECHO_PATH + "/before")).status == 200
    await _register(fed, nadra.gateway.id, next_tls_certificate=_pem(new_cert))
    view = nadra.gateway.globalconf.current()
    now.value = view.conf.expires_at + 2 * CLOCK_SKEW
    assert renewal.sync(view) is True
    assert await _presents(fed, nadra, nadra.tls.cert)
    resp = await fed.call("lmc", "GET", ECHO_PATH + "/after")
    assert resp.status == 200, await resp.text()


async def test_another_renewed_certificate_waits_its_own_time(
    fed: Federation, tmp_path: Path
) -> None:
    """A renewal abandoned and made again, the new certificate registered in place of the
    first: configurations that listed only the first may still be valid, so the wait starts
    again from the first configuration listing the new one."""
    lmc = fed.nodes["lmc"]
    now = _Now()
    renewal = _renewal(fed, now)
    cert, key = Path(lmc.tls.cert), Path(lmc.tls.key)
    first = renew(LMC_GW, cert, key, passphrase=None)
    await _register(fed, next_tls_certificate=_pem(first))
    listing_first = lmc.gateway.globalconf.current()
    assert renewal.sync(listing_first) is False
    renewed(cert).unlink()
    renewed(key).unlink()
    second = renew(LMC_GW, cert, key, passphrase=None)
    second_pin = _pin(second)
    await _register(fed, next_tls_certificate=_pem(second), issued=_later())
    listing_second = lmc.gateway.globalconf.current()
    now.value = listing_first.conf.expires_at + 2 * CLOCK_SKEW
    assert renewal.sync(listing_second) is False
    now.value = listing_second.conf.expires_at + 2 * CLOCK_SKEW
    assert renewal.sync(listing_second) is True
    assert renewal.presented == _pin(cert) == second_pin


async def test_a_configuration_missed_between_two_fetches_starts_the_wait_again(
    fed: Federation,
) -> None:
    """The renewed certificate dropped and registered again between two of this gateway's
    fetches: the configuration in between did not list it and may still be valid at a
    peer, so the wait starts again from the one that lists it again."""
    lmc = fed.nodes["lmc"]
    now = _Now()
    renewal = _renewal(fed, now)
    new_cert = renew(LMC_GW, Path(lmc.tls.cert), Path(lmc.tls.key), passphrase=None)
    await _register(fed, next_tls_certificate=_pem(new_cert))
    first = lmc.gateway.globalconf.current()
    assert renewal.sync(first) is False
    await _register(fed, drop_next_tls_certificate=True)  # this gateway does not sync
    await _register(fed, next_tls_certificate=_pem(new_cert), issued=_later())
    again = lmc.gateway.globalconf.current()
    assert again.serial == first.serial + 2
    now.value = first.conf.expires_at + 2 * CLOCK_SKEW
    assert renewal.sync(again) is False
    now.value = again.conf.expires_at + 2 * CLOCK_SKEW
    assert renewal.sync(again) is True


async def test_both_certificates_are_accepted_while_the_renewal_is_registered(
    fed: Federation, tmp_path: Path
) -> None:
    """NADRA accepts LMC presenting either certificate, whichever LMC presents, so peers'
    configurations and the gateway's move need not happen in any order."""
    lmc = fed.nodes["lmc"]
    old = _keep_old_pair(tmp_path, lmc.tls)
    new_cert = renew(LMC_GW, Path(lmc.tls.cert), Path(lmc.tls.key), passphrase=None)
    await _register(fed, next_tls_certificate=_pem(new_cert))
    new = TlsFiles(str(new_cert), str(renewed(Path(lmc.tls.key))))
    for pair in (old, new):
        lmc.gateway.peers.present(pair)
        resp = await fed.call("lmc", "GET", ECHO_PATH + "/either")
        assert resp.status == 200, await resp.text()
    # Dropped again (an abandoned renewal): the renewed certificate is refused, on the
    # connection already open with it too (NADRA maps the pin to a gateway per request).
    await _register(fed, drop_next_tls_certificate=True)
    seen = len(fed.backend.seen)
    resp = await fed.call("lmc", "GET", ECHO_PATH + "/dropped")
    assert resp.status == 500
    assert resp.headers["X-Road-Error"] == "Server.ServerProxy.SslAuthenticationFailed"
    assert len(fed.backend.seen) == seen


async def test_the_gateway_moves_at_once_when_its_current_certificate_is_dropped(
    fed: Federation, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Promoted early, before the gateway moved: peers refuse the old certificate from their
    next configuration, so the gateway does not wait for the validity period. The gateway's
    own background refresh (exchange.server.run_background) does the move."""
    caplog.set_level(logging.WARNING, logger="exchange.renewal")
    lmc = fed.nodes["lmc"]
    renewal = _renewal(fed, _Now())
    new_cert = renew(LMC_GW, Path(lmc.tls.cert), Path(lmc.tls.key), passphrase=None)
    new_pin = _pin(new_cert)
    await _register(fed, tls_certificate=_pem(new_cert))
    stop = asyncio.Event()
    background = asyncio.create_task(run_background(lmc.gateway, lmc.trust, renewal, stop))
    try:
        for _ in range(100):
            if renewal.presented == new_pin:
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await background
    assert renewal.presented == new_pin
    assert await _presents(fed, lmc, lmc.tls.cert)
    assert (await fed.call("lmc", "GET", ECHO_PATH + "/now")).status == 200
    assert any("now presenting the renewed TLS certificate" in r.message for r in caplog.records)


async def test_a_renewal_dropped_from_the_registry_is_not_moved_to(
    fed: Federation, tmp_path: Path
) -> None:
    lmc = fed.nodes["lmc"]
    old_pin = _pin(lmc.tls.cert)
    now = _Now()
    renewal = _renewal(fed, now)
    new_cert = renew(LMC_GW, Path(lmc.tls.cert), Path(lmc.tls.key), passphrase=None)
    await _register(fed, next_tls_certificate=_pem(new_cert))
    assert renewal.sync(lmc.gateway.globalconf.current()) is False
    await _register(fed, drop_next_tls_certificate=True)
    now.value = utcnow() + dt.timedelta(days=1)
    assert renewal.sync(lmc.gateway.globalconf.current()) is False
    assert _pin(lmc.tls.cert) == old_pin
    assert await _presents(fed, lmc, lmc.tls.cert)


async def test_a_renewed_pair_that_does_not_load_changes_nothing(
    fed: Federation, tmp_path: Path
) -> None:
    """A renewed certificate whose key is not beside it: the move is refused before any
    file changes, and the gateway keeps presenting (and having on disk) its current pair."""
    lmc = fed.nodes["lmc"]
    before = (_pem(lmc.tls.cert), _pem(lmc.tls.key))
    renewal = _renewal(fed, _Now())
    new_cert = renew(LMC_GW, Path(lmc.tls.cert), Path(lmc.tls.key), passphrase=None)
    _write_certificate(new_cert, "not-the-key")
    await _register(fed, tls_certificate=_pem(new_cert))  # promoted: it would move at once
    with pytest.raises(KeyFileError, match="does not match"):
        renewal.sync(lmc.gateway.globalconf.current())
    assert (_pem(lmc.tls.cert), _pem(lmc.tls.key)) == before
    assert renewed(Path(lmc.tls.key)).exists()


def test_renew_refuses_while_a_renewal_is_under_way(tmp_path: Path) -> None:
    cert, key = tmp_path / "tls-cert.pem", tmp_path / "tls-key.pem"
    made = renew(LMC_GW, cert, key, passphrase=b"secret")
    assert made == tmp_path / "tls-cert.next.pem"
    assert (tmp_path / "tls-key.next.pem").stat().st_mode & 0o777 == 0o600
    assert b"ENCRYPTED" in (tmp_path / "tls-key.next.pem").read_bytes()
    first = made.read_bytes()
    with pytest.raises(ConflictError, match="a renewal is under way"):
        renew(LMC_GW, cert, key, passphrase=b"secret")
    assert made.read_bytes() == first


def test_a_move_interrupted_between_its_renames_is_completed_at_start(tmp_path: Path) -> None:
    cert, key = tmp_path / "tls-cert.pem", tmp_path / "tls-key.pem"
    write_tls_pair(LMC_GW, cert, key, passphrase=b"pw")
    renew(LMC_GW, cert, key, passphrase=b"pw")
    waiting = _pin(renewed(cert))
    # Both renewed files there (a renewal waiting): nothing is touched.
    finish_interrupted(cert, key, password=b"pw")
    assert _pin(renewed(cert)) == waiting != _pin(cert)
    # The key moved, the certificate not yet: the move is completed.
    os.replace(renewed(key), key)
    finish_interrupted(cert, key, password=b"pw")
    assert _pin(cert) == waiting
    assert not renewed(cert).exists()
    server_context(str(cert), str(key), [], password=b"pw")  # a pair again


def test_a_renewal_abandoned_halfway_leaves_the_current_certificate(tmp_path: Path) -> None:
    """The operator removed the renewed key first, then stopped: the same files as an
    interrupted move, but the current key is not the renewed certificate's."""
    cert, key = tmp_path / "tls-cert.pem", tmp_path / "tls-key.pem"
    write_tls_pair(LMC_GW, cert, key, passphrase=None)
    current = _pin(cert)
    renew(LMC_GW, cert, key, passphrase=None)
    renewed(key).unlink()
    finish_interrupted(cert, key, password=None)
    assert _pin(cert) == current
    server_context(str(cert), str(key), [], password=None)


async def test_an_expired_certificate_in_use_is_reported_with_its_expiry(
    fed: Federation, tmp_path: Path
) -> None:
    """The metric exists to alert before expiry; after it, it must still say when, not
    go blank."""
    lmc = fed.nodes["lmc"]
    _write_certificate(lmc.tls.cert, "lmc-expired", days=0)
    _renewal(fed, _Now())
    expiry = await _expiry_reported(fed)
    assert expiry == _not_after(lmc.tls.cert)
    assert expiry <= utcnow().timestamp()


async def test_metrics_say_when_peers_refuse_the_presented_certificate(
    fed: Federation, tmp_path: Path
) -> None:
    lmc = fed.nodes["lmc"]
    renewal = _renewal(fed, _Now())
    lmc.gateway.metrics.follow_credentials(lambda: renewal.registered, lambda: None)
    name = "shahrah_gateway_tls_certificate_registered"
    text = await (await fed.http.get(lmc.local_url + "/metrics")).text()
    assert f"{name} NaN" in text  # not read from a configuration yet
    assert renewal.sync(lmc.gateway.globalconf.current()) is False
    text = await (await fed.http.get(lmc.local_url + "/metrics")).text()
    assert f"{name} 1.0" in text
    other = tmp_path / "other.crt"
    _write_certificate(other, str(LMC_GW))  # registered in its place, held by no gateway
    await _register(fed, tls_certificate=_pem(other))
    assert renewal.sync(lmc.gateway.globalconf.current()) is False
    text = await (await fed.http.get(lmc.local_url + "/metrics")).text()
    assert f"{name} 0.0" in text
