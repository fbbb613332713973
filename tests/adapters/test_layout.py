"""Fixed-width layouts: encode/parse round trips in ASCII and EBCDIC, and the byte-exact forms."""

from __future__ import annotations

import string
from decimal import Context, Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from adapters.layout import FieldError, Layout, RawRecord

EXACT = Context(prec=64)
TEXT = string.ascii_letters + string.digits + " -/.,&'()"


@st.composite
def field_and_value(draw: st.DrawFn, start: int) -> tuple[dict[str, Any], Any]:
    kind = draw(st.sampled_from(["text", "unsigned", "zoned", "packed", "binary"]))
    if kind == "text":
        length = draw(st.integers(1, 30))
        value = draw(st.text(alphabet=TEXT, max_size=length)).rstrip(" ")
        return {"type": kind, "start": start, "length": length}, value
    if kind == "binary":
        length = draw(st.sampled_from([1, 2, 4, 8]))
        signed = draw(st.booleans())
        bits = 8 * length
        lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        scale = draw(st.integers(0, 4))
        n = draw(st.integers(lo, hi))
        spec = {"type": kind, "start": start, "length": length, "signed": signed, "scale": scale}
        return spec, Decimal(n).scaleb(-scale, EXACT)
    length = draw(st.integers(1, 16 if kind == "packed" else 18))
    digits = 2 * length - 1 if kind == "packed" else length
    scale = draw(st.integers(0, min(digits, 6)))
    top = 10**digits - 1
    n = draw(st.integers(0 if kind == "unsigned" else -top, top))
    spec = {"type": kind, "start": start, "length": length, "scale": scale}
    if kind != "packed" and draw(st.booleans()):
        return spec, None  # a blank display number
    return spec, Decimal(n).scaleb(-scale, EXACT)


@st.composite
def layouts(draw: st.DrawFn) -> tuple[Layout, dict[str, Any]]:
    count = draw(st.integers(1, 8))
    fields, values, at = [], {}, 1
    for i in range(count):
        at += draw(st.integers(0, 3))  # gaps are filler
        spec, value = draw(field_and_value(at))
        spec["name"] = f"F{i}"
        fields.append(spec)
        values[spec["name"]] = value
        at += spec["length"]
    layout = Layout(
        encoding=draw(st.sampled_from(["ascii", "cp037", "cp500"])),
        record_length=at - 1 + draw(st.integers(0, 5)),
        separator=draw(st.sampled_from(["none", "lf", "crlf"])),
        fields=fields,
    )
    return layout, values


@given(layouts())
def test_encode_then_decode_gives_the_values_back(case: tuple[Layout, dict[str, Any]]) -> None:
    layout, values = case
    record = layout.encode(values)
    assert len(record) == layout.record_length
    decoded = layout.decode(record)
    assert decoded == values
    for name, value in values.items():  # the sign survives, -0 aside
        if isinstance(value, Decimal) and value:
            assert decoded[name].is_signed() == value.is_signed()


@given(layouts(), st.integers(1, 5))
def test_a_file_of_records_splits_back_into_them(
    case: tuple[Layout, dict[str, Any]], n: int
) -> None:
    layout, values = case
    sep = {"none": b"", "lf": b"\n", "crlf": b"\r\n"}[layout.separator]
    data = b"".join(layout.encode(values) + sep for _ in range(n))
    records = list(layout.records(data))
    assert all(isinstance(r, RawRecord) for r in records)
    assert [layout.decode(r.data) for r in records if isinstance(r, RawRecord)] == [values] * n


def _one(type_: str, length: int, encoding: str = "ascii", **kw: Any) -> Layout:
    return Layout(
        encoding=encoding,
        record_length=length,
        fields=[{"name": "X", "start": 1, "length": length, "type": type_, **kw}],
    )


@pytest.mark.parametrize(
    ("type_", "length", "encoding", "value", "raw"),
    [
        ("packed", 3, "cp037", Decimal(12345), b"\x12\x34\x5c"),
        ("packed", 3, "cp037", Decimal(-12345), b"\x12\x34\x5d"),
        ("packed", 4, "cp037", Decimal("-1234.56"), b"\x01\x23\x45\x6d"),
        ("zoned", 3, "cp037", Decimal(123), b"\xf1\xf2\xc3"),
        ("zoned", 3, "cp037", Decimal(-123), b"\xf1\xf2\xd3"),
        ("zoned", 3, "ascii", Decimal(-123), b"12L"),
        ("zoned", 3, "ascii", Decimal(120), b"12{"),
        ("unsigned", 5, "cp037", Decimal(42), b"\xf0\xf0\xf0\xf4\xf2"),
        ("binary", 2, "cp037", Decimal(-2), b"\xff\xfe"),
        ("text", 5, "cp037", "AB", b"\xc1\xc2\x40\x40\x40"),
    ],
)
def test_byte_exact_forms(type_: str, length: int, encoding: str, value: Any, raw: bytes) -> None:
    scale = 2 if value == Decimal("-1234.56") else 0
    layout = _one(type_, length, encoding, scale=scale)
    assert layout.encode({"X": value}) == raw
    assert layout.decode(raw) == {"X": value}


