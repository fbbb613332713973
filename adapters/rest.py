"""REST/JSON backends: another API with another shape.

A route names the upstream request (method, path and query templates whose
``{param}`` are filled with the normalised parameters, percent-encoded) and
maps the JSON answer with JSON Pointers. Upstream statuses listed in
``not_found`` mean "no such record"; 429, 502, 503 and 504 and connection
failures may pass and are retried (for idempotent routes); every other status
is a failure that names it.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

import aiohttp
from pydantic import Field, field_validator

from adapters.base import BackendRequest
from adapters.errors import BackendFailure
from adapters.mapping import JsonNode, Node, pointer_tokens
from adapters.routes import CompiledRoute, fill, fill_path, placeholders
from adapters.spec import BuildContext, MappedRouteSpec, ServiceSpec
from core.errors import BadRequestError
from core.web import never_twice, parse_json, read_up_to

__all__ = ["RestRoute", "RestService", "RestSource"]

_RETRYABLE = {429, 502, 503, 504}


class RestRoute(MappedRouteSpec):
    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    path: str  # upstream path template below the service's url, e.g. /citizens/{cnic}
    query: dict[str, str] = Field(default_factory=dict)  # upstream query: name -> template
    not_found: list[int] = Field(default_factory=lambda: [404])


class RestService(ServiceSpec):
    kind: Literal["rest"]
    url: str  # upstream base URL (http or https)
    headers: dict[str, str] = Field(default_factory=dict)  # sent on every request
    max_response_bytes: int = Field(default=10 * 2**20, gt=0)  # bytes
    max_connections: int = Field(default=20, gt=0, le=1000)
    routes: dict[str, RestRoute]

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")


class RestSource:
    kind = "rest"

    def __init__(self, spec: RestService, ctx: BuildContext) -> None:
        self.spec = spec
        self._session: aiohttp.ClientSession | None = None
        self._routes: dict[str, RestRoute] = {}
        for key, route in spec.routes.items():
            if not route.path.startswith("/"):
                raise ctx.fail(["routes", key, "path"], "the upstream path must start with '/'")
            used = placeholders(route.path).union(*(placeholders(v) for v in route.query.values()))
            ctx_params = set(route.params) | _path_names(key)
            unknown = used - ctx_params
            if unknown:
                raise ctx.fail(
                    ["routes", key], f"templates use undeclared parameters: {sorted(unknown)}"
                )
        self._by_key = dict(spec.routes)

    def check_path(self, path: str, repeated: bool) -> None:
        """A REST answer is addressed with JSON Pointers."""
        pointer_tokens(path)

    def plan(self, route: CompiledRoute, key: str) -> None:
        self._routes[route.label] = self._by_key[key]

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.spec.max_connections),
                headers={"Accept": "application/json", **self.spec.headers},
            )
            never_twice(self._session)  # retries are the resilience policy's, per route
        return self._session

    async def fetch(
        self, route: CompiledRoute, params: dict[str, str | None], request: BackendRequest
    ) -> Node | None:
        spec = self._routes[route.label]
        url = self.spec.url + fill_path(spec.path, params)
        query = {k: fill(v, params, str) for k, v in spec.query.items()}
        where = {"backend": "rest", "upstream": f"{spec.method} {spec.path}"}
        try:
            async with self._client().request(
                spec.method, url, params=query, allow_redirects=False
            ) as response:
                if response.status in spec.not_found:
                    return None
                if not 200 <= response.status < 300:
                    raise BackendFailure(
                        f"the upstream API answered HTTP {response.status}",
                        detail={**where, "status": response.status},
                        retryable=response.status in _RETRYABLE,
                    )
                if (
                    response.content_type != "application/json"
                    and not response.content_type.endswith("+json")
                ):
                    raise BackendFailure(
                        f"the upstream API answered {response.content_type!r}, not JSON",
                        detail=where,
                    )
                data = await read_up_to(response.content, self.spec.max_response_bytes + 1)
        except aiohttp.ClientError as e:
            raise BackendFailure(
                f"cannot reach the upstream API: {type(e).__name__}", detail=where, retryable=True
            ) from e
        if len(data) > self.spec.max_response_bytes:
            raise BackendFailure(
                f"the upstream answer is larger than {self.spec.max_response_bytes} bytes",
                detail=where,
            )
        try:
            return JsonNode(parse_json(data))
        except BadRequestError as e:
            raise BackendFailure(
                f"the upstream answer is not valid JSON: {e.message}", detail=where
            ) from e
        except ValueError as e:  # json.loads refuses an integer of more than 4,300 digits
            raise BackendFailure(
                "the upstream answer is not valid JSON: a number is too long", detail=where
            ) from e

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _path_names(key: str) -> set[str]:
    return placeholders(key.partition(" ")[2])
