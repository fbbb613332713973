"""The provider gateway's pipeline, in the order the checks must run.

TLS pin → signature by a current key of the claimed member → freshness and
replay → request line and body exactly as signed → member and subsystem
status → access right (service or endpoint) → consent when the service
requires it → request body against its schema → backend call with a timeout
→ response against its schema → projection to the consented fields → sign →
durable audit append → respond.

A refusal at any step forwards nothing to the backend, is signed like any
answer (so the consumer can prove what it was told), and is recorded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from adapters.base import BackendRequest, BackendResponse
from consent.rules import DecisionQuery, Permit
from core.errors import (
    AccessDeniedError,
    BadRequestError,
    ClientProxyError,
    ConsentDeniedError,
    InternalError,
    InvalidSignatureError,
    NotFoundError,
    ServiceFailedError,
    ShahrahError,
    UnknownServiceError,
    r1_status,
)
from core.ids import Cnic, ServiceId
from core.tls import peer_pin
from core.web import parse_json
from exchange import envelope as env_
from exchange.context import METASERVICES, Gateway, read_body
from exchange.envelope import RequestEnvelope, ResponseEnvelope
from exchange.errors import ProviderNetworkError, SslAuthenticationFailedError
from exchange.metadata import CONTENT_TYPE as METADATA_TYPE
from exchange.metadata import answer_metaservice
from exchange.r1 import (
    ERROR_HEADER,
    check_request,
    check_target,
    forwardable_headers,
    is_forwardable,
    located,
    loggable,
)
from registry.globalconf import GlobalConfView, SchemaRef, ServiceInfo
from registry.schemareg.validation import member_at, project

__all__ = ["provide", "service_path"]

log = logging.getLogger(__name__)


def service_path(sid: ServiceId) -> str:
    """The r1 URL path of a service: its five parts, then its version as the first segment."""
    return "/r1/" + sid.to_path()


class _Refused(Exception):
    """Carries a refusal out of the pipeline with what is known so far."""


async def provide(gw: Gateway, request: web.Request) -> web.StreamResponse:
    started = time.perf_counter()
    token = request.headers.get(env_.ENVELOPE_HEADER, "")
    env: RequestEnvelope | None = None
    permit: Permit | None = None
    pseudonym: str | None = None
    body = b""
    service_label = "unknown"
    try:
        if not token.isascii():
            # Never a JWS; and the refusal hashes the token it answers, which must be bytes.
            token = ""
            raise InvalidSignatureError(f"the {env_.ENVELOPE_HEADER} header is not ASCII")
        view = gw.globalconf.current()
        env = _authenticate(gw, view, request, token)
        own = view.gateways.get(gw.id)
        if own is None or own.status != "active":
            raise ClientProxyError(
                f"gateway {gw.id} is not an active gateway in the global configuration"
            )
        _check_described(env)
        await gw.replay.admit(env.request_id, str(env.client), env.time, gw.clock())
        body = await read_body(request, gw.limits.max_body, gw.limits.body_timeout)
        _check_request_line(request, env, body)
        view.require_active_client(env.client)
        if env.service.provider not in own.clients:
            raise UnknownServiceError(f"{env.service.provider} is not served by gateway {gw.id}")
        # A metaservice has no version: with one, it is a service, and must be registered.
        metaservice = (
            env.service.version is None
            and env.service.service_code in METASERVICES
            and env.service not in view.services
        )
        info = None if metaservice else view.service(env.service)
        # Only a registered service (or a metaservice of a subsystem served here) names a
        # metric series: a signed envelope may name any service code, which could hold a CNIC.
        service_label = str(env.service)
        if info is None:
            subject = None  # a metaservice's answer is about no one
            payload = answer_metaservice(view, env)
            response = BackendResponse(200, _rebuilt(METADATA_TYPE), payload)
        else:
            subject = Cnic.from_user_id(env.subject) if env.subject else None
            view.require_active_client(env.service.provider)
            if not view.is_allowed(env.client, env.service, env.method, env.path or "/"):
                raise AccessDeniedError(
                    # Not the path itself: it can hold a CNIC, and this message is logged.
                    f"{env.client} has no access right to {env.method} on this path "
                    f"of {env.service}"
                )
            permit = await _consent(gw, info, env)
            if permit is not None:
                pseudonym = permit.subject_pseudonym
            elif subject is not None:
                pseudonym = gw.stated_pseudonym(view, subject, env.subject_statement)
            elif info.subject_field is not None:
                # Before the call: a backend may act on the request (a PUT, a DELETE) whatever
                # is released after, and the records must name whom it concerned.
                raise AccessDeniedError(
                    f"{env.service} answers with a data subject's record: the request must "
                    "name them in Shahrah-Data-Subject"
                )
            response = await _call_backend(gw, info, env, body, permit)
            if permit is not None and gw.consent is not None:
                # The backend may take its time: a revoke heard meanwhile stops the release.
                await gw.consent.confirm(permit)
        return await _answer(
            gw, env, token, response, permit, subject, pseudonym, body, started, service_label
        )
    except ShahrahError as e:
        return await _refuse(
            gw, e, request.method, env, token, body, permit, started, service_label
        )
    except Exception:
        # The label, not the envelope's service: a signed envelope may name any service
        # code, which could hold a CNIC; the label names only a registered one.
        log.exception("provider pipeline failed on %s", service_label)
        error = InternalError("internal error in the provider gateway")
        return await _refuse(
            gw, error, request.method, env, token, body, permit, started, service_label
        )


def _authenticate(
    gw: Gateway, view: GlobalConfView, request: web.Request, token: str
) -> RequestEnvelope:
    """TLS pin, then the envelope's signature, sender, client and recipient."""
    pin = peer_pin(request.transport.get_extra_info("ssl_object") if request.transport else None)
    peer = view.gateway_by_pin(pin) if pin else None
    if peer is None or peer.status != "active":
        raise SslAuthenticationFailedError("the TLS peer is not a registered, active gateway")
    if not token:
        raise BadRequestError(f"the request carries no {env_.ENVELOPE_HEADER}")
    try:
        env = env_.open_request(token, view)
    except InvalidSignatureError as e:
        raise InvalidSignatureError(f"request signature: {e.message}") from e
    if env.sender != peer.id:
        raise SslAuthenticationFailedError(
            f"envelope names sender {env.sender}, but the TLS peer is {peer.id}"
        )
    if env.client not in peer.clients:
        raise SslAuthenticationFailedError(
            f"{env.client} is not a client of the sending gateway {peer.id}"
        )
    if env.recipient != gw.id:
        raise AccessDeniedError(f"the request is addressed to {env.recipient}, not to {gw.id}")
    return env


