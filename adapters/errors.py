"""The adapters' own errors.

Two audiences: an integrator writing a configuration file (:class:`ConfigError`
names the file, line and field) and a gateway calling a backend at run time
(:class:`BackendFailure` is a :class:`core.errors.ServiceFailedError`, so a
gateway answers ``Server.ServerProxy.ServiceFailed`` with a detail the
operator can trace). Messages never carry a citizen's data: values stay out of
them, and only the dead-letter files an operator reads hold raw records.
"""

from __future__ import annotations

from typing import Any

from core.errors import ServiceFailedError, ShahrahError

__all__ = ["BackendFailure", "ConfigError", "MappingError", "TransformError"]


class ConfigError(ShahrahError):
    """An adapter configuration that cannot be used; the message names where and why."""

    status = 400
    xroad_type = "Server.ServerProxy.AdapterConfig"

    def __init__(
        self, message: str, *, file: str | None = None, line: int | None = None, field: str = ""
    ) -> None:
        where = ":".join(str(p) for p in (file, line) if p is not None)
        prefix = f"{where}: " if where else ""
        at = f"{field}: " if field else ""
        super().__init__(
            f"{prefix}{at}{message}", detail={"file": file, "line": line, "field": field}
        )
        self.file = file
        self.line = line
        self.field = field


class BackendFailure(ServiceFailedError):
    """The legacy system did not answer usably.

    ``retryable`` says whether trying again might help (a refused connection, a
    timeout, HTTP 503, a SOAP Receiver fault) as opposed to a failure that will
    repeat (a Sender fault, a SQL syntax error, a mapping error).
    """

    def __init__(self, message: str, *, detail: Any = None, retryable: bool = False) -> None:
        super().__init__(message, detail=detail)
        self.retryable = retryable


class TransformError(ValueError):
    """A value a transform cannot turn into what it promises.

    ``reason`` describes the problem without the value; ``value`` is kept apart
    so that only dead-letter files (read by the operator) show it.
    """

    def __init__(self, reason: str, value: Any = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.value = value


class MappingError(BackendFailure):
    """One record could not be mapped to the service's JSON: names the record and the field."""

    def __init__(self, record: str, field: str, reason: str, *, value: Any = None) -> None:
        super().__init__(
            f"cannot map field {field} of {record}: {reason}",
            detail={"record": record, "field": field, "reason": reason},
        )
        self.record = record
        self.field = field
        self.reason = reason
        self.value = value
