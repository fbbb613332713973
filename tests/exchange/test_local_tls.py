"""Local systems over TLS (PR-REST 4.7): each client subsystem proves itself with its own
certificate (X-Road's HTTPS connection type) or connects without one (HTTPS_NO_AUTH); the
provider gateway presents its certificate to an HTTPS backend and pins the backend's."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from core.errors import BadRequestError
from core.tls import (
    backend_context,
    local_context,
    make_certificate,
    read_pinned,
    server_context,
)
from exchange.clients import LocalClients
from exchange.config import GatewayConfig
from exchange.passthrough import HttpBackend
from exchange.r1 import ERROR_HEADER
from exchange.server import local_app
from tests.exchange.harness import ECHO, LMC, LMC_TAX, Federation

ECHO_PATH = f"/r1/{ECHO.to_path()}"
OTHER = LMC.subsystem("births")  # another client the listener knows, with its own certificate


def _system(tmp: Path, name: str, *, ca: bool = False, days: int = 30) -> tuple[Path, Path]:
    """A local system's key and certificate files."""
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp / f"{name}.key").write_bytes(
        key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    )
    cert = make_certificate(name, key, ca=ca, days=days)
    (tmp / f"{name}.pem").write_bytes(cert.public_bytes(Encoding.PEM))
    return tmp / f"{name}.pem", tmp / f"{name}.key"


def _config(tmp: Path, clients: str, *, tls: bool = True) -> GatewayConfig:
    path = tmp / "gateway.toml"
    path.write_text(
        f'id = "PK/LG/LMC/gw1"\n\n[local]\nport = 8080\ntls = {str(tls).lower()}\n\n{clients}'
    )
    return GatewayConfig.load(path)


@pytest.fixture
async def listener(fed: Federation, serve: Any, tmp_path: Path) -> str:
    """LMC's gateway behind a TLS local listener: property-tax proves itself with the
    ``tax`` certificate, births with ``births``."""
    for name in ("tax", "births"):
        _system(tmp_path, name)
    config = _config(
        tmp_path,
        f'[clients."{LMC_TAX}"]\ncertificates = ["tax.pem"]\n\n'
        f'[clients."{OTHER}"]\ncertificates = ["births.pem"]\n',
    )
    gw = fed.nodes["lmc"].gateway
    gw.local_clients = LocalClients.from_config(config)
    tls = fed.nodes["lmc"].tls
    ctx = local_context(tls.cert, tls.key, gw.local_clients.certificates)
    return str(await serve(local_app(gw), ctx, error_header=ERROR_HEADER))


async def _call(url: str, tmp: Path, presenting: str | None) -> aiohttp.ClientResponse:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # the test pins nothing
    if presenting:
        ctx.load_cert_chain(tmp / f"{presenting}.pem", tmp / f"{presenting}.key")
    async with aiohttp.ClientSession() as http:
        resp = await http.get(url + ECHO_PATH, headers={"X-Road-Client": str(LMC_TAX)}, ssl=ctx)
        await resp.read()
        return resp


async def test_a_client_proves_itself_with_its_own_certificate(
    listener: str, fed: Federation, tmp_path: Path
) -> None:
    resp = await _call(listener, tmp_path, "tax")
    assert resp.status == 200
    assert len(fed.backend.seen) == 1


@pytest.mark.parametrize("presenting", [None, "births"])
async def test_no_certificate_or_another_clients_is_refused_before_anything_is_sent(
    listener: str, fed: Federation, tmp_path: Path, presenting: str | None
) -> None:
    resp = await _call(listener, tmp_path, presenting)
    assert (resp.status, resp.headers["X-Road-Error"]) == (
        500,
        "Server.ClientProxy.SslAuthenticationFailed",
    )
    assert fed.backend.seen == []
    (event,) = await fed.events("lmc")
    assert event.error_type == "Server.ClientProxy.SslAuthenticationFailed"


async def test_a_certificate_nobody_registered_fails_the_handshake(
    listener: str, fed: Federation, tmp_path: Path
) -> None:
    _system(tmp_path, "stranger")
    with pytest.raises(aiohttp.ClientError):
        await _call(listener, tmp_path, "stranger")
    assert fed.backend.seen == []


