"""``shahrah consent``: create and run the consent service, and the operator's actions on it.

Operator actions (citizens, guardianships, tokens) work on the service's
database directly (``--data-dir`` or ``--db``), each as one transaction.
Passwords never travel as arguments: they come from
``SHAHRAH_CITIZEN_PASSWORD`` or a prompt.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from sqlalchemy.ext.asyncio import AsyncSession

from consent import bootstrap, citizens, operators
from consent.citizens import Accounts, GuardianshipCreate
from consent.receipt import verify_receipt
from core.cli import (
    ProgressLine,
    db_url_for,
    echo_json,
    no_passphrase_option,
    resolve_passphrase,
    run_async,
    serve_until_stopped,
)
from core.db import Sessions, create_engine, sessions, transaction, upgrade, utcnow
from core.errors import BadRequestError, ShahrahError
from core.ids import Cnic
from core.keys import KeySet, PrivateKey
from core.pseudonym import Pseudonymizer
from core.web import parse_json, parse_model
from registry.globalconf import Anchor
from registry.memberauth import MAX_NONCES, MAX_NONCES_PER_CALLER

__all__ = ["consent"]

T = TypeVar("T")
PASSWORD_ENV = "SHAHRAH_CITIZEN_PASSWORD"  # noqa: S105 (the variable's name, not a secret)

data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="SHAHRAH_CONSENT_DIR",
    help="The consent service's folder (keys, anchor, SQLite database). Env: SHAHRAH_CONSENT_DIR.",
)
db_option = click.option(
    "--db",
    envvar="SHAHRAH_DB",
    help="Database URL (sqlite:///... or postgresql://...); default: consent.db in --data-dir.",
)


def _db(data_dir: Path | None, db: str | None) -> str:
    return db_url_for(data_dir, db, bootstrap.DB_FILE)


def _with_db(url: str, action: Callable[[Sessions], Awaitable[T]]) -> T:
    async def go() -> T:
        engine = create_engine(url, pool_size=1)
        try:
            return await action(sessions(engine))
        finally:
            await engine.dispose()

    return run_async(go())


def _act(url: str, action: Callable[[AsyncSession], Awaitable[T]], *, write: bool = True) -> T:
    """Run one operator action in one transaction."""

    async def go(factory: Sessions) -> T:
        async with transaction(factory, write=write) as s:
            return await action(s)

    return _with_db(url, go)


def _cnic(value: str) -> Cnic:
    try:
        return Cnic.parse(value)
    except BadRequestError as e:
        raise click.BadParameter(e.message) from e


def _required_dir(data_dir: Path | None) -> Path:
    if data_dir is None:
        raise click.UsageError("--data-dir is required (it holds the service's keys)")
    return data_dir


@click.group()
def consent() -> None:
    """The consent service: citizens' consent artefacts, decisions for gateways, the
    revocation feed and the citizen API."""


@consent.command()
@data_dir_option
@db_option
@click.option(
    "--anchor",
    "anchor_file",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The federation's configuration anchor (the registry's anchor.json).",
)
@click.option(
    "--pseudonym-key",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The federation's pseudonym key if the audit server made it first (else one is made).",
)
@no_passphrase_option
def init(
    data_dir: Path | None,
    db: str | None,
    anchor_file: Path,
    pseudonym_key: Path | None,
    no_passphrase: bool,
) -> None:
    """Create a consent service: signing key, pseudonym key, database, consent log.

    Prints the JWK Set (also in DIR/jwks.json); the operator publishes it with
    `shahrah registry central-service consent --url URL --jwks DIR/jwks.json`."""
    folder = _required_dir(data_dir)
    passphrase = resolve_passphrase(no_passphrase, confirm=True)
    done = run_async(
        bootstrap.init_consent(
            folder, anchor_file, passphrase=passphrase, db_url=db, pseudonym_key=pseudonym_key
        )
    )
    if passphrase is None:
        click.echo("warning: the signing key is stored WITHOUT a passphrase", err=True)
    click.echo(f"consent service created in {folder} (key id {done.key.kid})", err=True)
    if pseudonym_key is None:
        click.echo(
            f"a new federation pseudonym key is in {folder / bootstrap.PSEUDONYM_FILE}: give the "
            "same file to the regulator's audit server (`shahrah audit init --pseudonym-key`)",
            err=True,
        )
    click.echo(
        "publish the service: shahrah registry central-service consent "
        f"--url http://HOST:PORT --jwks {folder / bootstrap.JWKS_FILE}",
        err=True,
    )
    echo_json(done.jwks)


@consent.command()
@data_dir_option
@db_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8070, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--schema-registry",
    help="Base URL of the registry's schema API (default: the anchor's URL without its path).",
)
@click.option(
    "--heartbeat",
    default=0.25,
    show_default=True,
    type=click.FloatRange(0.05, 5.0),
    help="Seconds between revocation feed heartbeats.",
)
@click.option(
    "--sweep-interval",
    default=60.0,
    show_default=True,
    type=click.FloatRange(1.0),
    help="Seconds between expiry sweeps.",
)
@click.option(
    "--pseudonym-rate",
    default=20.0,  # consent.server.ConsentConfig's defaults: importing it here is slow
    show_default=True,
    type=click.FloatRange(0.01),
    help="Pseudonym lookups a second each member may make, sustained.",
)
@click.option(
    "--pseudonym-burst",
    default=2_000,
    show_default=True,
    type=click.IntRange(1),
    help="Pseudonym lookups each member may make at once.",
)
@click.option(
    "--signed-requests-per-member",
    default=MAX_NONCES_PER_CALLER,
    show_default=True,
    type=click.IntRange(100),
    help="Signed requests each member may make within 90 s (the replay memory's share of "
    "each; beyond it the member is answered 429).",
)
@click.option(
    "--signed-requests",
    default=MAX_NONCES,
    show_default=True,
    type=click.IntRange(1_000),
    help="Signed requests remembered in all before only members under an equal share are "
    "admitted (never beyond twice this; about 230 bytes each).",
)
@click.option("--tls-cert", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--tls-key", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@no_passphrase_option
def serve(
    data_dir: Path | None,
    db: str | None,
    host: str,
    port: int,
    schema_registry: str | None,
    heartbeat: float,
    sweep_interval: float,
    pseudonym_rate: float,
    pseudonym_burst: int,
    signed_requests_per_member: int,
    signed_requests: int,
    tls_cert: Path | None,
    tls_key: Path | None,
    no_passphrase: bool,
) -> None:
    """Serve the consent service's APIs (see GET /openapi.json) until stopped.

    It follows the global configuration from the anchor and refuses member requests
    while the configuration it holds has expired."""
    from aiohttp import web

    from consent.schemafields import RegistryFields
    from consent.server import ConsentConfig, build_app
    from registry.globalconf_client import GlobalConfClient
    from registry.schemareg.validation import HttpSchemaSource, ValidatorCache

    folder = _required_dir(data_dir)
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    try:
        anchor = Anchor.load(folder / bootstrap.ANCHOR_FILE)
        key = _signing_key(folder, no_passphrase)
        pseudonyms = Pseudonymizer.load(folder / bootstrap.PSEUDONYM_FILE)
        source = HttpSchemaSource(schema_registry or bootstrap.registry_base_url(anchor))
    except ShahrahError as e:
        raise click.ClickException(e.message) from e
    config = ConsentConfig(
        db_url=_db(folder, db),
        signing_key=key,
        pseudonymizer=pseudonyms,
        globalconf=GlobalConfClient(anchor, cache_file=folder / bootstrap.GLOBALCONF_FILE),
        fields=RegistryFields(ValidatorCache(source)),
        heartbeat=heartbeat,
        sweep_interval=sweep_interval,
        pseudonym_rate=pseudonym_rate,
        pseudonym_burst=pseudonym_burst,
        signed_requests_per_member=signed_requests_per_member,
        signed_requests=signed_requests,
    )
    app = build_app(config)

    async def close_source(_: web.Application) -> None:
        await source.aclose()

    app.on_cleanup.append(close_source)
    serve_until_stopped(
        app, what="consent service", host=host, port=port, tls_cert=tls_cert, tls_key=tls_key
    )


@consent.command("repair-log")
@data_dir_option
@db_option
@no_passphrase_option
def repair_log(data_dir: Path | None, db: str | None, no_passphrase: bool) -> None:
    """Repair the consent service after a restore from a backup older than what the audit
    witness cosigned. Stop the service first.

    \b
    The consent log's lost entries are read back from the witness's mirror and written in
    their places, the changes made since the restore after them. Every lost change that
    takes permission away (revoke, reject, pause, expiry) is made again, unless a newer
    change here stands; what only gave permission (requests, approvals, resumes) is not:
    members and citizens make it again. One transaction: if anything fails, nothing
    changes."""
    import aiohttp

    from audit.witness_client import WitnessClient
    from consent.history import MerkleConsentLog
    from consent.restore import ConsentRepair, repair
    from consent.schemafields import RegistryFields
    from consent.service import ConsentService
    from registry.globalconf_client import GlobalConfClient
    from registry.schemareg.validation import HttpSchemaSource, ValidatorCache

    folder = _required_dir(data_dir)
    try:
        anchor = Anchor.load(folder / bootstrap.ANCHOR_FILE)
        key = _signing_key(folder, no_passphrase)
        pseudonyms = Pseudonymizer.load(folder / bootstrap.PSEUDONYM_FILE)
    except ShahrahError as e:
        raise click.ClickException(e.message) from e
    conf = GlobalConfClient(anchor, cache_file=folder / bootstrap.GLOBALCONF_FILE)

    progress = ProgressLine("witnessed entries")

    async def go(factory: Sessions) -> ConsentRepair | None:
        source = HttpSchemaSource(bootstrap.registry_base_url(anchor))
        try:
            async with aiohttp.ClientSession() as http:
                await conf.refresh(http)
                service = ConsentService(
                    sessions=factory,
                    log=MerkleConsentLog(),
                    pseudonymize=pseudonyms,
                    conf=conf.current,
                    fields=RegistryFields(ValidatorCache(source)),
                )
                witness = WitnessClient(conf.current, http, key=key, service="consent")
                return await repair(service, witness, progress=progress)
        finally:
            await source.aclose()

    url = _db(folder, db)
    try:
        upgrade(url)  # a backup of an older release is brought up to this one first
    except ShahrahError as e:
        raise click.ClickException(e.message) from e
    done = _with_db(url, go)
    if done is None:
        click.echo("the consent log already extends what the witness cosigned", err=True)
        return
    click.echo(
        f"consent log repaired: it left the witnessed history at entry {done.log.diverged:,}; "
        f"{done.log.restored:,} entries restored from the witness's mirror, "
        f"{done.log.moved:,} made since the restore moved after them",
        err=True,
    )
    click.echo(
        f"{len(done.reapplied):,} lost revocations, rejections, pauses or expiries made "
        f"again; {done.left:,} consents with lost changes left as they are here",
        err=True,
    )
    for cid, status in sorted(done.reapplied.items()):
        click.echo(f"{cid}\t{status}")


def _signing_key(folder: Path, no_passphrase: bool) -> PrivateKey:
    return PrivateKey.load(folder / bootstrap.KEY_FILE, resolve_passphrase(no_passphrase))


@consent.command()
@data_dir_option
def jwks(data_dir: Path | None) -> None:
    """Print the service's public JWK Set (what the global configuration must publish)."""
    path = _required_dir(data_dir) / bootstrap.JWKS_FILE
    try:
        click.echo(path.read_text("utf-8"), nl=False)
    except OSError as e:
        raise click.ClickException(f"cannot read {path}: {e.strerror}") from e


