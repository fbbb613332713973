"""X-Road's Message Protocol for REST (r1, PR-REST 1.0.4) as the local side speaks it.

``{METHOD} /r1/{INSTANCE}/{CLASS}/{MEMBER}/{SUBSYSTEM}/{SERVICE}[/path][?query]`` with
``X-Road-Client`` naming the caller. Each identifier part is percent-encoded on
its own. URIs are validated strictly (PR-REST 4.2): no dot segments, no empty
inner segments, no control characters, bounded length, so that nothing the
caller sends can steer the provider's backend request elsewhere.

Shahrah's consent travels in extension headers: ``Shahrah-Data-Subject``
(``PK`` + the 13 CNIC digits, as ``X-Road-UserId`` prefixes a country code),
``Shahrah-Purpose`` and ``Shahrah-Consent``.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import unquote
from xml.etree import ElementTree as ET

import mimeparse
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from core.errors import (
    BadRequestError,
    InvalidClientIdentifierError,
    InvalidServiceIdentifierError,
    ShahrahError,
    r1_status,
)
from core.ids import MAX_PART_LENGTH, ClientId, Cnic, GatewayId, validate_part
from core.web import Handler
from exchange import envelope

__all__ = [
    "CONSENT",
    "DATA_SUBJECT",
    "ERROR_HEADER",
    "PURPOSE",
    "LocalRequest",
    "check_request",
    "check_target",
    "error_format_middleware",
    "error_media_type",
    "error_response",
    "forwardable_headers",
    "is_forwardable",
    "known_type",
    "located",
    "loggable",
    "methods_middleware",
    "parse_local",
    "response_headers",
]

PROTOCOL = "r1"
MAX_URI = 4096  # characters of path + query; PR-REST suggests clients stay under 2,000

DATA_SUBJECT = "Shahrah-Data-Subject"
PURPOSE = "Shahrah-Purpose"
CONSENT = "Shahrah-Consent"
ERROR_HEADER = "X-Road-Error"

#: Rewritten or dropped by every gateway (PR-REST 4.3 "filtered headers").
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "user-agent",
        "server",
        "content-length",
        "expect",
        "date",
    }
)
#: Headers the gateways set themselves; a caller's or backend's values are discarded. The
#: consent headers travel as fields of the signed envelope, and the provider gateway hands
#: the backend exactly those, never the caller's raw (possibly repeated) header.
GATEWAY_SET = frozenset(
    {
        "x-road-client",
        "x-road-service",
        "x-road-id",
        "x-road-request-id",
        "x-road-request-hash",
        "x-road-error",
        "x-road-security-server",
        "shahrah-envelope",
        "shahrah-data-subject",
        "shahrah-purpose",
        "shahrah-consent",
    }
)
#: Headers a backend may read as another method, URL or origin than the one the access
#: right was checked for and the envelope describes (method-override conventions, rewrite
#: proxies' original URL, proxy forwarding). Neither gateway passes them on.
ROUTING_OVERRIDES = frozenset(
    {
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "x-original-url",
        "x-original-uri",
        "x-rewrite-url",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-real-ip",
    }
)
_NOT_FORWARDED = HOP_BY_HOP | GATEWAY_SET | ROUTING_OVERRIDES
#: The signed envelope's limits on what it describes, checked here so that a request beyond
#: them is the caller's error, not a failure of the gateway; three headers are left for
#: X-Road-UserId, -Issue and -Represented-Party, which the consumer gateway adds.
MAX_HEADERS = envelope.MAX_HEADERS - 3
_METHOD = re.compile(r"[A-Z]{3,7}")
#: Methods no gateway passes on: TRACE has a backend echo the request, headers and all, to
#: whoever can make a browser send one; CONNECT would make a backend a tunnel.
_NOT_PASSED_ON = frozenset({"TRACE", "CONNECT"})

_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,254}")
_PURPOSE = re.compile(r"[a-z0-9][a-z0-9-]{0,99}")
_PRINTABLE = re.compile(r"[\x21-\x7e][\x20-\x7e]{0,254}")
_BAD_PATH_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")
_BAD_QUERY_CHARS = re.compile(r"[\x00-\x20\x7f#]")
_MALFORMED_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
#: What backends that trim a segment drop from its ends: controls and space, as Java's
#: ``String.trim`` does (Unicode white space too, by ``str.strip``).
_TRIMMED = "".join(chr(c) for c in range(0x21))
#: What a segment must not become when a backend reads it again (see :func:`_readings`).
_REREAD_CHARS = re.compile(r"[\x00-\x1f\x7f?#]")


@dataclass(frozen=True)
class LocalRequest:
    """A local system's r1 request, validated but not yet resolved against the configuration."""

    client: ClientId
    provider: ClientId
    service_code: str
    rest: list[str]  # path segments after the service code, still percent-encoded
    query: str
    method: str
    message_id: str
    security_server: GatewayId | None  # the provider's gateway to send to (PR-REST 4.3)
    user_id: str | None
    issue: str | None
    represented_party: str | None
    subject: Cnic | None
    purpose: str | None
    consent: str | None
    headers: dict[str, str]  # end-to-end headers to forward


