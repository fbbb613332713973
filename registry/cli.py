"""``shahrah registry``: create and run the central registry, and every operator action.

Operator actions work on the registry's database directly (``--data-dir`` or
``--db``), each as one transaction; a running registry publishes the change
in its next global configuration within its publishing interval.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from sqlalchemy.ext.asyncio import AsyncSession

from core.canonical import b64url_decode
from core.cli import (
    db_url_for,
    echo_json,
    no_passphrase_option,
    resolve_passphrase,
    run_async,
    serve_until_stopped,
)
from core.db import create_engine, sessions, transaction
from core.errors import BadRequestError, ShahrahError
from core.ids import ClientId, GatewayId, MemberId, ServiceId
from core.keys import PrivateKey
from core.web import parse_json, parse_model
from registry import bootstrap, publisher, service, store, tokens
from registry.globalconf import GlobalConf, Jwks, SchemaRef, anchor_schema, document_schema
from registry.payloads import (
    AccessRightCreate,
    CentralServiceSet,
    FederationSettings,
    GatewayCreate,
    GatewayUpdate,
    GroupCreate,
    KeyCreate,
    LocalGroupCreate,
    MemberCreate,
    MemberUpdate,
    PurposeCreate,
    ServiceCreate,
    ServiceUpdate,
    SubsystemCreate,
    SubsystemUpdate,
)

T = TypeVar("T")
log = logging.getLogger(__name__)

data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="SHAHRAH_DATA_DIR",
    help="The registry's folder (key, anchor, SQLite database). Env: SHAHRAH_DATA_DIR.",
)
db_option = click.option(
    "--db",
    envvar="SHAHRAH_DB",
    help="Database URL (sqlite:///... or postgresql://...); default: registry.db in --data-dir.",
)


def _db(data_dir: Path | None, db: str | None) -> str:
    return db_url_for(data_dir, db, bootstrap.DB_FILE)


def _act(url: str, action: Callable[[AsyncSession], Awaitable[T]], *, write: bool = True) -> T:
    """Run one operator action in one transaction."""

    async def go() -> T:
        engine = create_engine(url, pool_size=1)
        try:
            async with transaction(sessions(engine), write=write) as s:
                return await action(s)
        finally:
            await engine.dispose()

    return run_async(go())


SUBJECT_FIELD_HELP = (
    "JSON Pointer to the data subject's CNIC in the answer (e.g. /cnic); required with "
    "--requires-consent, so that a consent for one citizen never releases another's record."
)


def _model(model: type[Any], **values: Any) -> Any:
    """Validate CLI options into a request model, with the same messages as the API."""
    try:
        return parse_model(
            model, {k: v for k, v in values.items() if v is not None}, where="option"
        )
    except BadRequestError as e:
        raise click.BadParameter(e.message) from e


def _parse(parser: Callable[[str], T], value: str) -> T:
    try:
        return parser(value)
    except BadRequestError as e:
        raise click.BadParameter(e.message) from e


def _schema_ref(value: str | None) -> dict[str, Any] | None:
    if value is None:
        return None
    subject, sep, version = value.rpartition(":")
    if not sep or not version.isdigit():
        raise click.BadParameter(f"{value!r}: write a schema reference as SUBJECT:VERSION")
    return SchemaRef(subject=subject, version=int(version)).model_dump()


@click.group()
def registry() -> None:
    """The central registry: members, gateways, keys, services, access rights and the
    signed global configuration (X-Road's central server)."""


@registry.command()
@data_dir_option
@db_option
@click.option("--instance", required=True, help="X-Road instance code, e.g. PK.")
@click.option(
    "--url",
    default="http://127.0.0.1:8080/globalconf",
    show_default=True,
    help="Where gateways will fetch the global configuration (written into the anchor).",
)
@click.option(
    "--validity",
    default=service.DEFAULT_VALIDITY,
    show_default=True,
    help="Seconds a published configuration stays valid.",
)
@click.option(
    "--refresh",
    default=service.DEFAULT_REFRESH,
    show_default=True,
    help="Seconds between gateway fetches.",
)
@no_passphrase_option
def init(
    data_dir: Path | None,
    db: str | None,
    instance: str,
    url: str,
    validity: int,
    refresh: int,
    no_passphrase: bool,
) -> None:
    """Create a registry: operator key, database, first operator token and DIR/anchor.json.

    The operator token is printed once and never stored in clear; keep it."""
    if data_dir is None:
        raise click.UsageError("--data-dir is required")
    passphrase = resolve_passphrase(no_passphrase, confirm=True)
    done = run_async(
        bootstrap.init_registry(
            data_dir,
            instance,
            url=url,
            passphrase=passphrase,
            db_url=db,
            validity=validity,
            refresh=refresh,
        )
    )
    if passphrase is None:
        click.echo("warning: the operator key is stored WITHOUT a passphrase", err=True)
    click.echo(f"registry for instance {instance} created in {data_dir}", err=True)
    click.echo(f"anchor: {data_dir / bootstrap.ANCHOR_FILE}", err=True)
    click.echo(f"operator key id: {done.key.kid}", err=True)
    click.echo("operator token (shown once):", err=True)
    click.echo(done.operator_token)


@registry.command()
@data_dir_option
@db_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Serve HTTPS with this certificate (PEM).",
)
@click.option(
    "--tls-key",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Private key for --tls-cert (PEM).",
)
@no_passphrase_option
def serve(
    data_dir: Path | None,
    db: str | None,
    host: str,
    port: int,
    tls_cert: Path | None,
    tls_key: Path | None,
    no_passphrase: bool,
) -> None:
    """Serve the management API and GET /globalconf, publishing new versions as things change.

    SHAHRAH_ADMIN_TOKEN, if set, is accepted as an operator token. The operator console is
    at /console; SHAHRAH_CONSENT_OPERATOR_TOKEN (a consent service operator token) lets its
    guardianship pages work."""

    from registry.server import RegistryConfig, build_app

    if data_dir is None:
        raise click.UsageError("--data-dir is required (it holds the operator key)")
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    key = _load_operator_key(data_dir, no_passphrase)
    url = _db(data_dir, db)
    fed = _act(url, store.federation, write=False)
    config = RegistryConfig(
        db_url=url,
        instance=fed.instance,
        operator_key=key,
        admin_token=os.environ.get("SHAHRAH_ADMIN_TOKEN") or None,
        consent_operator_token=os.environ.get("SHAHRAH_CONSENT_OPERATOR_TOKEN") or None,
    )
    serve_until_stopped(
        build_app(config),
        what=f"registry {fed.instance}",
        host=host,
        port=port,
        tls_cert=tls_cert,
        tls_key=tls_key,
    )


