"""The shahrah command's own commands: a plain mistake is a one-line error, never a traceback."""

from __future__ import annotations

import socket
from pathlib import Path

import click
import pytest
from aiohttp import web
from click.testing import CliRunner

from core.cli import serve_until_stopped
from shahrah.cli import main


def _fails_in_one_line(args: list[str], says: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Error:" in result.output
    assert says in result.output


def test_db_check_names_a_bad_database_in_one_line(tmp_path: Path) -> None:
    _fails_in_one_line(["db", "check", "--db", "bogus://x"], "unsupported database")
    missing = f"sqlite:///{tmp_path}/no/such/folder/x.db"
    _fails_in_one_line(["db", "check", "--db", missing], "there is no folder")
    (tmp_path / "empty.db").touch()  # never migrated
    _fails_in_one_line(["db", "check", "--db", f"sqlite:///{tmp_path}/empty.db"], "not up to date")


def test_a_jwk_out_in_a_missing_folder_is_refused_before_the_key_is_written(
    tmp_path: Path,
) -> None:
    key = tmp_path / "k.pem"
    _fails_in_one_line(
        [
            "key",
            "generate",
            "--out",
            str(key),
            "--no-passphrase",
            "--jwk-out",
            str(tmp_path / "nodir" / "j.json"),
        ],
        "no folder",
    )
    assert not key.exists()  # else a second run would refuse to overwrite it


def test_serving_on_a_taken_port_a_bad_host_or_bad_tls_files_is_a_one_line_error(
    tmp_path: Path,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(click.ClickException, match=r"cannot listen on 127\.0\.0\.1:.*in use"):
            serve_until_stopped(web.Application(), what="test", host="127.0.0.1", port=port)
    with pytest.raises(click.ClickException, match=r"cannot listen on 256\.1\.1\.1"):
        serve_until_stopped(web.Application(), what="test", host="256.1.1.1", port=1)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(click.ClickException, match="cannot load TLS certificate"):
        serve_until_stopped(
            web.Application(), what="test", host="127.0.0.1", port=1, tls_cert=junk, tls_key=junk
        )


def test_a_command_on_a_database_it_cannot_use_is_a_one_line_error(tmp_path: Path) -> None:
    _fails_in_one_line(
        ["registry", "member", "list", "--data-dir", str(tmp_path / "nope")],
        "cannot use the database: there is no folder",
    )
