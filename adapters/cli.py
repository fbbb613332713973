"""``shahrah adapter``: check, serve and exercise adapter configurations, and batch requests."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import click

from adapters.base import BackendRequest
from adapters.batch import MAX_RESPONSE, BatchSpec, run_batch
from adapters.config import Adapters, load_adapters
from adapters.drops import FileReport
from core.cli import echo_json, run_async
from core.errors import BadRequestError, ShahrahError
from core.ids import ClientId, ServiceId

__all__ = ["adapter"]

config_argument = click.argument(
    "config", type=click.Path(dir_okay=False, exists=True, path_type=Path)
)


def _load(config: Path, *, migrate: bool = True) -> Adapters:
    return run_async(load_adapters(config, migrate=migrate))


@click.group()
def adapter() -> None:
    """Adapters that put legacy REST, SOAP, SQL and file-drop systems behind Shahrah services.

    CONFIG is a YAML adapter configuration (see docs/adapters.md); ${VAR} in it is read
    from the environment."""


@adapter.command()
@config_argument
def check(config: Path) -> None:
    """Load CONFIG and check every route and mapping against the services' response schemas.

    Prints each service with its routes; exits with an error naming the file, line and
    field of the first problem."""

    async def go() -> dict[str, list[str]]:
        adapters = await load_adapters(config, migrate=False)
        try:
            return {str(s): [r.label for r in b.routes] for s, b in adapters.backends.items()}
        finally:
            await adapters.close()

    echo_json(run_async(go()))


@adapter.command()
@config_argument
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8090, show_default=True, type=click.IntRange(1, 65535))
@click.option("--no-watch", is_flag=True, help="Do not ingest drop directories while serving.")
def serve(config: Path, host: str, port: int, no_watch: bool) -> None:
    """Serve CONFIG's adapters over HTTP for a gateway to call as REST backends.

    A service is at http://HOST:PORT/<service id>/..., e.g.
    http://127.0.0.1:8090/PK/FED/NADRA/civil-registry/person/v1/persons/35202-1234567-1;
    /metrics has the Prometheus metrics, /healthz the circuit breakers."""
    from aiohttp import web

    from adapters.server import build_app

    adapters = _load(config)
    names = ", ".join(str(s) for s in adapters.backends)
    click.echo(f"adapters for {names} on http://{host}:{port}", err=True)
    web.run_app(build_app(adapters, watch=not no_watch), host=host, port=port, print=None)


@adapter.command()
@config_argument
def ingest(config: Path) -> None:
    """Scan CONFIG's drop directories once and load every complete file (for cron).

    With ready: stable, a file must be unchanged for settle_seconds; this command
    looks twice, settle_seconds apart. Prints what happened to each file, as JSON
    by service. Exit status 1 if a file failed or was rejected, or the archive
    did not take one: the cron job's mail then says so."""
    import asyncio

    async def go() -> dict[str, list[FileReport]]:
        adapters = await load_adapters(config)
        try:
            first = await adapters.scan()
            await asyncio.sleep(
                max((s.spec.settle_seconds for s in adapters.file_sources), default=0)
            )
            second = await adapters.scan()
            # With ready: marker the first look loads everything there is.
            return {k: first.get(k, []) + second.get(k, []) for k in {**first, **second}}
        finally:
            await adapters.close()

    reports = run_async(go())
    echo_json({k: [vars(r) for r in v] for k, v in sorted(reports.items())})
    troubles = [
        r
        for v in reports.values()
        for r in v
        if r.status in ("failed", "rejected") or r.archive_error
    ]
    if troubles:
        raise click.ClickException(
            f"{len(troubles)} file(s) failed, were rejected or could not be archived; "
            "see the reports above"
        )


