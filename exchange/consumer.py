"""The consumer gateway: r1 requests from local systems, forwarded signed over mutual TLS.

The caller must be one of this gateway's own subsystems. The request is
described in a signed envelope and sent to a gateway that serves the
provider (trying the next one if a gateway cannot be reached). The answer is
accepted only if its response envelope verifies with the provider member's
key, is bound to our request, and describes exactly the status, headers and
body received; it is recorded before the local system sees it.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from pydantic import ValidationError
from yarl import URL

from consent.client import Pseudonym
from core.errors import (
    BadRequestError,
    ClientProxyError,
    InternalError,
    InvalidClientIdentifierError,
    InvalidSignatureError,
    ShahrahError,
    UnknownServiceError,
)
from core.ids import Cnic, GatewayId, ServiceId
from core.web import RELAYED, read_up_to
from exchange import envelope as env_
from exchange.context import METASERVICES, Gateway, read_body
from exchange.envelope import RequestEnvelope, ResponseEnvelope
from exchange.errors import (
    ERROR_TYPE,
    AnswerTooLargeError,
    ClientNetworkError,
    ClientProxyInvalidSignatureError,
    InvalidSecurityServerError,
)
from exchange.provider import service_path
from exchange.r1 import (
    LocalRequest,
    error_response,
    known_type,
    located,
    loggable,
    parse_local,
    response_headers,
)
from registry.globalconf import GatewayInfo, GlobalConfView

__all__ = ["consume"]

log = logging.getLogger(__name__)


class _Answer:
    def __init__(
        self, status: int, headers: dict[str, str], body: bytes, token: str, renv: ResponseEnvelope
    ):
        self.status, self.headers, self.body, self.token, self.renv = (
            status,
            headers,
            body,
            token,
            renv,
        )


async def consume(gw: Gateway, request: web.Request) -> web.StreamResponse:
    started = time.perf_counter()
    local: LocalRequest | None = None
    subject: Cnic | None = None  # whom the exchange is about, as far as known
    sending = _Sending()
    body = b""
    service_label = "unknown"
    try:
        view = gw.globalconf.current()
        local = parse_local(request)
        subject = local.subject
        own = view.gateways.get(gw.id)
        if own is None or own.status != "active":
            raise ClientProxyError(
                f"gateway {gw.id} is not an active gateway in the global configuration"
            )
        if local.client not in own.clients:
            raise InvalidClientIdentifierError(f"{local.client} is not a client of gateway {gw.id}")
        gw.local_clients.check(local.client, request)
        view.require_active_client(local.client)
        body = await read_body(request, gw.limits.max_body, gw.limits.body_timeout)
        sid, path = _resolve(view, local)
        if sid not in view.services:
            subject = None  # a metaservice's answer is about no one: no record names them
        service_label = str(sid)
        targets = view.gateways_for(sid.provider)
        if not targets:
            raise ClientNetworkError(f"no active gateway serves {sid.provider}")
        if local.security_server is not None:
            targets = _targeted(view, targets, local.security_server, sid)
        pseudonym = await gw.subject_pseudonym(subject)
        answer = await _send(gw, view, local, sid, path, body, targets, pseudonym, sending)
        env, token = sending.sent()
        xroad = _xroad_headers(env, answer.renv)
        await gw.record(
            role="consumer",
            message_id=env.message_id,
            request_id=env.request_id,
            client=env.client,
            service=sid,
            method=env.method,
            error=_error_of(answer),
            subject=subject,
            subject_pseudonym=pseudonym.value if pseudonym else None,
            purpose=local.purpose,
            consent_id=local.consent,
            request_body=body,
            response_body=answer.body,
            request_token=token,
            response_token=answer.token,
            fields_released=answer.renv.released_fields,
        )
        kind = answer.renv.headers.get("x-road-error")
        # The provider names its refusal's type: only types we know become a label.
        outcome = "delivered" if kind is None else kind if known_type(kind) else "other"
        gw.metrics.requests.labels("consumer", service_label, outcome).inc()
        gw.metrics.latency.labels("consumer", service_label).observe(time.perf_counter() - started)
        # Only what the provider signed reaches the local system, plus X-Road's own headers.
        response = web.Response(
            status=answer.status,
            headers=response_headers(answer.renv.headers, xroad),
            body=answer.body,
        )
        response[RELAYED] = kind is None  # a refusal is a gateway's message, not the backend's
        return response
    except ShahrahError as e:
        return await _refuse(
            gw, e, local, subject, sending.env, sending.token, body, started, service_label
        )
    except Exception:
        # The label, never the path nor an unregistered service code: either can hold a CNIC.
        log.exception("consumer pipeline failed on %s", service_label)
        return await _refuse(
            gw,
            InternalError("internal error in the consumer gateway"),
            local,
            subject,
            sending.env,
            sending.token,
            body,
            started,
            service_label,
        )


def _resolve(view: GlobalConfView, local: LocalRequest) -> tuple[ServiceId, str]:
    """The service id and the backend path for an r1 URL (metaservices included)."""
    if local.service_code in METASERVICES:
        sid = local.provider.service(local.service_code)
        if sid not in view.services:
            if local.provider not in view.subsystems:
                # Refused here, so no caller can name providers without end (each would be
                # a metric series of its own).
                raise UnknownServiceError(f"{local.provider} is not a registered subsystem")
            if local.rest:
                raise UnknownServiceError(f"{local.service_code} takes no path")
            return sid, ""
    sid, rest = view.resolve_service(local.provider, local.service_code, list(local.rest))
    return sid, ("/" + "/".join(rest)) if rest else ""


def _targeted(
    view: GlobalConfView, targets: list[GatewayInfo], server: GatewayId, sid: ServiceId
) -> list[GatewayInfo]:
    """The one gateway ``X-Road-Security-Server`` names (PR-REST 4.3), if it serves the
    provider: the caller chose it, so no other gateway of the provider is tried instead."""
    info = view.gateways.get(server)
    if info is None or info.status != "active":
        raise InvalidSecurityServerError(f"{server} is no active gateway of the federation")
    chosen = [t for t in targets if t.id == server]
    if not chosen:
        raise InvalidSecurityServerError(f"gateway {server} does not serve {sid.provider}")
    return chosen


async def _send(
    gw: Gateway,
    view: GlobalConfView,
    local: LocalRequest,
    sid: ServiceId,
    path: str,
    body: bytes,
    targets: list[GatewayInfo],
    pseudonym: Pseudonym | None,
    sending: _Sending,
) -> _Answer:
    headers = dict(local.headers)
    for name, value in (
        ("X-Road-UserId", local.user_id),
        ("X-Road-Issue", local.issue),
        ("X-Road-Represented-Party", local.represented_party),
    ):
        if value is not None:
            headers[name] = value
    failures = []
    for target in targets:
        env = _envelope(
            gw,
            local,
            sid,
            target,
            path=path,
            headers=env_.envelope_headers(headers),
            body=body,
            pseudonym=pseudonym,
        )
        token = env_.seal(env, gw.key)
        if len(token) > env_.MAX_ENVELOPE:
            raise BadRequestError(
                f"the request's headers, path and query make its signed envelope larger than "
                f"{env_.MAX_ENVELOPE} bytes"
            )
        url = (
            target.address.rstrip("/")
            + service_path(sid)
            + path
            + (f"?{local.query}" if local.query else "")
        )
        if not target.address.startswith("https://"):
            # Only over pinned TLS: an http:// address would carry the envelope and body in
            # the clear to whoever answers (the registry accepts none; a view may be older).
            failures.append(f"{target.id}: registered at an address that is not https://")
            continue
        # A refusal from here on is recorded with this envelope: once sent, the provider may
        # have delivered it, and its record names this request id.
        sending.env, sending.token = env, token
        try:
            answer = await _post(gw, view, target, url, env, token, headers, body)
        except _Unreachable as e:
            # Nothing reached that gateway, so the next one may have it; once a request has
            # gone out it is never sent again (a second gateway would run it a second time).
            # Nor is it recorded as sent: no provider will have a record of it.
            sending.env = sending.token = None
            failures.append(f"{target.id}: {e.message}")
            continue
        return answer
    raise ClientNetworkError("no provider gateway answered: " + "; ".join(failures))


@dataclass
class _Sending:
    """The request envelope last sealed for a provider gateway, and its token."""

    env: RequestEnvelope | None = None
    token: str | None = None

    def sent(self) -> tuple[RequestEnvelope, str]:
        assert self.env is not None
        assert self.token is not None
        return self.env, self.token


class _Unreachable(ClientNetworkError):
    """The connection to a provider gateway could not be made: the request never left."""


def _envelope(
    gw: Gateway,
    local: LocalRequest,
    sid: ServiceId,
    target: GatewayInfo,
    *,
    path: str,
    headers: dict[str, str],
    body: bytes,
    pseudonym: Pseudonym | None,
) -> RequestEnvelope:
    """The envelope describing the request; it names the subject only with the statement
    of its pseudonym (a metaservice call, about no one, names none)."""
    try:
        return RequestEnvelope(
            message_id=local.message_id,
            request_id=str(uuid.uuid4()),
            client=local.client,
            service=sid,
            sender=gw.id,
            recipient=target.id,
            method=local.method,
            path=path,
            query=local.query,
            headers=headers,
            body_sha256=env_.body_digest(body),
            body_length=len(body),
            subject=local.subject.to_user_id() if local.subject and pseudonym else None,
            subject_statement=pseudonym.statement if pseudonym else None,
            purpose=local.purpose,
            consent=local.consent,
            time=gw.clock(),
            nonce=env_.new_nonce(),
        )
    except ValidationError as e:
        # parse_local checks what a caller controls; this is the net under it, so that a
        # request the envelope cannot describe is refused as the caller's, never a crash.
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise BadRequestError(f"the request cannot be sent: {where}: {err['msg']}") from e


async def _post(
    gw: Gateway,
    view: GlobalConfView,
    target: GatewayInfo,
    url: str,
    env: RequestEnvelope,
    token: str,
    headers: dict[str, str],
    body: bytes,
) -> _Answer:
    # The connect bound is the socket's alone: waiting for one of the connections a busy
    # provider may have is not failing to reach it, and counts against the total only.
    timeout = aiohttp.ClientTimeout(
        total=gw.limits.peer_timeout, sock_connect=gw.limits.connect_timeout
    )
    try:
        async with gw.peers.session.request(
            env.method,
            URL(url, encoded=True),
            headers={**headers, env_.ENVELOPE_HEADER: token},
            data=body or None,
            ssl=gw.peers.context(target),
            allow_redirects=False,
            timeout=timeout,
        ) as resp:
            limit = gw.limits.max_body
            data = await read_up_to(resp.content, limit + 1)
            if len(data) > limit:
                raise AnswerTooLargeError(
                    f"the provider's answer is larger than this gateway's limit of {limit} bytes"
                )
            rtoken = resp.headers.get(env_.ENVELOPE_HEADER, "")
            rheaders = {
                k: v for k, v in resp.headers.items() if k.lower() != env_.ENVELOPE_HEADER.lower()
            }
            status = resp.status
    # Before the other failures: these subclass them, and only these mean nothing was sent.
    except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as e:
        raise _Unreachable(f"cannot connect to {target.address}: {type(e).__name__}") from e
    except TimeoutError as e:
        raise ClientNetworkError(f"no answer within {gw.limits.peer_timeout} s") from e
    except aiohttp.ClientError as e:
        raise ClientNetworkError(
            f"the exchange with {target.address} failed: {type(e).__name__}"
        ) from e
    renv = _verify(gw, view, env, token, target, status, rheaders, data, rtoken)
    return _Answer(status, rheaders, data, rtoken, renv)


def _verify(
    gw: Gateway,
    view: GlobalConfView,
    env: RequestEnvelope,
    token: str,
    target: GatewayInfo,
    status: int,
    headers: dict[str, str],
    body: bytes,
    rtoken: str,
) -> ResponseEnvelope:
    """The provider's answer, accepted only if signed, bound to our request, intact and
    fresh."""
    if not rtoken:
        raise ClientProxyInvalidSignatureError(
            "the provider's answer carries no signed response envelope"
        )
    try:
        renv = env_.open_response(rtoken, view, env)
    except InvalidSignatureError as e:
        raise ClientProxyInvalidSignatureError(f"response signature: {e.message}") from e
    if renv.request_hash != env_.request_hash(token) or renv.message_id != env.message_id:
        raise ClientProxyInvalidSignatureError("the provider's answer is not bound to this request")
    if renv.responder != target.id:
        raise ClientProxyInvalidSignatureError(
            f"the answer was signed for {renv.responder}, not {target.id}"
        )
    if (
        renv.status != status
        or renv.body_sha256 != env_.body_digest(body)
        or renv.body_length != len(body)
    ):
        raise ClientProxyInvalidSignatureError(
            "the provider's answer does not match its signed envelope"
        )
    if not env_.matches(headers, renv.headers):
        raise ClientProxyInvalidSignatureError(
            "the provider's answer headers do not match its envelope"
        )
    kind = renv.headers.get("x-road-error")
    if kind is not None and not ERROR_TYPE.fullmatch(kind):
        raise ClientProxyInvalidSignatureError(
            "the provider's answer names something other than an X-Road error type"
        )
    if not _is_refusal(renv, body) and (
        abs((renv.time - gw.clock()).total_seconds()) > gw.limits.freshness
    ):
        # A key is checked at the answer's own time: an answer claiming another time could
        # be signed by a key rotated out long ago, and would not be what was just answered.
        # A signed refusal releases nothing and says why (a provider whose clock is off
        # refuses as outdated), so it is passed on whatever its time.
        raise ClientProxyInvalidSignatureError(
            f"the provider's answer is dated {renv.time.isoformat()}, outside the "
            f"{gw.limits.freshness:g} s freshness window"
        )
    return renv


def _is_refusal(renv: ResponseEnvelope, body: bytes) -> bool:
    """Whether a verified answer is a provider gateway's refusal, which alone may be dated
    outside the window: an error status and an r1 error body of the type its header names,
    so that nothing but the refusal can be passed on under that exemption."""
    kind = renv.headers.get("x-road-error")
    if kind is None or renv.status < 400:
        return False
    try:
        error = json.loads(body)
    except (ValueError, RecursionError):  # a provider's body nested past the parser's depth
        return False
    return (
        isinstance(error, dict)
        and set(error) == {"type", "message", "detail"}
        and error["type"] == kind
        and all(isinstance(value, str) for value in error.values())
    )


def _xroad_headers(env: RequestEnvelope, renv: ResponseEnvelope) -> dict[str, str]:
    headers = {
        "X-Road-Client": str(env.client),
        # The serviceId as PR-REST 4.1 defines it, INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE:
        # to an r1 caller a version is part of the path, and X-Road's clients refuse a
        # sixth part.
        "X-Road-Service": str(env.service.provider.service(env.service.service_code)),
        "X-Road-Id": env.message_id,
        "X-Road-Request-Id": env.request_id,
        "X-Road-Request-Hash": renv.request_hash,
    }
    if "x-road-error" in renv.headers:  # a refusal by the provider gateway, signed by it
        headers["X-Road-Error"] = renv.headers["x-road-error"]
    return headers


def _error_of(answer: _Answer) -> ShahrahError | None:
    """The provider's refusal as an error for our record (None when delivered)."""
    kind = answer.renv.headers.get("x-road-error")
    if kind is None:
        return None
    try:
        message = str(json.loads(answer.body).get("message", ""))
    except (ValueError, AttributeError, RecursionError):
        message = ""
    error = ShahrahError(message)
    error.xroad_type = kind
    return error


