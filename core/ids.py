"""X-Road identifiers and the citizen's CNIC.

Shahrah names things the way X-Road does: a client is
``INSTANCE/CLASS/MEMBER[/SUBSYSTEM]``, a service
``INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE[/VERSION]`` and a gateway (X-Road's
security server) ``INSTANCE/CLASS/MEMBER/GATEWAYCODE``.

Each part may only use the characters X-Road allows (PR-MESS 2.7, PR-REST
4.8): ``A-Z a-z 0-9`` and ``'()+,-.=?``. In URLs each part is percent-encoded
on its own and parts are joined with ``/``. Identifiers are immutable and
hashable, so they serve as dictionary keys in the global configuration.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Self, TypeVar, cast
from urllib.parse import quote, unquote

from core.errors import BadRequestError, InvalidClientIdentifierError, InvalidServiceIdentifierError

__all__ = [
    "MEMBER_CLASSES",
    "ClientId",
    "Cnic",
    "GatewayId",
    "IdentifierError",
    "MemberId",
    "ServiceId",
    "encode_part",
    "validate_part",
]

#: Member classes of the Pakistani federation: federal, provincial, local government, private.
MEMBER_CLASSES: tuple[str, ...] = ("FED", "PROV", "LG", "PRIV")

#: Longest part accepted; X-Road sets no limit, but unbounded input is never accepted here.
MAX_PART_LENGTH = 255

_T = TypeVar("_T")
_F = TypeVar("_F", bound=Callable[..., Any])


def _memoized(parse: _F) -> _F:
    """Memoize an identifier class's ``parse``: messages carry the same few identifiers over
    and over, and identifiers are immutable, so one parsed instance serves them all.
    Failures are not cached; a bounded number of distinct strings is remembered."""
    cached = functools.lru_cache(maxsize=16_384)(parse)

    @functools.wraps(parse)
    def parse_once(cls: type, text: object, **options: bool) -> object:
        if not isinstance(text, str):
            return parse(cls, text, **options)
        return cached(cls, text, **options)

    return cast(_F, parse_once)


_PART = re.compile(r"[A-Za-z0-9'()+,\-.=?]+")
# Characters of the allowed set that may stand unencoded in a URL path segment (RFC 3986).
_PATH_SAFE = "'()+,-.="


class IdentifierError(BadRequestError):
    """An identifier string does not have the X-Road form."""


def validate_part(value: str, what: str) -> str:
    """Return ``value`` if it is a valid identifier part, else raise naming ``what``."""
    if isinstance(value, str) and _well_formed(value):
        return value
    if not value:
        raise IdentifierError(f"{what} is empty", detail={"part": what})
    if len(value) > MAX_PART_LENGTH:
        raise IdentifierError(
            f"{what} is longer than {MAX_PART_LENGTH} characters", detail={"part": what}
        )
    if _PART.fullmatch(value) is None:
        bad = sorted({c for c in value if _PART.fullmatch(c) is None})
        raise IdentifierError(
            f"{what} {value!r} contains characters X-Road does not allow: {''.join(bad)!r}",
            detail={"part": what},
        )
    return value


@functools.lru_cache(maxsize=65_536)
def _well_formed(value: str) -> bool:
    # Memoized: every message carries the same few codes, and a regex per part adds up.
    return 0 < len(value) <= MAX_PART_LENGTH and _PART.fullmatch(value) is not None


def encode_part(value: str) -> str:
    """Percent-encode one part for use as a URL path segment."""
    return quote(value, safe=_PATH_SAFE)


def _split(text: str, *, encoded: bool, kind: str, error: type[BadRequestError]) -> list[str]:
    if not isinstance(text, str):
        raise error(f"{kind} identifier must be a string")
    parts = text.split("/")
    if encoded:
        decoded = []
        for p in parts:
            if re.search(r"%(?![0-9A-Fa-f]{2})", p):
                raise error(f"{kind} identifier {text!r} has a malformed percent-encoding")
            try:
                decoded.append(unquote(p, errors="strict"))
            except UnicodeDecodeError as e:
                raise error(f"{kind} identifier {text!r} is not percent-encoded UTF-8") from e
        return decoded
    return parts


class _Identifier:
    """Shared formatting for the identifier dataclasses (sort them by ``str``)."""

    __slots__ = ()
    _labels: ClassVar[tuple[str, ...]]

    @classmethod
    def _trusted(cls, *parts: str | None) -> Self:
        """Build from parts already validated (those of another identifier): derived
        identifiers are made on every message, and checking known-good parts again is waste."""
        obj = object.__new__(cls)
        for name, value in zip(_field_names(cast("type", cls)), parts, strict=True):
            object.__setattr__(obj, name, value)
        return obj

    def parts(self) -> tuple[str, ...]:
        raise NotImplementedError

    def __str__(self) -> str:
        return "/".join(self.parts())

    def to_path(self) -> str:
        """The identifier as URL path segments, each percent-encoded."""
        return _path_of(self)


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


@functools.lru_cache(maxsize=16_384)
def _path_of(identifier: _Identifier) -> str:
    # Every exchange builds its service's URL path; identifiers are immutable, so once will do.
    return "/".join(encode_part(p) for p in identifier.parts())


@dataclass(frozen=True, slots=True)
class MemberId(_Identifier):
    """``INSTANCE/CLASS/MEMBER``: an agency."""

    instance: str
    member_class: str
    member_code: str

    _labels: ClassVar[tuple[str, ...]] = ("instance", "member class", "member code")

    def __post_init__(self) -> None:
        for label, value in zip(self._labels, self.parts(), strict=True):
            validate_part(value, label)

    def parts(self) -> tuple[str, ...]:
        return (self.instance, self.member_class, self.member_code)

    @classmethod
    @_memoized
    def parse(cls, text: str, *, encoded: bool = False) -> Self:
        parts = _split(text, encoded=encoded, kind="member", error=InvalidClientIdentifierError)
        if len(parts) != 3:
            raise InvalidClientIdentifierError(
                f"member identifier {text!r} must have the form INSTANCE/CLASS/MEMBER"
            )
        return _wrap(cls, parts, InvalidClientIdentifierError)

    def subsystem(self, code: str) -> ClientId:
        validate_part(code, "subsystem")
        return ClientId._trusted(self.instance, self.member_class, self.member_code, code)

    def gateway(self, code: str) -> GatewayId:
        validate_part(code, "gateway code")
        return GatewayId._trusted(self.instance, self.member_class, self.member_code, code)


@dataclass(frozen=True, slots=True)
class ClientId(_Identifier):
    """``INSTANCE/CLASS/MEMBER[/SUBSYSTEM]``: who calls a service."""

    instance: str
    member_class: str
    member_code: str
    subsystem: str | None = None

    _labels: ClassVar[tuple[str, ...]] = ("instance", "member class", "member code", "subsystem")

    def __post_init__(self) -> None:
        for label, value in zip(self._labels, self.parts(), strict=False):
            validate_part(value, label)

    def parts(self) -> tuple[str, ...]:
        base = (self.instance, self.member_class, self.member_code)
        return base if self.subsystem is None else (*base, self.subsystem)

    @property
    def member(self) -> MemberId:
        return MemberId._trusted(self.instance, self.member_class, self.member_code)

    @classmethod
    @_memoized
    def parse(cls, text: str, *, encoded: bool = False, require_subsystem: bool = False) -> Self:
        parts = _split(text, encoded=encoded, kind="client", error=InvalidClientIdentifierError)
        allowed = (4,) if require_subsystem else (3, 4)
        if len(parts) not in allowed:
            form = (
                "INSTANCE/CLASS/MEMBER/SUBSYSTEM"
                if require_subsystem
                else ("INSTANCE/CLASS/MEMBER[/SUBSYSTEM]")
            )
            raise InvalidClientIdentifierError(
                f"client identifier {text!r} must have the form {form}"
            )
        return _wrap(cls, parts, InvalidClientIdentifierError)

    def service(self, code: str, version: str | None = None) -> ServiceId:
        if self.subsystem is None:
            raise InvalidServiceIdentifierError("a service belongs to a subsystem, not a member")
        validate_part(code, "service code")
        if version is not None:
            validate_part(version, "service version")
        return ServiceId._trusted(
            self.instance, self.member_class, self.member_code, self.subsystem, code, version
        )


@dataclass(frozen=True, slots=True)
class ServiceId(_Identifier):
    """``INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE[/VERSION]``."""

    instance: str
    member_class: str
    member_code: str
    subsystem: str
    service_code: str
    version: str | None = None

    _labels: ClassVar[tuple[str, ...]] = (
        "instance",
        "member class",
        "member code",
        "subsystem",
        "service code",
        "service version",
    )

    def __post_init__(self) -> None:
        for label, value in zip(self._labels, self.parts(), strict=False):
            validate_part(value, label)

    def parts(self) -> tuple[str, ...]:
        base = (
            self.instance,
            self.member_class,
            self.member_code,
            self.subsystem,
            self.service_code,
        )
        return base if self.version is None else (*base, self.version)

    @property
    def provider(self) -> ClientId:
        """The subsystem that owns the service."""
        return ClientId._trusted(self.instance, self.member_class, self.member_code, self.subsystem)

    @property
    def member(self) -> MemberId:
        return MemberId._trusted(self.instance, self.member_class, self.member_code)

    @classmethod
    @_memoized
    def parse(cls, text: str, *, encoded: bool = False) -> Self:
        parts = _split(text, encoded=encoded, kind="service", error=InvalidServiceIdentifierError)
        if len(parts) not in (5, 6):
            raise InvalidServiceIdentifierError(
                f"service identifier {text!r} must have the form "
                "INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE[/VERSION]"
            )
        return _wrap(cls, parts, InvalidServiceIdentifierError)


@dataclass(frozen=True, slots=True)
class GatewayId(_Identifier):
    """``INSTANCE/CLASS/MEMBER/GATEWAYCODE``: one of a member's gateways."""

    instance: str
    member_class: str
    member_code: str
    gateway_code: str

    _labels: ClassVar[tuple[str, ...]] = ("instance", "member class", "member code", "gateway code")

    def __post_init__(self) -> None:
        for label, value in zip(self._labels, self.parts(), strict=True):
            validate_part(value, label)

    def parts(self) -> tuple[str, ...]:
        return (self.instance, self.member_class, self.member_code, self.gateway_code)

    @property
    def member(self) -> MemberId:
        return MemberId._trusted(self.instance, self.member_class, self.member_code)

    @classmethod
    @_memoized
    def parse(cls, text: str, *, encoded: bool = False) -> Self:
        parts = _split(text, encoded=encoded, kind="gateway", error=BadRequestError)
        if len(parts) != 4:
            raise IdentifierError(
                f"gateway identifier {text!r} must have the form INSTANCE/CLASS/MEMBER/GATEWAYCODE"
            )
        return _wrap(cls, parts, IdentifierError)


