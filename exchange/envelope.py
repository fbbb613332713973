"""Signed envelopes that travel between gateways.

A consumer gateway forwards the local system's request to the provider
gateway as an ordinary HTTP request, with one added header,
``Shahrah-Envelope``: a compact JWS (typ :data:`REQUEST_TYP`) whose payload
describes the request — who calls which service, method, path, query, the
end-to-end headers that matter, a digest of the body, the data subject,
purpose and consent reference, time and nonce — signed with the calling
member's key. The provider verifies the signature and that the HTTP request
it received is exactly the one described.

The provider answers with the backend's response and a response envelope
(typ :data:`RESPONSE_TYP`) signed with the providing member's key and bound
to the request by ``request_hash``: the base64 SHA-512 of the request
envelope exactly as received, also returned to the local system as
``X-Road-Request-Hash``. Refusals are signed the same way, so a consumer can
prove what a provider answered, whatever it answered.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Mapping
from typing import Annotated, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from core import jws
from core.canonical import b64url, b64url_decode
from core.errors import BadRequestError, InvalidSignatureError
from core.fields import AwareDatetime, ClientIdField, GatewayIdField, ServiceIdField
from core.keys import PrivateKey
from registry.globalconf import GlobalConfView

__all__ = [
    "ENVELOPE_HEADER",
    "REQUEST_TYP",
    "RESPONSE_TYP",
    "RequestEnvelope",
    "ResponseEnvelope",
    "body_digest",
    "header_bytes",
    "open_request",
    "open_response",
    "request_hash",
    "seal",
]

REQUEST_TYP = "shahrah-request+jws"
RESPONSE_TYP = "shahrah-response+jws"
ENVELOPE_HEADER = "Shahrah-Envelope"

MAX_HEADERS = 100  # end-to-end headers one envelope may carry
MAX_HEADER_NAME = 128  # characters
MAX_TEXT = 8192  # characters of a header value, a path or a query
#: UTF-8 bytes of one message's end-to-end header names and values together (a common
#: server's whole header limit is smaller). It bounds the envelope, which carries them.
MAX_HEADER_BYTES = 64 * 1024
#: Bytes of a compact envelope, which travels as one header line. Its payload's JSON holds
#: the headers in at most twice their bytes (an escaped quote, backslash or tab), an ASCII
#: path and query of MAX_TEXT each, and under 5 KiB of the rest (the pseudonym statement
#: the largest): 148 KiB, 198 KiB in base64url. Every header line a gateway reads from a
#: peer may be this long, so it is kept tight: 128 of them (aiohttp's count limit) are
#: 32 MiB at worst.
MAX_ENVELOPE = 256 * 1024
#: HTTP parsers' limits (bytes of a header line) where envelopes are read, and where header
#: values the envelope describes are (up to MAX_TEXT characters of up to 4 UTF-8 bytes).
#: aiohttp's default, 8,190 bytes, refuses far less, and before any handler runs.
ENVELOPE_FIELD_SIZE = MAX_ENVELOPE + 64
HEADER_FIELD_SIZE = 4 * MAX_TEXT + MAX_HEADER_NAME + 8

Digest = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{43}$")]
Text = Annotated[str, Field(max_length=MAX_TEXT)]
#: A header value as HTTP can carry it: no control character but tab (a CR or LF would end
#: the header line in the request the provider makes to its backend).
HeaderValue = Annotated[str, Field(max_length=MAX_TEXT, pattern=r"^[^\x00-\x08\x0a-\x1f\x7f]*$")]
#: X-Road-Id as r1 accepts it (printable ASCII): it is passed on as a header, and recorded.
MessageId = Annotated[str, Field(pattern=r"^[\x21-\x7e][\x20-\x7e]{0,254}$")]
Code = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,254}$")]
#: A compact JWS made by a central service, carried inside an envelope.
Statement = Annotated[
    str, Field(max_length=2048, pattern=r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
]


def header_bytes(headers: Mapping[str, str]) -> int:
    """UTF-8 bytes of the names and values of ``headers``, as MAX_HEADER_BYTES counts them."""
    return sum(len(k) + len(v.encode("utf-8", "surrogatepass")) for k, v in headers.items())


def _within_total(headers: dict[str, str]) -> dict[str, str]:
    if header_bytes(headers) > MAX_HEADER_BYTES:
        raise ValueError(f"the headers total more than {MAX_HEADER_BYTES} bytes")
    return headers


#: Every end-to-end header, by lower-case name: the receiving side forwards exactly these.
Headers = Annotated[
    dict[
        Annotated[str, Field(pattern=rf"^[a-z0-9!#$%&'*+.^_`|~-]{{1,{MAX_HEADER_NAME}}}$")],
        HeaderValue,
    ],
    Field(max_length=MAX_HEADERS),
    AfterValidator(_within_total),
]


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_E = TypeVar("_E", bound=_Envelope)


class RequestEnvelope(_Envelope):
    v: Literal[1] = 1
    message_id: MessageId  # X-Road-Id, the caller's
    request_id: Annotated[str, Field(pattern=r"^[0-9a-f-]{36}$")]  # ours, unique per send
    client: ClientIdField
    service: ServiceIdField
    sender: GatewayIdField
    recipient: GatewayIdField
    method: Annotated[str, Field(pattern=r"^[A-Z]{3,7}$")]
    path: Text
    query: Text = ""
    headers: Headers = {}
    body_sha256: Digest
    body_length: int = Field(ge=0)
    subject: Annotated[str, Field(pattern=r"^PK[0-9]{13}$")] | None = None
    #: The consent service's signed answer giving the subject's pseudonym
    #: (consent.client.Pseudonym.statement), so the provider records the subject without
    #: asking the service on the consumer's behalf.
    subject_statement: Statement | None = None
    purpose: Code | None = None
    consent: Code | None = None
    time: AwareDatetime
    nonce: Annotated[str, Field(min_length=16, max_length=64)]


class ResponseEnvelope(_Envelope):
    v: Literal[1] = 1
    message_id: MessageId
    request_hash: Annotated[str, Field(min_length=88, max_length=88)]
    responder: GatewayIdField
    status: int = Field(ge=100, le=599)
    headers: Headers = {}
    body_sha256: Digest
    body_length: int = Field(ge=0)
    released_fields: list[str] | None = None
    time: AwareDatetime


def body_digest(body: bytes) -> str:
    return b64url(hashlib.sha256(body).digest())


def request_hash(token: str) -> str:
    """Base64 SHA-512 of the request envelope as sent: the ``X-Road-Request-Hash``."""
    return base64.b64encode(hashlib.sha512(token.encode("ascii")).digest()).decode("ascii")


def envelope_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """End-to-end headers (already filtered) as an envelope signs them: lower-case names."""
    return {k.lower(): v for k, v in headers.items()}


def matches(received: Mapping[str, str], signed: Mapping[str, str]) -> bool:
    """Every signed header arrived with its signed value (transport may add others)."""
    lowered: dict[str, list[str]] = {}
    for name, value in received.items():
        lowered.setdefault(name.lower(), []).append(value)
    return all(", ".join(lowered.get(name, [])) == value for name, value in signed.items())


def new_nonce() -> str:
    return secrets.token_urlsafe(16)


def seal(envelope: RequestEnvelope | ResponseEnvelope, key: PrivateKey) -> str:
    typ = REQUEST_TYP if isinstance(envelope, RequestEnvelope) else RESPONSE_TYP
    return jws.sign_json(envelope.model_dump(mode="json", exclude_none=True), key, typ=typ)


def _peek(token: str, model: type[_E]) -> _E:
    """Read an envelope before verification, only to learn whose keys may verify it."""
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidSignatureError("envelope is not a compact JWS")
    try:
        raw = b64url_decode(parts[1])
    except BadRequestError as e:
        raise InvalidSignatureError(f"envelope is malformed: {_first(e)}") from e
    # Strict first: a member could sign an envelope whose repeated key (a path, a message id)
    # a reader keeping the first value would read otherwise than this one keeping the last.
    value = jws.strict_json(raw, "envelope")
    try:
        return model.model_validate(value)
    except ValidationError as e:
        raise InvalidSignatureError(f"envelope is malformed: {_first(e)}") from e


#: A place in an envelope that may be named as it is: the envelope is read before its
#: signature is checked, so its keys (header names) are anyone's text, and are logged.
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _first(e: Exception) -> str:
    if isinstance(e, ValidationError):
        err = e.errors()[0]
        place = ".".join(
            str(p) if isinstance(p, int) or _PLAIN_KEY.fullmatch(p) else "<key>" for p in err["loc"]
        )
        return f"{place}: {err['msg']}"
    return str(e)


def peek_request(token: str) -> RequestEnvelope | None:
    """What an unverifiable request claims, to label and record its refusal (never trusted)."""
    try:
        return _peek(token, RequestEnvelope)
    except InvalidSignatureError:
        return None


def open_request(token: str, view: GlobalConfView) -> RequestEnvelope:
    """Verify a request envelope with a key the calling member held at the envelope's time."""
    claimed = _peek(token, RequestEnvelope)
    jws.verify(
        token,
        lambda kid: view.signing_key(claimed.client.member, kid, claimed.time),
        typ=REQUEST_TYP,
    )
    return claimed


def open_response(token: str, view: GlobalConfView, request: RequestEnvelope) -> ResponseEnvelope:
    """Verify a response envelope with a key of the service's member at the response's time."""
    claimed = _peek(token, ResponseEnvelope)
    jws.verify(
        token,
        lambda kid: view.signing_key(request.service.member, kid, claimed.time),
        typ=RESPONSE_TYP,
    )
    return claimed
