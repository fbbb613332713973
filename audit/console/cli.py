"""``shahrah audit regulator``: the regulator console's accounts, on the audit server's database.

A password is never an argument (other users of the machine can read a
command line): it is asked for twice on a terminal, or read as one line from
standard input with ``--password-stdin`` for scripts.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from audit.bootstrap import ANCHOR_FILE, DB_FILE, GLOBALCONF_FILE
from audit.cli_options import data_dir_option, db_option
from audit.console.accounts import RegulatorAccounts, parse_username
from audit.regulators import REGULATORS_GROUP, require_regulator
from core.cli import db_url_for, echo_json, run_async
from core.db import create_engine, sessions
from core.errors import BadRequestError, ShahrahError
from core.ids import ClientId
from registry.globalconf import Anchor
from registry.globalconf_client import GlobalConfClient

__all__ = ["regulator"]


def _username(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return parse_username(value)
    except BadRequestError as e:
        raise click.BadParameter(e.message) from e


def _organisation(ctx: click.Context, param: click.Parameter, value: str) -> ClientId:
    try:
        return ClientId.parse(value)
    except ShahrahError as e:
        raise click.BadParameter(e.message) from e


def _check_group(data_dir: Path, organisation: ClientId) -> None:
    """Refuse an organisation the cached configuration does not list as a regulator; only
    warn when no configuration is cached yet (sign-in checks it again anyway)."""
    cached = data_dir / GLOBALCONF_FILE
    anchor_file = data_dir / ANCHOR_FILE
    if not cached.exists() or not anchor_file.exists():
        click.echo(
            f"warning: no cached global configuration; cannot check that {organisation} is in "
            f"{REGULATORS_GROUP!r} (the console checks at every sign-in)",
            err=True,
        )
        return
    conf = GlobalConfClient(Anchor.load(anchor_file))
    try:
        conf.accept(cached.read_text("ascii"))
        view = conf.view
        if view is None:
            raise click.ClickException(f"{cached} holds no verified configuration")
        require_regulator(view, organisation)
    except ShahrahError as e:
        raise click.ClickException(e.message) from e


def _password() -> str:
    if not sys.stdin.isatty():
        raise click.UsageError("no terminal to ask for the password: use --password-stdin")
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True, err=True))


async def _with_accounts(url: str, action: Any) -> Any:
    engine = create_engine(url, pool_size=1)
    try:
        return await action(RegulatorAccounts(sessions(engine)))
    finally:
        await engine.dispose()


@click.group()
def regulator() -> None:
    """Accounts of the regulator console (/console/ on the audit server).

    Each account is one person, signing in with a username and password, acting
    for a regulator organisation: a subsystem in the global group audit-regulators.
    The console refuses anyone whose organisation has left that group."""


@regulator.command()
@data_dir_option
@db_option
@click.argument("username", callback=_username)
@click.option(
    "--organisation",
    required=True,
    callback=_organisation,
    help="The regulator subsystem the person acts for, e.g. PK/FED/NCPDP/audit.",
)
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password as one line from standard input instead of asking twice on the "
    "terminal.",
)
def add(
    data_dir: Path, db: str | None, username: str, organisation: ClientId, password_stdin: bool
) -> None:
    """Create a person's account.

    USERNAME has 2 to 64 of a-z 0-9 . _ - and the password at least 12 characters."""
    _check_group(data_dir, organisation)
    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else _password()

    async def go(accounts: RegulatorAccounts) -> None:
        await accounts.add(username, organisation, password)

    run_async(_with_accounts(db_url_for(data_dir, db, DB_FILE), go))
    click.echo(f"regulator account {username} created for {organisation}", err=True)


@regulator.command()
@data_dir_option
@db_option
@click.argument("username", callback=_username)
def disable(data_dir: Path, db: str | None, username: str) -> None:
    """Close an account for good.

    A session of USERNAME that is in use ends at its next page."""

    async def go(accounts: RegulatorAccounts) -> None:
        await accounts.disable(username)

    run_async(_with_accounts(db_url_for(data_dir, db, DB_FILE), go))
    click.echo(f"regulator account {username} disabled", err=True)


@regulator.command("list")
@data_dir_option
@db_option
def list_accounts(data_dir: Path, db: str | None) -> None:
    """List the accounts as JSON.

    Each with its organisation, when it was made, and when it was disabled or until when
    it is locked."""

    async def go(accounts: RegulatorAccounts) -> list[dict[str, Any]]:
        return [
            {
                "username": a.username,
                "organisation": a.organisation,
                "created_at": a.created_at.isoformat(),
                "disabled_at": a.disabled_at.isoformat() if a.disabled_at else None,
                "locked_until": a.locked_until.isoformat() if a.locked_until else None,
            }
            for a in await accounts.list()
        ]

    echo_json(run_async(_with_accounts(db_url_for(data_dir, db, DB_FILE), go)))
