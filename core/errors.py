"""One exception hierarchy for all of Shahrah.

Every error that can reach a caller knows two things: the HTTP status a
management API answers with, and the X-Road error type (``Client.*``,
``Server.ClientProxy.*``, ``Server.ServerProxy.*``) the message protocol
uses. One aiohttp middleware per API style (see :mod:`core.web`) renders them;
handlers never build error JSON by hand.

The r1 message protocol itself maps *types* to statuses (``Client.*`` is 400,
everything else 500, as PR-REST 4.6 says); :func:`r1_status` implements that
rule so the gateway and the management APIs can share one class per failure.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AccessDeniedError",
    "BadRequestError",
    "ClientProxyError",
    "ConflictError",
    "ConsentDeniedError",
    "ForbiddenError",
    "InternalError",
    "InvalidClientIdentifierError",
    "InvalidServiceIdentifierError",
    "InvalidSignatureError",
    "NotFoundError",
    "OutdatedGlobalConfError",
    "PayloadTooLargeError",
    "ServerProxyError",
    "ServiceFailedError",
    "ShahrahError",
    "TooManyRequestsError",
    "UnauthorizedError",
    "UnknownServiceError",
    "UnprocessableError",
    "r1_status",
]


class ShahrahError(Exception):
    """Root of every error Shahrah raises on purpose.

    ``message`` is safe to show to the caller; ``detail`` carries structured
    context (a field name, a JSON pointer) and never a secret.
    """

    status: int = 500
    xroad_type: str = "Server.InternalError"

    def __init__(self, message: str, *, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def to_json(self) -> dict[str, Any]:
        """The X-Road error body: ``{"type", "message", "detail"}``."""
        return {"type": self.xroad_type, "message": self.message, "detail": self.detail}


def r1_status(error: ShahrahError) -> int:
    """HTTP status for an error on the X-Road REST protocol (PR-REST 4.6)."""
    return 400 if error.xroad_type.startswith("Client.") else 500


# --- Client.*: the caller sent something wrong -------------------------------------------


class BadRequestError(ShahrahError):
    """Malformed input: an identifier, a header, a body, a parameter."""

    status = 400
    xroad_type = "Client.BadRequest"


class InvalidClientIdentifierError(BadRequestError):
    xroad_type = "Client.InvalidClientIdentifier"


class InvalidServiceIdentifierError(BadRequestError):
    xroad_type = "Client.InvalidServiceIdentifier"


class UnprocessableError(BadRequestError):
    """Well-formed but semantically invalid input (e.g. a schema that fails its meta-schema)."""

    status = 422
    xroad_type = "Client.UnprocessableEntity"


class PayloadTooLargeError(BadRequestError):
    status = 413
    xroad_type = "Client.PayloadTooLarge"


class TooManyRequestsError(ShahrahError):
    """Too many attempts in a short time (sign-in failures): wait ``detail['retry_after']`` s."""

    status = 429
    xroad_type = "Client.TooManyRequests"


class UnauthorizedError(ShahrahError):
    """Missing or wrong credentials on a management API."""

    status = 401
    xroad_type = "Client.Unauthorized"


class ForbiddenError(ShahrahError):
    """Authenticated, but this caller may not do this."""

    status = 403
    xroad_type = "Client.Forbidden"


class NotFoundError(ShahrahError):
    status = 404
    xroad_type = "Client.NotFound"


class ConflictError(ShahrahError):
    """The object already exists, or the change contradicts the current state."""

    status = 409
    xroad_type = "Client.Conflict"


# --- Server.ClientProxy.*: the consumer's own gateway cannot go on ------------------------


class ClientProxyError(ShahrahError):
    xroad_type = "Server.ClientProxy.InternalError"


class OutdatedGlobalConfError(ClientProxyError):
    """No verified, unexpired global configuration: the gateway fails closed."""

    status = 503
    xroad_type = "Server.ClientProxy.OutdatedGlobalConf"


# --- Server.ServerProxy.*: the provider's gateway refused or failed ---------------------


class ServerProxyError(ShahrahError):
    xroad_type = "Server.ServerProxy.InternalError"


class AccessDeniedError(ServerProxyError):
    status = 403
    xroad_type = "Server.ServerProxy.AccessDenied"


class ConsentDeniedError(AccessDeniedError):
    """Shahrah's extension: the access right holds but the citizen's consent does not."""

    xroad_type = "Server.ServerProxy.ConsentDenied"


class UnknownServiceError(ServerProxyError):
    status = 404
    xroad_type = "Server.ServerProxy.UnknownService"


class ServiceFailedError(ServerProxyError):
    status = 502
    xroad_type = "Server.ServerProxy.ServiceFailed"


class InvalidSignatureError(ShahrahError):
    """A signature, its key or its payload type did not verify.

    Raised by :mod:`core.jws` for every verification failure, so callers catch
    one class; the gateway re-raises it as the proxy-specific type.
    """

    status = 400
    xroad_type = "Server.ServerProxy.InvalidSignature"


class InternalError(ShahrahError):
    """A bug or an unexpected failure; the message never carries internals."""

    xroad_type = "Server.InternalError"
