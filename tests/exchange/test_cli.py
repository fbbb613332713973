"""``shahrah gateway init`` makes a gateway the operator can register, and it runs."""

from __future__ import annotations

import json
import socket
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from core.keys import PrivateKey, PublicKey
from core.tls import Certificate
from exchange.config import GatewayConfig, LimitSettings
from shahrah.cli import main
from tests.ports import free_base
from tests.registry.test_globalconf import anchor_for


def _env(passphrase: str | None) -> dict[str, str] | None:
    return {"SHAHRAH_KEY_PASSPHRASE": passphrase} if passphrase else None


def _init(tmp_path: Path, *options: str, passphrase: str | None = None) -> Result:
    """``gateway init`` of PK/FED/NADRA/gw1 into ``tmp_path/gw``, keys without a passphrase
    unless one is given."""
    anchor = tmp_path / "anchor.json"
    anchor.write_text(anchor_for().dumps())
    args = ["gateway", "init", "--data-dir", str(tmp_path / "gw"), "--id", "PK/FED/NADRA/gw1"]
    args += ["--anchor", str(anchor), *options] + ([] if passphrase else ["--no-passphrase"])
    return CliRunner().invoke(main, args, env=_env(passphrase))


def _serve(d: Path, passphrase: str | None = None) -> Result:
    args = ["gateway", "serve", "--data-dir", str(d)] + ([] if passphrase else ["--no-passphrase"])
    return CliRunner().invoke(main, args, env=_env(passphrase))


def test_init_writes_keys_certificate_and_config(tmp_path: Path) -> None:
    d = tmp_path / "gw"
    result = _init(tmp_path, "--remote-port", "9443", passphrase="s3cret")
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
    again = _init(tmp_path, passphrase="x")
    assert again.exit_code != 0
    assert "already holds a gateway" in again.stderr


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ("[local]\nport = 99999", "local.port"),
        ('[local]\nport = 8080\nhost = "a b"', "local.host"),
        ('[local]\nport = "8080"', "local.port"),
        ('[limits]\nbackend_timeout = "30"', "limits.backend_timeout"),
        ("[limits]\npeer_timeout = true", "limits.peer_timeout"),
        ("[limits]\nbody_timeout = nan", "limits.body_timeout"),
        ("[limits]\nfreshness = inf", "limits.freshness"),
        ("[limits]\nmax_body = 1e7", "limits.max_body"),
        (
            '[services."PK/FED/NADRA/civil-registry/echo"]\nurl = "http://svc:S3cret@10.0.0.1/x"',
            "services.PK/FED/NADRA/civil-registry/echo: Value error, the url must not hold",
        ),
    ],
)
def test_config_errors_name_the_field(tmp_path: Path, section: str, field: str) -> None:
    bad = tmp_path / "gateway.toml"
    bad.write_text(f'id = "PK/FED/NADRA/gw1"\n{section}\n')
    result = _serve(tmp_path)
    assert result.exit_code != 0
    assert field in result.stderr
    assert "S3cret" not in result.stderr


def test_every_config_problem_is_named_at_once(tmp_path: Path) -> None:
    (tmp_path / "gateway.toml").write_text(
        'id = "PK/FED/NADRA/gw1"\n[local]\nport = -1\n[limits]\npeer_timeout = 0\nspeed = 1\n'
    )
    result = _serve(tmp_path)
    assert result.exit_code != 0
    for field in ("local.port", "limits.peer_timeout", "limits.speed"):
        assert field in result.stderr


def test_a_config_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    (tmp_path / "gateway.toml").write_bytes(b'id = "PK/FED/NADRA/gw\xff"\n')
    result = _serve(tmp_path)
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert "gateway.toml: not UTF-8 text" in result.stderr


def _made_gateway(tmp_path: Path, passphrase: str | None = None) -> tuple[Path, int]:
    """A gateway folder whose anchor names a registry nobody runs; returns it and its r1 port."""
    base = free_base(span=2)
    ports = ("--local-port", str(base), "--remote-port", str(base + 1))
    made = _init(tmp_path, *ports, passphrase=passphrase)
    assert made.exit_code == 0, made.output
    return tmp_path / "gw", base


