"""Transforms for Pakistani data: properties for every input, and the examples that matter."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.errors import TransformError
from adapters.transforms import (
    CenturyRule,
    DateFormat,
    ascii_digits,
    compile_transform,
    format_cnic,
    parse_date,
)

URDU = str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")  # Eastern Arabic-Indic, as Urdu writes them
ARABIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")  # Arabic-Indic
TODAY = dt.date(2026, 11, 28)
MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")

digits13 = st.text(alphabet="0123456789", min_size=13, max_size=13)


def t(spec: Any, tables: dict[str, dict[str, str]] | None = None) -> Any:
    return compile_transform(spec, tables or {})


@given(st.integers(min_value=0), st.sampled_from([URDU, ARABIC]), st.booleans())
def test_urdu_and_arabic_indic_digits_become_ascii(
    n: int, table: dict[int, str], mixed: bool
) -> None:
    text = str(n).translate(table)
    if mixed:  # records mix scripts within one number
        text = text[: len(text) // 2] + str(n)[len(text) // 2 :]
    assert ascii_digits(text) == str(n)
    assert t("digits")(f"House {text}") == f"House {n}"


@given(digits13, st.sampled_from(["dashed", "bare", "urdu", "padded"]))
def test_cnic_in_any_form_is_normalised(digits: str, form: str) -> None:
    dashed = f"{digits[:5]}-{digits[5:12]}-{digits[12]}"
    written = {
        "dashed": dashed,
        "bare": digits,
        "urdu": dashed.translate(URDU),
        "padded": f"  {digits}  ",
    }[form]
    assert format_cnic(written) == dashed
    assert format_cnic(written, dashed=False) == digits
    assert t("cnic")(written) == dashed


@pytest.mark.parametrize(
    "bad", ["3520212345", "35202-1234567", "3520a-1234567-1", "35202_1234567_1", ""]
)
def test_malformed_cnic_is_refused_without_echoing_it(bad: str) -> None:
    with pytest.raises(TransformError) as e:
        format_cnic(bad)
    assert e.value.reason == "not a CNIC (13 digits, with or without dashes)"
    assert bad not in str(e.value) or bad == ""


def test_numeric_cnic_column_keeps_its_leading_zeros() -> None:
    assert format_cnic(123456789012) == "01234-5678901-2"


def _write(d: dt.date, pattern: str) -> str:
    return (
        pattern.replace("YYYY", f"{d.year:04d}")
        .replace("YY", f"{d.year % 100:02d}")
        .replace("MON", MONTHS[d.month - 1])
        .replace("MM", f"{d.month:02d}")
        .replace("DD", f"{d.day:02d}")
    )


@given(
    st.dates(min_value=dt.date(1000, 1, 1), max_value=dt.date(9999, 12, 31)),
    st.sampled_from(["DD/MM/YYYY", "DD-MON-YYYY", "YYYYMMDD", "YYYY-MM-DD", "MM/DD/YYYY"]),
    st.booleans(),
)
def test_four_digit_year_dates_round_trip(d: dt.date, pattern: str, urdu: bool) -> None:
    text = _write(d, pattern)
    if urdu:
        text = text.translate(URDU)
    assert parse_date(text, (DateFormat.compile(pattern),), None) == d


@given(st.dates(min_value=dt.date(1927, 1, 1), max_value=TODAY))
def test_past_rule_gives_the_latest_date_not_after_today(d: dt.date) -> None:
    text = _write(d, "DD-MON-YY")
    got = parse_date(text, (DateFormat.compile("DD-MON-YY"),), CenturyRule(None), today=TODAY)
    assert got <= TODAY
    assert got.year % 100 == d.year % 100
    assert got.year > TODAY.year - 100 or (
        got.year == TODAY.year - 100 and (got.month, got.day) > (TODAY.month, TODAY.day)
    )


@given(st.integers(min_value=0, max_value=99), st.integers(min_value=0, max_value=100))
def test_pivot_rule_splits_centuries_at_the_pivot(yy: int, pivot: int) -> None:
    text = f"01-JAN-{yy:02d}"
    got = parse_date(text, (DateFormat.compile("DD-MON-YY"),), CenturyRule(pivot))
    assert got.year == (2000 + yy if yy < pivot else 1900 + yy)


def test_examples_from_legacy_systems() -> None:
    both = t({"date": {"format": ["DD/MM/YYYY", "DD-MON-YY"], "century": "past"}})
    assert both("12/04/1990") == "1990-04-12"
    assert both("12-APR-90") == "1990-04-12"
    assert both("12-apr-90") == "1990-04-12"
    assert both("۱۲/۰۴/۱۹۹۰") == "1990-04-12"
    assert both(dt.date(1990, 4, 12)) == "1990-04-12"  # a DATE column needs no format
    assert both(None) is None
    with pytest.raises(TransformError, match="not a calendar date"):
        both("31/02/1990")
    with pytest.raises(TransformError, match="DD/MM/YYYY or DD-MON-YY"):
        both("1990-04-12")
    with pytest.raises(TransformError, match="unknown month"):
        both("12-XYZ-90")


def test_a_moment_is_dated_where_the_federation_lives_unless_told_otherwise() -> None:
    """A birth date a legacy system keeps as midnight in Lahore (a timestamp with a time
    zone) comes back from a server in UTC as 19:00 the day before: dated there, it was a day
    early."""
    kept = dt.datetime(1990, 4, 11, 19, 0, tzinfo=dt.UTC)
    assert t({"date": "YYYY-MM-DD"})(kept) == "1990-04-12"
    assert t({"date": {"format": "YYYY-MM-DD", "timezone": "UTC"}})(kept) == "1990-04-11"
    assert t({"date": "YYYY-MM-DD"})(kept.replace(tzinfo=None)) == "1990-04-11"  # as written


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"date": "DD-MON-YY"}, "explicit century rule"),
        ({"date": {"format": "DD/MM"}}, "needs a year"),
        ({"date": {"format": "DD/MM/YYYY", "century": "recent"}}, "century must be"),
        ({"date": {"format": "DD/MM/YYYY/DD"}}, "names a part twice"),
        ({"date": {"format": "DD/MM/YYYY", "timezone": "Mars/Olympus"}}, "unknown time zone"),
        ({"code": "tehsil"}, "not defined under code_tables"),
        ({"map": {}}, "map takes a table"),
        ({"replace": {"pattern": "("}}, "replace takes"),
        (
            {"replace": {"pattern": "(", "with": ""}},
            "replace pattern: not an RE2 regular expression",
        ),
        ({"replace": {"pattern": "a(?=b)", "with": ""}}, "invalid perl operator: \\(\\?="),
        # Accepted, these failed at every call (re.error, IndexError) instead of at load.
        ({"replace": {"pattern": "([0-9]+)/", "with": r"\2"}}, "replace with: invalid group"),
        ({"replace": {"pattern": "(?P<n>[0-9]+)", "with": r"\g<d>"}}, "unknown group name"),
        ({"replace": {"pattern": "x", "with": "\\"}}, "bad escape"),
        ({"replace": {"pattern": "(?i)x", "with": r"\q"}}, "bad escape"),
        ("date", "needs an argument"),
        ("soundex", "unknown transform"),
        ({"trim": True}, "takes no argument"),
        ({"a": 1, "b": 2}, "one-key mapping"),
    ],
)
def test_configuration_mistakes_are_named(spec: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        t(spec)


def test_trim_case_collapse_and_tables() -> None:
    assert t("trim")("  Ali  ") == "Ali"
    assert t("collapse")("  MUHAMMAD   BILAL \t QURESHI ") == "MUHAMMAD BILAL QURESHI"
    assert t("title")("MUHAMMAD BILAL") == "Muhammad Bilal"
    assert t("upper")("lhr-glb") == "LHR-GLB"
    assert t("lower")("MALE") == "male"
    assert t("upper")("محمد") == "محمد"  # Urdu has no case: unchanged
    district = t({"code": "district"}, {"district": {"101": "Lahore"}})
    assert district("101") == "Lahore"
    assert district("۱۰۱") == "Lahore"
    with pytest.raises(TransformError, match="code not in code table district"):
        district("999")
    assert t({"map": {"M": "male", "F": "female"}})("F") == "female"
    assert t({"null_if": ["00000000", "N/A"]})("00000000") is None
    assert t({"null_if": ["00000000"]})("20240101") == "20240101"
    assert t({"replace": {"pattern": "[^0-9]", "with": ""}})("+92 300-1234567") == "923001234567"


@given(st.text())
def test_text_transforms_never_fail_on_text(text: str) -> None:
    for name in ("trim", "collapse", "upper", "lower", "title", "digits"):
        assert isinstance(t(name)(text), str)
