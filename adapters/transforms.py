"""Value transforms that Pakistani legacy data needs, compiled once from a configuration.

A transform takes one value and returns the cleaned value, or raises
:class:`adapters.errors.TransformError` with a reason that names the expected
shape (never the value). ``None`` passes through every transform untouched:
absence is decided by the mapping (defaults, required fields), not here.

Written in a configuration as a name (``trim``) or a one-key mapping with its
argument (``{date: DD-MON-YY, century: past}`` is written
``{date: {format: DD-MON-YY, century: past}}``); see docs/adapters.md.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from adapters.errors import TransformError
from adapters.regex import Replacement
from core.errors import BadRequestError
from core.ids import Cnic

__all__ = [
    "CenturyRule",
    "DateFormat",
    "Transform",
    "ascii_digits",
    "compile_transform",
    "format_cnic",
    "parse_date",
]

Transform = Callable[[Any], Any]

# Arabic-Indic (U+0660..U+0669) and Extended/Eastern Arabic-Indic (U+06F0..U+06F9, the
# digits Urdu is written with) to ASCII. Both appear in Pakistani records, often mixed.
_DIGITS = {0x0660 + i: str(i) for i in range(10)} | {0x06F0 + i: str(i) for i in range(10)}
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_SPACES = re.compile(r"\s+")


def ascii_digits(text: str) -> str:
    """Replace Urdu and Arabic-Indic digits by ASCII digits; other characters stay."""
    return text.translate(_DIGITS)


def code_key(text: str) -> str:
    """A code as a code table holds it and as a lookup compares it: ASCII digits, trimmed."""
    return ascii_digits(text).strip()


def _text(value: Any, what: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | Decimal) and not isinstance(value, bool):
        return str(value)
    raise TransformError(f"{what} needs text, got {type(value).__name__}")


def format_cnic(value: Any, *, dashed: bool = True) -> str:
    """A CNIC written with or without dashes (in any digits) as ``#####-#######-#`` or 13 digits."""
    text = ascii_digits(_text(value, "cnic")).strip()
    if text.isdigit() and len(text) < 13 and not isinstance(value, str):
        text = text.zfill(13)  # a numeric column drops leading zeros
    try:
        cnic = Cnic.parse(text)
    except BadRequestError as e:
        raise TransformError("not a CNIC (13 digits, with or without dashes)", value) from e
    return cnic.value if dashed else cnic.digits


# --- dates ---------------------------------------------------------------------------------

_TOKENS = (
    ("YYYY", r"(?P<Y>[0-9]{4})"),
    ("YY", r"(?P<y>[0-9]{2})"),
    ("MON", r"(?P<b>[A-Za-z]{3})"),
    ("MM", r"(?P<m>[0-9]{2})"),
    ("DD", r"(?P<d>[0-9]{2})"),
    ("M", r"(?P<m>[0-9]{1,2})"),
    ("D", r"(?P<d>[0-9]{1,2})"),
)


@dataclass(frozen=True)
class CenturyRule:
    """How a two-digit year gets its century.

    ``pivot=P``: years below P are 20xx, the others 19xx (P=50 is Oracle's ``RR``
    for this century). ``past``: the most recent date not after today, the rule
    for dates of birth and issue.
    """

    pivot: int | None = None  # None means "past"

    def year(self, yy: int, month: int, day: int, today: dt.date) -> int:
        if self.pivot is not None:
            return (2000 if yy < self.pivot else 1900) + yy
        year = today.year - today.year % 100 + yy
        candidate = (year, month, day)
        if candidate > (today.year, today.month, today.day):
            year -= 100
        return year