def _load_operator_key(data_dir: Path, no_passphrase: bool) -> PrivateKey:
    path = data_dir / bootstrap.KEY_FILE
    passphrase = None if no_passphrase else resolve_passphrase(False)
    try:
        return PrivateKey.load(path, passphrase)
    except ShahrahError as e:
        raise click.ClickException(f"{path}: {e.message}") from e


# --- settings ----------------------------------------------------------------------------------


@registry.group()
def settings() -> None:
    """Global configuration validity and refresh interval."""


@settings.command("set")
@data_dir_option
@db_option
@click.option("--validity", type=int, help="Seconds a configuration stays valid (X-Road: 600).")
@click.option("--refresh", type=int, help="Seconds between gateway fetches (X-Road: 60).")
def settings_set(
    data_dir: Path | None, db: str | None, validity: int | None, refresh: int | None
) -> None:
    """Change the publishing settings."""
    body = _model(FederationSettings, globalconf_validity=validity, globalconf_refresh=refresh)
    fed = _act(_db(data_dir, db), lambda s: service.update_federation(s, body))
    echo_json(
        {
            "instance": fed.instance,
            "globalconf_validity": fed.globalconf_validity,
            "globalconf_refresh": fed.globalconf_refresh,
        }
    )


# --- members -----------------------------------------------------------------------------------


@registry.group()
def member() -> None:
    """Members: the agencies of the federation."""


