"""Who may read audit logs: regulators, named by the federation's global configuration.

Audit entries are personal data, so only regulators read them. A regulator
is a subsystem of a member (the regulator agency's console, the citizen
timeline service) listed in the global group ``audit-regulators``, which the
operator maintains with ``shahrah registry group``. It authenticates every
request with a member-signed assertion (registry.memberauth: signed with one
of its member's registered keys, bound to the audience, method, path, body
and a time within 60 s, never replayable). So the credential needs no
per-gateway configuration, no shared secret to leak, and removing the
subsystem from the group or revoking the key ends access everywhere at the
next global configuration.

The audience is the service being read: a gateway's log read API expects
its own gateway id, the audit server expects ``audit-witness``.
"""

from __future__ import annotations

from aiohttp import web
from yarl import URL

from core.errors import ForbiddenError
from core.ids import ClientId
from core.keys import PrivateKey
from registry.globalconf import GlobalConfView
from registry.memberauth import SCHEME, MemberRequestVerifier, sign_request

__all__ = [
    "REGULATORS_GROUP",
    "SECURITY_SCHEME",
    "RegulatorAuthenticator",
    "authorization",
    "require_regulator",
]

REGULATORS_GROUP = "audit-regulators"

#: OpenAPI description of the credential, for every API that takes it.
SECURITY_SCHEME = {
    "type": "apiKey",
    "in": "header",
    "name": "Authorization",
    "description": (
        f"'{SCHEME} <JWS>': a member-signed request (registry.memberauth) by a subsystem "
        f"in the global group '{REGULATORS_GROUP}'"
    ),
}


def require_regulator(view: GlobalConfView, client: ClientId) -> ClientId:
    """``client`` if ``view`` lists it in the regulators' global group, else ForbiddenError."""
    group = next((g for g in view.conf.global_groups if g.code == REGULATORS_GROUP), None)
    if group is None or client not in group.members:
        raise ForbiddenError(f"{client} is not in the global group {REGULATORS_GROUP!r}")
    return client


class RegulatorAuthenticator:
    """A core.web.Api authenticator: the verified regulator subsystem, or 401/403."""

    def __init__(self, verifier: MemberRequestVerifier) -> None:
        """``verifier`` may share its nonce memory with other member-signed APIs of a server."""
        self.view = verifier.view
        self.verifier = verifier

    async def __call__(self, request: web.Request) -> ClientId:
        client = await self.verifier.authenticate(request)
        return require_regulator(self.view(), client)


def authorization(
    key: PrivateKey, client: ClientId, *, audience: str, method: str, url: str, body: bytes = b""
) -> str:
    """The ``Authorization`` header for one regulator request to ``url``.

    Signs the path and query exactly as the server will see them after URL
    normalisation (``%2F`` in a query, say, arrives as ``/``), so a base64
    hash in ``get-proof-by-hash`` needs no special care.
    """
    return sign_request(
        key, client, audience=audience, method=method, path=URL(url).raw_path_qs, body=body
    )
