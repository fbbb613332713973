"""Which peers a gateway completes a TLS handshake with: exactly the registered gateway
certificates of the current configuration, never a certificate that could sign others."""

from __future__ import annotations

import logging

import aiohttp
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import Certificate as X509

from core.db import transaction
from core.ids import GatewayId
from core.tls import make_certificate
from exchange import envelope as env_
from registry import service as ops
from registry import store
from registry.payloads import GatewayUpdate
from tests.exchange.harness import LMC, NADRA, Federation
from tests.exchange.test_refusals import _envelope, _error, _raw

ECHO_PATH = "/r1/PK/FED/NADRA/civil-registry/echo"


def _pem(cert: X509) -> str:
    return cert.public_bytes(Encoding.PEM).decode()


async def _register_as_an_older_registry_would(fed: Federation, gid: GatewayId, cert: X509) -> None:
    """Set a gateway's certificate in the registry's tables, past the checks it makes now."""
    pem = _pem(cert)
    async with transaction(fed.registry_db) as s:
        row = await store.gateway(s, gid)
        row.tls_certificate = pem
        row.tls_sha256 = cert.fingerprint(hashes.SHA256()).hex()
    await fed.refresh()


async def test_a_certificate_rotated_out_fails_the_handshake(fed: Federation) -> None:
    """The provider's listener follows the configuration without a restart: LMC's old
    certificate, still in OpenSSL's trust store, no longer completes a handshake, so the
    provider reads and records nothing of it; given back, it is accepted again."""
    old = _pem(fed.nodes["lmc"].cert)
    new = make_certificate("lmc-new", ec.generate_private_key(ec.SECP256R1()), issuer=fed.ca)
    async with transaction(fed.registry_db) as s:
        await ops.update_gateway(s, LMC.gateway("gw1"), GatewayUpdate(tls_certificate=_pem(new)))
    await fed.refresh()
    with pytest.raises(aiohttp.ClientError):
        await _raw(fed, env_.seal(_envelope(fed), fed.member_keys[LMC]))  # the old certificate
    assert fed.backend.seen == []
    assert await fed.events("nadra") == []

    async with transaction(fed.registry_db) as s:
        await ops.update_gateway(s, LMC.gateway("gw1"), GatewayUpdate(tls_certificate=old))
    await fed.refresh()
    assert (await _raw(fed, env_.seal(_envelope(fed), fed.member_keys[LMC]))).status == 200


async def test_a_ca_certificate_of_a_provider_gateway_is_never_trusted(
    fed: Federation, caplog: pytest.LogCaptureFixture
) -> None:
    """NADRA's gateway registered by a CA certificate (by an older registry): the CA issued
    NADRA's real leaf, so a trust store holding it would accept that leaf, or any other it
    issued. The consumer sends nothing, and each gateway says once whose certificate it
    skipped and why."""
    caplog.set_level(logging.WARNING)
    await _register_as_an_older_registry_would(fed, NADRA.gateway("gw1"), fed.ca[0])
    for _ in range(2):
        resp = await fed.call("lmc", "GET", ECHO_PATH + "/x")
        status, kind, message = await _error(resp)
        assert (status, kind) == (500, "Server.ClientProxy.NetworkError")
        assert "ClientConnectorCertificateError" in message
    await fed.refresh()
    assert fed.backend.seen == []

    def said(refusing: str) -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.getMessage().startswith(f"not {refusing} gateway PK/FED/NADRA/gw1")
        ]

    # LMC's consumer side, once; and the listener of every gateway, once each.
    assert len(said("sending to")) == 1
    assert "basicConstraints CA:TRUE" in said("sending to")[0]
    assert len(said("accepting")) == len(fed.nodes)
    assert all("basicConstraints CA:TRUE" in line for line in said("accepting"))


async def test_a_ca_certificate_of_a_consumer_gateway_is_never_trusted(
    fed: Federation,
) -> None:
    """LMC's gateway registered by the CA that issued its leaf: NADRA's listener does not
    complete a handshake with that leaf (nor would it with any other the CA issued)."""
    await _register_as_an_older_registry_would(fed, LMC.gateway("gw1"), fed.ca[0])
    with pytest.raises(aiohttp.ClientError):
        await _raw(fed, env_.seal(_envelope(fed), fed.member_keys[LMC]))
    assert fed.backend.seen == []
    assert await fed.events("nadra") == []