async def _refuse(
    gw: Gateway,
    error: ShahrahError,
    local: LocalRequest | None,
    subject: Cnic | None,
    env: RequestEnvelope | None,
    token: str | None,
    body: bytes,
    started: float,
    service_label: str,
) -> web.StreamResponse:
    error_id = str(uuid.uuid4())
    error = located(error, "ClientProxy")
    log.info("refused local request: %s (%s) [%s]", error.xroad_type, loggable(error), error_id)
    try:
        await gw.record(
            role="consumer",
            message_id=local.message_id if local else "-",
            request_id=env.request_id if env else None,
            client=local.client if local else None,
            # What the caller asked for, even if no such service is registered.
            service=env.service
            if env
            else (local.provider.service(local.service_code) if local else None),
            method=local.method if local else None,
            error=error,
            subject=subject,
            purpose=local.purpose if local else None,
            consent_id=local.consent if local else None,
            request_body=body or None,
            request_token=token,
        )
    except Exception:
        log.exception("could not record refusal %s in the audit log", error_id)
    gw.metrics.requests.labels("consumer", service_label, error.xroad_type).inc()
    gw.metrics.latency.labels("consumer", service_label).observe(time.perf_counter() - started)
    xroad = {"X-Road-Id": local.message_id} if local else {}
    if local:
        xroad["X-Road-Client"] = str(local.client)
    return error_response(error, error_id, xroad)