@consent.command("verify-receipt")
@click.argument("receipt", type=click.File("r"))
@click.option(
    "--jwks",
    "jwks_file",
    required=True,
    type=click.File("r"),
    help="The consent service's JWK Set (from the global configuration or its /v1/jwks).",
)
def verify_receipt_command(receipt: Any, jwks_file: Any) -> None:
    """Verify a downloaded consent receipt (a JWS) and print its content; exit 1 if it fails."""
    try:
        keys = KeySet.from_jwks(parse_json(jwks_file.read()))
        verified = verify_receipt(receipt.read().strip(), keys)
    except ShahrahError as e:
        raise click.ClickException(f"receipt does NOT verify: {e.message}") from e
    click.echo(f"receipt verifies (signed by key {verified.kid})", err=True)
    echo_json(verified.document)


# --- citizens ------------------------------------------------------------------------------------


@consent.group()
def citizen() -> None:
    """Citizens' accounts on the consent service."""


def _password() -> str:
    value = os.environ.get(PASSWORD_ENV)
    if value:
        return value
    if sys.stdin.isatty():
        return str(click.prompt("Password", hide_input=True, confirmation_prompt=True, err=True))
    raise click.UsageError(f"give the password in {PASSWORD_ENV} or run in a terminal")


@citizen.command("add")
@data_dir_option
@db_option
@click.argument("cnic")
@click.option("--name", required=True, help="The citizen's name as on the CNIC.")
def citizen_add(data_dir: Path | None, db: str | None, cnic: str, name: str) -> None:
    """Create an account for CNIC; the password comes from SHAHRAH_CITIZEN_PASSWORD or a prompt."""
    who = _cnic(cnic)
    password = _password()
    _with_db(_db(data_dir, db), lambda f: Accounts(f).add(who, name, password))
    click.echo(f"account created for {who}", err=True)


