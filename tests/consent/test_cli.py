"""``shahrah consent`` as an operator runs it."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from consent import bootstrap
from consent.citizens import Accounts
from consent.receipt import sign_receipt
from core.db import create_engine, sessions
from core.ids import Cnic
from core.keys import KeySet, PrivateKey
from core.pseudonym import Pseudonymizer
from registry.globalconf import Anchor
from shahrah.cli import main
from tests.registry.test_globalconf import anchor_for

PASS = {"SHAHRAH_KEY_PASSPHRASE": "a pass phrase"}


def run(*args: str, env: dict[str, str] | None = None, ok: bool = True) -> click.testing.Result:
    result = CliRunner().invoke(main, list(args), env=env or {}, catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output + result.stderr
    return result


@pytest.fixture
def service_dir(tmp_path: Path, db_url: str) -> tuple[Path, str]:
    anchor = tmp_path / "anchor.json"
    anchor.write_text(anchor_for().dumps())
    folder = tmp_path / "consent"
    result = run(
        "consent",
        "init",
        "--data-dir",
        str(folder),
        "--db",
        db_url,
        "--anchor",
        str(anchor),
        env=PASS,
    )
    jwks = json.loads(result.stdout)
    assert jwks == json.loads((folder / bootstrap.JWKS_FILE).read_text())
    assert "central-service consent" in result.stderr
    return folder, db_url


def test_init_makes_keys_anchor_and_log(service_dir: tuple[Path, str]) -> None:
    folder, db_url = service_dir
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name in (bootstrap.KEY_FILE, bootstrap.PSEUDONYM_FILE):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600
    assert b"ENCRYPTED" in (folder / bootstrap.KEY_FILE).read_bytes()
    key = PrivateKey.load(folder / bootstrap.KEY_FILE, PASS["SHAHRAH_KEY_PASSPHRASE"].encode())
    assert KeySet.from_jwks(json.loads((folder / bootstrap.JWKS_FILE).read_text())).resolve(key.kid)
    assert Anchor.load(folder / bootstrap.ANCHOR_FILE) == anchor_for()
    assert Pseudonymizer.load(folder / bootstrap.PSEUDONYM_FILE)(Cnic("35202-1234567-1"))
    again = run(
        "consent",
        "init",
        "--data-dir",
        str(folder),
        "--db",
        db_url,
        "--anchor",
        str(folder / bootstrap.ANCHOR_FILE),
        env=PASS,
        ok=False,
    )
    assert again.exit_code == 1
    assert "already holds a consent service" in again.stderr
    assert (
        run("consent", "jwks", "--data-dir", str(folder)).stdout
        == (folder / bootstrap.JWKS_FILE).read_text()
    )


def test_init_takes_the_federation_pseudonym_key_from_the_audit_server(
    tmp_path: Path, db_url: str
) -> None:
    shared = tmp_path / "from-audit.key"
    made = Pseudonymizer.generate(shared)
    anchor = tmp_path / "anchor.json"
    anchor.write_text(anchor_for().dumps())
    folder = tmp_path / "c"
    run(
        "consent",
        "init",
        "--data-dir",
        str(folder),
        "--db",
        db_url,
        "--anchor",
        str(anchor),
        "--pseudonym-key",
        str(shared),
        "--no-passphrase",
    )
    cnic = Cnic("35202-1234567-1")
    assert Pseudonymizer.load(folder / bootstrap.PSEUDONYM_FILE)(cnic) == made(cnic)


def test_citizens_are_created_with_a_password_from_the_environment_only(
    service_dir: tuple[Path, str],
) -> None:
    folder, db_url = service_dir
    base = ("consent", "citizen", "add", "--data-dir", str(folder), "--db", db_url)
    refused = run(*base, "35202-1234567-1", "--name", "Ayesha Khan", ok=False)
    assert refused.exit_code == 2
    assert "SHAHRAH_CITIZEN_PASSWORD" in refused.stderr
    env = {"SHAHRAH_CITIZEN_PASSWORD": "a long enough secret"}
    run(*base, "3520212345671", "--name", "Ayesha Khan", env=env)
    duplicate = run(*base, "35202-1234567-1", "--name", "Ayesha", env=env, ok=False)
    assert "already has an account" in duplicate.stderr
    short = run(
        *base, "35202-7654321-3", "--name", "X", env={"SHAHRAH_CITIZEN_PASSWORD": "short"}, ok=False
    )
    assert "at least 10 characters" in short.stderr
    bad = run(*base, "35202-12", "--name", "X", env=env, ok=False)
    assert bad.exit_code == 2

    async def sign_in() -> str:
        engine = create_engine(service_dir[1])
        try:
            done = await Accounts(sessions(engine)).sign_in(
                Cnic("35202-1234567-1"), "a long enough secret"
            )
            return done.token
        finally:
            await engine.dispose()

    assert asyncio.run(sign_in()).startswith("shr_cz_")


def test_guardianships_and_tokens(service_dir: tuple[Path, str]) -> None:
    folder, db_url = service_dir
    d = ("--data-dir", str(folder), "--db", db_url)
    added = json.loads(
        run(
            "consent",
            "guardian",
            "add",
            *d,
            "35202-1234567-1",
            "35202-7654321-3",
            "--relation",
            "parent",
            "--reference",
            "B-form 123",
            "--until",
            "2031-04-30",
        ).stdout
    )
    assert added["relation"] == "parent"
    assert added["valid_until"] == "2031-04-30T00:00:00Z"
    listed = json.loads(run("consent", "guardian", "list", *d, "--cnic", "35202-7654321-3").stdout)
    assert [g["id"] for g in listed] == [added["id"]]
    self_guard = run(
        "consent",
        "guardian",
        "add",
        *d,
        "35202-1234567-1",
        "35202-1234567-1",
        "--relation",
        "attorney",
        "--reference",
        "x",
        ok=False,
    )
    assert "own guardian" in self_guard.stderr
    ended = json.loads(run("consent", "guardian", "end", *d, str(added["id"])).stdout)
    assert ended["ended_at"] is not None
    assert (
        "no guardianship"
        in run("consent", "guardian", "end", *d, str(added["id"]), ok=False).stderr
    )

    token = run("consent", "token", "create", *d, "ops").stdout.strip()
    assert token.startswith("shr_cop_")
    assert json.loads(run("consent", "token", "list", *d).stdout) == [
        {"name": "ops", "active": True}
    ]
    run("consent", "token", "revoke", *d, "ops")
    assert json.loads(run("consent", "token", "list", *d).stdout)[0]["active"] is False


def test_verify_receipt(tmp_path: Path) -> None:
    key = PrivateKey.generate()
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(KeySet([key.public()]).to_jwks()))
    document = {
        "schema_version": "shahrah-consent-receipt/1; ISO/IEC TS 27560:2023",
        "receipt_id": "r1",
        "record_id": "cns-1",
        "record_version": 2,
        "pii_principal_id": "35202-1234567-1",
        "issued_at": "2026-11-28T00:00:00Z",
        "status": "ACTIVE",
    }
    receipt = tmp_path / "r.jws"
    receipt.write_text(sign_receipt(document, key))
    shown = run("consent", "verify-receipt", str(receipt), "--jwks", str(jwks))
    assert json.loads(shown.stdout) == document
    other = tmp_path / "other.json"
    other.write_text(json.dumps(KeySet([PrivateKey.generate().public()]).to_jwks()))
    refused = run("consent", "verify-receipt", str(receipt), "--jwks", str(other), ok=False)
    assert refused.exit_code == 1
    assert "does NOT verify" in refused.stderr