def _wrap(cls: type[_T], parts: list[str], error: type[BadRequestError]) -> _T:
    """Build ``cls(*parts)``, re-raising a part error as the identifier kind's own error."""
    try:
        return cls(*parts)
    except IdentifierError as e:
        if error is IdentifierError:
            raise
        raise error(e.message, detail=e.detail) from e


_CNIC = re.compile(r"([0-9]{5})-?([0-9]{7})-?([0-9])")


@dataclass(frozen=True, slots=True, order=True)
class Cnic:
    """A Pakistani Computerised National Identity Card number, ``#####-#######-#``.

    Stored in its dashed form. ``PK`` followed by the 13 digits is the form used
    in X-Road's ``X-Road-UserId`` style headers (a country-code prefix). Errors never
    quote the text they refuse: it is most likely a citizen's number in another form, and
    error messages are logged.
    """

    value: str

    def __post_init__(self) -> None:
        if (
            not isinstance(self.value, str)
            or re.fullmatch(r"[0-9]{5}-[0-9]{7}-[0-9]", self.value) is None
        ):
            raise BadRequestError(
                "a CNIC must have the form #####-#######-#",
                detail={"field": "cnic"},
            )

    @classmethod
    def parse(cls, text: str) -> Cnic:
        """Accept the dashed form or 13 bare digits."""
        m = _CNIC.fullmatch(text.strip()) if isinstance(text, str) else None
        if m is None:
            raise BadRequestError(
                "a CNIC must be 13 digits, written #####-#######-# or without dashes",
                detail={"field": "cnic"},
            )
        return cls("-".join(m.groups()))

    @classmethod
    def from_user_id(cls, text: str) -> Cnic:
        """Parse the ``PK`` + 13 digits form."""
        if not isinstance(text, str) or re.fullmatch(r"PK[0-9]{13}", text) is None:
            raise BadRequestError(
                "a data subject must be 'PK' followed by the 13 CNIC digits",
                detail={"field": "data_subject"},
            )
        return cls.parse(text[2:])

    @property
    def digits(self) -> str:
        return self.value.replace("-", "")

    def to_user_id(self) -> str:
        return "PK" + self.digits

    def __str__(self) -> str:
        return self.value