@member.command("add")
@data_dir_option
@db_option
@click.argument("member_class", metavar="CLASS", type=click.Choice(["FED", "PROV", "LG", "PRIV"]))
@click.argument("code")
@click.option(
    "--name",
    required=True,
    help="The agency's name, e.g. 'National Database and Registration Authority'.",
)
def member_add(
    data_dir: Path | None, db: str | None, member_class: str, code: str, name: str
) -> None:
    """Admit a member, e.g. `member add FED NADRA --name ...`."""
    body = _model(MemberCreate, member_class=member_class, member_code=code, name=name)
    echo_json(_act(_db(data_dir, db), lambda s: service.add_member(s, body)))


@member.command("set")
@data_dir_option
@db_option
@click.argument("member_id", metavar="MEMBER")
@click.option("--name")
@click.option("--status", type=click.Choice(["active", "suspended"]))
def member_set(
    data_dir: Path | None, db: str | None, member_id: str, name: str | None, status: str | None
) -> None:
    """Rename, suspend or reactivate MEMBER (INSTANCE/CLASS/CODE)."""
    mid = _parse(MemberId.parse, member_id)
    body = _model(MemberUpdate, name=name, status=status)
    echo_json(_act(_db(data_dir, db), lambda s: service.update_member(s, mid, body)))


@member.command("list")
@data_dir_option
@db_option
def member_list(data_dir: Path | None, db: str | None) -> None:
    """All members with their subsystems and keys."""
    echo_json(_act(_db(data_dir, db), store.snapshot, write=False).members)


@registry.group()
def subsystem() -> None:
    """Subsystems: a member's information systems."""


@subsystem.command("add")
@data_dir_option
@db_option
@click.argument("subsystem_id", metavar="SUBSYSTEM")
@click.option("--name", default="", help="A human name for the system.")
def subsystem_add(data_dir: Path | None, db: str | None, subsystem_id: str, name: str) -> None:
    """Add SUBSYSTEM (INSTANCE/CLASS/MEMBER/SUBSYSTEM) to its member."""
    body = _model(SubsystemCreate, id=subsystem_id, name=name)
    echo_json(_act(_db(data_dir, db), lambda s: service.add_subsystem(s, body)))


@subsystem.command("set")
@data_dir_option
@db_option
@click.argument("subsystem_id", metavar="SUBSYSTEM")
@click.option("--name")
@click.option("--status", type=click.Choice(["active", "suspended"]))
def subsystem_set(
    data_dir: Path | None, db: str | None, subsystem_id: str, name: str | None, status: str | None
) -> None:
    """Rename, suspend or reactivate SUBSYSTEM."""
    cid = _parse(lambda v: ClientId.parse(v, require_subsystem=True), subsystem_id)
    body = _model(SubsystemUpdate, name=name, status=status)
    echo_json(_act(_db(data_dir, db), lambda s: service.update_subsystem(s, cid, body)))


# --- gateways ----------------------------------------------------------------------------------


def _read_cert(path: Path | None) -> str | None:
    return path.read_text("ascii", errors="replace") if path is not None else None


@registry.group()
def gateway() -> None:
    """Gateways: members' security servers, their addresses and TLS certificates."""


@gateway.command("add")
@data_dir_option
@db_option
@click.argument("gateway_id", metavar="GATEWAY")
@click.option("--address", required=True, help="https://host:port other gateways reach it at.")
@click.option(
    "--tls-cert",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The gateway's TLS certificate (PEM); peers will trust exactly this certificate.",
)
@click.option("--client", "clients", multiple=True, help="A subsystem it serves (repeatable).")
def gateway_add(
    data_dir: Path | None,
    db: str | None,
    gateway_id: str,
    address: str,
    tls_cert: Path,
    clients: tuple[str, ...],
) -> None:
    """Register GATEWAY (INSTANCE/CLASS/MEMBER/CODE) with its address and TLS certificate."""
    body = _model(
        GatewayCreate,
        id=gateway_id,
        address=address,
        tls_certificate=_read_cert(tls_cert),
        clients=list(clients),
    )
    echo_json(_act(_db(data_dir, db), lambda s: service.add_gateway(s, body)))