async def test_a_client_without_authentication_connects_over_tls_alone(
    fed: Federation, serve: Any, tmp_path: Path
) -> None:
    config = _config(tmp_path, f'[clients."{LMC_TAX}"]\nconnection = "HTTPS_NO_AUTH"\n')
    gw = fed.nodes["lmc"].gateway
    gw.local_clients = LocalClients.from_config(config)
    tls = fed.nodes["lmc"].tls
    url = await serve(local_app(gw), local_context(tls.cert, tls.key, []))
    assert (await _call(url, tmp_path, None)).status == 200


@pytest.mark.parametrize(
    ("clients", "tls", "says"),
    [
        (f'[clients."{LMC_TAX}"]\nconnection = "HTTPS"\n', True, "needs the certificates"),
        (f'[clients."{LMC_TAX}"]\ncertificates = ["tax.pem"]\n', False, "set [local] tls = true"),
        (f'[clients."{LMC_TAX}"]\nconnection = "HTTP"\n', True, "HTTPS_NO_AUTH"),
        ('[clients."PK/LG"]\nconnection = "HTTPS_NO_AUTH"\n', True, "clients.PK/LG"),
    ],
)
def test_connection_settings_are_checked(
    tmp_path: Path, clients: str, tls: bool, says: str
) -> None:
    _system(tmp_path, "tax")
    with pytest.raises(BadRequestError) as e:
        _config(tmp_path, clients, tls=tls)
    assert says in e.value.message


@pytest.mark.parametrize(
    ("file", "says"),
    [("ca", "CA certificate"), ("missing", "cannot read"), ("expired", "expired at")],
)
def test_a_certificate_the_listener_cannot_trust_is_named_with_its_client(
    tmp_path: Path, file: str, says: str
) -> None:
    _system(tmp_path, "ca", ca=True)
    _system(tmp_path, "expired", days=0)
    config = _config(tmp_path, f'[clients."{LMC_TAX}"]\ncertificates = ["{file}.pem"]\n')
    with pytest.raises(BadRequestError) as e:
        LocalClients.from_config(config)
    assert f"clients.{LMC_TAX}: {tmp_path / file}.pem" in e.value.message
    assert says in e.value.message


async def _tls_backend(fed: Federation, serve: Any, tmp: Path) -> str:
    """NADRA's echo backend over HTTPS, accepting only NADRA's gateway certificate."""
    cert, key = _system(tmp, "backend")
    gateway_pem = fed.nodes["nadra"].cert.public_bytes(Encoding.PEM).decode()
    ctx = server_context(str(cert), str(key), [gateway_pem])
    return str(await serve(fed.backend.app(), ctx))


@pytest.mark.parametrize(
    ("presenting", "pinned", "reaches"),
    [
        ("gateway", "backend", True),
        ("gateway", "other", False),  # not the backend the operator pinned
        ("gateway", None, False),  # self-signed: no system CA vouches for it
        ("other", "backend", False),  # the backend takes only the gateway's certificate
    ],
)
async def test_the_provider_gateway_and_an_https_backend_prove_themselves_to_each_other(
    fed: Federation,
    serve: Any,
    tmp_path: Path,
    presenting: str,
    pinned: str | None,
    reaches: bool,
) -> None:
    url = await _tls_backend(fed, serve, tmp_path)
    _system(tmp_path, "other")
    nadra = fed.nodes["nadra"]
    cert, key = (
        (nadra.tls.cert, nadra.tls.key)
        if presenting == "gateway"
        else (str(tmp_path / "other.pem"), str(tmp_path / "other.key"))
    )
    pins = dict([read_pinned(tmp_path / f"{pinned}.pem", "test")]) if pinned else {}
    backend = HttpBackend(
        url, timeout=5, max_body=2**20, ssl_context=backend_context(cert, key, pins)
    )
    nadra.gateway.backends = {ECHO: backend}
    try:
        resp = await fed.call("lmc", "GET", ECHO_PATH + "/a")
        if reaches:
            assert resp.status == 200
            assert len(fed.backend.seen) == 1
        else:
            assert resp.headers["X-Road-Error"] == "Server.ServerProxy.NetworkError"
            assert fed.backend.seen == []
    finally:
        await backend.close()


def test_backend_pins_need_an_https_backend(tmp_path: Path) -> None:
    _system(tmp_path, "backend")
    with pytest.raises(BadRequestError) as e:
        _config(
            tmp_path,
            f'[services."{ECHO}"]\nurl = "http://10.0.0.5"\ncertificates = ["backend.pem"]\n',
            tls=False,
        )
    assert "the url is not https://" in e.value.message