@dataclass(frozen=True)
class DateFormat:
    """A date pattern in the notation integrators know from Oracle: ``DD-MON-YY``.

    Tokens: ``YYYY``, ``YY`` (needs a century rule), ``MM``/``M``, ``DD``/``D``,
    ``MON`` (English month abbreviation, any case); every other character is
    literal.
    """

    pattern: str
    regex: re.Pattern[str]
    two_digit_year: bool

    @classmethod
    def compile(cls, pattern: str) -> DateFormat:
        parts: list[str] = []
        seen: set[str] = set()
        i = 0
        while i < len(pattern):
            for token, regex in _TOKENS:
                if pattern.startswith(token, i):
                    group = regex[4]
                    kind = "y" if group in "Yy" else group
                    if kind in seen:
                        raise ValueError(f"date format {pattern!r} names a part twice")
                    seen.add(kind)
                    parts.append(regex)
                    i += len(token)
                    break
            else:
                parts.append(re.escape(pattern[i]))
                i += 1
        if seen != {"y", "m", "d"} and seen != {"y", "b", "d"}:
            raise ValueError(f"date format {pattern!r} needs a year, a month and a day")
        return cls(pattern, re.compile("".join(parts)), "YYYY" not in pattern)


#: Where a moment with a time zone is dated, unless a date transform names another zone.
FEDERATION_ZONE = "Asia/Karachi"


def parse_date(
    value: Any,
    formats: tuple[DateFormat, ...],
    century: CenturyRule | None,
    today: dt.date | None = None,
    zone: ZoneInfo | None = None,
) -> dt.date:
    """The calendar date ``value`` spells in the first of ``formats`` that matches; a moment
    with a time zone is dated in ``zone`` (default :data:`FEDERATION_ZONE`)."""
    if isinstance(value, dt.datetime):
        # A driver hands a timestamp with a time zone over in its session's zone (UTC on most
        # servers), where a date kept as midnight in Lahore is still the day before.
        moment: dt.datetime = value
        if moment.tzinfo is not None:
            moment = moment.astimezone(zone or ZoneInfo(FEDERATION_ZONE))
        return moment.date()
    if isinstance(value, dt.date):
        return value
    text = ascii_digits(_text(value, "date")).strip()
    for fmt in formats:
        m = fmt.regex.fullmatch(text)
        if m is None:
            continue
        parts = m.groupdict()
        if parts.get("b") is not None:
            try:
                month = _MONTHS.index(parts["b"].upper()) + 1
            except ValueError:
                raise TransformError(
                    f"unknown month abbreviation in {fmt.pattern}", value
                ) from None
        else:
            month = int(parts["m"])
        day = int(parts["d"])
        if parts.get("Y") is not None:
            year = int(parts["Y"])
        else:
            assert century is not None  # the configuration requires a rule with YY
            year = century.year(int(parts["y"]), month, day, today or dt.date.today())
        try:
            return dt.date(year, month, day)
        except ValueError:
            raise TransformError(f"not a calendar date ({fmt.pattern})", value) from None
    expected = " or ".join(f.pattern for f in formats)
    raise TransformError(f"not a date in the format {expected}", value)


# --- compilation -----------------------------------------------------------------------------


def _trim(v: Any) -> Any:
    return v.strip() if isinstance(v, str) else v


def _collapse(v: Any) -> Any:
    return _SPACES.sub(" ", v).strip() if isinstance(v, str) else v


def _upper(v: Any) -> Any:
    return v.upper() if isinstance(v, str) else v


def _lower(v: Any) -> Any:
    return v.lower() if isinstance(v, str) else v


def _title(v: Any) -> Any:
    return v.title() if isinstance(v, str) else v


def _digits(v: Any) -> Any:
    return ascii_digits(v) if isinstance(v, str) else v


_SIMPLE: dict[str, Transform] = {
    "trim": _trim,
    "collapse": _collapse,
    "upper": _upper,
    "lower": _lower,
    "title": _title,
    "digits": _digits,
    "cnic": lambda v: format_cnic(v, dashed=True),
    "cnic_digits": lambda v: format_cnic(v, dashed=False),
}

NAMES = (*_SIMPLE, "date", "code", "map", "replace", "null_if")


def _none_passes(fn: Transform) -> Transform:
    def run(value: Any) -> Any:
        return None if value is None else fn(value)

    return run