@citizen.command("password")
@data_dir_option
@db_option
@click.argument("cnic")
def citizen_password(data_dir: Path | None, db: str | None, cnic: str) -> None:
    """Set a new password for CNIC (from SHAHRAH_CITIZEN_PASSWORD or a prompt); this also
    unlocks the account and ends its sessions."""
    who = _cnic(cnic)
    password = _password()
    _with_db(_db(data_dir, db), lambda f: Accounts(f).set_password(who, password))
    click.echo(f"password changed for {who}", err=True)


@citizen.command("unlock")
@data_dir_option
@db_option
@click.argument("cnic")
def citizen_unlock(data_dir: Path | None, db: str | None, cnic: str) -> None:
    """Lift a lockout after failed sign-ins."""
    who = _cnic(cnic)
    _with_db(_db(data_dir, db), lambda f: Accounts(f).unlock(who))
    click.echo(f"{who} unlocked", err=True)


# --- guardianships -------------------------------------------------------------------------------


@consent.group()
def guardian() -> None:
    """Guardianships: who may act for whom (parents of minors, court-appointed guardians,
    attorneys)."""


def _when(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError as e:
        raise click.BadParameter(f"{value!r} is not a date or time (e.g. 2031-04-30)") from e
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


@guardian.command("add")
@data_dir_option
@db_option
@click.argument("guardian_cnic", metavar="GUARDIAN")
@click.argument("ward_cnic", metavar="WARD")
@click.option(
    "--relation",
    required=True,
    type=click.Choice(["parent", "court_guardian", "attorney"]),
    help="parent (of a minor), court_guardian (appointed by a court) or attorney.",
)
@click.option(
    "--reference", required=True, help="The court order, deed or birth record (B-form) number."
)
@click.option("--from", "valid_from", help="When it starts (ISO 8601; default now).")
@click.option("--until", help="When it ends, e.g. the ward's 18th birthday (ISO 8601).")
def guardian_add(
    data_dir: Path | None,
    db: str | None,
    guardian_cnic: str,
    ward_cnic: str,
    relation: str,
    reference: str,
    valid_from: str | None,
    until: str | None,
) -> None:
    """Register that GUARDIAN may act for WARD (both CNICs)."""
    try:
        body = parse_model(
            GuardianshipCreate,
            {
                "guardian": guardian_cnic,
                "ward": ward_cnic,
                "relation": relation,
                "reference": reference,
                "valid_from": _when(valid_from),
                "valid_until": _when(until),
            },
            where="option",
        )
    except BadRequestError as e:
        raise click.BadParameter(e.message) from e
    echo_json(_act(_db(data_dir, db), lambda s: citizens.add_guardianship(s, body, utcnow())))


@guardian.command("end")
@data_dir_option
@db_option
@click.argument("gid", metavar="ID", type=int)
def guardian_end(data_dir: Path | None, db: str | None, gid: int) -> None:
    """End guardianship ID now."""
    echo_json(_act(_db(data_dir, db), lambda s: citizens.end_guardianship(s, gid, utcnow())))


@guardian.command("list")
@data_dir_option
@db_option
@click.option("--cnic", help="Only guardianships with this citizen as guardian or ward.")
def guardian_list(data_dir: Path | None, db: str | None, cnic: str | None) -> None:
    """Guardianships with their ids."""
    who = _cnic(cnic) if cnic else None
    echo_json(_act(_db(data_dir, db), lambda s: citizens.guardianships(s, who), write=False))


# --- operator tokens -----------------------------------------------------------------------------


@consent.group()
def token() -> None:
    """Operator tokens for the consent service's operator API (/v1/operator/...)."""


@token.command("create")
@data_dir_option
@db_option
@click.argument("name")
def token_create(data_dir: Path | None, db: str | None, name: str) -> None:
    """Create token NAME and print it (it is shown only this once)."""
    click.echo(_act(_db(data_dir, db), lambda s: operators.tokens.create(s, name)))


@token.command("revoke")
@data_dir_option
@db_option
@click.argument("name")
def token_revoke(data_dir: Path | None, db: str | None, name: str) -> None:
    """Revoke token NAME."""
    _act(_db(data_dir, db), lambda s: operators.tokens.revoke(s, name))
    click.echo(f"token {name!r} revoked", err=True)


@token.command("list")
@data_dir_option
@db_option
def token_list(data_dir: Path | None, db: str | None) -> None:
    """Token names and whether each is active."""
    rows = _act(_db(data_dir, db), operators.tokens.names, write=False)
    echo_json([{"name": n, "active": a} for n, a in rows])