def _check_described(env: RequestEnvelope) -> None:
    """What the envelope describes must be a request a consumer gateway could have let
    through: its member signs it, but the backend is handed its path, query and headers."""
    check_target(env.path, env.query)
    check_request(env.method, env.headers)
    # None of the signed headers may be one a gateway filters or sets itself (Host,
    # Transfer-Encoding, X-Road-Client, Shahrah-Data-Subject, ...).
    unforwardable = sorted(name for name in env.headers if not is_forwardable(name))
    if unforwardable:
        raise BadRequestError(
            f"the envelope describes header {unforwardable[0]}, which no gateway forwards"
        )


def _check_request_line(request: web.Request, env: RequestEnvelope, body: bytes) -> None:
    """The HTTP request received must be the one the envelope describes."""
    expected = service_path(env.service) + env.path
    if request.method != env.method or request.rel_url.raw_path != expected:
        raise InvalidSignatureError("request line does not match its signed envelope")
    if request.rel_url.raw_query_string != env.query:
        raise InvalidSignatureError("query does not match its signed envelope")
    if env_.body_digest(body) != env.body_sha256 or len(body) != env.body_length:
        raise InvalidSignatureError("body does not match its signed envelope")
    if not env_.matches(request.headers, env.headers):
        raise InvalidSignatureError("headers do not match their signed envelope")


async def _consent(gw: Gateway, info: ServiceInfo, env: RequestEnvelope) -> Permit | None:
    if not info.requires_consent:
        return None
    missing = [
        name
        for name, v in (
            ("Shahrah-Data-Subject", env.subject),
            ("Shahrah-Purpose", env.purpose),
            ("Shahrah-Consent", env.consent),
        )
        if v is None
    ]
    if missing:
        raise ConsentDeniedError(f"{env.service} requires consent: send {', '.join(missing)}")
    assert env.subject is not None
    assert env.purpose is not None
    assert env.consent is not None
    if env.purpose not in info.purposes:
        raise ConsentDeniedError(f"purpose {env.purpose!r} is not allowed for {env.service}")
    if gw.consent is None:
        raise ConsentDeniedError(
            "this gateway has no consent service configured; refusing (fail closed)"
        )
    query = DecisionQuery(
        consent_id=env.consent,
        subject=Cnic.from_user_id(env.subject),
        consumer=env.client,
        service=env.service,
        purpose=env.purpose,
        at=gw.clock(),
    )
    return await gw.consent.decide(query)