@gateway.command("set")
@data_dir_option
@db_option
@click.argument("gateway_id", metavar="GATEWAY")
@click.option("--address")
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Replace the current TLS certificate (PEM); given the renewed one, promote it and "
    "drop the old.",
)
@click.option(
    "--next-tls-cert",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Register a renewed TLS certificate (PEM) beside the current one: peers accept "
    "both while the gateway moves to it.",
)
@click.option(
    "--drop-next-tls-cert",
    is_flag=True,
    help="Unregister the renewed certificate: only before the gateway moved to it (its log "
    "says when); after, promote it with --tls-cert, or peers refuse the gateway.",
)
@click.option("--status", type=click.Choice(["active", "suspended"]))
def gateway_set(
    data_dir: Path | None,
    db: str | None,
    gateway_id: str,
    address: str | None,
    tls_cert: Path | None,
    next_tls_cert: Path | None,
    drop_next_tls_cert: bool,
    status: str | None,
) -> None:
    """Change a gateway's address or certificate, or suspend it.

    \b
    Renewing a gateway's TLS certificate without refusing a handshake:
      1. shahrah gateway renew-tls --data-dir DIR    (on the gateway's host)
      2. shahrah registry gateway set GATEWAY --next-tls-cert DIR/tls-cert.next.pem
      3. the gateway presents the renewed one once every working peer accepts it (one
         configuration validity later) and logs that it did;
      4. shahrah registry gateway set GATEWAY --tls-cert DIR/tls-cert.pem  (drops the old)
    """
    gid = _parse(GatewayId.parse, gateway_id)
    body = _model(
        GatewayUpdate,
        address=address,
        tls_certificate=_read_cert(tls_cert),
        next_tls_certificate=_read_cert(next_tls_cert),
        drop_next_tls_certificate=drop_next_tls_cert,
        status=status,
    )
    echo_json(_act(_db(data_dir, db), lambda s: service.update_gateway(s, gid, body)))


@gateway.command("client")
@data_dir_option
@db_option
@click.argument("action", type=click.Choice(["add", "remove"]))
@click.argument("gateway_id", metavar="GATEWAY")
@click.argument("client_id", metavar="SUBSYSTEM")
def gateway_client(
    data_dir: Path | None, db: str | None, action: str, gateway_id: str, client_id: str
) -> None:
    """Serve SUBSYSTEM on GATEWAY (add) or stop serving it there (remove)."""
    gid = _parse(GatewayId.parse, gateway_id)
    cid = _parse(lambda v: ClientId.parse(v, require_subsystem=True), client_id)
    fn = service.add_gateway_client if action == "add" else service.remove_gateway_client
    echo_json(_act(_db(data_dir, db), lambda s: fn(s, gid, cid)))


@gateway.command("list")
@data_dir_option
@db_option
def gateway_list(data_dir: Path | None, db: str | None) -> None:
    """All gateways."""
    echo_json(_act(_db(data_dir, db), store.snapshot, write=False).gateways)


# --- keys --------------------------------------------------------------------------------------


@registry.group()
def key() -> None:
    """Members' signing keys: register, rotate, revoke."""


@key.command("add")
@data_dir_option
@db_option
@click.option("--member", "member_id", required=True, help="INSTANCE/CLASS/CODE")
@click.option(
    "--jwk",
    "jwk_file",
    required=True,
    type=click.File("r"),
    help="File with the public JWK (as `shahrah key generate` writes it); - for stdin.",
)
@click.option("--not-before", type=click.DateTime(), help="UTC start of validity (default now).")
@click.option("--not-after", type=click.DateTime(), help="UTC end of validity (default none).")
def key_add(
    data_dir: Path | None,
    db: str | None,
    member_id: str,
    jwk_file: Any,
    not_before: dt.datetime | None,
    not_after: dt.datetime | None,
) -> None:
    """Register a public signing key for a member."""
    try:
        jwk = parse_json(jwk_file.read())
    except BadRequestError as e:
        raise click.BadParameter(e.message, param_hint="--jwk") from e
    body = _model(
        KeyCreate, member=member_id, jwk=jwk, not_before=_utc(not_before), not_after=_utc(not_after)
    )
    echo_json(_act(_db(data_dir, db), lambda s: service.add_key(s, body)))


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    return value.replace(tzinfo=dt.UTC) if value is not None and value.tzinfo is None else value


