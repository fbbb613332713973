"""``shahrah registry schema``: the operator's commands for the schema registry.

They work on the registry's database directly (``--data-dir`` or ``--db``),
each as one transaction, with the same rules and messages as the
Confluent-compatible API under ``/schema-registry``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from core.cli import echo_json
from core.errors import BadRequestError
from registry.cli import _act, _db, data_dir_option, db_option
from registry.schemareg import service
from registry.schemareg.compat import LEVELS
from registry.schemareg.documents import Reference, parse_schema_text
from registry.schemareg.payloads import ConfigRequest, SchemaRequest, parse_request

__all__ = ["schema"]

reference_option = click.option(
    "--reference",
    "references",
    multiple=True,
    metavar="NAME=SUBJECT:VERSION",
    help="A reference: $ref to NAME means SUBJECT at VERSION (repeatable), "
    "e.g. pk.common.json=pk.common:1.",
)


def _reference(text: str) -> Reference:
    name, eq, target = text.partition("=")
    subject, colon, version = target.rpartition(":")
    if not eq or not colon or not version.isdigit():
        raise click.BadParameter(f"{text!r}: write a reference as NAME=SUBJECT:VERSION")
    try:
        return Reference(name=name, subject=subject, version=int(version))
    except ValueError as e:
        raise click.BadParameter(f"{text!r}: {e}") from e


def _request(path: Path, references: tuple[str, ...]) -> SchemaRequest:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise click.BadParameter(f"cannot read {path}: {e}") from e
    try:
        return parse_request(
            SchemaRequest,
            {
                "schema": text,
                "schemaType": "JSON",
                "references": [_reference(r).model_dump() for r in references],
            },
        )
    except BadRequestError as e:
        raise click.BadParameter(e.message) from e


def _version(text: str) -> service.VersionSpec:
    try:
        return service.parse_version(text)
    except BadRequestError as e:
        raise click.BadParameter(e.message) from e


schema_file = click.argument(
    "path", metavar="FILE", type=click.Path(dir_okay=False, exists=True, path_type=Path)
)


@click.group()
def schema() -> None:
    """The schema registry: JSON Schemas under dotted subjects (pk.nadra.person), their
    versions, references and compatibility rules (Confluent-compatible)."""


@schema.command("register")
@data_dir_option
@db_option
@click.argument("subject")
@schema_file
@reference_option
def register(
    data_dir: Path | None, db: str | None, subject: str, path: Path, references: tuple[str, ...]
) -> None:
    """Register the JSON Schema in FILE under SUBJECT; prints its id and version.

    Refused (nothing changes) if the schema is invalid or the subject's
    compatibility level forbids it; the message lists each incompatible change."""
    request = _request(path, references)
    done = _act(_db(data_dir, db), lambda s: service.register(s, subject, request))
    echo_json({"subject": subject, "id": done.id, "version": done.version, "new": done.created})


@schema.command("list")
@data_dir_option
@db_option
@click.option("--deleted", is_flag=True, help="Include soft-deleted subjects.")
def list_subjects(data_dir: Path | None, db: str | None, deleted: bool) -> None:
    """All subjects."""
    echo_json(_act(_db(data_dir, db), lambda s: service.list_subjects(s, deleted=deleted)))


@schema.command("versions")
@data_dir_option
@db_option
@click.argument("subject")
@click.option("--deleted", is_flag=True, help="Include soft-deleted versions.")
def versions(data_dir: Path | None, db: str | None, subject: str, deleted: bool) -> None:
    """The version numbers of SUBJECT."""
    url = _db(data_dir, db)
    echo_json(_act(url, lambda s: service.list_versions(s, subject, deleted=deleted)))


@schema.command("show")
@data_dir_option
@db_option
@click.argument("subject")
@click.argument("version", default="latest")
@click.option("--schema-only", is_flag=True, help="Print only the schema document.")
def show(
    data_dir: Path | None, db: str | None, subject: str, version: str, schema_only: bool
) -> None:
    """Show VERSION (default: latest) of SUBJECT: id, references and the schema."""
    spec = _version(version)
    info = _act(_db(data_dir, db), lambda s: service.get_version(s, subject, spec))
    body = info.to_json()
    body["schema"] = parse_schema_text(info.schema)
    echo_json(body["schema"] if schema_only else body)


@schema.command("check")
@data_dir_option
@db_option
@click.argument("subject")
@schema_file
@reference_option
@click.option(
    "--version", "version", help="Check against this version only (default: as the level says)."
)
def check(
    data_dir: Path | None,
    db: str | None,
    subject: str,
    path: Path,
    references: tuple[str, ...],
    version: str | None,
) -> None:
    """Would FILE be accepted as a new version of SUBJECT? Lists every incompatible change
    with its JSON pointer; exits 1 when incompatible."""
    request = _request(path, references)
    spec = _version(version) if version is not None else None
    verdict = _act(
        _db(data_dir, db),
        lambda s: service.check_compatibility(s, subject, spec, request),
        write=False,
    )
    echo_json(
        {
            "is_compatible": verdict.compatible,
            "level": verdict.level,
            "changes": [f.to_json() for f in verdict.findings],
        }
    )
    if not verdict.compatible:
        sys.exit(1)


@schema.command("config")
@data_dir_option
@db_option
@click.argument("subject", required=False)
@click.option(
    "--level",
    type=click.Choice(LEVELS, case_sensitive=False),
    help="Compatibility level to set.",
)
@click.option(
    "--policy",
    type=click.Choice(["STRICT", "LENIENT"], case_sensitive=False),
    help="How open content models are judged (see docs/schemas.md).",
)
def config(
    data_dir: Path | None,
    db: str | None,
    subject: str | None,
    level: str | None,
    policy: str | None,
) -> None:
    """Show, or with --level/--policy set, the compatibility rules of SUBJECT (or the
    global default when no SUBJECT is given)."""
    url = _db(data_dir, db)
    if level is None and policy is None:
        view = _act(url, lambda s: service.get_config(s, subject), write=False)
    else:
        body = ConfigRequest(compatibility=level, compatibilityPolicy=policy)
        view = _act(url, lambda s: service.set_config(s, subject, body))
    echo_json({"compatibilityLevel": view.compatibility, "compatibilityPolicy": view.policy})


@schema.command("delete")
@data_dir_option
@db_option
@click.argument("subject")
@click.argument("version", required=False)
@click.option(
    "--permanent",
    is_flag=True,
    help="Remove for good what was soft-deleted before (ids are then gone).",
)
def delete(
    data_dir: Path | None, db: str | None, subject: str, version: str | None, permanent: bool
) -> None:
    """Soft-delete SUBJECT (or one VERSION of it); --permanent removes a soft-deleted one."""
    url = _db(data_dir, db)
    if version is None:
        done = _act(url, lambda s: service.delete_subject(s, subject, permanent=permanent))
        echo_json(done)
    else:
        spec = _version(version)
        echo_json(
            _act(url, lambda s: service.delete_version(s, subject, spec, permanent=permanent))
        )