def _header(
    headers: CIMultiDictProxy[str], name: str, pattern: re.Pattern[str], *, once: bool = False
) -> str | None:
    """The header's value (the last, if repeated); ``once``: a repeat is refused, for headers
    whose every value would be a different claim (whose record, which consent)."""
    values = headers.getall(name, [])
    if not values:
        return None
    if once and len(values) > 1:
        raise BadRequestError(f"header {name} is sent more than once", detail={"header": name})
    value = values[-1].strip()
    if pattern.fullmatch(value) is None:
        raise BadRequestError(f"header {name} has a malformed value", detail={"header": name})
    return value


def _segments(raw_path: str) -> list[str]:
    """Split the encoded path and check every segment; returns encoded segments."""
    if _BAD_PATH_CHARS.search(raw_path):
        raise BadRequestError("request path contains control characters or a backslash")
    segments = raw_path.split("/")[1:]
    for i, seg in enumerate(segments):
        try:
            decoded = unquote(seg, errors="strict")
        except UnicodeDecodeError as e:
            raise BadRequestError("request path is not valid percent-encoded UTF-8") from e
        _check_readings(decoded)
        if _BAD_PATH_CHARS.search(decoded):
            raise BadRequestError("request path segment contains a forbidden character")
        if seg == "" and i != len(segments) - 1:
            raise BadRequestError("request path contains an empty segment ('//')")
        if _MALFORMED_PERCENT.search(seg):
            raise BadRequestError("request path has a malformed percent-encoding")
    return segments


def _check_readings(decoded: str) -> None:
    """Refuse a decoded segment that the access-right check and a backend would read
    differently: a dot segment or a separator, as it is or in any of its readings."""
    readings = _readings(decoded)
    for text in (decoded, *readings):
        end = text.strip(_TRIMMED).strip()
        # "..;x" is a dot segment to servers that strip path parameters (Tomcat, Jetty),
        # while the access-right check would see an ordinary name.
        if end.split(";", 1)[0] in (".", ".."):
            raise BadRequestError(
                "request path may not contain '.' or '..' segments, with ';' parameters, "
                "encoded twice, in look-alike characters or between trimmed characters, or not"
            )
        if "/" in end or "\\" in end:
            # One segment to the access-right check, several to a backend that decodes first.
            raise BadRequestError(
                "request path segment may not encode '/' (%2F), '\\', or either encoded "
                "twice or in a look-alike character"
            )
    if any(_REREAD_CHARS.search(text) for text in readings):
        # A second decoding must not make a control character (a backend cutting at NUL
        # reads '..%2500' as '..') or end the path early ('?', '#').
        raise BadRequestError(
            "request path segment encodes twice, or in look-alike characters, a control "
            "character, '?' or '#'"
        )


def _readings(decoded: str) -> set[str]:
    """What a decoded path segment may become at a backend that decodes it once more or
    folds Unicode compatibility characters (NFKC: '‥' is '..', '／' is '/', '％' is '%'),
    in either order; each must pass the checks the segment itself passes."""
    if decoded.isascii() and "%" not in decoded:
        return set()  # NFKC leaves ASCII as it is, and nothing is left to decode: most paths
    nfkc = unicodedata.normalize("NFKC", decoded)
    forms = {nfkc, unquote(decoded), unquote(nfkc)}
    forms |= {unicodedata.normalize("NFKC", form) for form in forms}
    forms.discard(decoded)
    return forms


def check_target(path: str, query: str) -> None:
    """What a signed envelope says the backend is to be asked for, held to the rules
    :func:`parse_local` applies to a local request.

    The provider gateway joins ``path`` and ``query`` to its backend's URL, so it cannot
    take a consumer's word for them: a path that does not start with ``/`` would join onto
    the backend's authority (``@other-host/...``), and dot segments, empty segments or an
    encoded ``/`` would reach a backend other than the access right allowed.
    """
    if path and not path.startswith("/"):
        raise BadRequestError("request path after the service must start with '/'")
    if len(path) + len(query) > MAX_URI:
        raise BadRequestError(f"request URI is longer than {MAX_URI} characters")
    if not path.isascii() or not query.isascii():
        raise BadRequestError("request URI is not ASCII (percent-encode it)")
    _segments(path)
    _check_query(query)