@key.command("revoke")
@data_dir_option
@db_option
@click.argument("kid")
def key_revoke(data_dir: Path | None, db: str | None, kid: str) -> None:
    """Revoke key KID now; it stops verifying from the next global configuration."""
    echo_json(_act(_db(data_dir, db), lambda s: service.revoke_key(s, kid)))


# --- groups ------------------------------------------------------------------------------------


@registry.group()
def group() -> None:
    """Global groups of subsystems, usable in access rights across the federation."""


@group.command("add")
@data_dir_option
@db_option
@click.argument("code")
@click.option("--description", default="")
def group_add(data_dir: Path | None, db: str | None, code: str, description: str) -> None:
    """Create global group CODE."""
    body = _model(GroupCreate, code=code, description=description)
    echo_json(_act(_db(data_dir, db), lambda s: service.add_global_group(s, body)))


@group.command("member")
@data_dir_option
@db_option
@click.argument("action", type=click.Choice(["add", "remove"]))
@click.argument("code")
@click.argument("client_id", metavar="SUBSYSTEM")
def group_member(
    data_dir: Path | None, db: str | None, action: str, code: str, client_id: str
) -> None:
    """Add SUBSYSTEM to global group CODE, or remove it."""
    cid = _parse(lambda v: ClientId.parse(v, require_subsystem=True), client_id)
    fn = service.add_global_group_member if action == "add" else service.remove_global_group_member
    echo_json(_act(_db(data_dir, db), lambda s: fn(s, code, cid)))


@registry.group("local-group")
def local_group() -> None:
    """A providing subsystem's own groups of clients."""


@local_group.command("add")
@data_dir_option
@db_option
@click.argument("owner", metavar="OWNER")
@click.argument("code")
@click.option("--description", default="")
def local_group_add(
    data_dir: Path | None, db: str | None, owner: str, code: str, description: str
) -> None:
    """Create local group CODE owned by subsystem OWNER."""
    body = _model(LocalGroupCreate, owner=owner, code=code, description=description)
    echo_json(_act(_db(data_dir, db), lambda s: service.add_local_group(s, body)))


@local_group.command("member")
@data_dir_option
@db_option
@click.argument("action", type=click.Choice(["add", "remove"]))
@click.argument("owner", metavar="OWNER")
@click.argument("code")
@click.argument("client_id", metavar="SUBSYSTEM")
def local_group_member(
    data_dir: Path | None, db: str | None, action: str, owner: str, code: str, client_id: str
) -> None:
    """Add SUBSYSTEM to OWNER's local group CODE, or remove it."""
    oid = _parse(lambda v: ClientId.parse(v, require_subsystem=True), owner)
    cid = _parse(lambda v: ClientId.parse(v, require_subsystem=True), client_id)
    fn = service.add_local_group_member if action == "add" else service.remove_local_group_member
    echo_json(_act(_db(data_dir, db), lambda s: fn(s, oid, code, cid)))


# --- purposes, services, access rights ----------------------------------------------------------


@registry.group()
def purpose() -> None:
    """The purposes catalogue that services and consents refer to."""


@purpose.command("add")
@data_dir_option
@db_option
@click.argument("code")
@click.option("--name", required=True)
@click.option("--description", default="")
def purpose_add(
    data_dir: Path | None, db: str | None, code: str, name: str, description: str
) -> None:
    """Add purpose CODE (lower-case words joined by '-'), e.g. property-tax-assessment."""
    body = _model(PurposeCreate, code=code, name=name, description=description)
    echo_json(_act(_db(data_dir, db), lambda s: service.add_purpose(s, body)))


@purpose.command("list")
@data_dir_option
@db_option
def purpose_list(data_dir: Path | None, db: str | None) -> None:
    """The catalogue."""
    echo_json(_act(_db(data_dir, db), store.snapshot, write=False).purposes)


@registry.group("service")
def service_group() -> None:
    """Services offered by subsystems, with their schemas, consent flag and purposes."""


