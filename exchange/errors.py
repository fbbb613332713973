"""X-Road error types that only gateways raise."""

from __future__ import annotations

from core.errors import ClientProxyError, ServerProxyError

__all__ = [
    "ClientNetworkError",
    "ClientProxyInvalidSignatureError",
    "InvalidSecurityServerError",
    "ProviderNetworkError",
    "PseudonymUnavailableError",
    "SslAuthenticationFailedError",
]


class ProviderNetworkError(ServerProxyError):
    """The provider gateway could not reach the system behind the service."""

    status = 502
    xroad_type = "Server.ServerProxy.NetworkError"


class SslAuthenticationFailedError(ServerProxyError):
    """The TLS peer is not a registered, active gateway of the sending member."""

    status = 403
    xroad_type = "Server.ServerProxy.SslAuthenticationFailed"


class ClientNetworkError(ClientProxyError):
    """The consumer gateway could not reach any provider gateway."""

    status = 502
    xroad_type = "Server.ClientProxy.NetworkError"


class ClientProxyInvalidSignatureError(ClientProxyError):
    """The provider's answer did not verify or was not bound to our request."""

    status = 502
    xroad_type = "Server.ClientProxy.InvalidSignature"


class PseudonymUnavailableError(ClientProxyError):
    """The consumer gateway could not get the data subject's pseudonym (the consent service
    refused the lookup beyond the member's limit, or could not be asked), so the exchange
    is refused rather than recorded without its subject."""

    status = 503
    xroad_type = "Server.ClientProxy.PseudonymUnavailable"


class InvalidSecurityServerError(ClientProxyError):
    """``X-Road-Security-Server`` names no active gateway that serves the provider."""

    xroad_type = "Server.ClientProxy.InvalidSecurityServer"
