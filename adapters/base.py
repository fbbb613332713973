"""The contract between a gateway and the system behind a service.

A provider gateway hands each admitted request to a :class:`Backend` and gets
a :class:`BackendResponse` back. A backend may be the provider's own REST API
reached over HTTP (the gateway's pass-through) or an adapter that speaks to a
legacy system (SOAP, SQL, files) and answers in the service's JSON shape.
Adapters implement this protocol, so they run inside a gateway or on their
own behind ``shahrah adapter serve`` without change.

A backend that cannot answer raises :class:`core.errors.ServiceFailedError`
(``Server.ServerProxy.ServiceFailed``) with a ``detail`` the operator can
trace in the backend's own logs; it never lets a library's exception escape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from core.ids import ClientId, ServiceId

__all__ = ["Backend", "BackendRequest", "BackendResponse"]


@dataclass(frozen=True)
class BackendRequest:
    """One admitted request, as the provider's system should see it."""

    service: ServiceId
    client: ClientId
    message_id: str
    method: str
    path: str  # after the service id (and version), always starting with '/'
    query: str = ""  # raw query string without '?', passed through unmodified
    headers: Mapping[str, str] = field(default_factory=dict)  # end-to-end headers only
    body: bytes = b""


@dataclass(frozen=True)
class BackendResponse:
    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def content_type(self) -> str:
        for name, value in self.headers.items():
            if name.lower() == "content-type":
                return value.split(";", 1)[0].strip().lower()
        return ""


@runtime_checkable
class Backend(Protocol):
    async def call(self, request: BackendRequest) -> BackendResponse:
        """Answer one request; raise ServiceFailedError when the system behind cannot."""
        ...

    async def close(self) -> None:
        """Release connections and pools."""
        ...