@service_group.command("add")
@data_dir_option
@db_option
@click.argument("service_id", metavar="SERVICE")
@click.option("--title", required=True)
@click.option("--description", default="")
@click.option("--request-schema", help="SUBJECT:VERSION of the request body's schema.")
@click.option("--response-schema", help="SUBJECT:VERSION of the response body's schema.")
@click.option("--requires-consent", is_flag=True, help="Calls need the data subject's consent.")
@click.option("--subject-field", help=SUBJECT_FIELD_HELP)
@click.option("--purpose", "purposes", multiple=True, help="An allowed purpose (repeatable).")
def service_add(
    data_dir: Path | None,
    db: str | None,
    service_id: str,
    title: str,
    description: str,
    request_schema: str | None,
    response_schema: str | None,
    requires_consent: bool,
    subject_field: str | None,
    purposes: tuple[str, ...],
) -> None:
    """Register SERVICE (INSTANCE/CLASS/MEMBER/SUBSYSTEM/CODE[/VERSION])."""
    body = _model(
        ServiceCreate,
        id=service_id,
        title=title,
        description=description,
        request_schema=_schema_ref(request_schema),
        response_schema=_schema_ref(response_schema),
        requires_consent=requires_consent,
        subject_field=subject_field,
        purposes=list(purposes),
    )
    echo_json(_act(_db(data_dir, db), lambda s: service.add_service(s, body)))


@service_group.command("set")
@data_dir_option
@db_option
@click.argument("service_id", metavar="SERVICE")
@click.option("--title")
@click.option("--description")
@click.option("--request-schema", help="SUBJECT:VERSION")
@click.option("--response-schema", help="SUBJECT:VERSION")
@click.option("--requires-consent/--no-requires-consent", default=None)
@click.option("--subject-field", help=SUBJECT_FIELD_HELP)
@click.option("--purpose", "purposes", multiple=True, help="Replaces the allowed purposes.")
@click.option("--status", type=click.Choice(["active", "suspended"]))
def service_set(
    data_dir: Path | None,
    db: str | None,
    service_id: str,
    title: str | None,
    description: str | None,
    request_schema: str | None,
    response_schema: str | None,
    requires_consent: bool | None,
    subject_field: str | None,
    purposes: tuple[str, ...],
    status: str | None,
) -> None:
    """Change a service."""
    sid = _parse(ServiceId.parse, service_id)
    body = _model(
        ServiceUpdate,
        title=title,
        description=description,
        request_schema=_schema_ref(request_schema),
        response_schema=_schema_ref(response_schema),
        requires_consent=requires_consent,
        subject_field=subject_field,
        purposes=list(purposes) or None,
        status=status,
    )
    echo_json(_act(_db(data_dir, db), lambda s: service.update_service(s, sid, body)))


@service_group.command("list")
@data_dir_option
@db_option
def service_list(data_dir: Path | None, db: str | None) -> None:
    """All services."""
    echo_json(_act(_db(data_dir, db), store.snapshot, write=False).services)


@registry.group()
def access() -> None:
    """Access rights: who may call which service or endpoint."""


@access.command("grant")
@data_dir_option
@db_option
@click.argument("service_id", metavar="SERVICE")
@click.option("--client", help="Grant this subsystem.")
@click.option("--global-group", help="Grant every subsystem of this global group.")
@click.option("--local-group", help="Grant this local group of the service's own subsystem.")
@click.option("--method", default="*", show_default=True, help="HTTP method, or * for all.")
@click.option(
    "--path",
    default="**",
    show_default=True,
    help="Endpoint path pattern: * is one segment, a trailing ** any remainder.",
)
def access_grant(
    data_dir: Path | None,
    db: str | None,
    service_id: str,
    client: str | None,
    global_group: str | None,
    local_group: str | None,
    method: str,
    path: str,
) -> None:
    """Grant access to SERVICE (or one endpoint of it)."""
    body = _model(
        AccessRightCreate,
        service=service_id,
        client=client,
        global_group=global_group,
        local_group=local_group,
        method=method.upper(),
        path=path,
    )
    echo_json(_act(_db(data_dir, db), lambda s: service.grant(s, body)))


