"""``shahrah registry`` and ``shahrah key`` as an operator runs them."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from core.tls import make_certificate
from registry.globalconf import Anchor
from shahrah.cli import main


def run(*args: str, env: dict[str, str] | None = None, ok: bool = True) -> click.testing.Result:
    result = CliRunner().invoke(main, list(args), env=env or {}, catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output + result.stderr
    return result


def test_init_refuses_without_passphrase_source(tmp_path: Path) -> None:
    result = run(
        "registry",
        "init",
        "--data-dir",
        str(tmp_path / "r"),
        "--instance",
        "PK",
        env={"SHAHRAH_KEY_PASSPHRASE": ""},
        ok=False,
    )
    assert result.exit_code == 2
    assert "SHAHRAH_KEY_PASSPHRASE" in result.stderr
    assert not (tmp_path / "r").exists()


@pytest.fixture
def data_dir(tmp_path: Path, db_url: str) -> tuple[Path, str, str]:
    """An initialised registry whose key is encrypted: (folder, database URL, token)."""
    d = tmp_path / "reg"
    result = run(
        "registry",
        "init",
        "--data-dir",
        str(d),
        "--db",
        db_url,
        "--instance",
        "PK",
        env={"SHAHRAH_KEY_PASSPHRASE": "pass phrase"},
    )
    return d, db_url, result.stdout.strip()


def test_init_writes_encrypted_key_anchor_and_prints_token(data_dir: tuple[Path, str, str]) -> None:
    d, _, token = data_dir
    assert token.startswith("shr_op_")
    key = d / "operator-key.pem"
    assert b"ENCRYPTED" in key.read_bytes()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    anchor = Anchor.load(d / "anchor.json")
    assert anchor.instance == "PK"
    assert len(anchor.keys.keys) == 1
    again = run(
        "registry",
        "init",
        "--data-dir",
        str(d),
        "--instance",
        "PK",
        env={"SHAHRAH_KEY_PASSPHRASE": "x"},
        ok=False,
    )
    assert "already holds a registry" in again.stderr


def test_operator_actions_and_publishing(data_dir: tuple[Path, str, str], tmp_path: Path) -> None:
    d, db, _ = data_dir
    common = ["--data-dir", str(d), "--db", db]
    run("registry", "member", "add", "FED", "NADRA", "--name", "NADRA", *common)
    run("registry", "subsystem", "add", "PK/FED/NADRA/civil-registry", *common)
    run(
        "key",
        "generate",
        "--out",
        str(tmp_path / "nadra.pem"),
        "--jwk-out",
        str(tmp_path / "nadra.jwk"),
        env={"SHAHRAH_KEY_PASSPHRASE": "k"},
    )
    out = run(
        "registry",
        "key",
        "add",
        "--member",
        "PK/FED/NADRA",
        "--jwk",
        str(tmp_path / "nadra.jwk"),
        *common,
    )
    kid = json.loads(out.stdout)["kid"]
    run(
        "registry",
        "purpose",
        "add",
        "identity-verification",
        "--name",
        "Identity verification",
        *common,
    )
    run(
        "registry",
        "service",
        "add",
        "PK/FED/NADRA/civil-registry/person/v1",
        "--title",
        "Person",
        "--requires-consent",
        "--subject-field",
        "/cnic",
        "--purpose",
        "identity-verification",
        "--response-schema",
        "pk.nadra.person:1",
        *common,
    )
    run(
        "registry",
        "member",
        "add",
        "LG",
        "LMC",
        "--name",
        "Lahore Metropolitan Corporation",
        *common,
    )
    run("registry", "subsystem", "add", "PK/LG/LMC/property-tax", *common)
    grant = run(
        "registry",
        "access",
        "grant",
        "PK/FED/NADRA/civil-registry/person/v1",
        "--client",
        "PK/LG/LMC/property-tax",
        "--method",
        "get",
        "--path",
        "/persons/*",
        *common,
    )
    assert json.loads(grant.stdout)["method"] == "GET"
    run("registry", "key", "revoke", *common, "--", kid)  # a kid may start with "-"

    refused = run("registry", "globalconf", "publish", *common, ok=False)
    assert "SHAHRAH_KEY_PASSPHRASE" in refused.stderr
    wrong = run(
        "registry", "globalconf", "publish", *common, env={"SHAHRAH_KEY_PASSPHRASE": "no"}, ok=False
    )
    assert "wrong passphrase" in wrong.stderr
    run("registry", "globalconf", "publish", *common, env={"SHAHRAH_KEY_PASSPHRASE": "pass phrase"})
    shown = json.loads(run("registry", "globalconf", "show", *common).stdout)
    assert shown["services"][0]["response_schema"] == {"subject": "pk.nadra.person", "version": 1}
    assert shown["members"][0]["keys"][0]["revoked_at"] is not None
    assert shown["access_rights"][0]["path"] == "/persons/*"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["registry", "member", "add", "FED", "NA DRA", "--name", "x"], "does not allow"),
        (["registry", "member", "add", "XX", "NADRA", "--name", "x"], "'XX' is not one of"),
        (
            [
                "registry",
                "service",
                "add",
                "PK/FED/NADRA/x/y",
                "--title",
                "t",
                "--request-schema",
                "nover",
            ],
            "SUBJECT:VERSION",
        ),
        (
            [
                "registry",
                "access",
                "grant",
                "PK/FED/NADRA/x/y",
                "--client",
                "PK/LG/LMC/t",
                "--global-group",
                "g",
            ],
            "exactly one",
        ),
        (["registry", "subsystem", "set", "PK/FED/NADRA", "--status", "suspended"], "SUBSYSTEM"),
        (["registry", "member", "set", "PK/FED/NOBODY", "--status", "suspended"], "not registered"),
    ],
)
def test_bad_operator_input_is_explained(
    data_dir: tuple[Path, str, str], args: list[str], message: str
) -> None:
    d, db, _ = data_dir
    result = run(*args, "--data-dir", str(d), "--db", db, ok=False)
    assert result.exit_code != 0
    assert message in result.stderr


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, cmd in group.commands.items():
        found.append((*prefix, name))
        if isinstance(cmd, click.Group):
            found.extend(_commands(cmd, (*prefix, name)))
    return found


@pytest.mark.parametrize("path", _commands(main), ids=" ".join)
def test_every_command_explains_itself(path: tuple[str, ...]) -> None:
    result = run(*path, "--help")
    assert "Usage:" in result.stdout
    cmd: click.Command = main
    for name in path:
        assert isinstance(cmd, click.Group)
        cmd = cmd.commands[name]
    assert cmd.help, f"{' '.join(path)} has no help text"
    assert len(cmd.help.strip()) > 10


def test_a_gateway_certificate_is_renewed_from_the_command_line(
    data_dir: tuple[Path, str, str], tmp_path: Path
) -> None:
    def cert(name: str) -> Path:
        path = tmp_path / f"{name}.pem"
        key = ec.generate_private_key(ec.SECP256R1())
        path.write_bytes(make_certificate(name, key).public_bytes(Encoding.PEM))
        return path

    d, db, _ = data_dir
    common = ["--data-dir", str(d), "--db", db]
    gw = "PK/FED/NADRA/gw1"
    run("registry", "member", "add", "FED", "NADRA", "--name", "NADRA", *common)
    current, renewed = cert("current"), cert("renewed")
    added = json.loads(
        run(
            "registry", "gateway", "add", gw, "--address", "https://127.0.0.1:9443",
            "--tls-cert", str(current), *common,
        ).stdout
    )  # fmt: skip
    assert "next_tls_sha256" not in added
    both = json.loads(
        run("registry", "gateway", "set", gw, "--next-tls-cert", str(renewed), *common).stdout
    )
    assert both["tls_sha256"] == added["tls_sha256"]
    assert both["next_tls_sha256"] not in (None, added["tls_sha256"])
    refused = run(
        "registry", "gateway", "set", gw, "--next-tls-cert", str(renewed),
        "--drop-next-tls-cert", *common, ok=False,
    )  # fmt: skip
    assert "or drop it, not both" in refused.stderr
    promoted = json.loads(
        run("registry", "gateway", "set", gw, "--tls-cert", str(renewed), *common).stdout
    )
    assert promoted["tls_sha256"] == both["next_tls_sha256"]
    assert "next_tls_sha256" not in promoted
