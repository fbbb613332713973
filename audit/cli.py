"""``shahrah audit``: the regulator's audit server, exports and the offline verifier.

The audit server's folder (``--data-dir``) holds ``anchor.json`` (the
federation's configuration anchor), ``witness-key.pem`` and
``witness.jwks.json`` (the witness key, published by the operator as central
service ``audit-witness``), ``pseudonym.key`` (the federation's CNIC
pseudonym key), ``globalconf.jws`` (the last verified global configuration)
and, unless ``--db`` names another database, ``audit.db``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sys
import tempfile
import time
import unicodedata
from pathlib import Path
from typing import Any

import click

from audit import mirror
from audit.bootstrap import (
    ANCHOR_FILE,
    DB_FILE,
    GLOBALCONF_FILE,
    JWKS_FILE,
    KEY_FILE,
    PSEUDONYM_FILE,
    init_audit_server,
)
from audit.cli_options import data_dir_option, db_option
from audit.console.cli import regulator
from audit.export import write_export
from audit.note import witness_name
from audit.verify import verify_export
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
from core.ids import Cnic
from core.keys import KeySet, PrivateKey
from core.pseudonym import Pseudonymizer
from core.web import parse_json, parse_model
from registry.globalconf import Anchor

__all__ = ["audit"]


_FILE = click.Path(dir_okay=False, exists=True, path_type=Path)


def _fail(e: ShahrahError) -> click.ClickException:
    return click.ClickException(e.message)


@click.group()
def audit() -> None:
    """The audit trail: the regulator's witness and mirror, exports and the offline verifier."""


audit.add_command(regulator)


@audit.command()
@data_dir_option
@db_option
@click.option(
    "--anchor",
    "anchor_file",
    required=True,
    type=_FILE,
    help="The federation's configuration anchor (the registry's anchor.json).",
)
@click.option(
    "--pseudonym-key",
    type=_FILE,
    help="The federation's CNIC pseudonym key, if it exists already (else one is made).",
)
@no_passphrase_option
def init(
    data_dir: Path,
    db: str | None,
    anchor_file: Path,
    pseudonym_key: Path | None,
    no_passphrase: bool,
) -> None:
    """Create an audit server: witness key, pseudonym key, anchor and database.

    Prints the witness's JWK Set; the operator publishes it with
    `shahrah registry central-service audit-witness --url URL --jwks FILE`."""
    passphrase = resolve_passphrase(no_passphrase, confirm=True)
    try:
        made = init_audit_server(
            data_dir, anchor_file, passphrase=passphrase, db_url=db, pseudonym_key=pseudonym_key
        )
    except ShahrahError as e:
        raise _fail(e) from e
    anchor, key, jwks = made.anchor, made.key, made.jwks
    if passphrase is None:
        click.echo("warning: the witness key is stored WITHOUT a passphrase", err=True)
    click.echo(f"audit server for {anchor.instance} created in {data_dir}", err=True)
    click.echo(f"witness key name: {witness_name(anchor.instance)}, key id {key.kid}", err=True)
    if pseudonym_key is None:
        click.echo(
            f"a new pseudonym key is in {data_dir / PSEUDONYM_FILE}: give the same file to the "
            "consent service (it must be one key for the whole federation)",
            err=True,
        )
    click.echo(
        "publish the witness key: shahrah registry central-service audit-witness "
        f"--url https://HOST:PORT --jwks {data_dir / JWKS_FILE}",
        err=True,
    )
    echo_json(jwks)


def _witness_key(data_dir: Path, no_passphrase: bool) -> PrivateKey:
    path = data_dir / KEY_FILE
    try:
        return PrivateKey.load(path, None if no_passphrase else resolve_passphrase(False))
    except ShahrahError as e:
        raise click.ClickException(f"{path}: {e.message}") from e


def _anchor(data_dir: Path) -> Anchor:
    try:
        return Anchor.load(data_dir / ANCHOR_FILE)
    except ShahrahError as e:
        raise _fail(e) from e


def _pseudonyms(data_dir: Path) -> Pseudonymizer | None:
    path = data_dir / PSEUDONYM_FILE
    return Pseudonymizer.load(path) if path.exists() else None


@audit.command()
@data_dir_option
@db_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8090, show_default=True, type=click.IntRange(1, 65535))
@click.option("--tls-cert", type=_FILE, help="Serve HTTPS with this certificate (PEM).")
@click.option("--tls-key", type=_FILE, help="Private key for --tls-cert (PEM).")
@no_passphrase_option
def serve(
    data_dir: Path,
    db: str | None,
    host: str,
    port: int,
    tls_cert: Path | None,
    tls_key: Path | None,
    no_passphrase: bool,
) -> None:
    """Run the witness, the mirror and the regulators' search API.

    Gateways submit checkpoints to POST /witness/v1/add-checkpoint; regulators
    (subsystems in the global group audit-regulators) search with POST
    /api/v1/search and read mirrored logs under /mirror; /metrics counts alarms."""

    from audit.server import AuditServerConfig, build_app
    from registry.globalconf_client import GlobalConfClient

    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    config = AuditServerConfig(
        db_url=db_url_for(data_dir, db, DB_FILE),
        witness_key=_witness_key(data_dir, no_passphrase),
        pseudonyms=_pseudonyms(data_dir),
    )
    conf = GlobalConfClient(_anchor(data_dir), cache_file=data_dir / GLOBALCONF_FILE)
    serve_until_stopped(
        build_app(config, conf),
        what="audit server",
        host=host,
        port=port,
        tls_cert=tls_cert,
        tls_key=tls_key,
    )