@adapter.command()
@config_argument
@click.argument("service")
@click.argument("method")
@click.argument("path")
@click.option(
    "--client",
    default="PK/FED/SHAHRAH/adapter-cli",
    show_default=True,
    help="X-Road client to present.",
)
def call(config: Path, service: str, method: str, path: str, client: str) -> None:
    """Call one route of CONFIG directly, without a gateway: SERVICE METHOD PATH[?QUERY].

    For integrators testing a mapping, e.g. `shahrah adapter call nadra.yaml
    PK/FED/NADRA/civil-registry/person/v1 GET /persons/35202-1234567-1`."""

    async def go() -> tuple[int, bytes]:
        sid = ServiceId.parse(service)
        adapters = await load_adapters(config)
        try:
            if sid not in adapters.backends:
                raise BadRequestError(f"{service} is not configured in {config}")
            route, _, query = path.partition("?")
            answer = await adapters.backends[sid].call(
                BackendRequest(
                    service=sid,
                    client=ClientId.parse(client),
                    message_id=str(uuid.uuid4()),
                    method=method.upper(),
                    path=route,
                    query=query,
                )
            )
            return answer.status, answer.body
        finally:
            await adapters.close()

    status, body = run_async(go())
    click.echo(f"HTTP {status}", err=True)
    try:
        click.echo(json.dumps(json.loads(body), indent=2, ensure_ascii=False))
    except ValueError:
        click.echo(body.decode("utf-8", "replace"))
    if status >= 400:
        raise SystemExit(1)


@adapter.command()
@click.option(
    "--gateway", required=True, help="The local gateway's base URL, e.g. http://127.0.0.1:8443."
)
@click.option("--client", required=True, help="Calling subsystem, sent as X-Road-Client.")
@click.option(
    "--service", required=True, help="Service id, e.g. PK/FED/NADRA/civil-registry/person/v1."
)
@click.option(
    "--path",
    "path_template",
    required=True,
    help="Path below the service with {column} placeholders, e.g. /persons/{cnic}.",
)
@click.option("--method", default="GET", show_default=True)
@click.option(
    "--input",
    "input_path",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="CSV of requests with a header line (UTF-8).",
)
@click.option(
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Results CSV; an existing one is resumed.",
)
@click.option(
    "--subject-column", help="Column with the data subject's CNIC (sent as Shahrah-Data-Subject)."
)
@click.option("--purpose", help="Purpose of the processing (Shahrah-Purpose).")
@click.option("--consent", help="Consent reference for every row (Shahrah-Consent).")
@click.option("--consent-column", help="Column with each row's consent reference.")
@click.option(
    "--concurrency",
    default=8,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Requests in flight at once.",
)
@click.option(
    "--timeout",
    default=30.0,
    show_default=True,
    type=click.FloatRange(0.1, 600),
    help="Seconds per request.",
)
@click.option(
    "--max-response",
    default=MAX_RESPONSE,
    show_default=True,
    type=click.IntRange(1, 2**30),
    help="Bytes kept per answer; a longer one is an error row (ResponseTooLarge), never cut.",
)
@click.option(
    "--retry-errors",
    is_flag=True,
    help="Send again the rows that got no answer, a 5xx or an answer over --max-response.",
)
def batch(
    gateway: str,
    client: str,
    service: str,
    path_template: str,
    method: str,
    input_path: Path,
    output: Path,
    subject_column: str | None,
    purpose: str | None,
    consent: str | None,
    consent_column: str | None,
    concurrency: int,
    timeout: float,
    max_response: int,
    retry_errors: bool,
) -> None:
    """Run a CSV of requests through the local gateway's r1 interface into a results CSV.

    One results row per input row, errors included; an interrupted run is resumed by running
    the same command again (rows already answered are not sent again)."""
    try:
        spec = BatchSpec(
            gateway=gateway,
            client=ClientId.parse(client, require_subsystem=True),
            service=ServiceId.parse(service),
            path=path_template if path_template.startswith("/") else "/" + path_template,
            method=method.upper(),
            subject_column=subject_column,
            purpose=purpose,
            consent=consent,
            consent_column=consent_column,
            concurrency=concurrency,
            timeout=timeout,
            max_response=max_response,
        )
    except ShahrahError as e:
        raise click.BadParameter(e.message) from e
    if consent and consent_column:
        raise click.UsageError("give --consent or --consent-column, not both")
    with click.progressbar(length=0, label="requests", file=sys.stderr) as progress:

        def start(pending: int) -> None:
            progress.length = pending

        summary = run_async(
            run_batch(
                spec,
                input_path,
                output,
                retry_errors=retry_errors,
                progress=progress.update,
                on_start=start,
            )
        )
    click.echo(
        f"{summary.total} rows: {summary.already} answered before, {summary.sent} sent now, "
        f"{summary.errors} of them errors; results in {output}",
        err=True,
    )