def _one_line_error(result: Result) -> str:
    """What the operator sees: a single ``Error:`` line, and no traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("Error:")]
    return line


def test_a_port_in_use_is_named(tmp_path: Path) -> None:
    d, port = _made_gateway(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        line = _one_line_error(_serve(d))
    assert f"127.0.0.1:{port}" in line
    assert "in use" in line


def test_a_wrong_passphrase_names_the_key_file_and_not_the_passphrase(tmp_path: Path) -> None:
    d, _ = _made_gateway(tmp_path, passphrase="right-one")
    line = _one_line_error(_serve(d, passphrase="wrong-one"))
    assert str(d / "signing-key.pem") in line
    assert "wrong passphrase" in line
    assert "wrong-one" not in line


def test_an_unusable_tls_key_is_named(tmp_path: Path) -> None:
    d, _ = _made_gateway(tmp_path)
    (d / "tls-key.pem").write_text("not a key\n")
    line = _one_line_error(_serve(d))
    assert str(d / "tls-key.pem") in line
    (d / "tls-key.pem").unlink()
    line = _one_line_error(_serve(d))
    assert str(d / "tls-key.pem") in line


def test_serve_reads_the_local_clients_certificates_before_it_starts(tmp_path: Path) -> None:
    d, _ = _made_gateway(tmp_path)
    config = (d / "gateway.toml").read_text().replace("# tls = true", "tls = true", 1)
    config += '\n[clients."PK/FED/NADRA/civil-registry"]\ncertificates = ["systems/a.pem"]\n'
    (d / "gateway.toml").write_text(config)
    line = _one_line_error(_serve(d))
    assert f"clients.PK/FED/NADRA/civil-registry: {d / 'systems/a.pem'}: cannot read" in line
    # A backend's pinned certificate too, before anything starts.
    config = (d / "gateway.toml").read_text().split("\n[clients.")[0]
    config += '\n[services."PK/FED/NADRA/civil-registry/echo/v1"]\nurl = "https://10.0.0.5"\n'
    config += 'certificates = ["systems/b.pem"]\n'
    (d / "gateway.toml").write_text(config)
    line = _one_line_error(_serve(d))
    assert f"services.PK/FED/NADRA/civil-registry/echo/v1: {d / 'systems/b.pem'}" in line


def test_init_refuses_a_port_no_listener_can_have(tmp_path: Path) -> None:
    for option, value in (("--local-port", "99999"), ("--remote-port", "0")):
        result = _init(tmp_path, option, value)
        assert result.exit_code == 2, result.output
        assert option in result.stderr
        assert not (tmp_path / "gw").exists()


def test_serve_help_says_where_the_passphrase_comes_from() -> None:
    result = CliRunner().invoke(main, ["gateway", "serve", "--help"])
    assert "SHAHRAH_KEY_PASSPHRASE" in result.stdout
    assert "docs/gateway.md" in result.stdout


def test_an_unreachable_database_is_one_line_without_its_password(tmp_path: Path) -> None:
    d, _ = _made_gateway(tmp_path)
    config = d / "gateway.toml"
    url = 'database = "postgresql://gw:db-secret@127.0.0.1:1/gateway"'
    config.write_text(config.read_text().replace('# database = "postgresql://user@host/name"', url))
    line = _one_line_error(_serve(d))
    assert "127.0.0.1:1" in line
    assert "db-secret" not in line


def test_the_written_config_shows_every_limit_with_its_default(tmp_path: Path) -> None:
    """An operator tunes what gateway.toml shows; a limit missing there is one nobody finds."""
    d, _ = _made_gateway(tmp_path)
    text = (d / "gateway.toml").read_text()
    for name, field in LimitSettings.model_fields.items():
        assert f"\n{name} = {field.default!r}" in text, name


@pytest.mark.parametrize(
    "host", ['gw.example"\nid = "PK/FED/X/evil', "gw example", "https://gw.example", "-gw", ""]
)
def test_init_refuses_a_remote_host_that_is_no_host(tmp_path: Path, host: str) -> None:
    """It is written into gateway.toml and the address the operator registers: a quote
    would rewrite the file, anything else would publish an unreachable gateway."""
    result = _init(tmp_path, "--remote-host", host)
    assert result.exit_code == 2, result.output
    assert "--remote-host" in result.stderr
    assert "not an IP address or a host name" in result.stderr
    assert not (tmp_path / "gw").exists()


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("gw1.nadra.gov.pk", "https://gw1.nadra.gov.pk:8443"),
        ("10.1.2.3", "https://10.1.2.3:8443"),
        ("fd00::12", "https://[fd00::12]:8443"),
    ],
)
def test_init_prints_the_address_to_register(tmp_path: Path, host: str, address: str) -> None:
    result = _init(tmp_path, "--remote-host", host)
    assert result.exit_code == 0, result.output
    assert f"--address {address} " in result.stdout
    assert GatewayConfig.load(tmp_path / "gw" / "gateway.toml").remote.host == host


def test_renew_tls_writes_a_renewed_pair_under_the_same_passphrase(tmp_path: Path) -> None:
    d = tmp_path / "gw"
    assert _init(tmp_path, passphrase="s3cret").exit_code == 0
    current = (d / "tls-cert.pem").read_bytes()

    def renew_tls(passphrase: str) -> Result:
        args = ["gateway", "renew-tls", "--data-dir", str(d)]
        return CliRunner().invoke(main, args, env=_env(passphrase))

    wrong = renew_tls("not-it")
    assert wrong.exit_code != 0
    assert "wrong passphrase" in wrong.stderr
    assert "not-it" not in wrong.output
    assert not (d / "tls-cert.next.pem").exists()
    assert not (d / "tls-key.next.pem").exists()

    made = renew_tls("s3cret")
    assert made.exit_code == 0, made.output
    assert made.stdout.strip() == (
        f"shahrah registry gateway set PK/FED/NADRA/gw1 --next-tls-cert {d / 'tls-cert.next.pem'}"
    )
    renewed = Certificate.from_pem((d / "tls-cert.next.pem").read_text())
    assert renewed.sha256 != Certificate.from_pem(current.decode()).sha256
    assert stat.S_IMODE((d / "tls-key.next.pem").stat().st_mode) == 0o600
    assert b"ENCRYPTED" in (d / "tls-key.next.pem").read_bytes()
    assert (d / "tls-cert.pem").read_bytes() == current  # the current pair stays in use

    again = renew_tls("s3cret")
    assert again.exit_code != 0
    assert "a renewal is under way" in again.stderr


def test_rotate_key_writes_a_new_key_under_the_same_passphrase(tmp_path: Path) -> None:
    d = tmp_path / "gw"
    assert _init(tmp_path, passphrase="s3cret").exit_code == 0
    current = PrivateKey.load(d / "signing-key.pem", b"s3cret")

    def rotate_key(passphrase: str) -> Result:
        args = ["gateway", "rotate-key", "--data-dir", str(d)]
        return CliRunner().invoke(main, args, env=_env(passphrase))

    wrong = rotate_key("not-it")
    assert wrong.exit_code != 0
    assert "wrong passphrase" in wrong.stderr
    assert "not-it" not in wrong.output
    assert not (d / "signing-key.next.pem").exists()

    made = rotate_key("s3cret")
    assert made.exit_code == 0, made.output
    jwk = d / "signing-key.next.jwk"
    assert made.stdout.strip() == f"shahrah registry key add --member PK/FED/NADRA --jwk {jwk}"
    new = PrivateKey.load(d / "signing-key.next.pem", b"s3cret")
    assert PublicKey.from_jwk(json.loads(jwk.read_text())).kid == new.kid != current.kid
    assert stat.S_IMODE((d / "signing-key.next.pem").stat().st_mode) == 0o600
    assert PrivateKey.load(d / "signing-key.pem", b"s3cret").kid == current.kid  # still in use

    again = rotate_key("s3cret")
    assert again.exit_code != 0
    assert "a key rotation is under way" in again.stderr
