"""``shahrah gateway init`` makes a gateway the operator can register, and it runs."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from click.testing import CliRunner

from core.keys import PrivateKey, PublicKey
from core.tls import Certificate
from exchange.config import GatewayConfig
from shahrah.cli import main
from tests.registry.test_globalconf import anchor_for


def test_init_writes_keys_certificate_and_config(tmp_path: Path) -> None:
    anchor = tmp_path / "anchor.json"
    anchor.write_text(anchor_for().dumps())
    d = tmp_path / "gw"
    result = CliRunner().invoke(
        main,
        [
            "gateway",
            "init",
            "--data-dir",
            str(d),
            "--id",
            "PK/FED/NADRA/gw1",
            "--anchor",
            str(anchor),
            "--remote-port",
            "9443",
        ],
        env={"SHAHRAH_KEY_PASSPHRASE": "s3cret"},
    )
    assert result.exit_code == 0, result.output
    assert "shahrah registry key add --member PK/FED/NADRA" in result.stdout
    assert stat.S_IMODE((d / "signing-key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((d / "tls-key.pem").stat().st_mode) == 0o600
    assert b"ENCRYPTED" in (d / "tls-key.pem").read_bytes()
    key = PrivateKey.load(d / "signing-key.pem", b"s3cret")
    assert PublicKey.from_jwk(json.loads((d / "signing-key.jwk").read_text())).kid == key.kid
    Certificate.from_pem((d / "tls-cert.pem").read_text())
    config = GatewayConfig.load(d / "gateway.toml")
    assert str(config.id) == "PK/FED/NADRA/gw1"
    assert config.remote.port == 9443
    assert config.anchor == d / "anchor.json"
    again = CliRunner().invoke(
        main,
        [
            "gateway",
            "init",
            "--data-dir",
            str(d),
            "--id",
            "PK/FED/NADRA/gw1",
            "--anchor",
            str(anchor),
        ],
        env={"SHAHRAH_KEY_PASSPHRASE": "x"},
    )
    assert again.exit_code != 0
    assert "already holds a gateway" in again.stderr


def test_config_errors_name_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "gateway.toml"
    bad.write_text('id = "PK/FED/NADRA/gw1"\n[local]\nport = 99999\n')
    result = CliRunner().invoke(
        main, ["gateway", "serve", "--data-dir", str(tmp_path), "--no-passphrase"]
    )
    assert result.exit_code != 0
    assert "local.port" in result.stderr
