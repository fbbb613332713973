"""What every kind's configuration shares, and what a kind gets when it is built.

Each kind of backend (``rest``, ``soap``, ``sql``, ``files``) declares its
service and route models by extending :class:`ServiceSpec` and
:class:`RouteSpec`, and builds its :class:`adapters.adapter.Source` from a
:class:`BuildContext`. :mod:`adapters.config` joins the kinds into one file
format, discriminated by ``kind``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from adapters.errors import ConfigError
from adapters.mapping import FieldMap
from adapters.metrics import AdapterMetrics
from adapters.resilience import Resilience
from adapters.routes import ParamSpec
from adapters.yamlfile import Document
from core.db import Sessions
from core.ids import ServiceId

__all__ = ["BuildContext", "RouteSpec", "ServiceSpec"]


class RouteSpec(BaseModel):
    """Settings every route has, whatever the kind."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    params: dict[str, ParamSpec] = Field(default_factory=dict)
    # Whether the call may be repeated after a failure; default: GET and HEAD routes are,
    # and every SQL and file route (they only read).
    idempotent: bool | None = None


class MappedRouteSpec(RouteSpec):
    mapping: dict[str, FieldMap]


class ServiceSpec(BaseModel):
    """Settings every service has, whatever the kind."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    response_schema: str | None = None  # local JSON Schema file, relative to the config file
    resilience: Resilience = Field(default_factory=Resilience)


@dataclass(frozen=True)
class BuildContext:
    """What a kind needs to build its source: where it is in the file, and shared services."""

    service: ServiceId
    doc: Document
    where: tuple[str | int, ...]  # the service's path in the document
    base_dir: Path  # relative paths in the file are relative to its folder
    tables: Mapping[str, Mapping[str, Any]]
    metrics: AdapterMetrics
    state: Sessions | None  # database of loaded file records, if the file names one

    def fail(self, where: Sequence[str | int], message: str) -> ConfigError:
        """The configuration error for the spot ``where`` below this service."""
        path = (*self.where, *where)
        return ConfigError(
            message,
            file=self.doc.file,
            line=self.doc.line_of(path),
            field=" → ".join(str(p) for p in path),
        )

    def path(self, value: str) -> Path:
        p = Path(value)
        return p if p.is_absolute() else (self.base_dir / p)