def _filter_options(f: Any) -> Any:
    for option in reversed(
        [
            click.option("--gateway", help="Gateway id INSTANCE/CLASS/MEMBER/CODE."),
            click.option("--member", help="Member id INSTANCE/CLASS/CODE."),
            click.option("--client", help="Consumer client id."),
            click.option("--service", help="Service id."),
            click.option("--outcome", type=click.Choice(["delivered", "denied"])),
            click.option("--subject", help="The data subject's pseudonym (ps1:...)."),
            click.option(
                "--cnic-stdin",
                is_flag=True,
                help="Read the data subject's CNIC from standard input (kept off the command "
                "line, which other users of the machine can see).",
            ),
            click.option("--since", help="Events at or after this RFC 3339 time."),
            click.option("--until", help="Events before this RFC 3339 time."),
        ]
    ):
        f = option(f)
    return f


def _filters(model: type[mirror.Filters], **values: Any) -> Any:
    if values.pop("cnic_stdin"):
        try:
            values["cnic"] = str(Cnic.parse(sys.stdin.readline()))
        except BadRequestError as e:
            raise click.BadParameter(e.message, param_hint="standard input") from e
    try:
        return parse_model(
            model, {k: v for k, v in values.items() if v is not None}, where="option"
        )
    except BadRequestError as e:
        raise click.BadParameter(e.message) from e


@audit.command()
@data_dir_option
@db_option
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="The export file to write (refused if it exists).",
)
@_filter_options
@no_passphrase_option
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Show progress on stderr (default: only when stderr is a terminal).",
)
def export(
    data_dir: Path,
    db: str | None,
    out: Path,
    no_passphrase: bool,
    progress: bool | None,
    **values: Any,
) -> None:
    """Export witnessed audit entries, with proofs and keys, to one self-contained file.

    Without filters (or with only --gateway/--member) every entry of each log is
    exported; otherwise the matching entries with their inclusion proofs. Check
    the file anywhere with `shahrah audit verify FILE --anchor anchor.json`."""
    filters = _filters(mirror.Filters, **values)
    show = sys.stderr.isatty() if progress is None else progress
    counter = _Exporting() if show else None
    if out.exists():
        raise click.ClickException(f"{out} exists; refusing to overwrite it")
    key = _witness_key(data_dir, no_passphrase)
    anchor = _anchor(data_dir)
    cached = data_dir / GLOBALCONF_FILE
    globalconf = cached.read_text("ascii") if cached.exists() else None
    if globalconf is None:
        click.echo("warning: no global configuration cached; the export cannot carry it", err=True)

    async def go() -> Any:
        engine = create_engine(db_url_for(data_dir, db, DB_FILE), pool_size=1)
        # A file of its own beside the target (mode 0600: it holds personal data), so that
        # what a killed export left behind never blocks the next one; removed on failure.
        fd, partial = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial")
        try:
            with os.fdopen(fd, "wb") as f:
                summary = await write_export(
                    sessions(engine),
                    f,
                    filters=filters,
                    pseudonymize=_pseudonyms(data_dir),
                    witness_key=key,
                    witness_name=witness_name(anchor.instance),
                    globalconf=globalconf,
                    progress=counter,
                )
                f.flush()
                os.fsync(f.fileno())
            os.rename(partial, out)
            return summary
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
            raise
        finally:
            await engine.dispose()

    summary = run_async(go())
    if counter is not None:
        counter.finish()
    click.echo(
        f"exported {summary.entries} entries of {summary.logs} logs with {summary.checkpoints} "
        f"checkpoints to {out} (sha256 {summary.sha256})",
        err=True,
    )


# Controls, format characters (bidirectional overrides), separators and unassigned code points.
_UNPRINTABLE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def _printable(text: str) -> str:
    """``text`` with every character that could move the cursor, rewrite the terminal or
    reorder what is shown escaped as \\xNN, \\uNNNN or \\UNNNNNNNN: a report quotes the file."""
    out = []
    for char in text:
        if unicodedata.category(char) not in _UNPRINTABLE:
            out.append(char)
        elif ord(char) < 0x100:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) < 0x10000:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return "".join(out)


class _Exporting:
    """A one-line count of the entries exported on stderr, redrawn at most five times a second."""

    def __init__(self) -> None:
        self.last = 0.0
        self.entries = 0

    def __call__(self, entries: int) -> None:
        now = time.monotonic()
        if now - self.last < 0.2 and entries > self.entries:
            self.entries = entries
            return
        self.last, self.entries = now, entries
        click.echo(f"\rexporting: {entries:,} entries", err=True, nl=False)

    def finish(self) -> None:
        click.echo(f"\rexporting: {self.entries:,} entries", err=True)


