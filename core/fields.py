"""Pydantic field types for Shahrah's identifiers and timestamps.

Request and document models use these so that an identifier is parsed (and
refused with the field's name) once, at the boundary, and travels inward as
a typed value. Each serializes back to its plain string form.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BeforeValidator, PlainSerializer, WithJsonSchema

from core.errors import ShahrahError
from core.ids import ClientId, Cnic, GatewayId, MemberId, ServiceId, validate_part

__all__ = [
    "AwareDatetime",
    "ClientIdField",
    "CnicField",
    "GatewayIdField",
    "IdPart",
    "MemberIdField",
    "ServiceIdField",
    "SubsystemIdField",
]

T = TypeVar("T")


def _parser(parse: Callable[[str], T], kind: type) -> Callable[[Any], T]:
    def validate(value: Any) -> T:
        if isinstance(value, kind):
            return value  # type: ignore[return-value]
        if not isinstance(value, str):
            raise ValueError("must be a string")
        try:
            return parse(value)
        except ShahrahError as e:
            # pydantic only turns ValueError into a field-level error.
            raise ValueError(e.message) from e

    return validate


def _string_schema(pattern_doc: str) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", "description": pattern_doc})


MemberIdField = Annotated[
    MemberId,
    BeforeValidator(_parser(MemberId.parse, MemberId)),
    PlainSerializer(str, return_type=str),
    _string_schema("X-Road member identifier INSTANCE/CLASS/MEMBER"),
]
ClientIdField = Annotated[
    ClientId,
    BeforeValidator(_parser(ClientId.parse, ClientId)),
    PlainSerializer(str, return_type=str),
    _string_schema("X-Road client identifier INSTANCE/CLASS/MEMBER[/SUBSYSTEM]"),
]
SubsystemIdField = Annotated[
    ClientId,
    BeforeValidator(_parser(lambda s: ClientId.parse(s, require_subsystem=True), ClientId)),
    PlainSerializer(str, return_type=str),
    _string_schema("X-Road subsystem identifier INSTANCE/CLASS/MEMBER/SUBSYSTEM"),
]
ServiceIdField = Annotated[
    ServiceId,
    BeforeValidator(_parser(ServiceId.parse, ServiceId)),
    PlainSerializer(str, return_type=str),
    _string_schema("X-Road service identifier INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE[/VERSION]"),
]
GatewayIdField = Annotated[
    GatewayId,
    BeforeValidator(_parser(GatewayId.parse, GatewayId)),
    PlainSerializer(str, return_type=str),
    _string_schema("gateway identifier INSTANCE/CLASS/MEMBER/GATEWAYCODE"),
]
CnicField = Annotated[
    Cnic,
    BeforeValidator(_parser(Cnic.parse, Cnic)),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^[0-9]{5}-[0-9]{7}-[0-9]$"}),
]


def _part(value: str) -> str:
    try:
        return validate_part(value, "code")
    except ShahrahError as e:
        raise ValueError(e.message) from e


#: One identifier part (a code), restricted to X-Road's characters.
IdPart = Annotated[
    str,
    AfterValidator(_part),
    WithJsonSchema({"type": "string", "pattern": r"^[A-Za-z0-9'()+,\-.=?]{1,255}$"}),
]


def _aware(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        raise ValueError("timestamp must carry a time zone (e.g. 2026-01-31T12:00:00Z)")
    try:
        return value.astimezone(dt.UTC)
    except OverflowError as e:  # pydantic reports ValueError as the field's error; not this
        raise ValueError("timestamp is out of range once converted to UTC (years 1 to 9999)") from e


def _rfc3339(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


#: A timestamp with a time zone, normalized to UTC and written as RFC 3339 with ``Z``.
AwareDatetime = Annotated[
    dt.datetime,
    AfterValidator(_aware),
    PlainSerializer(_rfc3339, return_type=str, when_used="json"),
]
