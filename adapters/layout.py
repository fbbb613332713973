"""Fixed-width record layouts: positions, lengths, padding, code pages, zoned and packed decimals.

A layout is what a COBOL copybook says about a file: each field's 1-based
byte position and length, its type and its implied decimal places. Types:

- ``text``: characters in the file's code page, padded (``pad``) on the right
  when left-aligned, on the left when right-aligned;
- ``unsigned``: display digits (``PIC 9(n)``);
- ``zoned``: signed display digits (``PIC S9(n)``), the sign over-punched on
  the last digit: ``{ A..I`` are +0..+9 and ``} J..R`` are -0..-9, which in
  EBCDIC are exactly the zone nibbles C and D (an F zone, a plain digit, is
  positive too);
- ``packed``: packed decimal (``COMP-3``), two digits a byte, the last nibble
  the sign (C, A, E, F positive; D, B negative);
- ``binary``: big-endian integer (``COMP``), signed or not.

Numbers are :class:`decimal.Decimal` scaled by ``scale``. A display number
that is all padding is absent (None). :meth:`Layout.encode` is the exact
inverse of :meth:`Layout.decode`, which the property tests hold it to.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Context, Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["FieldError", "Layout", "LayoutField", "RawRecord", "Trailer"]

FieldType = Literal["text", "unsigned", "zoned", "packed", "binary"]
_POSITIVE = "{ABCDEFGHI"
_NEGATIVE = "}JKLMNOPQR"
_OVERPUNCH = {c: (i, 1) for i, c in enumerate(_POSITIVE)} | {
    c: (i, -1) for i, c in enumerate(_NEGATIVE)
}
_SEPARATORS = {"none": b"", "lf": b"\n", "crlf": b"\r\n"}
# Scaling must never round: the default context keeps 28 digits, packed fields hold 31.
_EXACT = Context(prec=64)


class FieldError(ValueError):
    """A field (or the record, when ``field`` is None) that does not fit the layout."""

    def __init__(self, field: str | None, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason


class LayoutField(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    start: int = Field(ge=1)  # 1-based byte position
    length: int = Field(ge=1, le=4096)  # bytes
    type: FieldType = "text"
    scale: int = Field(default=0, ge=0, le=18)  # implied decimal places
    signed: bool = True  # binary fields only
    align: Literal["left", "right"] | None = None  # default: text left, numbers right
    pad: str = Field(default=" ", min_length=1, max_length=1)

    @model_validator(mode="after")
    def _fits(self) -> LayoutField:
        if self.type == "text" and self.scale:
            raise ValueError("a text field has no scale")
        if self.type == "binary" and self.length not in (1, 2, 4, 8):
            raise ValueError("a binary field is 1, 2, 4 or 8 bytes long")
        if self.type == "packed" and self.length > 16:
            raise ValueError("a packed field holds at most 31 digits (16 bytes)")
        return self

    @property
    def end(self) -> int:
        """Index just past the field, 0-based."""
        return self.start - 1 + self.length


class Trailer(BaseModel):
    """The last record carries the count of detail records, so a truncated file is caught."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: int = Field(default=1, ge=1)  # where the trailer's marker is
    value: str = Field(min_length=1)  # the marker text, e.g. TRL
    count_start: int = Field(ge=1)
    count_length: int = Field(ge=1, le=18)


@dataclass(frozen=True)
class RawRecord:
    number: int  # 1-based, counting every record of the file
    offset: int  # byte offset in the file
    data: bytes


