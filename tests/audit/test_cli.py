"""``shahrah audit`` as a regulator runs it: init, export, verify, search, alarms, help."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from audit.cli import audit
from core.keys import KeySet
from shahrah.cli import main
from tests.audit.conftest import WITNESS_KEY, Federation
from tests.audit.events import CITIZEN, PSEUDONYM_KEY
from tests.audit.test_export import N, witnessed  # noqa: F401 (fixture)
from tests.audit.test_verify import HEADER, MemoryTree, complete_log, entries, sealed
from tests.audit.test_verify import WITNESS_KEY as VERIFY_WITNESS_KEY
from tests.registry.test_globalconf import anchor_for


def run(*args: str, ok: bool = True, stdin: str | None = None) -> Result:
    result = CliRunner().invoke(main, list(args), input=stdin, catch_exceptions=False, env={})
    if ok:
        assert result.exit_code == 0, result.output + result.stderr
    return result


def test_every_audit_command_explains_itself() -> None:
    for name, command in audit.commands.items():
        result = run("audit", name, "--help")
        assert command.help
        assert "Usage: main audit " + name in result.output


def test_init_makes_keys_and_prints_the_jwks_to_publish(tmp_path: Path, db_url: str) -> None:
    anchor = tmp_path / "anchor.json"
    anchor.write_text(anchor_for().dumps())
    d = tmp_path / "audit"
    result = run(
        "audit",
        "init",
        "--data-dir",
        str(d),
        "--anchor",
        str(anchor),
        "--db",
        db_url,
        "--no-passphrase",
    )
    jwks = json.loads(result.stdout)
    assert len(KeySet.from_jwks(jwks)) == 1
    assert json.loads((d / "witness.jwks.json").read_text()) == jwks
    assert "shahrah registry central-service audit-witness" in result.stderr
    assert "witness key name: shahrah/PK/audit-witness" in result.stderr
    for name in ("witness-key.pem", "pseudonym.key"):
        assert stat.S_IMODE((d / name).stat().st_mode) == 0o600
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    again = run(
        "audit", "init", "--data-dir", str(d), "--anchor", str(anchor), "--no-passphrase", ok=False
    )
    assert "already holds an audit server" in again.stderr


@pytest.fixture
def server_dir(tmp_path: Path, witnessed: Federation) -> Path:  # noqa: F811
    """The folder of the audit server the federation fixture runs."""
    d = tmp_path / "server"
    d.mkdir()
    (d / "anchor.json").write_text(anchor_for().dumps())
    WITNESS_KEY.save(d / "witness-key.pem", None)
    (d / "pseudonym.key").write_bytes(PSEUDONYM_KEY)
    (d / "globalconf.jws").write_text(witnessed.audit_conf.current().signed)
    return d


async def _cli(*args: str, **kw: Any) -> Result:
    """The CLI runs its own event loop, so it gets a thread of its own."""
    return await asyncio.to_thread(run, *args, **kw)


async def test_export_and_verify_from_the_command_line(
    server_dir: Path, db_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "citizen.jsonl"

    async def export(*options: str, **kw: Any) -> Result:
        common = ("--data-dir", str(server_dir), "--db", db_url, "--out", str(out))
        return await _cli("audit", "export", *common, "--no-passphrase", *options, **kw)

    result = await export("--cnic-stdin", stdin=CITIZEN.value + "\n")
    assert f"exported {len(range(0, N, 3))} entries of 1 logs" in result.stderr
    assert CITIZEN.value not in out.read_text()
    again = await export(ok=False)
    assert "exists; refusing to overwrite" in again.stderr

    anchor = tmp_path / "anchor.json"
    anchor.write_text(anchor_for().dumps())
    verified = await _cli("audit", "verify", str(out), "--anchor", str(anchor), "--progress")
    assert verified.stdout.splitlines()[-1].startswith("OK: 1 logs, 6 checkpoints, 7 entries")
    assert "verifying: 100%" in verified.stderr
    quiet = await _cli("audit", "verify", str(out), "--anchor", str(anchor))
    assert "verifying" not in quiet.stderr  # not a terminal and no --progress
    # Nothing outside the file vouches for its keys: not OK, whatever it holds.
    alone = await _cli("audit", "verify", str(out), ok=False)
    assert alone.exit_code == 3  # not 2, which is a usage error
    assert alone.stdout.splitlines()[-1].startswith("UNVERIFIED: 1 logs, 6 checkpoints")
    embedded = await _cli("audit", "verify", str(out), "--trust-embedded-keys")
    assert embedded.stdout.splitlines()[-1].startswith("OK: 1 logs")

    text = out.read_text().replace('\\"msg-3\\"', '\\"msg-X\\"')
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text(text)
    failed = await _cli("audit", "verify", str(tampered), ok=False)
    assert failed.exit_code == 1
    assert "PROBLEM: PK/FED/NADRA/gw1 entry #3: changed" in failed.stdout
    assert failed.stdout.splitlines()[-1].startswith("FAILED: 2 problem(s)")


async def test_search_and_alarms_on_the_servers_database(server_dir: Path, db_url: str) -> None:
    result = await _cli(
        "audit", "search", "--data-dir", str(server_dir), "--db", db_url, "--outcome", "denied"
    )
    page = json.loads(result.stdout)
    assert [r["index"] for r in page["results"]] == [9]
    assert page["results"][0]["witnessed"]["tree_size"] == 12
    bad = await _cli(
        "audit", "search", "--data-dir", str(server_dir), "--outcome", "maybe", ok=False
    )
    assert bad.exit_code == 2
    alarms = await _cli("audit", "alarms", "--data-dir", str(server_dir), "--db", db_url)
    assert json.loads(alarms.stdout) == []


def test_verify_refuses_a_file_that_is_not_an_export(tmp_path: Path) -> None:
    junk = tmp_path / "junk.jsonl"
    junk.write_text('{"type": "header", "format": "something else"}\n')
    result = run("audit", "verify", str(junk), ok=False)
    assert result.exit_code == 1
    assert "not a Shahrah audit export" in result.stdout


async def test_an_interrupted_export_does_not_block_the_next_one(
    server_dir: Path, db_url: str, tmp_path: Path
) -> None:
    """An export is written beside its target and renamed into place. What an earlier,
    killed export left there must not make every later one fail, and a failing export
    leaves no part of the file (it holds personal data) behind."""
    exports = tmp_path / "exports"
    exports.mkdir()
    out = exports / "all.jsonl"
    stale = exports / "all.jsonl.partial"
    stale.write_bytes(b'{"type": "header"')  # what a killed export left behind
    common = ("audit", "export", "--data-dir", str(server_dir), "--out", str(out))
    result = await _cli(*common, "--db", db_url, "--no-passphrase")
    assert f"exported {N} entries of 1 logs" in result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    empty = tmp_path / "empty.db"  # a database without the audit tables: the export fails
    empty.touch()
    failed = exports / "failed.jsonl"
    with pytest.raises(Exception, match="no such table"):
        await _cli(
            *common[:-1], str(failed), "--db", f"sqlite+aiosqlite:///{empty}", "--no-passphrase"
        )
    assert sorted(p.name for p in exports.iterdir()) == ["all.jsonl", "all.jsonl.partial"]


def test_verify_prints_what_the_file_says_without_its_control_characters(tmp_path: Path) -> None:
    """Log ids, key names and notes in an export are the file's words: printed raw, an escape
    sequence in them would rewrite the regulator's terminal (hide problems, fake an OK)."""
    tree = MemoryTree(entries(2))
    lines = complete_log(tree, [2])
    for line in lines:
        line["log_id"] = "PK/FED/NADRA/gw1\x1b[2K\r\x1b[1AOK: 1 logs\u202e\x9b"
    export = tmp_path / "export.jsonl"
    export.write_bytes(sealed([json.dumps(x).encode() for x in [HEADER, *lines]], 2))
    jwks = tmp_path / "witness.jwks.json"
    jwks.write_text(json.dumps(KeySet([VERIFY_WITNESS_KEY.public()]).to_jwks()))
    result = run("audit", "verify", str(export), "--witness-jwks", str(jwks), ok=False)
    assert result.exit_code == 1
    assert "PK/FED/NADRA/gw1\\x1b[2K\\x0d\\x1b[1AOK: 1 logs\\u202e\\x9b" in result.stdout
    for char in "\x1b\r\u202e\x9b":
        assert char not in result.stdout + result.stderr


async def test_export_shows_progress_when_asked(
    server_dir: Path, db_url: str, tmp_path: Path
) -> None:
    """A complete export of large logs runs for minutes: like verify, it reports how far it
    got on stderr when that is a terminal or with --progress, and says nothing otherwise."""
    common = ("audit", "export", "--data-dir", str(server_dir), "--db", db_url, "--no-passphrase")
    shown = await _cli(*common, "--out", str(tmp_path / "a.jsonl"), "--progress")
    assert f"exporting: {N:,} entries" in shown.stderr
    assert f"exported {N} entries of 1 logs" in shown.stderr
    quiet = await _cli(*common, "--out", str(tmp_path / "b.jsonl"))
    assert "exporting:" not in quiet.stderr  # not a terminal and no --progress
    assert (tmp_path / "a.jsonl").read_text().splitlines()[:-1] != []