async def _call_backend(
    gw: Gateway, info: ServiceInfo, env: RequestEnvelope, body: bytes, permit: Permit | None
) -> BackendResponse:
    if info.request_schema is not None and (body or env.method not in _BODILESS):
        await _validate(gw, info.request_schema, body, request_side=True)
    backend = gw.backends.get(env.service)
    if backend is None:
        raise ServiceFailedError(f"no backend is configured for {env.service} on {gw.id}")
    call = BackendRequest(
        service=env.service,
        client=env.client,
        message_id=env.message_id,
        method=env.method,
        path=env.path or "/",
        query=env.query,
        headers=_backend_headers(env),
        body=body,
    )
    try:
        # REST pass-through has this bound in its HTTP client; in-process adapters have
        # their own policies (up to 300 s), and the gateway's bound holds over them too.
        async with asyncio.timeout(gw.limits.backend_timeout):
            response = await backend.call(call)
    except TimeoutError as e:
        raise ProviderNetworkError(
            f"the backend of {env.service} did not answer within {gw.limits.backend_timeout:g} s"
        ) from e
    about_subject = permit is not None or info.subject_field is not None
    if not 200 <= response.status < 300:
        return _withheld(response, env.method) if about_subject else response
    if info.response_schema is not None:
        document = await _validate(gw, info.response_schema, response.body, request_side=False)
        if permit is not None:
            if info.subject_field is None:
                raise ServiceFailedError(
                    f"{env.service} requires consent but names no subject field; refusing "
                    "(fail closed)"
                )
            if not _about_named_subject(info, env, document):
                # A consent for one citizen is no key to another's record, whatever the
                # request asked the backend for.
                raise ConsentDeniedError(
                    "the record returned is not the consented data subject's; nothing is released"
                )
            projected = project(document, permit.released_fields)
            data = json.dumps(projected, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            # The backend's own headers stay behind too: any of them could carry the record.
            return BackendResponse(response.status, _rebuilt("application/json"), data)
        if info.subject_field is not None and not _about_named_subject(info, env, document):
            # The audit records name the subject the request names: a citizen whose record
            # was read under another's name would never see it.
            raise AccessDeniedError(
                "the record returned is not the named data subject's; nothing is released"
            )
    elif about_subject:
        # Without a response schema neither projection nor the subject can be checked.
        raise ServiceFailedError(
            f"{env.service} answers about a data subject but has no response schema to "
            "check its answer against; refusing (fail closed)"
        )
    return response


def _about_named_subject(info: ServiceInfo, env: RequestEnvelope, document: Any) -> bool:
    """Whether the answer's subject field holds the CNIC the request names (a request to a
    service with that field names one, or was refused before the backend call)."""
    assert env.subject is not None
    return _subject_of(info, document) == Cnic.from_user_id(env.subject)


def _subject_of(info: ServiceInfo, document: Any) -> Cnic:
    """The CNIC in the answer's subject field, or ServiceFailedError."""
    assert info.subject_field is not None
    try:
        value = member_at(document, info.subject_field)
    except NotFoundError as e:
        raise ServiceFailedError(f"the answer has no {info.subject_field} to check") from e
    not_a_cnic = ServiceFailedError(f"the answer's {info.subject_field} is not a CNIC")
    if not isinstance(value, str):
        raise not_a_cnic
    try:
        return Cnic.parse(value)
    except BadRequestError as e:
        raise not_a_cnic from e


#: Methods whose requests carry no content: an empty body is not checked against a schema.
_BODILESS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})


