"""``shahrah gateway``: set up and run a member's gateway."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from core.cli import ProgressLine, no_passphrase_option, resolve_passphrase, run_async
from core.errors import BadRequestError, ShahrahError
from core.ids import GatewayId
from core.keys import PrivateKey
from core.tls import server_context
from exchange.config import GatewayConfig, check_host, https_address
from exchange.renewal import renew
from exchange.rotation import rotate
from exchange.runtime import repair_audit, running
from exchange.setup import CONFIG_FILE, init_gateway

F = TypeVar("F", bound=Callable[..., Any])

data_dir_option = click.option(
    "--data-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    envvar="SHAHRAH_DATA_DIR",
    help="The gateway's folder (keys, certificate, gateway.toml, database). Env: SHAHRAH_DATA_DIR.",
)


def port_option(flag: str, default: int, text: str) -> Callable[[F], F]:
    # A port no listener can have is refused here, before any key is made for it.
    return click.option(
        flag, default=default, show_default=True, type=click.IntRange(1, 65535), help=text
    )


@click.group()
def gateway() -> None:
    """A member's gateway (X-Road's security server): r1 for local systems, signed
    exchanges over mutual TLS with other gateways."""


def _host(value: str, param: click.Parameter) -> str:
    try:
        return check_host(value)
    except ValueError as e:
        raise click.BadParameter(str(e), param=param) from e


@gateway.command()
@data_dir_option
@click.option("--id", "gateway_id", required=True, help="INSTANCE/CLASS/MEMBER/GATEWAYCODE")
@click.option(
    "--anchor",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The federation's configuration anchor (anchor.json from the operator).",
)
@port_option("--local-port", 8080, "Port for local systems (r1).")
@port_option("--remote-port", 8443, "Port for other gateways (mTLS).")
@click.option(
    "--remote-host",
    default="127.0.0.1",
    show_default=True,
    callback=lambda ctx, param, value: _host(value, param),
    help="Address other gateways reach this one at (an IP address or host name).",
)
@no_passphrase_option
def init(
    data_dir: Path,
    gateway_id: str,
    anchor: Path,
    local_port: int,
    remote_port: int,
    remote_host: str,
    no_passphrase: bool,
) -> None:
    """Create a gateway: signing key, TLS key and certificate, gateway.toml.

    The private keys are encrypted with the passphrase in SHAHRAH_KEY_PASSPHRASE, or one
    asked for at the terminal. Then ask the operator to register the printed key and
    certificate."""
    try:
        gid = GatewayId.parse(gateway_id)
    except BadRequestError as e:
        raise click.BadParameter(e.message, param_hint="--id") from e
    passphrase = resolve_passphrase(no_passphrase, confirm=True)
    try:
        made = init_gateway(
            data_dir,
            gid,
            anchor,
            passphrase=passphrase,
            local_port=local_port,
            remote_port=remote_port,
            remote_host=remote_host,
        )
    except ShahrahError as e:
        raise click.ClickException(e.message) from e
    if passphrase is None:
        click.echo("warning: the gateway's keys are stored WITHOUT a passphrase", err=True)
    click.echo(f"gateway {gid} created in {data_dir} (config {made.config})", err=True)
    click.echo("Ask the operator to run:", err=True)
    click.echo(f"  shahrah registry key add --member {gid.member} --jwk {made.signing_jwk}")
    click.echo(
        f"  shahrah registry gateway add {gid} --address {https_address(remote_host, remote_port)} "
        f"--tls-cert {made.tls_certificate} --client {gid.member}/SUBSYSTEM"
    )


def _config(data_dir: Path) -> GatewayConfig:
    try:
        return GatewayConfig.load(data_dir / CONFIG_FILE)
    except BadRequestError as e:
        raise click.ClickException(e.message) from e


@gateway.command("renew-tls")
@data_dir_option
@no_passphrase_option
def renew_tls(data_dir: Path, no_passphrase: bool) -> None:
    """Make a renewed TLS key and certificate for the gateway, beside the current ones.

    \b
    Then, with no handshake refused anywhere:
      1. the registry operator registers the printed certificate beside the current one;
      2. the running gateway presents it once every gateway still serving accepts it (one
         configuration validity after it is first listed) and logs that it did;
      3. the registry operator promotes it, which drops the old one.
    The new key is encrypted with the keys' passphrase (SHAHRAH_KEY_PASSPHRASE, or asked
    for at the terminal), which must open the current TLS key."""
    config = _config(data_dir)
    passphrase = resolve_passphrase(no_passphrase)
    try:
        # The passphrase must be the one the gateway starts with, or it could not load the
        # renewed key when the time comes: it must open the current pair.
        server_context(str(config.tls_certificate), str(config.tls_key), [], password=passphrase)
        made = renew(config.id, config.tls_certificate, config.tls_key, passphrase=passphrase)
    except ShahrahError as e:
        raise click.ClickException(e.message) from e
    click.echo(f"renewed TLS key and certificate written beside the current ones: {made}", err=True)
    click.echo("Ask the operator to run:", err=True)
    click.echo(f"  shahrah registry gateway set {config.id} --next-tls-cert {made}")


@gateway.command("rotate-key")
@data_dir_option
@no_passphrase_option
def rotate_key(data_dir: Path, no_passphrase: bool) -> None:
    """Make a new member signing key for the gateway, beside the current one.

    \b
    Then, with no exchange refused:
      1. the registry operator registers the printed key;
      2. the running gateway signs with it once every gateway and central service still
         serving accepts it (one configuration validity after it is first listed), and
         logs that it did;
      3. the registry operator revokes the old key once what it signed is done.
    The new key is encrypted with the keys' passphrase (SHAHRAH_KEY_PASSPHRASE, or asked
    for at the terminal), which must open the current signing key."""
    config = _config(data_dir)
    passphrase = resolve_passphrase(no_passphrase)
    try:
        # The gateway loads the new key with the passphrase it started with: it must open
        # the current key.
        PrivateKey.load(config.signing_key, passphrase)
        made = rotate(config.signing_key, passphrase=passphrase)
    except ShahrahError as e:
        raise click.ClickException(e.message) from e
    click.echo(f"new signing key written beside the current one: {made}", err=True)
    click.echo("Ask the operator to run:", err=True)
    click.echo(f"  shahrah registry key add --member {config.id.member} --jwk {made}")


@gateway.command("repair-audit")
@data_dir_option
@no_passphrase_option
def repair_audit_command(data_dir: Path, no_passphrase: bool) -> None:
    """Repair the audit log of a gateway restored from a backup older than what the witness
    cosigned, from the witness's mirror. Stop every process of the gateway first.

    \b
    The records the backup lacks are read back from the witness and written in their
    places; the exchanges recorded since the restore follow them, none lost. It all happens
    in one transaction: if anything fails, the log stays as it was. Run it when, after a
    restore, the gateway logs that witnessing fails and its
    shahrah_gateway_audit_witness_failing gauge stays at 1."""
    config = _config(data_dir)
    passphrase = resolve_passphrase(no_passphrase)
    progress = ProgressLine("witnessed entries")

    done = run_async(repair_audit(config, passphrase=passphrase, progress=progress))
    if done is None:
        click.echo(f"audit log {config.id} already extends what the witness cosigned", err=True)
        return
    click.echo(
        f"audit log {config.id} repaired: it left the witnessed history at entry "
        f"{done.diverged:,}; {done.restored:,} entries restored from the witness's mirror, "
        f"{done.moved:,} recorded since the restore moved after them; {done.size:,} entries",
        err=True,
    )


@gateway.command()
@data_dir_option
@no_passphrase_option
def serve(data_dir: Path, no_passphrase: bool) -> None:
    """Run the gateway configured in DATA_DIR/gateway.toml until Ctrl-C or SIGTERM.

    The keys' passphrase is read from SHAHRAH_KEY_PASSPHRASE, or asked for at the terminal.
    gateway.toml sets the listeners, database, limits (body size, timeouts), services and
    adapters: see docs/gateway.md. /healthz, /readyz and /metrics are on the local port."""
    config = _config(data_dir)
    passphrase = resolve_passphrase(no_passphrase)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with running(config, passphrase=passphrase) as gw:
            click.echo(
                f"gateway {config.id}: local {gw.local_url}, remote {gw.remote_url}", err=True
            )
            await stop.wait()
        click.echo("gateway stopped", err=True)

    run_async(main())
