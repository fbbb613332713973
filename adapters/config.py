"""The adapter configuration file and how it becomes running backends.

One YAML file configures the backends of several services, each of one kind
(``rest``, ``soap``, ``sql``, ``files``), with its routes and mappings; see
docs/adapters.md for the format. Loading is in two steps, both reporting
errors with the file, line and field: the shape is validated by pydantic,
then every route, parameter, transform, query, template and mapping is
compiled and each mapping is checked against the service's response schema.

A gateway loads a file in-process with :func:`load_adapters` and gets one
:class:`adapters.base.Backend` per service; ``shahrah adapter serve`` does the
same and puts them behind HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from prometheus_client import CollectorRegistry
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.adapter import Adapter
from adapters.drops import FileReport, FileSource, FilesService
from adapters.errors import ConfigError
from adapters.mapping import CompiledMapping, FieldMap, compile_mapping
from adapters.metrics import AdapterMetrics
from adapters.regex import Regex
from adapters.rest import RestService, RestSource
from adapters.routes import CompiledParam, CompiledRoute, ParamSpec, RoutePattern
from adapters.schemas import (
    FileSchemas,
    ResponseValidator,
    SchemaLookup,
    ValidatorFactory,
    check_mapping,
)
from adapters.soap import SoapService, SoapSource
from adapters.spec import BuildContext
from adapters.sql import SqlService, SqlSource, database_url
from adapters.transforms import code_key, compile_transform
from adapters.yamlfile import Document, load_yaml, validate
from core import db
from core.errors import ShahrahError
from core.ids import ServiceId

__all__ = ["AdapterConfig", "Adapters", "load_adapters", "load_config"]

log = logging.getLogger(__name__)

ServiceConfig = Annotated[
    RestService | SoapService | SqlService | FilesService, Field(discriminator="kind")
]


def _service_key(value: str) -> str:
    try:
        ServiceId.parse(value)
    except ShahrahError as e:
        raise ValueError(e.message) from None
    return value


#: A key of ``services``: an X-Road service id, INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE[/VERSION].
ServiceKey = Annotated[str, AfterValidator(_service_key)]


class CodeTableFile(BaseModel):
    """A code table kept in a CSV file: first column the code, second the value, a header line."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str


# A table inline ({CODE: VALUE, ...}) or in a CSV file ({file: PATH}); the file form wins.
CodeTable = Annotated[CodeTableFile | dict[str, str], Field(union_mode="left_to_right")]


class AdapterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    adapter: Literal[1]  # format version of this file
    # database URL for file sources (sqlite:///... or postgresql://...)
    state: Annotated[str, AfterValidator(database_url)] | None = None
    code_tables: dict[str, CodeTable] = Field(default_factory=dict)
    services: dict[ServiceKey, ServiceConfig] = Field(min_length=1)


def load_config(
    path: Path, environ: Mapping[str, str] | None = None
) -> tuple[AdapterConfig, Document]:
    """Read and validate the file's shape (``${VAR}`` from ``environ``, default os.environ)."""
    doc = load_yaml(path, os.environ if environ is None else environ)
    return validate(AdapterConfig, doc, {}), doc


@dataclass
class Adapters:
    """The backends one configuration file defines, and what runs them.

    ``backends`` maps each service to its Backend. File sources ingest in
    the background once :meth:`start` is called; :meth:`close` stops them and
    releases every pool.
    """

    backends: dict[ServiceId, Adapter]
    metrics: AdapterMetrics
    file_sources: list[FileSource] = field(default_factory=list)
    state_engine: AsyncEngine | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def registry(self) -> CollectorRegistry:
        """The Prometheus registry holding the adapters' metrics."""
        return self.metrics.registry

    async def start(self) -> None:
        """Begin watching the drop directories (scanning each every ``poll_seconds``)."""
        for source in self.file_sources:
            self._tasks.append(asyncio.create_task(source.run(), name=f"ingest {source.name}"))

    async def scan(self) -> dict[str, list[FileReport]]:
        """One scan of every drop directory, now."""
        return {s.name: await s.scan() for s in self.file_sources}

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for backend in self.backends.values():
            await backend.close()
        if self.state_engine is not None:
            await self.state_engine.dispose()


