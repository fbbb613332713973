"""SOAP 1.1 and 1.2 over HTTP.

A route's ``body`` is the XML inside ``soapenv:Body`` with ``{param}``
placeholders; each value is XML-escaped, so a parameter can never add an
element or an attribute. The envelope declares every prefix of the service's
``namespaces``. The answer is parsed by :mod:`adapters.xmlsafe` (no DTD, no
entities); the element at ``result`` (a path from the Body) is the record the
mapping reads, and its absence means "no such record".

A SOAP fault becomes a :class:`adapters.errors.BackendFailure` that carries
the fault's code, subcodes, reason and detail element names. Faults the route
lists in ``not_found_faults`` (a code, subcode or detail element's local
name) mean "no such record". Client/Sender faults are never retried;
Server/Receiver faults may pass and are retried for idempotent routes.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, Literal
from urllib.parse import urlsplit
from xml.etree.ElementTree import Element

import aiohttp
from pydantic import Field, field_validator

from adapters.base import BackendRequest
from adapters.errors import BackendFailure
from adapters.mapping import Node
from adapters.routes import CompiledRoute, fill, placeholders
from adapters.spec import BuildContext, MappedRouteSpec, ServiceSpec
from adapters.xmlsafe import XmlError, XmlNode, check_xml_path, escape, local_name, parse_xml
from core.web import read_up_to

__all__ = ["SOAP11", "SOAP12", "SoapRoute", "SoapService", "SoapSource"]

SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
_ENVELOPE_PREFIX = "soapenv"
_RETRYABLE_HTTP = {502, 503, 504}
_MAX_FAULT_TEXT = 500
# Larger answers are read in a worker thread: defusedxml's parser calls Python for every
# element, so a few MiB (deeply nested or not) take a second or more, during which the event
# loop would serve no other call. Below this, the thread's hand-off costs more than parsing.
_PARSE_ON_LOOP_BYTES = 64 * 2**10
# What a fault's text must not carry into an error message or a log line: a CR or LF forges
# a log line, ESC or CSI drives an operator's terminal, a bidi control reorders what the
# operator reads. Joiners (U+200C, U+200D), which Urdu spelling needs, are kept.
_CONTROLS = re.compile(
    "[\x00-\x1f\x7f-\x9f"  # C0 controls, DEL, C1 controls (NEL, CSI)
    "\u2028\u2029"  # line and paragraph separators
    "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]+"  # bidi marks, embeddings, isolates
)


def _one_line(text: str) -> str:
    """``text`` with each run of control characters as one space, stripped."""
    return _CONTROLS.sub(" ", text).strip()


class SoapRoute(MappedRouteSpec):
    action: str = ""  # SOAPAction (1.1) or the action parameter of the media type (1.2)
    body: str  # XML template of the Body's content
    result: str  # element path from the Body to the record, e.g. lr:GetParcelResponse/lr:Parcel
    not_found_faults: list[str] = Field(default_factory=list)

    @field_validator("action")
    @classmethod
    def _plain_action(cls, value: str) -> str:
        if any(c in value for c in '"\\') or any(ord(c) < 0x21 for c in value):
            raise ValueError("an action is a URI without quotes, backslashes or spaces")
        return value


class SoapService(ServiceSpec):
    kind: Literal["soap"]
    url: str
    version: Literal["1.1", "1.2"] = "1.1"
    namespaces: dict[str, str] = Field(default_factory=dict)  # prefix -> namespace URI
    http_headers: dict[str, str] = Field(default_factory=dict)
    max_response_bytes: int = Field(default=10 * 2**20, gt=0)  # bytes
    max_connections: int = Field(default=20, gt=0, le=1000)
    routes: dict[str, SoapRoute]

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, float) else value  # YAML reads 1.1 as a number

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("namespaces")
    @classmethod
    def _prefixes(cls, value: dict[str, str]) -> dict[str, str]:
        if _ENVELOPE_PREFIX in value:
            raise ValueError(f"the prefix {_ENVELOPE_PREFIX!r} is the envelope's own")
        return value


class SoapSource:
    kind = "soap"

    def __init__(self, spec: SoapService, ctx: BuildContext) -> None:
        self.spec = spec
        self.ns = SOAP11 if spec.version == "1.1" else SOAP12
        self._session: aiohttp.ClientSession | None = None
        self._routes: dict[str, SoapRoute] = {}
        self._by_key = dict(spec.routes)
        declared = "".join(
            f' xmlns:{p}="{escape(uri)}"' for p, uri in sorted(spec.namespaces.items())
        )
        self._open = (
            f'<?xml version="1.0" encoding="utf-8"?>'
            f'<{_ENVELOPE_PREFIX}:Envelope xmlns:{_ENVELOPE_PREFIX}="{self.ns}"{declared}>'
            f"<{_ENVELOPE_PREFIX}:Body>"
        )
        self._close = f"</{_ENVELOPE_PREFIX}:Body></{_ENVELOPE_PREFIX}:Envelope>"
        for key, route in spec.routes.items():
            names = set(route.params) | placeholders(key.partition(" ")[2])
            unknown = placeholders(route.body) - names
            if unknown:
                raise ctx.fail(
                    ["routes", key, "body"], f"uses undeclared parameters: {sorted(unknown)}"
                )
            try:
                parse_xml(self.envelope(route, dict.fromkeys(names, "x")))
            except XmlError as e:
                raise ctx.fail(
                    ["routes", key, "body"], f"the envelope would not be XML: {e}"
                ) from None
            try:
                check_xml_path(route.result, spec.namespaces)
            except ValueError as e:
                raise ctx.fail(["routes", key, "result"], str(e)) from None

    def check_path(self, path: str, repeated: bool) -> None:
        check_xml_path(path, self.spec.namespaces)

    def plan(self, route: CompiledRoute, key: str) -> None:
        self._routes[route.label] = self._by_key[key]

    def envelope(self, route: SoapRoute, params: dict[str, str | None]) -> bytes:
        return (self._open + fill(route.body, params, escape) + self._close).encode("utf-8")

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.spec.max_connections)
            )
        return self._session

    def _headers(self, action: str) -> dict[str, str]:
        if self.spec.version == "1.1":
            return {
                **self.spec.http_headers,
                "Content-Type": "text/xml; charset=utf-8",
                "SOAPAction": f'"{action}"',
            }
        media = "application/soap+xml; charset=utf-8" + (f'; action="{action}"' if action else "")
        return {**self.spec.http_headers, "Content-Type": media}

    async def fetch(
        self, route: CompiledRoute, params: dict[str, str | None], request: BackendRequest
    ) -> Node | None:
        spec = self._routes[route.label]
        where = {"backend": "soap", "operation": spec.action or spec.result}
        try:
            envelope = self.envelope(spec, params)
        except XmlError as e:
            raise BackendFailure(f"a parameter cannot be sent in XML: {e}", detail=where) from e
        try:
            async with self._client().post(
                self.spec.url,
                data=envelope,
                headers=self._headers(spec.action),
                allow_redirects=False,
            ) as response:
                status = response.status
                is_xml = "xml" in response.content_type
                data = await read_up_to(response.content, self.spec.max_response_bytes + 1)
        except aiohttp.ClientError as e:
            raise BackendFailure(
                f"cannot reach the SOAP service: {type(e).__name__}", detail=where, retryable=True
            ) from e
        if len(data) > self.spec.max_response_bytes:
            raise BackendFailure(
                f"the SOAP answer is larger than {self.spec.max_response_bytes} bytes", detail=where
            )
        if not is_xml:
            raise BackendFailure(
                f"the SOAP service answered HTTP {status} without XML",
                detail={**where, "status": status},
                retryable=status in _RETRYABLE_HTTP,
            )
        if len(data) > _PARSE_ON_LOOP_BYTES:
            result = await asyncio.to_thread(self._record, data, status, spec, where)
        else:
            result = self._record(data, status, spec, where)
        return None if result is None else XmlNode(result, self.spec.namespaces)

    def _record(
        self, data: bytes, status: int, spec: SoapRoute, where: dict[str, Any]
    ) -> Element | None:
        """The answer's record element (None: no such record), or BackendFailure.

        Safe in a worker thread: it reads only the immutable configuration. There, the
        document is also freed when it returns, keeping only the record.
        """
        try:
            root = parse_xml(data)
        except XmlError as e:
            raise BackendFailure(f"the SOAP answer is refused: {e}", detail=where) from e
        body = self._body(root, where)
        fault = body.find(f"{{{self.ns}}}Fault")
        if fault is not None:
            self._fault(fault, spec, where)
            return None
        if not 200 <= status < 300:
            raise BackendFailure(
                f"the SOAP service answered HTTP {status} without a fault",
                detail={**where, "status": status},
                retryable=status in _RETRYABLE_HTTP,
            )
        return body.find(spec.result, dict(self.spec.namespaces))

    def _body(self, root: Element, where: dict[str, Any]) -> Element:
        other = SOAP12 if self.ns == SOAP11 else SOAP11
        if root.tag == f"{{{other}}}Envelope":
            version = "1.2" if other == SOAP12 else "1.1"
            raise BackendFailure(
                f"SOAP version mismatch: the service answered SOAP {version}", detail=where
            )
        if root.tag != f"{{{self.ns}}}Envelope":
            raise BackendFailure("the answer is not a SOAP envelope", detail=where)
        body = root.find(f"{{{self.ns}}}Body")
        if body is None:
            raise BackendFailure("the SOAP envelope has no Body", detail=where)
        return body

    def _fault(self, fault: Element, route: SoapRoute, where: dict[str, Any]) -> None:
        """Raise the fault as a BackendFailure; return only if it means "no such record"."""
        if self.ns == SOAP11:
            code = local_name(_one_line(fault.findtext("faultcode") or ""))
            subcodes: list[str] = []
            reason = fault.findtext("faultstring") or ""
            detail = fault.find("detail")
        else:
            n = self.ns
            code = local_name(_one_line(fault.findtext(f"{{{n}}}Code/{{{n}}}Value") or ""))
            subcodes = []
            sub = fault.find(f"{{{n}}}Code/{{{n}}}Subcode")
            while sub is not None:
                subcodes.append(local_name(_one_line(sub.findtext(f"{{{n}}}Value") or "")))
                sub = sub.find(f"{{{n}}}Subcode")
            reason = fault.findtext(f"{{{n}}}Reason/{{{n}}}Text") or ""
            detail = fault.find(f"{{{n}}}Detail")
        detail_names = [local_name(child.tag) for child in detail] if detail is not None else []
        # SOAP 1.1 writes specialised codes with dots: Client.ParcelNotFound.
        names = {code, *code.split("."), *subcodes, *detail_names}
        if names & set(route.not_found_faults):
            return
        family = code.split(".")[0]
        # Passed on to the calling member and logged: one line, cut once it is one.
        reason = _one_line(reason)[:_MAX_FAULT_TEXT]
        raise BackendFailure(
            f"SOAP fault {'/'.join([code, *subcodes])}: {reason}",
            detail={
                **where,
                "fault_code": code,
                "fault_subcodes": subcodes,
                "fault_reason": reason,
                "fault_detail": detail_names,
            },
            retryable=family in ("Server", "Receiver"),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
