"""The ``shahrah`` command: one entry point for every component."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from pathlib import Path

import click

from adapters.cli import adapter
from audit.cli import audit
from consent.cli import consent
from core import db
from core.cli import echo_json, no_passphrase_option, resolve_passphrase, run_async
from core.errors import ShahrahError
from core.keys import PrivateKey
from exchange.cli import gateway
from registry.cli import registry
from registry.schemareg.cli import schema


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="shahrah")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """Shahrah: signed, consent-enforcing data exchange between government systems.

    Each component is a subcommand; every subcommand explains itself with --help."""
    level = logging.WARNING - 10 * min(verbose, 2) if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("aiohttp.access", "sqlalchemy", "alembic"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


@main.group("db")
def db_group() -> None:
    """Database schema migrations (SQLite or PostgreSQL)."""


@db_group.command("upgrade")
@click.option(
    "--db",
    "url",
    required=True,
    envvar="SHAHRAH_DB",
    help="sqlite:///path/file.db or postgresql://user@host/name. Env: SHAHRAH_DB.",
)
def db_upgrade(url: str) -> None:
    """Apply every package's migrations up to the newest."""
    try:
        db.upgrade(url)
    except ShahrahError as e:
        raise click.ClickException(e.message) from e
    click.echo("database is up to date", err=True)


@db_group.command("check")
@click.option("--db", "url", required=True, envvar="SHAHRAH_DB", help="Database URL.")
def db_check(url: str) -> None:
    """Fail if the models and the migrations disagree."""
    try:
        db.check(url)
    except ShahrahError as e:
        raise click.ClickException(e.message) from e
    click.echo("models and migrations agree", err=True)


@main.group("key")
def key_group() -> None:
    """Signing keys for members and central services."""


@key_group.command("generate")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the private key (PKCS#8 PEM, mode 0600).",
)
@click.option(
    "--jwk-out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the public JWK here (default: print it).",
)
@no_passphrase_option
def key_generate(out: Path, jwk_out: Path | None, no_passphrase: bool) -> None:
    """Make an ES256 (P-256) key pair; register the printed public JWK with the operator."""
    if jwk_out is not None and not jwk_out.parent.is_dir():
        # Checked first: failing after the key was written would leave a key that a second
        # run refuses to overwrite.
        raise click.ClickException(f"no folder {jwk_out.parent} for the public JWK")
    passphrase = resolve_passphrase(no_passphrase, confirm=True)
    key = PrivateKey.generate()
    try:
        key.save(out, passphrase)
    except ShahrahError as e:
        raise click.ClickException(e.message) from e
    jwk = key.public().to_jwk()
    if jwk_out:
        jwk_out.write_text(json.dumps(jwk, indent=2) + "\n")
        click.echo(f"key {key.kid} written to {out}, public JWK to {jwk_out}", err=True)
    else:
        echo_json(jwk)


@key_group.command("public")
@click.argument("path", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@no_passphrase_option
def key_public(path: Path, no_passphrase: bool) -> None:
    """Print the public JWK of the private key at PATH."""
    try:
        key = PrivateKey.load(path, resolve_passphrase(no_passphrase))
    except ShahrahError as e:
        raise click.ClickException(e.message) from e
    echo_json(key.public().to_jwk())


@main.command()
@click.option(
    "--data-dir",
    default=Path("demo-data"),
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the federation lives; made on the first run, reused after.",
)
@click.option(
    "--base-port",
    default=8400,
    show_default=True,
    type=click.IntRange(1024, 65495),
    help="First of the ports used (registry P, consent P+1, audit P+2, gateways P+10...).",
)
@click.option(
    "--scenario",
    is_flag=True,
    help="Run the story (consent, revoke, refusals, SOAP, fixed-width, audit export), "
    "print each step, and exit 0 only if every step holds.",
)
@click.option(
    "--people",
    default=200,
    show_default=True,
    type=click.IntRange(5, 100_000),
    help="Synthetic citizens in the legacy systems (first run only).",
)
@click.pass_context
def demo(ctx: click.Context, data_dir: Path, base_port: int, scenario: bool, people: int) -> None:
    """Run the embedded federation: registry, consent service, audit witness, and the gateways
    of NADRA, Punjab land records and the Lahore corporation over their legacy systems.

    Keys are kept without a passphrase: this is a demonstration. DATA_DIR/federation.json lists
    every URL, identifier and the demo credentials."""
    from shahrah.demo import describe, running
    from shahrah.scenario import run_scenario

    if not ctx.find_root().params.get("verbose"):
        logging.getLogger().setLevel(logging.WARNING)

    async def go() -> bool:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        click.echo(f"starting the federation in {data_dir} ...", err=True)
        async with running(data_dir, base_port, people=people) as live:
            if scenario:
                steps = await run_scenario(live)
                for n, step in enumerate(steps, 1):
                    mark = "ok  " if step.ok else "FAIL"
                    click.echo(f"{mark} {n}. {step.name}\n        {step.detail}")
                passed = sum(s.ok for s in steps)
                click.echo(f"{passed} passed, {len(steps) - passed} failed")
                return passed == len(steps)
            click.echo(describe(live))
            await stop.wait()
            click.echo("stopping ...", err=True)
        return True

    if not run_async(go()):
        ctx.exit(1)


main.add_command(registry)
registry.add_command(schema)
main.add_command(adapter)
main.add_command(audit)
main.add_command(consent)
main.add_command(gateway)

__all__ = ["main", "run_async"]
