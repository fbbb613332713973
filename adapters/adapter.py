"""One adapter: the :class:`adapters.base.Backend` of one service, whatever system is behind.

The pipeline of a call is the same for every kind:

1. pick the route by method and path, and normalise and check its parameters
   (a bad parameter is answered 400 and never reaches the legacy system);
2. fetch the record from the system behind through a :class:`Source` (REST,
   SOAP, SQL or loaded files), under the backend's deadline, retry policy and
   circuit breaker;
3. map it to the service's JSON and validate that against the response schema;
4. answer 200 with the JSON, 404 when the system has no such record.

Anything that goes wrong behind the adapter raises
:class:`core.errors.ServiceFailedError` with a detail that names the service,
route and message id, so the operator can find the call in the logs.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol

from adapters.base import BackendRequest, BackendResponse
from adapters.errors import BackendFailure, MappingError
from adapters.mapping import Node
from adapters.metrics import AdapterMetrics
from adapters.resilience import CircuitBreaker, Resilience, call_with_policy
from adapters.routes import CompiledRoute, select
from adapters.schemas import ResponseCheck
from core.errors import BadRequestError, NotFoundError, ShahrahError
from core.ids import ServiceId

__all__ = ["Adapter", "Source"]

log = logging.getLogger(__name__)

_JSON_HEADERS = {"Content-Type": "application/json"}


class Source(Protocol):
    """How one kind of legacy system is asked for the record of a route."""

    kind: str

    async def fetch(
        self, route: CompiledRoute, params: dict[str, str | None], request: BackendRequest
    ) -> Node | None:
        """The record for ``params`` (None: the system has none); BackendFailure otherwise."""
        ...

    async def close(self) -> None: ...


def _error_response(error: ShahrahError) -> BackendResponse:
    body = json.dumps(error.to_json(), ensure_ascii=False).encode("utf-8")
    return BackendResponse(status=error.status, headers=_JSON_HEADERS, body=body)


class Adapter:
    """The Backend of one service."""

    def __init__(
        self,
        service: ServiceId,
        source: Source,
        routes: Sequence[CompiledRoute],
        validator: ResponseCheck,
        policy: Resilience,
        metrics: AdapterMetrics,
    ) -> None:
        self.service = service
        self.source = source
        self.routes = tuple(routes)
        self.validator = validator
        self.policy = policy
        self.metrics = metrics
        self.breaker = CircuitBreaker(policy.breaker_failures, policy.breaker_reset)
        self._label = str(service)
        metrics.circuit_state.labels(self._label).set(0)

    async def call(self, request: BackendRequest) -> BackendResponse:
        started = time.perf_counter()
        route_label = "(no route)"
        try:
            try:
                route, path_values = select(self.routes, request.method.upper(), request.path)
                route_label = route.label
                params = route.bind(path_values, request.query)
            except BadRequestError as e:
                self.metrics.calls.labels(self._label, route_label, "bad_request").inc()
                return _error_response(e)
            except NotFoundError as e:
                self.metrics.calls.labels(self._label, route_label, "not_found").inc()
                return _error_response(e)
            try:
                document = await self._answer(route, params, request)
            except BadRequestError as e:  # a parameter the source cannot send on
                self.metrics.calls.labels(self._label, route_label, "bad_request").inc()
                return _error_response(e)
            except BackendFailure as e:
                self._fail(e, route_label, request)
                raise
            if document is None:
                self.metrics.calls.labels(self._label, route_label, "not_found").inc()
                return _error_response(
                    NotFoundError(
                        "the system behind has no such record", detail={"route": route_label}
                    )
                )
            self.metrics.calls.labels(self._label, route_label, "ok").inc()
            body = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
            if request.method.upper() == "HEAD":
                return BackendResponse(status=200, headers=_JSON_HEADERS)
            return BackendResponse(status=200, headers=_JSON_HEADERS, body=body.encode("utf-8"))
        finally:
            self.metrics.latency.labels(self._label, self.source.kind).observe(
                time.perf_counter() - started
            )

    async def _answer(
        self, route: CompiledRoute, params: dict[str, str | None], request: BackendRequest
    ) -> dict[str, Any] | None:
        def retried(_: BackendFailure) -> None:
            self.metrics.retries.labels(self._label).inc()

        def opened() -> None:
            self.metrics.circuit_opened.labels(self._label).inc()

        try:
            node = await call_with_policy(
                lambda: self.source.fetch(route, params, request),
                policy=self.policy,
                breaker=self.breaker,
                idempotent=route.idempotent,
                on_retry=retried,
                on_open=opened,
            )
        finally:
            self.metrics.circuit_state.labels(self._label).set(int(self.breaker.state))
        if node is None:
            return None
        record = f"the answer to {route.label}"
        if route.mapping is not None:
            document = route.mapping.apply(node, record)
        else:
            stored = getattr(node, "doc", None)
            if not isinstance(stored, dict):
                raise BackendFailure("the stored record is not a JSON object")
            document = stored
        problem = self.validator.problem(document)
        if problem is not None:
            raise MappingError(record, problem[0], f"the service's schema refuses it: {problem[1]}")
        return document

    def _fail(self, error: BackendFailure, route: str, request: BackendRequest) -> None:
        outcome = (
            "rejected" if isinstance(error.detail, dict) and "circuit" in error.detail else "failed"
        )
        if isinstance(error, MappingError):
            self.metrics.mapping_errors.labels(self._label, route).inc()
        self.metrics.calls.labels(self._label, route, outcome).inc()
        trace = {"service": self._label, "route": route, "message_id": request.message_id}
        error.detail = {**error.detail, **trace} if isinstance(error.detail, dict) else trace
        log.warning(
            "adapter call failed: service=%s route=%s message_id=%s: %s",
            self._label,
            route,
            request.message_id,
            error.message,
        )

    async def close(self) -> None:
        await self.source.close()