def test_a_plain_last_digit_reads_as_positive_zoned() -> None:
    assert _one("zoned", 3, "cp037").decode(b"\xf1\xf2\xf3") == {"X": Decimal(123)}


@pytest.mark.parametrize(
    ("layout", "raw", "reason"),
    [
        (_one("packed", 2), b"\x1a\x2c", "not a digit"),
        (_one("packed", 2), b"\x12\x34", "without a sign nibble"),
        (_one("zoned", 3), b"12#", "zoned-decimal sign"),
        (_one("unsigned", 3), b"1 2", "not a unsigned number"),
        (_one("text", 3), b"a\xe9b", "not valid ascii"),
    ],
)
def test_malformed_fields_name_the_field(layout: Layout, raw: bytes, reason: str) -> None:
    with pytest.raises(FieldError, match=reason) as e:
        layout.decode(raw)
    assert e.value.field == "X"


def test_values_that_do_not_fit_are_refused() -> None:
    with pytest.raises(FieldError, match="longer than 3"):
        _one("text", 3).encode({"X": "ABCD"})
    with pytest.raises(FieldError, match="more than 3 digits"):
        _one("packed", 2).encode({"X": 1000})
    with pytest.raises(FieldError, match="decimal places"):
        _one("zoned", 4, scale=1).encode({"X": Decimal("1.25")})
    with pytest.raises(FieldError, match="negative"):
        _one("unsigned", 4).encode({"X": -1})
    with pytest.raises(FieldError, match="cannot write"):
        _one("text", 4, "cp037").encode({"X": "محمد"})


def test_truncated_and_overlong_records_are_found() -> None:
    layout = _one("text", 4)
    records = list(layout.records(b"ABCD\nABC\nABCDE\nWXYZ"))
    assert [r.reason if isinstance(r, FieldError) else r.data for r in records] == [
        b"ABCD",
        "truncated record 2: 3 bytes, layout says 4",
        "overlong record 3: 5 bytes, layout says 4",
        b"WXYZ",
    ]
    fixed = Layout(
        record_length=4, separator="none", fields=[{"name": "X", "start": 1, "length": 4}]
    )
    tail = list(fixed.records(b"ABCDWXYZAB"))
    assert isinstance(tail[-1], FieldError)
    assert tail[-1].reason == "truncated record 3: 2 of 4 bytes"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            [{"name": "A", "start": 1, "length": 4}, {"name": "B", "start": 3, "length": 2}],
            "overlap",
        ),
        ([{"name": "A", "start": 1, "length": 4}, {"name": "A", "start": 5, "length": 2}], "twice"),
        ([{"name": "A", "start": 8, "length": 4}], "past the record length"),
        ([{"name": "A", "start": 1, "length": 3, "type": "binary"}], "1, 2, 4 or 8"),
        ([{"name": "A", "start": 1, "length": 3, "scale": 2}], "no scale"),
    ],
)
def test_impossible_layouts_are_refused(fields: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Layout(record_length=10, fields=fields)


def test_long_negative_packed_and_zoned_numbers_keep_every_digit() -> None:
    # Found by the round-trip property: 29 digits exceed Python's default Decimal precision.
    from decimal import Decimal

    from adapters.layout import Layout

    for kind in ("packed", "zoned"):
        layout = Layout.model_validate(
            {
                "encoding": "cp037",
                "record_length": 31,
                "separator": "none",
                "fields": [
                    {
                        "name": "N",
                        "start": 1,
                        "length": 15 if kind == "packed" else 31,
                        "type": kind,
                        "signed": True,
                    }
                ],
            }
        )
        value = Decimal("-10000000000000000000000000001")
        assert layout.decode(layout.encode({"N": value}))["N"] == value


@pytest.mark.parametrize(
    ("encoding", "count"),
    [
        ("cp037", "00000\u00b2".encode("cp037")),  # a superscript two: isdigit(), yet not int()
        ("ascii", b"00\x8000"),  # not ASCII at all
    ],
)
def test_a_trailer_count_that_is_not_ascii_digits_is_a_field_error(
    encoding: str, count: bytes
) -> None:
    layout = Layout(
        encoding=encoding,
        record_length=10,
        separator="none",
        trailer={"value": "TRL", "count_start": 4, "count_length": len(count)},
        fields=[{"name": "A", "start": 1, "length": 10}],
    )
    record = "TRL".encode(encoding) + count + " ".encode(encoding) * (7 - len(count))
    with pytest.raises(FieldError) as caught:
        layout.trailer_count(record)
    assert caught.value.field == "trailer"


def test_a_trailer_marker_the_code_page_cannot_write_is_refused() -> None:
    with pytest.raises(ValidationError, match="the trailer marker is not in ascii"):
        Layout(
            encoding="ascii",
            record_length=10,
            trailer={"value": "TRL\u00e9", "count_start": 5, "count_length": 3},
            fields=[{"name": "A", "start": 1, "length": 10}],
        )
