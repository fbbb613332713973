"""X-Road error types that only gateways raise."""

from __future__ import annotations

import re

from core.errors import ClientProxyError, ServerProxyError

__all__ = [
    "ERROR_TYPE",
    "AnswerTooLargeError",
    "ClientNetworkError",
    "ClientProxyInvalidSignatureError",
    "InvalidSecurityServerError",
    "LocalSslAuthenticationFailedError",
    "ProviderNetworkError",
    "PseudonymUnavailableError",
    "SslAuthenticationFailedError",
]

#: The shape of an X-Road error type (PR-REST's CamelCase fault codes, dot-separated), as a
#: provider gateway may name one in its signed refusal; at most 255 characters, as the audit
#: record that keeps it.
ERROR_TYPE = re.compile(r"(?=.{1,255}\Z)(?:Client|Server)(?:\.[A-Za-z][A-Za-z0-9]{0,63}){1,4}")


class ProviderNetworkError(ServerProxyError):
    """The provider gateway could not reach the system behind the service."""

    status = 502
    xroad_type = "Server.ServerProxy.NetworkError"


class SslAuthenticationFailedError(ServerProxyError):
    """The TLS peer is not a registered, active gateway of the sending member."""

    status = 403
    xroad_type = "Server.ServerProxy.SslAuthenticationFailed"


class LocalSslAuthenticationFailedError(ClientProxyError):
    """A local system's TLS connection does not prove the client subsystem it names."""

    status = 403
    xroad_type = "Server.ClientProxy.SslAuthenticationFailed"


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


class AnswerTooLargeError(ClientProxyError):
    """The provider's answer is larger than this gateway's body limit: it was signed and may
    be intact, but is not taken in (a consumer's limit should be no smaller than its
    providers')."""

    status = 502
    xroad_type = "Server.ClientProxy.ResponseTooLarge"