def _check_query(query: str) -> None:
    """The query is passed on as sent (PR-REST 4.5), but only if it is a URI's query."""
    if _BAD_QUERY_CHARS.search(query):
        raise BadRequestError("request query contains a space, control character or '#'")
    if _MALFORMED_PERCENT.search(query):
        raise BadRequestError("request query has a malformed percent-encoding")


def check_request(method: str, headers: Mapping[str, str]) -> None:
    """A request's method and body encoding, held to what both gateways pass on: the
    consumer for its local system, the provider for what a signed envelope describes.

    A body is taken as sent and compared with its signed digest, and checked against the
    service's schema: so it must come uncompressed (``Content-Encoding`` identity, or none).
    """
    if _METHOD.fullmatch(method) is None or method in _NOT_PASSED_ON:
        raise BadRequestError(f"method {method} is not supported")
    for name, value in headers.items():
        if name.lower() == "content-encoding" and value.strip().lower() not in ("", "identity"):
            raise BadRequestError(
                "request bodies are taken uncompressed: send no Content-Encoding but identity",
                detail={"header": "Content-Encoding"},
            )


def parse_local(request: web.Request) -> LocalRequest:
    """Validate an r1 request's URI and X-Road/Shahrah headers (the body is read elsewhere)."""
    url = request.rel_url
    if len(url.raw_path) + len(url.raw_query_string) > MAX_URI:
        raise BadRequestError(f"request URI is longer than {MAX_URI} characters")
    check_request(request.method, request.headers)
    segments = _segments(url.raw_path)
    _check_query(url.raw_query_string)
    if not segments or segments[0] != PROTOCOL:
        raise BadRequestError(
            f"unsupported protocol: the path must start with /{PROTOCOL}/ (X-Road REST protocol r1)"
        )
    if len(segments) < 6 or not all(segments[1:6]):
        raise InvalidServiceIdentifierError(
            "service identifier must be /r1/INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE"
        )
    parts = [unquote(p) for p in segments[1:6]]
    try:
        provider = ClientId(*parts[:4])
        code = validate_part(parts[4], "service code")
    except ShahrahError as e:
        raise InvalidServiceIdentifierError(e.message) from e
    rest = segments[6:]

    headers = request.headers
    clients = headers.getall("X-Road-Client", [])
    if not clients:
        raise InvalidClientIdentifierError("header X-Road-Client is required")
    client = _last_identifier(clients[-1], ClientId.parse)

    # Blank counts as absent, as in X-Road (a client template may send it empty); repeated,
    # the last one counts.
    ids = headers.getall("X-Road-Id", [])
    given = _header(headers, "X-Road-Id", _PRINTABLE) if ids and ids[-1].strip() else None
    message_id = given or str(uuid.uuid4())
    # Percent-encoded parts, as in X-Road-Client; repeated, the last one counts, as there.
    servers = headers.getall("X-Road-Security-Server", [])
    security_server = _last_identifier(servers[-1], GatewayId.parse) if servers else None
    subject_text = _header(headers, DATA_SUBJECT, re.compile(r".{1,64}"), once=True)
    subject = Cnic.from_user_id(subject_text) if subject_text is not None else None
    forwarded = forwardable_headers(headers)
    _check_sizes(forwarded)
    return LocalRequest(
        client=client,
        provider=provider,
        service_code=code,
        rest=rest,
        query=request.rel_url.raw_query_string,
        method=request.method,
        message_id=message_id,
        security_server=security_server,
        user_id=_header(headers, "X-Road-UserId", _PRINTABLE),
        issue=_header(headers, "X-Road-Issue", _PRINTABLE),
        represented_party=_header(headers, "X-Road-Represented-Party", _PRINTABLE),
        subject=subject,
        purpose=_header(headers, PURPOSE, _PURPOSE, once=True),
        consent=_header(headers, CONSENT, _CODE, once=True),
        headers=forwarded,
    )


