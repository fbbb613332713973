"""Routes of a service: ``GET /persons/{cnic}`` matched against a request, parameters checked.

A route key is a method and a path pattern whose ``{name}`` segments are
parameters. Parameters not in the path are read from the query string. Each
parameter may be normalised by transforms (a CNIC with or without dashes,
Urdu digits) and must then match its pattern; a parameter that fails is the
caller's mistake, answered 400 and never passed on to the legacy system.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

from pydantic import BaseModel, ConfigDict, Field

from adapters.mapping import CompiledMapping
from adapters.regex import Regex
from adapters.transforms import Transform
from core.errors import BadRequestError, NotFoundError

__all__ = ["CompiledParam", "CompiledRoute", "MethodNotAllowedError", "ParamSpec", "RoutePattern"]

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_PARAM_SEGMENT = re.compile(r"\{(" + _NAME + r")\}")
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
MAX_PARAM_LENGTH = 1024


class MethodNotAllowedError(BadRequestError):
    status = 405
    xroad_type = "Client.MethodNotAllowed"


class ParamSpec(BaseModel):
    """How one parameter is normalised and checked."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    transforms: list[Any] = Field(default_factory=list)
    pattern: str | None = None  # regular expression the normalised value must match in full
    required: bool = True  # query parameters only; path parameters are always present
    default: str | None = None


@dataclass(frozen=True)
class RoutePattern:
    method: str
    segments: tuple[str | None, ...]  # None marks a parameter; its name is in `names`
    names: tuple[str, ...]
    text: str

    @classmethod
    def parse(cls, key: str) -> RoutePattern:
        method, _, path = key.strip().partition(" ")
        path = path.strip()
        if method not in _METHODS:
            raise ValueError(f"route {key!r} must start with a method: {', '.join(_METHODS)}")
        if not path.startswith("/"):
            raise ValueError(f"route {key!r}: the path must start with '/'")
        segments: list[str | None] = []
        names: list[str] = []
        for seg in path.strip("/").split("/") if path != "/" else []:
            m = _PARAM_SEGMENT.fullmatch(seg)
            if m:
                if m.group(1) in names:
                    raise ValueError(f"route {key!r} names parameter {m.group(1)!r} twice")
                names.append(m.group(1))
                segments.append(None)
            elif not seg or "{" in seg or "}" in seg:
                raise ValueError(f"route {key!r}: a parameter must be a whole segment, {{name}}")
            else:
                segments.append(seg)
        return cls(method, tuple(segments), tuple(names), f"{method} {path}")

    def match(self, path: str) -> dict[str, str] | None:
        parts = [] if path.strip("/") == "" else path.strip("/").split("/")
        if len(parts) != len(self.segments):
            return None
        values: dict[str, str] = {}
        names = iter(self.names)
        for want, raw in zip(self.segments, parts, strict=True):
            seg = unquote(raw, errors="strict")
            if want is None:
                if not seg:
                    return None
                values[next(names)] = seg
            elif seg != want:
                return None
        return values


@dataclass(frozen=True)
class CompiledParam:
    name: str
    transforms: tuple[Transform, ...]
    pattern: Regex | None  # the whole value must match
    required: bool
    default: str | None

    def normalise(self, value: str | None) -> str | None:
        if value is None:
            if self.default is not None:
                return self.default
            if self.required:
                raise BadRequestError(
                    f"parameter {self.name!r} is required", detail={"parameter": self.name}
                )
            return None
        if len(value) > MAX_PARAM_LENGTH or any(ord(c) < 0x20 for c in value):
            raise BadRequestError(
                f"parameter {self.name!r} is too long or has control characters",
                detail={"parameter": self.name},
            )
        result: Any = value
        try:
            for fn in self.transforms:
                result = fn(result)
        except ValueError as e:
            raise BadRequestError(
                f"parameter {self.name!r}: {getattr(e, 'reason', str(e))}",
                detail={"parameter": self.name},
            ) from e
        text = "" if result is None else str(result)
        if self.pattern is not None and not self.pattern.fullmatch(text):
            raise BadRequestError(
                f"parameter {self.name!r} must match {self.pattern.pattern}",
                detail={"parameter": self.name},
            )
        return text


@dataclass(frozen=True)
class CompiledRoute:
    """A route ready to serve: pattern, parameters, retry safety and its mapping."""

    pattern: RoutePattern
    params: tuple[CompiledParam, ...]
    idempotent: bool
    mapping: CompiledMapping | None  # None: the backend already answers in the service's JSON

    @property
    def label(self) -> str:
        return self.pattern.text

    def bind(self, path_values: Mapping[str, str], query: str) -> dict[str, str | None]:
        """Every parameter's normalised value, from the path and the query string."""
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=False, errors="strict")
        except UnicodeDecodeError as e:
            raise BadRequestError("the query string is not UTF-8") from e
        query_values: dict[str, str] = {}
        for name, value in pairs:
            if name in query_values:
                raise BadRequestError(
                    f"query parameter {name!r} is given twice", detail={"parameter": name}
                )
            query_values[name] = value
        out: dict[str, str | None] = {}
        for p in self.params:
            raw = path_values.get(p.name, query_values.get(p.name))
            out[p.name] = p.normalise(raw)
        return out


def select(
    routes: Sequence[CompiledRoute], method: str, path: str
) -> tuple[CompiledRoute, dict[str, str]]:
    """The route for ``method path``; NotFoundError or MethodNotAllowedError otherwise."""
    allowed: list[str] = []
    for route in routes:
        try:
            values = route.pattern.match(path)
        except UnicodeDecodeError:
            raise BadRequestError("the path is not UTF-8 once percent-decoded") from None
        if values is None:
            continue
        if route.pattern.method == method or (method == "HEAD" and route.pattern.method == "GET"):
            return route, values
        allowed.append(route.pattern.method)
    if allowed:
        raise MethodNotAllowedError(
            f"{method} is not served here; allowed: {', '.join(sorted(set(allowed)))}"
        )
    raise NotFoundError("no route of this service matches the path")


_PLACEHOLDER = re.compile(r"\{(" + _NAME + r")\}")


def placeholders(template: str) -> set[str]:
    """The ``{name}`` parameters a template uses."""
    return set(_PLACEHOLDER.findall(template))


def fill(template: str, params: Mapping[str, str | None], escape: Any) -> str:
    """``template`` with each ``{name}`` replaced by ``escape(value)`` (absent: empty)."""

    def one(m: re.Match[str]) -> str:
        value = params.get(m.group(1))
        return "" if value is None else str(escape(value))

    return _PLACEHOLDER.sub(one, template)


def fill_path(template: str, params: Mapping[str, str | None]) -> str:
    """A URL path template filled with percent-encoded values; ``.`` or ``..`` is refused.

    Percent-encoding leaves dots alone, and the HTTP client removes dot segments
    before sending, so ``/citizens/{ref}`` with ``..`` would ask for another resource.
    """
    for name in sorted(placeholders(template)):
        if params.get(name) in (".", ".."):
            raise BadRequestError(
                f"parameter {name!r} cannot be '.' or '..'", detail={"parameter": name}
            )
    return fill(template, params, lambda v: quote(v, safe=""))