def _code_tables(cfg: AdapterConfig, doc: Document, base: Path) -> dict[str, dict[str, str]]:
    """Every table keyed by ``code_key``, the form a lookup compares: two codes that differ
    only in spaces or in the script of their digits are one code, and given twice an error."""
    tables: dict[str, dict[str, str]] = {}
    for name, table in cfg.code_tables.items():
        if isinstance(table, dict):
            line = doc.line_of(["code_tables", name])
            entries = [(f"code {code!r}", code, value) for code, value in table.items()]
        else:
            path = Path(table.file) if Path(table.file).is_absolute() else base / table.file
            line = doc.line_of(["code_tables", name, "file"])
            try:
                with path.open(encoding="utf-8-sig", newline="") as f:
                    rows = list(csv.reader(f))
            except (OSError, UnicodeDecodeError, csv.Error) as e:
                raise ConfigError(
                    f"cannot read code table {path}: {e}", file=doc.file, line=line
                ) from e
            for i, row in enumerate(rows[1:], start=2):
                if len(row) < 2:
                    raise ConfigError(
                        f"{path} line {i}: needs a code and a value", file=doc.file, line=line
                    )
            entries = [(f"{path} line {i}", r[0], r[1].strip()) for i, r in enumerate(rows[1:], 2)]
        loaded: dict[str, str] = {}
        for where, code, value in entries:
            key = code_key(code)
            if not key:
                raise ConfigError(f"{where}: the code is empty", file=doc.file, line=line)
            if key in loaded:
                raise ConfigError(
                    f"{where}: code {key!r} is already in code table {name!r}",
                    file=doc.file,
                    line=line,
                )
            loaded[key] = value
        tables[name] = loaded
    return tables


def _params(
    route: Any, pattern: RoutePattern, ctx: BuildContext, where: list[str | int]
) -> tuple[CompiledParam, ...]:
    specs: dict[str, ParamSpec] = {name: ParamSpec() for name in pattern.names}
    specs.update(route.params)
    out = []
    for name, spec in specs.items():
        transforms = []
        for i, t in enumerate(spec.transforms):
            try:
                transforms.append(compile_transform(t, ctx.tables))
            except ValueError as e:
                raise ctx.fail([*where, "params", name, "transforms", i], str(e)) from None
        try:
            regex = Regex(spec.pattern) if spec.pattern is not None else None
        except ValueError as e:
            raise ctx.fail([*where, "params", name, "pattern"], str(e)) from None
        in_path = name in pattern.names
        out.append(
            CompiledParam(name, tuple(transforms), regex, in_path or spec.required, spec.default)
        )
    return tuple(out)


def _mapping(
    spec: Mapping[str, FieldMap],
    source: Any,
    schema: Mapping[str, Any],
    ctx: BuildContext,
    where: list[str | int],
) -> CompiledMapping:
    def fail(at: Sequence[str | int], message: str) -> ConfigError:
        return ctx.fail([*where, "mapping", *at], message)

    mapping = compile_mapping(spec, tables=ctx.tables, check_path=source.check_path, fail=fail)
    problems = check_mapping(mapping, schema)
    if problems:
        pointer, message = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        # Point at the entry that writes the pointer, or the first one below it.
        head = pointer.split("[]")[0]
        near = [k for k in spec if k == head or k.startswith(head + "/")]
        while not near and "/" in head:
            head = head.rsplit("/", 1)[0]  # a missing field: point at its siblings
            near = [k for k in spec if k.startswith(head + "/")]
        raise fail(near[:1], f"{pointer}: {message}{more}")
    return mapping