def _date_transform(arg: Any) -> Transform:
    if isinstance(arg, str | list):
        arg = {"format": arg}
    if (
        not isinstance(arg, dict)
        or set(arg) - {"format", "century", "timezone"}
        or "format" not in arg
    ):
        raise ValueError(
            "date takes a format (or a list of them), an optional century and an optional timezone"
        )
    raw = arg["format"] if isinstance(arg["format"], list) else [arg["format"]]
    if not raw or not all(isinstance(f, str) for f in raw):
        raise ValueError("date format must be text, e.g. DD/MM/YYYY")
    formats = tuple(DateFormat.compile(f) for f in raw)
    century: CenturyRule | None = None
    rule = arg.get("century")
    if rule == "past":
        century = CenturyRule(None)
    elif isinstance(rule, dict) and set(rule) == {"pivot"} and isinstance(rule["pivot"], int):
        if not 0 <= rule["pivot"] <= 100:
            raise ValueError("century pivot must be between 0 and 100")
        century = CenturyRule(rule["pivot"])
    elif rule is not None:
        raise ValueError("century must be 'past' or {pivot: NN}")
    if century is None and any(f.two_digit_year for f in formats):
        raise ValueError(
            "a two-digit year (YY) needs an explicit century rule: century: past or {pivot: NN}"
        )
    name = arg.get("timezone", FEDERATION_ZONE)
    try:
        zone = ZoneInfo(name) if isinstance(name, str) else None
    except (ZoneInfoNotFoundError, ValueError):
        zone = None
    if zone is None:
        raise ValueError(f"unknown time zone {name!r}: name one such as Asia/Karachi or UTC")
    return lambda v: parse_date(v, formats, century, zone=zone).isoformat()


def _lookup(table: Mapping[str, Any], what: str) -> Transform:
    def run(value: Any) -> Any:
        key = code_key(_text(value, what))
        if key not in table:
            raise TransformError(f"code not in {what}", value)
        return table[key]

    return run


def _replace(arg: Any) -> Transform:
    if not isinstance(arg, dict) or set(arg) != {"pattern", "with"}:
        raise ValueError("replace takes {pattern: REGEX, with: TEXT}")
    try:
        replacement = Replacement(str(arg["pattern"]), str(arg["with"]))
    except ValueError as e:
        part = "pattern" if str(e).startswith("not an RE2") else "with"
        raise ValueError(f"replace {part}: {e}") from None
    return lambda v: replacement(_text(v, "replace"))


def compile_transform(spec: Any, tables: Mapping[str, Mapping[str, Any]]) -> Transform:
    """Turn one configured transform into a function; ValueError names what is wrong."""
    if isinstance(spec, str):
        if spec in _SIMPLE:
            return _none_passes(_SIMPLE[spec])
        if spec in NAMES:
            raise ValueError(f"transform {spec!r} needs an argument: {{{spec}: ...}}")
        raise ValueError(f"unknown transform {spec!r}; known: {', '.join(NAMES)}")
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ValueError("a transform is a name or a one-key mapping such as {code: district}")
    ((name, arg),) = spec.items()
    if name == "date":
        return _none_passes(_date_transform(arg))
    if name == "code":
        if not isinstance(arg, str) or arg not in tables:
            raise ValueError(f"code table {arg!r} is not defined under code_tables")
        return _none_passes(_lookup(tables[arg], f"code table {arg}"))
    if name == "map":
        if not isinstance(arg, dict) or not arg:
            raise ValueError("map takes a table {FROM: TO, ...}")
        return _none_passes(_lookup({str(k): v for k, v in arg.items()}, "map"))
    if name == "replace":
        return _none_passes(_replace(arg))
    if name == "null_if":
        if not isinstance(arg, list):
            raise ValueError("null_if takes a list of values that mean 'no value'")
        sentinels = {str(a) for a in arg}
        return lambda v: None if v is None or _text(v, "null_if").strip() in sentinels else v
    if name in _SIMPLE:
        raise ValueError(f"transform {name!r} takes no argument")
    raise ValueError(f"unknown transform {name!r}; known: {', '.join(NAMES)}")