def _withheld(response: BackendResponse, method: str) -> BackendResponse:
    """A non-2xx answer of a service under consent, or naming a subject field: its status
    only (a redirect without its Location). Such a body is not checked against the response
    schema, so nothing in it can be projected or its subject checked, and a backend may
    well put the record there (a 404, or a 409, with the person in it)."""
    if _bodiless(method, response.status):
        return BackendResponse(response.status, _rebuilt(None), b"")
    data = json.dumps(
        {
            "status": response.status,
            "message": "the provider's system answered with this status; its answer "
            "concerns a data subject and is not passed on",
        }
    ).encode()
    return BackendResponse(response.status, _rebuilt("application/json"), data)


def _rebuilt(content_type: str | None) -> dict[str, str]:
    """Headers of an answer this gateway made rather than passed through (a metaservice's, a
    projection, a withheld answer): signed with it, they reach the local system as the
    backend's would, and the consumer adds none to a delivered answer. Nothing of it is for a
    cache to keep."""
    headers = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
    return headers | ({"Content-Type": content_type} if content_type else {})


def _bodiless(method: str, status: int) -> bool:
    """Whether HTTP sends no body with this answer (RFC 9110): the signed digest must then
    be of no body, or the consumer would see the answer as tampered with."""
    return method == "HEAD" or status in (204, 304) or 100 <= status < 200


def _backend_headers(env: RequestEnvelope) -> dict[str, str]:
    headers = dict(env.headers)
    # The consent headers come from the signed envelope alone: the subject, purpose and
    # consent the decision was made on are the ones the backend is told.
    extra = {
        "X-Road-Request-Id": env.request_id,
        "Shahrah-Data-Subject": env.subject,
        "Shahrah-Purpose": env.purpose,
        "Shahrah-Consent": env.consent,
    }
    headers.update({k: v for k, v in extra.items() if v is not None})
    return headers


async def _validate(gw: Gateway, ref: SchemaRef, data: bytes, *, request_side: bool) -> Any:
    """Parse JSON and validate it; a bad request body is the caller's fault, a bad response
    the backend's."""
    if gw.schemas is None:
        raise ServiceFailedError(
            "this gateway has no schema validator configured; refusing (fail closed)"
        )
    try:
        # Strict: a duplicate key would let the backend act on a value the schema never saw.
        document = parse_json(data)
    except BadRequestError as e:
        if request_side:
            raise BadRequestError(
                f"request body is not valid JSON ({e.message}), but {ref.subject} "
                f"v{ref.version} requires it"
            ) from e
        # Not the parser's message: it may quote the body (an out-of-range number).
        raise ServiceFailedError("backend response is not valid JSON") from e
    try:
        await gw.schemas.validate(
            ref, document, what="request body" if request_side else "response body"
        )
    except BadRequestError as e:
        if request_side:
            raise
        # Where and which rule, never the validator's message: it quotes the value, a part
        # of the record no check let through (under consent, perhaps a field not released).
        raise ServiceFailedError(
            f"backend response violates {ref.subject} v{ref.version}{_where(e)}"
        ) from e
    return document


def _where(error: BadRequestError) -> str:
    """`` at POINTER (keyword)`` of a schema violation's first problem, if it names one."""
    problems = error.detail if isinstance(error.detail, list) else []
    first = problems[0] if problems and isinstance(problems[0], dict) else {}
    pointer, keyword = first.get("pointer"), first.get("keyword")
    if not isinstance(pointer, str) or not isinstance(keyword, str):
        return ""
    return f" at {pointer or '/'} ({keyword})"