def _build_service(
    sid: ServiceId,
    spec: Any,
    schema: Mapping[str, Any],
    ctx: BuildContext,
    metrics: AdapterMetrics,
    make_validator: ValidatorFactory,
) -> tuple[Adapter, FileSource | None]:
    try:
        validator = make_validator(schema)
    except ValueError as e:
        raise ctx.fail(["response_schema"], f"the response schema is unusable: {e}") from None
    source: RestSource | SoapSource | SqlSource | FileSource
    file_mapping: CompiledMapping | None = None
    if isinstance(spec, FilesService):
        source = FileSource(spec, ctx)
        file_mapping = _mapping(spec.mapping, source, schema, ctx, [])
        source.bind(file_mapping, validator, ctx)
    elif isinstance(spec, RestService):
        source = RestSource(spec, ctx)
    elif isinstance(spec, SoapService):
        source = SoapSource(spec, ctx)
    else:
        source = SqlSource(spec, ctx)
    routes: list[CompiledRoute] = []
    for key, route in spec.routes.items():
        where: list[str | int] = ["routes", key]
        try:
            pattern = RoutePattern.parse(key)
        except ValueError as e:
            raise ctx.fail(where, str(e)) from None
        if any(
            r.pattern.method == pattern.method and r.pattern.segments == pattern.segments
            for r in routes
        ):
            raise ctx.fail(where, "another route has the same method and path")
        params = _params(route, pattern, ctx, where)
        mapping = (
            None
            if file_mapping is not None
            else _mapping(route.mapping, source, schema, ctx, where)
        )
        idempotent = route.idempotent
        if idempotent is None:
            idempotent = pattern.method in ("GET", "HEAD") or source.kind in ("sql", "files")
        compiled = CompiledRoute(pattern, params, idempotent, mapping)
        try:
            source.plan(compiled, key)
        except ValueError as e:
            raise ctx.fail(where, str(e)) from None
        routes.append(compiled)
    adapter = Adapter(sid, source, routes, validator, spec.resilience, metrics)
    return adapter, source if isinstance(source, FileSource) else None


def _read_all(
    path: Path, environ: Mapping[str, str] | None
) -> tuple[AdapterConfig, Document, Path, dict[str, dict[str, str]]]:
    cfg, doc = load_config(path, environ)
    base = path.resolve().parent
    return cfg, doc, base, _code_tables(cfg, doc, base)


async def load_adapters(
    path: Path,
    *,
    schemas: SchemaLookup | None = None,
    registry: CollectorRegistry | None = None,
    metrics: AdapterMetrics | None = None,
    environ: Mapping[str, str] | None = None,
    migrate: bool = True,
    validator: ValidatorFactory = ResponseValidator,
) -> Adapters:
    """Build the backends of every service in the file at ``path``, checked against their schemas.

    ``schemas`` gives each service's registered response schema (a gateway
    passes the schema registry's); without it each service's
    ``response_schema`` file is read. A service with no schema is refused.
    ``registry`` receives the metrics (default: a new one); several files
    loaded into one process share one ``metrics`` instead. ``migrate``
    brings the ``state`` database to the newest migration first.
    ``validator`` compiles a schema into the check every answer passes (default:
    :class:`adapters.schemas.ResponseValidator`, on ``jsonschema``); a gateway
    may pass its cached, compiled validators instead.
    """
    cfg, doc, base, tables = await asyncio.to_thread(_read_all, path, environ)
    metrics = metrics or AdapterMetrics(registry)
    engine: AsyncEngine | None = None
    if cfg.state is not None:
        try:
            if migrate:
                await asyncio.to_thread(db.upgrade, cfg.state)
            engine = db.create_engine(cfg.state)
        except ShahrahError as e:
            raise ConfigError(
                e.message, file=doc.file, line=doc.line_of(["state"]), field="state"
            ) from e
    adapters = Adapters({}, metrics, state_engine=engine)
    try:
        for key, spec in cfg.services.items():
            sid = ServiceId.parse(key)
            ctx = BuildContext(
                service=sid,
                doc=doc,
                where=("services", key),
                base_dir=base,
                tables=tables,
                metrics=metrics,
                state=db.sessions(engine) if engine is not None else None,
            )
            lookup = schemas
            if lookup is None and spec.response_schema is not None:
                lookup = FileSchemas({sid: ctx.path(spec.response_schema)})
            try:
                schema = lookup(sid) if lookup is not None else None
            except ValueError as e:
                raise ctx.fail(["response_schema"], str(e)) from None
            if schema is None:
                raise ctx.fail(
                    ["response_schema"],
                    "no response schema is registered for this service; the adapter cannot check "
                    "its mappings (give response_schema: FILE, or load it with a schema lookup)",
                )
            adapter, files = _build_service(sid, spec, schema, ctx, metrics, validator)
            adapters.backends[sid] = adapter
            if files is not None:
                adapters.file_sources.append(files)
    except BaseException:
        await adapters.close()
        raise
    return adapters