class Layout(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    encoding: str = "ascii"  # any Python codec: ascii, cp1252, cp037, cp500, ...
    record_length: int = Field(ge=1, le=65536)  # bytes, without the separator
    separator: Literal["none", "lf", "crlf"] = "lf"
    header_records: int = Field(default=0, ge=0)  # leading records to skip
    trailer: Trailer | None = None
    fields: list[LayoutField] = Field(min_length=1)

    @field_validator("encoding")
    @classmethod
    def _codec(cls, value: str) -> str:
        try:
            return codecs.lookup(value).name
        except LookupError:
            raise ValueError(f"unknown code page {value!r}") from None

    @model_validator(mode="after")
    def _positions(self) -> Layout:
        names: set[str] = set()
        taken: list[LayoutField] = []
        for f in self.fields:
            if f.name in names:
                raise ValueError(f"field {f.name!r} is defined twice")
            names.add(f.name)
            if f.end > self.record_length:
                raise ValueError(f"field {f.name!r} ends past the record length")
            for other in taken:
                if f.start - 1 < other.end and other.start - 1 < f.end:
                    raise ValueError(f"fields {other.name!r} and {f.name!r} overlap")
            taken.append(f)
        for f in self.fields:
            if f.pad.encode(self.encoding, "replace") != f.pad.encode(self.encoding, "strict"):
                raise ValueError(f"the pad of {f.name!r} is not in {self.encoding}")
        t = self.trailer
        if t is not None:
            # Found by its bytes in each file: a marker the code page cannot write would fail
            # every file at every scan instead of once here.
            if t.value.encode(self.encoding, "replace") != t.value.encode(self.encoding, "ignore"):
                raise ValueError(f"the trailer marker is not in {self.encoding}")
            if t.start - 1 + len(t.value) > self.record_length:
                raise ValueError("the trailer marker ends past the record length")
            if t.count_start - 1 + t.count_length > self.record_length:
                raise ValueError("the trailer count ends past the record length")
        return self

    @property
    def binary(self) -> bool:
        """Whether some field holds bytes that are not characters (packed, binary)."""
        return any(f.type in ("packed", "binary") for f in self.fields)

    # --- splitting a file into records ----------------------------------------------------------

    def records(self, data: bytes) -> Iterator[RawRecord | FieldError]:
        """Each record of ``data``, or a FieldError for a record of the wrong length."""
        sep = _SEPARATORS[self.separator]
        n = self.record_length
        if not sep or self.binary:
            # Fixed stride: packed bytes may look like a newline, so never search for one.
            stride = n + len(sep)
            number = 0
            for offset in range(0, len(data), stride):
                number += 1
                chunk = data[offset : offset + stride]
                body, tail = chunk[:n], chunk[n:]
                if len(body) < n or (tail != sep and offset + stride <= len(data)):
                    yield FieldError(None, f"truncated record {number}: {len(body)} of {n} bytes")
                    continue
                yield RawRecord(number, offset, body)
            return
        offset = 0
        for number, line in enumerate(data.split(b"\n"), start=1):
            start = offset
            offset += len(line) + 1
            if self.separator == "crlf":
                line = line.removesuffix(b"\r")
            if not line and offset >= len(data):
                break  # the newline that ends the file
            if len(line) != n:
                what = "truncated" if len(line) < n else "overlong"
                yield FieldError(
                    None, f"{what} record {number}: {len(line)} bytes, layout says {n}"
                )
                continue
            yield RawRecord(number, start, line)

    def is_trailer(self, data: bytes) -> bool:
        t = self.trailer
        if t is None:
            return False
        marker = t.value.encode(self.encoding)
        return data[t.start - 1 : t.start - 1 + len(marker)] == marker

    def trailer_count(self, data: bytes) -> int:
        """The number of detail records the trailer ``data`` announces; FieldError if none."""
        assert self.trailer is not None
        t = self.trailer
        raw = data[t.count_start - 1 : t.count_start - 1 + t.count_length]
        try:
            text = raw.decode(self.encoding).strip()
        except UnicodeDecodeError as e:
            raise FieldError(
                "trailer", f"byte {e.start + 1} of the record count is not valid {self.encoding}"
            ) from None
        # isdigit() alone takes superscripts and other scripts' digits, which int() refuses.
        if not text.isascii() or not text.isdigit():
            raise FieldError("trailer", "the record count is not a number")
        return int(text)

    def encode_trailer(self, count: int) -> bytes:
        """A trailer record that counts ``count`` detail records."""
        assert self.trailer is not None
        t = self.trailer
        out = bytearray(" ".encode(self.encoding) * self.record_length)
        marker = t.value.encode(self.encoding)
        out[t.start - 1 : t.start - 1 + len(marker)] = marker
        digits = str(count).rjust(t.count_length, "0").encode(self.encoding)
        if len(digits) > t.count_length:
            raise FieldError("trailer", f"{count} records do not fit the trailer's count")
        out[t.count_start - 1 : t.count_start - 1 + t.count_length] = digits
        return bytes(out)

    # --- records ----------------------------------------------------------------------------

    def decode(self, data: bytes) -> dict[str, Any]:
        """The fields of one record; FieldError names the field that does not fit."""
        if len(data) != self.record_length:
            raise FieldError(None, f"{len(data)} bytes, layout says {self.record_length}")
        out: dict[str, Any] = {}
        for f in self.fields:
            out[f.name] = self._decode_field(f, data[f.start - 1 : f.end])
        return out

    def _text(self, f: LayoutField, raw: bytes) -> str:
        try:
            return raw.decode(self.encoding)
        except UnicodeDecodeError as e:
            raise FieldError(f.name, f"byte {e.start + 1} is not valid {self.encoding}") from None

    def _decode_field(self, f: LayoutField, raw: bytes) -> Any:
        if f.type == "packed":
            return _unpack(f, raw)
        if f.type == "binary":
            return Decimal(int.from_bytes(raw, "big", signed=f.signed)).scaleb(-f.scale, _EXACT)
        text = self._text(f, raw)
        if f.type == "text":
            return text.rstrip(f.pad) if (f.align or "left") == "left" else text.lstrip(f.pad)
        if not text.strip(" " + ("" if f.pad.isdigit() else f.pad)):
            return None
        if (f.align or "right") == "right":
            body = text.lstrip(f.pad) if f.pad != "0" else text
        else:
            body = text.rstrip(f.pad)
        sign = 1
        if f.type == "zoned" and body and not body[-1].isdigit():
            if body[-1] not in _OVERPUNCH:
                raise FieldError(f.name, "the last character is not a zoned-decimal sign")
            digit, sign = _OVERPUNCH[body[-1]]
            body = body[:-1] + str(digit)
        if not body.isascii() or not body.isdigit():
            raise FieldError(f.name, f"not a {f.type} number")
        value = Decimal(int(body)).scaleb(-f.scale, _EXACT)
        # copy_negate is exact; unary minus would round to the default 28-digit context.
        return value.copy_negate() if sign < 0 else value

    def encode(self, values: Mapping[str, Any]) -> bytes:
        """One record from field values (the inverse of :meth:`decode`); pads the gaps."""
        out = bytearray(" ".encode(self.encoding) * self.record_length)
        for f in self.fields:
            out[f.start - 1 : f.end] = self._encode_field(f, values.get(f.name))
        return bytes(out)

    def _encode_field(self, f: LayoutField, value: Any) -> bytes:
        if f.type == "packed":
            return _pack(f, value)
        if f.type == "binary":
            if value is None:
                raise FieldError(f.name, "a binary field needs a value")
            n = _scaled(f, value)
            try:
                return n.to_bytes(f.length, "big", signed=f.signed)
            except OverflowError:
                raise FieldError(f.name, f"does not fit in {f.length} bytes") from None
        pad = f.pad
        if f.type == "text":
            text = "" if value is None else str(value)
        elif value is None:
            text = ""
            pad = " "
        else:
            n = _scaled(f, value)
            if f.type == "unsigned" and n < 0:
                raise FieldError(f.name, "an unsigned field cannot hold a negative number")
            digits = str(abs(n)).rjust(f.length, "0")
            if f.type == "zoned":
                last = int(digits[-1])
                digits = digits[:-1] + (_NEGATIVE[last] if n < 0 else _POSITIVE[last])
            text = digits
        if len(text) > f.length:
            raise FieldError(f.name, f"longer than {f.length} characters")
        align = f.align or ("left" if f.type == "text" else "right")
        text = text.ljust(f.length, pad) if align == "left" else text.rjust(f.length, pad)
        try:
            raw = text.encode(self.encoding)
        except UnicodeEncodeError:
            raise FieldError(f.name, f"has characters {self.encoding} cannot write") from None
        if len(raw) != f.length:
            raise FieldError(f.name, f"takes {len(raw)} bytes in {self.encoding}, not {f.length}")
        return raw


def _scaled(f: LayoutField, value: Any) -> int:
    d = Decimal(value) if not isinstance(value, Decimal) else value
    scaled = d.scaleb(f.scale, _EXACT)
    if scaled != scaled.to_integral_value():
        raise FieldError(f.name, f"has more than {f.scale} decimal places")
    return int(scaled)


def _unpack(f: LayoutField, raw: bytes) -> Decimal:
    digits: list[int] = []
    for byte in raw[:-1]:
        digits.extend((byte >> 4, byte & 0x0F))
    digits.append(raw[-1] >> 4)
    sign = raw[-1] & 0x0F
    if any(d > 9 for d in digits):
        raise FieldError(f.name, "a packed decimal holds a nibble that is not a digit")
    if sign in (0x0C, 0x0A, 0x0E, 0x0F):
        negative = False
    elif sign in (0x0D, 0x0B):
        negative = True
    else:
        raise FieldError(f.name, "a packed decimal ends without a sign nibble")
    value = Decimal(int("".join(map(str, digits)))).scaleb(-f.scale, _EXACT)
    return value.copy_negate() if negative else value


def _pack(f: LayoutField, value: Any) -> bytes:
    if value is None:
        raise FieldError(f.name, "a packed field needs a value")
    n = _scaled(f, value)
    width = 2 * f.length - 1
    digits = str(abs(n))
    if len(digits) > width:
        raise FieldError(f.name, f"has more than {width} digits")
    nibbles = [int(d) for d in digits.rjust(width, "0")] + [0x0D if n < 0 else 0x0C]
    return bytes((nibbles[i] << 4) | nibbles[i + 1] for i in range(0, len(nibbles), 2))