@access.command("revoke")
@data_dir_option
@db_option
@click.argument("right_id", metavar="ID", type=int)
def access_revoke(data_dir: Path | None, db: str | None, right_id: int) -> None:
    """Withdraw access right ID (see `access list`)."""
    _act(_db(data_dir, db), lambda s: service.revoke_access(s, right_id))
    click.echo(f"access right {right_id} withdrawn", err=True)


@access.command("list")
@data_dir_option
@db_option
def access_list(data_dir: Path | None, db: str | None) -> None:
    """All access rights with their ids."""
    echo_json(_act(_db(data_dir, db), store.snapshot, write=False).access_rights)


# --- central services, tokens, the configuration itself -----------------------------------------


@registry.command("central-service")
@data_dir_option
@db_option
@click.argument("name")
@click.option("--url", required=True)
@click.option(
    "--jwks",
    "jwks_file",
    required=True,
    type=click.File("r"),
    help="JWK Set of the service's public keys.",
)
def central_service(
    data_dir: Path | None, db: str | None, name: str, url: str, jwks_file: Any
) -> None:
    """Set central service NAME (e.g. consent, audit-witness) with its URL and keys."""
    try:
        keys = Jwks.model_validate(parse_json(jwks_file.read()))
    except (BadRequestError, ValueError) as e:
        raise click.BadParameter(str(e), param_hint="--jwks") from e
    body = _model(CentralServiceSet, url=url, keys=keys.model_dump())
    echo_json(_act(_db(data_dir, db), lambda s: service.set_central_service(s, name, body)))


@registry.group()
def token() -> None:
    """Operator API tokens."""


@token.command("create")
@data_dir_option
@db_option
@click.argument("name")
def token_create(data_dir: Path | None, db: str | None, name: str) -> None:
    """Create token NAME and print it (it is shown only this once)."""
    click.echo(_act(_db(data_dir, db), lambda s: tokens.create(s, name)))


@token.command("revoke")
@data_dir_option
@db_option
@click.argument("name")
def token_revoke(data_dir: Path | None, db: str | None, name: str) -> None:
    """Revoke token NAME."""
    _act(_db(data_dir, db), lambda s: tokens.revoke(s, name))
    click.echo(f"token {name!r} revoked", err=True)


@token.command("list")
@data_dir_option
@db_option
def token_list(data_dir: Path | None, db: str | None) -> None:
    """Token names and whether each is active."""
    rows = _act(_db(data_dir, db), tokens.names, write=False)
    echo_json([{"name": n, "active": a} for n, a in rows])


@registry.group()
def globalconf() -> None:
    """The signed global configuration."""


@globalconf.command("publish")
@data_dir_option
@db_option
@no_passphrase_option
def globalconf_publish(data_dir: Path | None, db: str | None, no_passphrase: bool) -> None:
    """Sign and store a new version now (a running registry also does this by itself)."""
    if data_dir is None:
        raise click.UsageError("--data-dir is required (it holds the operator key)")
    key_ = _load_operator_key(data_dir, no_passphrase)
    url = _db(data_dir, db)

    async def go() -> publisher.Published:
        engine = create_engine(url, pool_size=1)
        try:
            return await publisher.publish(sessions(engine), key_, force=True)
        finally:
            await engine.dispose()

    pub = run_async(go())
    click.echo(f"published serial {pub.serial}, expires {pub.expires_at.isoformat()}", err=True)


@globalconf.command("show")
@data_dir_option
@db_option
def globalconf_show(data_dir: Path | None, db: str | None) -> None:
    """Print the newest published configuration's payload (not verified: use a gateway for that)."""
    url = _db(data_dir, db)

    async def go() -> publisher.Published | None:
        engine = create_engine(url, pool_size=1)
        try:
            return await publisher.latest(sessions(engine))
        finally:
            await engine.dispose()

    pub = run_async(go())
    if pub is None:
        raise click.ClickException("nothing published yet")
    payload = json.loads(b64url_decode(pub.signed.split(".")[1]))
    echo_json(GlobalConf.model_validate(payload))


@globalconf.command("schema")
@click.argument("which", type=click.Choice(["globalconf", "anchor"]), default="globalconf")
def globalconf_schema(which: str) -> None:
    """Print the JSON Schema of the configuration (or the anchor)."""
    echo_json(document_schema() if which == "globalconf" else anchor_schema())
