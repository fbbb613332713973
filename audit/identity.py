"""Which logs the federation knows, and with which keys their checkpoints are signed.

A log id is either a gateway's id (``INSTANCE/CLASS/MEMBER/GATEWAYCODE``),
whose checkpoints its member signs with a member signing key of the global
configuration, or the name of a central service (``consent``), whose
checkpoints it signs with a key of its JWK Set there. No other key registry
exists: revoking a key in the registry ends its checkpoints too.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from audit.note import log_origin
from core.errors import InvalidSignatureError, NotFoundError, ShahrahError
from core.ids import GatewayId, MemberId
from core.keys import PublicKey
from registry.globalconf import GlobalConfView, KeyInfo

__all__ = ["LogIdentity", "key_valid_at", "log_keys_at", "member_keys_at", "resolve_log"]

_SERVICE_NAME = re.compile(r"[a-z][a-z0-9-]{0,63}")


@dataclass(frozen=True)
class LogIdentity:
    log_id: str
    origin: str
    member: MemberId | None  # the gateway's member; None for a central service's log
    keys: tuple[PublicKey, ...]  # keys that may sign its checkpoints now


def resolve_log(view: GlobalConfView, log_id: str, at: dt.datetime) -> LogIdentity:
    """The identity of ``log_id`` in ``view``, with the keys valid at ``at``; NotFoundError
    if the configuration knows no such gateway or central service."""
    if _SERVICE_NAME.fullmatch(log_id):
        service = view.central_services.get(log_id)
        if service is None:
            raise NotFoundError(f"no central service {log_id!r} keeps an audit log")
        keys = tuple(service.keys.keyset().values())
        return LogIdentity(log_id, log_origin(log_id), None, keys)
    try:
        gateway = GatewayId.parse(log_id)
    except ShahrahError as e:
        raise NotFoundError(f"{log_id!r} is neither a gateway id nor a central service") from e
    if gateway not in view.gateways:
        raise NotFoundError(f"gateway {log_id} is not in the global configuration")
    member = view.members.get(gateway.member)
    valid: list[PublicKey] = []
    for info in member.keys if member else []:
        try:
            valid.append(view.signing_key(gateway.member, info.kid, at))
        except InvalidSignatureError:
            continue  # revoked or outside its validity window
    return LogIdentity(log_id, log_origin(log_id), gateway.member, tuple(valid))


def key_valid_at(info: KeyInfo, at: dt.datetime) -> bool:
    """Whether a member key was valid during the second ``at`` (cosignatures have whole
    seconds): revoked keys too, if they were revoked later."""
    limits = (info.not_after, info.revoked_at)
    return info.not_before < at + dt.timedelta(seconds=1) and all(
        limit is None or limit > at for limit in limits
    )


def member_keys_at(
    view: GlobalConfView, member: MemberId, at: dt.datetime
) -> tuple[PublicKey, ...]:
    """The keys of ``member`` in ``view`` that were valid at ``at``, later revocations aside:
    those that may have signed a checkpoint the witness cosigned then."""
    info = view.members.get(member)
    return (
        tuple(PublicKey.from_jwk(k.jwk) for k in info.keys if key_valid_at(k, at)) if info else ()
    )


def log_keys_at(view: GlobalConfView, log_id: str, at: dt.datetime) -> tuple[PublicKey, ...]:
    """The keys that may have signed a checkpoint of ``log_id`` the witness cosigned at
    ``at``: its member's keys valid then, or the central service's keys."""
    identity = resolve_log(view, log_id, at)
    if identity.member is None:
        return identity.keys
    return member_keys_at(view, identity.member, at)