async def _answer(
    gw: Gateway,
    env: RequestEnvelope,
    token: str,
    response: BackendResponse,
    permit: Permit | None,
    subject: Cnic | None,
    pseudonym: str | None,
    body: bytes,
    started: float,
    service_label: str,
) -> web.StreamResponse:
    if _bodiless(env.method, response.status) and response.body:
        # What HTTP sends is what is signed: an in-process adapter or a metaservice answering
        # a HEAD with a body would otherwise leave a digest of bytes never sent.
        response = BackendResponse(response.status, response.headers, b"")
    headers = forwardable_headers(response.headers)
    # Under consent a failed answer releases nothing (see _withheld).
    released = None
    if permit is not None:
        released = permit.released_fields if 200 <= response.status < 300 else []
    try:
        renv = ResponseEnvelope(
            message_id=env.message_id,
            request_hash=env_.request_hash(token),
            responder=gw.id,
            status=response.status,
            headers=env_.envelope_headers(headers),
            body_sha256=env_.body_digest(response.body),
            body_length=len(response.body),
            released_fields=released,
            time=gw.clock(),
        )
    except ValidationError as e:
        # Too many headers, one too long or not a header line: the backend's fault, and
        # nothing of it is released unsigned.
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ServiceFailedError(
            f"the backend's answer cannot be described in a response envelope: {where}: "
            f"{err['msg']}"
        ) from e
    rtoken = env_.seal(renv, gw.key)
    await gw.record(
        role="provider",
        message_id=env.message_id,
        request_id=env.request_id,
        client=env.client,
        service=env.service,
        method=env.method,
        error=None,
        subject=subject,
        subject_pseudonym=pseudonym,
        purpose=env.purpose,
        legal_basis=permit.legal_basis if permit else None,
        consent_id=env.consent,
        request_body=body,
        response_body=response.body,
        request_token=token,
        response_token=rtoken,
        fields_released=released,
    )
    gw.metrics.requests.labels("provider", service_label, "delivered").inc()
    gw.metrics.latency.labels("provider", service_label).observe(time.perf_counter() - started)
    return web.Response(
        status=response.status,
        headers={**headers, env_.ENVELOPE_HEADER: rtoken},
        body=response.body,
    )


def _stated(gw: Gateway, env: RequestEnvelope | None) -> str | None:
    """For the record of a refusal: the pseudonym the envelope's statement gives, if it
    holds (a refused exchange about someone is theirs to see too), else None."""
    if env is None or env.subject is None:
        return None
    try:
        view = gw.globalconf.current()
        return gw.stated_pseudonym(view, Cnic.from_user_id(env.subject), env.subject_statement)
    except ShahrahError:
        return None


async def _refuse(
    gw: Gateway,
    error: ShahrahError,
    method: str,
    env: RequestEnvelope | None,
    token: str,
    body: bytes,
    permit: Permit | None,
    started: float,
    service_label: str,
) -> web.StreamResponse:
    error_id = str(uuid.uuid4())
    error = located(error, "ServerProxy")
    claimed = env_.peek_request(token)
    message_id = env.message_id if env else (claimed.message_id if claimed else "-")
    log.info(
        "refused %s: %s (%s) [%s]",
        env.request_id if env else "-",
        error.xroad_type,
        loggable(error),
        error_id,
    )
    status = r1_status(error)
    data = (
        b""
        if _bodiless(method, status)
        else json.dumps(
            {"type": error.xroad_type, "message": error.message, "detail": error_id}
        ).encode()
    )
    headers = {"Content-Type": "application/json; charset=utf-8", ERROR_HEADER: error.xroad_type}
    renv = ResponseEnvelope(
        message_id=message_id,
        request_hash=env_.request_hash(token),
        responder=gw.id,
        status=status,
        headers=env_.envelope_headers(headers),
        body_sha256=env_.body_digest(data),
        body_length=len(data),
        time=gw.clock(),
    )
    rtoken = env_.seal(renv, gw.key)
    # An envelope that did not verify is recorded with what it claimed: evidence of the attempt.
    seen = env or claimed
    try:
        await gw.record(
            role="provider",
            message_id=message_id,
            request_id=seen.request_id if seen else None,
            client=seen.client if seen else None,
            service=seen.service if seen else None,
            method=seen.method if seen else None,
            error=error,
            subject=Cnic.from_user_id(env.subject) if env and env.subject else None,
            subject_pseudonym=permit.subject_pseudonym if permit else _stated(gw, env),
            purpose=env.purpose if env else None,
            consent_id=env.consent if env else None,
            request_body=body if env else None,
            request_token=token or None,
            response_token=rtoken,
        )
    except Exception:
        # Nothing was released; the refusal still goes out, and the failure is loud.
        log.exception("could not record refusal %s in the audit log", error_id)
    gw.metrics.requests.labels("provider", service_label, error.xroad_type).inc()
    gw.metrics.latency.labels("provider", service_label).observe(time.perf_counter() - started)
    # Here, not where the consent service says no: a request without consent headers, for a
    # purpose the service does not allow, or with no consent service to ask is denied too.
    if error.xroad_type == ConsentDeniedError.xroad_type:
        gw.metrics.consent_denials.labels(service_label).inc()
    return web.Response(status=status, headers={**headers, env_.ENVELOPE_HEADER: rtoken}, body=data)