def _check_sizes(headers: Mapping[str, str]) -> None:
    if len(headers) > MAX_HEADERS:
        raise BadRequestError(f"more than {MAX_HEADERS} end-to-end headers")
    for name, value in headers.items():
        if len(name) > envelope.MAX_HEADER_NAME:
            raise BadRequestError(
                f"a header name is longer than {envelope.MAX_HEADER_NAME} characters"
            )
        if len(value) > envelope.MAX_TEXT:
            raise BadRequestError(
                f"header {name} is longer than {envelope.MAX_TEXT} characters",
                detail={"header": name},
            )
    if envelope.header_bytes(headers) > envelope.MAX_HEADER_BYTES:
        raise BadRequestError(
            f"the end-to-end headers total more than {envelope.MAX_HEADER_BYTES} bytes"
        )


#: The longest identifier header value (X-Road-Client, X-Road-Security-Server): four parts,
#: each percent-encoded (three characters a byte at worst), and the slashes between them.
_MAX_ID_TEXT = 4 * 3 * MAX_PART_LENGTH + 3
#: Tails of a folded line tried at most: each is one identifier's parse, so a line of many
#: commas costs no more than a few.
_FOLD_TRIES = 16
_Id = TypeVar("_Id", ClientId, GatewayId)


def _last_identifier(value: str, parse: Callable[..., _Id]) -> _Id:
    """PR-REST: if X-Road-Client (or X-Road-Security-Server) is repeated, the last one wins,
    also when a proxy on the way folded the repeats into one comma-separated line (RFC 9110
    5.3). A comma may stand in a code, so the line is one identifier if it reads as one;
    otherwise the last is the shortest tail after a comma that does (of the few an
    identifier's length allows)."""
    try:
        return parse(value.strip(), encoded=True)
    except ShahrahError as e:
        refusal = e
    end = len(value)
    for _ in range(_FOLD_TRIES):
        comma = value.rfind(",", 0, end)
        if comma < 0 or len(value) - comma - 1 > _MAX_ID_TEXT:
            break
        try:
            return parse(value[comma + 1 :].strip(), encoded=True)
        except ShahrahError:
            end = comma
    raise refusal


def is_forwardable(name: str) -> bool:
    """Whether a header of this name crosses a gateway (neither hop-by-hop, nor set by it,
    nor one that could reroute the request at the backend)."""
    lname = name.lower()
    return lname not in _NOT_FORWARDED


def forwardable_headers(headers: Mapping[str, str] | CIMultiDictProxy[str]) -> dict[str, str]:
    """End-to-end headers, minus hop-by-hop and the ones gateways set themselves.

    Every header that ``Connection`` names is hop-by-hop too (RFC 9110 7.6.1), so it stays
    behind with it. Repeated headers are joined with ', ' as HTTP allows for list-valued
    fields.
    """
    named = {
        token.strip().lower()
        for name, value in headers.items()
        if name.lower() == "connection"
        for token in value.split(",")
    }
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        if is_forwardable(name) and name.lower() not in named:
            out.add(name, value)
    merged: dict[str, str] = {}
    for name in {k.lower(): k for k in out}.values():
        merged[name] = ", ".join(out.getall(name))
    return merged


def response_headers(
    backend_headers: Mapping[str, str], xroad: Mapping[str, str]
) -> dict[str, str]:
    """Headers for the local system: the backend's end-to-end ones, then X-Road's own."""
    out = forwardable_headers(backend_headers)
    out.update(xroad)
    return out


#: Refusals whose message may quote what the caller or peer sent (an identifier, a header,
#: a path, an envelope's field): a service code where a caller put a CNIC, say.
_QUOTING = (
    "Client.",
    "Server.ServerProxy.UnknownService",
    # Names the consent id and purpose the caller sent, where a caller may put a CNIC.
    "Server.ServerProxy.ConsentDenied",
    "Server.ClientProxy.InvalidSecurity",
    # An envelope that does not parse is refused in words that may quote what it holds.
    "Server.ServerProxy.InvalidSignature",
    "Server.ClientProxy.InvalidSignature",
)


def loggable(error: ShahrahError) -> str:
    """What the gateway's log may say of a refusal: its message, unless that may quote the
    request, which the caller has in its answer (by the same error id) and the log must not
    hold."""
    if error.xroad_type.startswith(_QUOTING):
        return "message withheld from the log: it may quote the request"
    return error.message


def known_type(kind: str) -> bool:
    """Whether ``kind`` is an error type a provider gateway of this release refuses with:
    what a consumer's metric label may hold, so a peer's refusals cannot add series without
    end."""
    return kind in _provider_types()