class _Progress:
    """A one-line progress report on stderr, redrawn at most five times a second."""

    def __init__(self, total: int) -> None:
        self.total = max(total, 1)
        self.last = 0.0

    def __call__(self, done: int, entries: int) -> None:
        now = time.monotonic()
        if now - self.last < 0.2 and done < self.total:
            return
        self.last = now
        click.echo(
            f"\rverifying: {100 * done // self.total:3d}% ({entries:,} entries)", err=True, nl=False
        )

    def finish(self) -> None:
        click.echo("", err=True)


#: verify's exit status for a file nothing outside it vouches for (click uses 2 for usage).
UNVERIFIED = 3


@audit.command()
@click.argument("file", type=_FILE)
@click.option(
    "--anchor",
    "anchor_file",
    type=_FILE,
    help="Trust the keys the federation's configuration anchor vouches for.",
)
@click.option(
    "--witness-jwks",
    type=_FILE,
    help="Trust this JWK Set as the witness's keys.",
)
@click.option(
    "--trust-embedded-keys",
    is_flag=True,
    help="Check the file against the keys it carries itself (anyone can make such a file).",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Show progress on stderr (default: only when stderr is a terminal).",
)
def verify(
    file: Path,
    anchor_file: Path | None,
    witness_jwks: Path | None,
    trust_embedded_keys: bool,
    progress: bool | None,
) -> None:
    """Check an export offline: signatures, cosignatures, consistency, every entry.

    Exits 0 if everything verifies and 1 naming every problem found: a changed,
    missing, duplicated or reordered entry, a forged or inconsistent checkpoint,
    or a file edited after export. Exits 3 (UNVERIFIED) if the file holds
    together but nothing outside it vouches for its keys: give --anchor or
    --witness-jwks, or --trust-embedded-keys to accept the file's own (2 is a
    usage error, as for every command)."""
    try:
        anchor = Anchor.load(anchor_file) if anchor_file else None
        pinned = KeySet.from_jwks(parse_json(witness_jwks.read_bytes())) if witness_jwks else None
    except ShahrahError as e:
        raise _fail(e) from e
    show = sys.stderr.isatty() if progress is None else progress
    bar = _Progress(file.stat().st_size) if show else None
    started = time.monotonic()
    report = verify_export(file, anchor=anchor, witness_keys=pinned, progress=bar)
    if bar is not None:
        bar.finish()
    elapsed = time.monotonic() - started
    for note in report.notes:
        click.echo(f"note: {_printable(note)}")
    for problem in report.problems:
        click.echo(f"PROBLEM: {_printable(problem)}")
    summary = (
        f"{report.logs} logs, {report.checkpoints} checkpoints, {report.entries} entries "
        f"in {elapsed:.1f} s"
    )
    if not report.ok:
        click.echo(f"FAILED: {len(report.problems)} problem(s); {summary}")
        sys.exit(1)
    if anchor is None and pinned is None and not trust_embedded_keys:
        # Consistent, but signed by whatever keys the file names: a forger's would do.
        click.echo(
            f"UNVERIFIED: {summary} hold together, but only the file vouches for its keys; "
            "give --anchor (or --witness-jwks) to check them"
        )
        sys.exit(UNVERIFIED)
    click.echo(f"OK: {summary}")


@audit.command()
@data_dir_option
@db_option
@_filter_options
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, mirror.MAX_PAGE))
def search(data_dir: Path, db: str | None, **values: Any) -> None:
    """Search the mirrored events on this server's database, newest first (JSON)."""
    query = _filters(mirror.SearchQuery, **values)

    async def go() -> mirror.SearchPage:
        engine = create_engine(db_url_for(data_dir, db, DB_FILE), pool_size=1)
        try:
            async with transaction(sessions(engine), write=False) as s:
                return await mirror.search(s, query, _pseudonyms(data_dir))
        finally:
            await engine.dispose()

    echo_json(run_async(go()))


@audit.command()
@data_dir_option
@db_option
def alarms(data_dir: Path, db: str | None) -> None:
    """List the checkpoints the witness refused as contradicting a log's history (JSON)."""
    from sqlalchemy import select

    from audit.models import AuditAlarm

    async def go() -> list[dict[str, Any]]:
        engine = create_engine(db_url_for(data_dir, db, DB_FILE), pool_size=1)
        try:
            async with transaction(sessions(engine), write=False) as s:
                rows = await s.scalars(select(AuditAlarm).order_by(AuditAlarm.id))
                return [
                    {
                        "log_id": r.log_name,
                        "reason": r.reason,
                        "message": r.message,
                        "time": r.created_at.astimezone(dt.UTC).isoformat(),
                        "evidence": r.evidence,
                    }
                    for r in rows
                ]
        finally:
            await engine.dispose()

    echo_json(run_async(go()))
