"""Pieces every ``shahrah`` subcommand shares: passphrases, running async actions, output.

Passphrases come from ``SHAHRAH_KEY_PASSPHRASE``, or from a prompt when a
terminal is attached; with neither, a command refuses unless the operator
passed ``--no-passphrase``. Nothing ever waits on a prompt without a terminal.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click
from aiohttp import web
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError

from core.db import driver_said
from core.errors import ShahrahError
from core.tls import listener_context
from core.web import cannot_listen

__all__ = [
    "PASSPHRASE_ENV",
    "ProgressLine",
    "db_url_for",
    "echo_json",
    "no_passphrase_option",
    "resolve_passphrase",
    "run_async",
]

T = TypeVar("T")

PASSPHRASE_ENV = "SHAHRAH_KEY_PASSPHRASE"  # noqa: S105 (the variable's name, not a secret)

no_passphrase_option = click.option(
    "--no-passphrase",
    is_flag=True,
    help="No passphrase for the private keys: made unencrypted by init, read as such by the "
    "other commands (demos and tests only).",
)


def resolve_passphrase(no_passphrase: bool, *, confirm: bool = False) -> bytes | None:
    """The key passphrase to use, or None when the caller explicitly chose none."""
    if no_passphrase:
        return None
    value = os.environ.get(PASSPHRASE_ENV)
    if value:
        return value.encode("utf-8")
    if sys.stdin.isatty():
        entered = click.prompt(
            "Key passphrase", hide_input=True, confirmation_prompt=confirm, err=True
        )
        if not entered:
            raise click.UsageError("an empty passphrase is not accepted; use --no-passphrase")
        return str(entered).encode("utf-8")
    raise click.UsageError(
        f"a key passphrase is needed: set {PASSPHRASE_ENV}, run in a terminal, "
        "or pass --no-passphrase to keep keys unencrypted"
    )


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run an async action; our own errors, and a database that cannot be used (a missing
    file, a server out of reach), become a one-line message and exit status 1."""
    try:
        return asyncio.run(coro)
    except ShahrahError as e:
        raise click.ClickException(f"{e.message}") from e
    except DBAPIError as e:
        raise click.ClickException(f"cannot use the database: {driver_said(e)}") from e


def serve_until_stopped(
    app: web.Application,
    *,
    what: str,
    host: str,
    port: int,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
) -> None:
    """Serve ``app`` (over TLS when given a certificate and key) until Ctrl-C; a certificate
    that does not load, a port taken or a host not this machine's is a one-line error."""
    try:
        ssl_ctx = listener_context(tls_cert, tls_key) if tls_cert and tls_key else None
    except ShahrahError as e:
        raise click.ClickException(e.message) from e
    click.echo(f"{what} on {'https' if ssl_ctx else 'http'}://{host}:{port}", err=True)
    try:
        web.run_app(app, host=host, port=port, ssl_context=ssl_ctx, print=None)
    except OSError as e:  # a taken port, or a host name that does not resolve (gaierror)
        raise click.ClickException(cannot_listen(host, port, e)) from e


def echo_json(value: Any) -> None:
    """Print a model, a list of models or plain JSON, indented, to stdout."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    elif isinstance(value, list):
        value = [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def db_url_for(data_dir: Path | None, db: str | None, filename: str) -> str:
    """``--db`` if given, else the SQLite file ``filename`` in ``--data-dir``."""
    if db:
        return db
    if data_dir is None:
        raise click.UsageError("give --data-dir (or --db URL)")
    return f"sqlite:///{(data_dir / filename).resolve()}"


class ProgressLine:
    """``done`` of ``total`` things on one line of stderr, redrawn at most five times a
    second and ended when the total is reached (a long command's progress)."""

    def __init__(self, things: str) -> None:
        self.things = things
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last < 0.2 and done < total:
            return
        self.last = now
        click.echo(f"\r  {done:,} of {total:,} {self.things}", err=True, nl=done >= total)