@functools.cache
def _provider_types() -> frozenset[str]:
    kinds, todo = set(), [ShahrahError]
    while todo:
        cls = todo.pop()
        kinds.add(cls.xroad_type)
        todo.extend(cls.__subclasses__())
    named = []
    for kind in kinds:
        error = ShahrahError("")
        error.xroad_type = kind
        named.append(located(error, "ServerProxy").xroad_type)
    return frozenset(named)


def located(error: ShahrahError, proxy: str) -> ShahrahError:
    """``error`` with its type naming the gateway that failed (PR-REST 4.6 example 5).

    Shared code raises plain ``Server.X``; on this side it becomes
    ``Server.<proxy>.X``. On the provider, the consumer-side types that shared
    code raises (an outdated configuration) become ServerProxy types. A
    consumer keeps ServerProxy types it raises early on the provider's behalf
    (an unknown service), since they say what the provider would answer.
    """
    kind = error.xroad_type
    if kind.startswith("Server.ClientProxy.") and proxy == "ServerProxy":
        rest = kind.split(".", 2)[2]
    elif kind.startswith("Server.") and not kind.startswith(
        ("Server.ClientProxy.", "Server.ServerProxy.")
    ):
        rest = kind.split(".", 1)[1]
    else:
        return error
    moved = ShahrahError(error.message, detail=error.detail)
    moved.status, moved.xroad_type = error.status, f"Server.{proxy}.{rest}"
    return moved


def error_response(
    error: ShahrahError, error_id: str, xroad: Mapping[str, str] | None = None
) -> web.Response:
    """An r1 error: ``{"type","message","detail"}``, status by PR-REST 4.6, ``X-Road-Error``."""
    body: dict[str, Any] = {"type": error.xroad_type, "message": error.message, "detail": error_id}
    headers = {ERROR_HEADER: error.xroad_type, **(xroad or {})}
    return web.json_response(body, status=r1_status(error), headers=headers)


#: What an r1 error can be written as (PR-REST 4.6: the type the caller's ``Accept`` suggests,
#: JSON by default), in the order that breaks ties: ``Accept: */*`` gets JSON.
ERROR_TYPES = ("application/json", "application/xml", "text/xml")
#: Code points XML 1.0 cannot carry, even escaped.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def error_media_type(accept: str) -> str:
    """Which of :data:`ERROR_TYPES` an error is written in for a caller sending ``accept``
    (every ``Accept`` value joined by commas): the one with the highest quality, JSON on a
    tie, when none is acceptable or when the header cannot be read."""
    try:
        # Media types are case-insensitive; the library compares them as given, and on a
        # tie picks the last type offered.
        chosen = mimeparse.best_match(list(reversed(ERROR_TYPES)), accept.lower())
    except ValueError:  # MimeTypeParseException, and malformed parameters
        return ERROR_TYPES[0]
    return chosen or ERROR_TYPES[0]


def error_xml(body: Mapping[str, Any]) -> bytes:
    """An r1 error body as X-Road writes it in XML: ``<error>`` holding ``<type>``,
    ``<message>`` and ``<detail>``; a structured detail is written as its JSON text."""
    root = ET.Element("error")
    for name in ("type", "message", "detail"):
        value = body.get(name)
        text = value if isinstance(value, str) else "" if value is None else json.dumps(value)
        ET.SubElement(root, name).text = _NOT_XML.sub("\ufffd", text)
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True))


@web.middleware
async def methods_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A method no gateway passes on is refused in r1's words before routing, on both
    listeners: a CONNECT's target (``host:port``) matches no route, and would otherwise read
    as an unknown path."""
    if request.method in _NOT_PASSED_ON:
        check_request(request.method, {})
    response: web.StreamResponse = await handler(request)
    return response


@web.middleware
async def error_format_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Write the gateway's own errors (those carrying ``X-Road-Error``, the provider
    gateway's signed refusals among them) in the type the caller's ``Accept`` asks for.

    Every error is made as JSON; one place turns it into XML, so a refusal reads the same
    whichever part of the gateway made it. The audit log keeps the body as signed.
    """
    response: web.StreamResponse = await handler(request)
    if ERROR_HEADER not in response.headers or not isinstance(response, web.Response):
        return response
    media = error_media_type(",".join(request.headers.getall("Accept", ())))
    if media == ERROR_TYPES[0] or not isinstance(response.body, bytes):
        return response
    try:
        body = json.loads(response.body)
    except (ValueError, RecursionError):  # a provider's refusal body is the provider's
        return response
    if not isinstance(body, dict) or not isinstance(body.get("type"), str):
        return response
    response.body = error_xml(body)
    response.content_type = media
    response.charset = "utf-8"
    return response
