"""Mappings applied to records: joins, defaults, required fields, repeats and types."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.errors import ConfigError, MappingError
from adapters.mapping import (
    CompiledMapping,
    FieldMap,
    JsonNode,
    RowsNode,
    compile_mapping,
    json_pointer,
    pointer_tokens,
)


def fail(where: Any, message: str) -> Exception:
    return ConfigError(message, field=" → ".join(map(str, where)))


def mapping(spec: dict[str, Any], paths: str = "row") -> CompiledMapping:
    def check(path: str, repeated: bool) -> None:
        if paths == "json":
            pointer_tokens(path)

    fields = {k: FieldMap.model_validate(v) for k, v in spec.items()}
    return compile_mapping(
        fields, tables={"district": {"101": "Lahore"}}, check_path=check, fail=fail
    )


def test_fields_are_joined_transformed_and_nested() -> None:
    m = mapping(
        {
            "/name/en": {"from": ["FIRST", "MIDDLE", "LAST"], "transforms": ["title"]},
            "/address/district": {"from": "D", "transforms": [{"code": "district"}]},
            "/source": {"value": "NADRA"},
            "/age": {"from": "AGE", "as": "integer"},
            "/fee": {"from": "FEE", "as": "number"},
            "/active": {"from": "ACTIVE", "as": "boolean"},
        }
    )
    row = {
        "FIRST": "MUHAMMAD",
        "MIDDLE": None,
        "LAST": " QURESHI ",
        "D": "101",
        "AGE": "۳۴",
        "FEE": Decimal("12.50"),
        "ACTIVE": "Y",
    }
    assert m.apply(RowsNode([row]), "row 1") == {
        "name": {"en": "Muhammad Qureshi"},
        "address": {"district": "Lahore"},
        "source": "NADRA",
        "age": 34,
        "fee": 12.5,
        "active": True,
    }


def test_absent_and_blank_values_take_the_default_or_are_left_out() -> None:
    m = mapping(
        {
            "/a": {"from": "A", "default": "none"},
            "/b": "B",
            "/c": {"from": "C", "transforms": ["trim"]},
        }
    )
    assert m.apply(RowsNode([{"A": "   ", "B": None, "C": "   "}]), "r") == {"a": "none"}


@pytest.mark.parametrize(
    ("spec", "row", "reason"),
    [
        ({"from": "A", "required": True}, {"A": "  "}, "required, but the source has no value"),
        ({"from": "A", "as": "integer"}, {"A": "12.5"}, "not an integer"),
        ({"from": "A", "as": "boolean"}, {"A": "maybe"}, "not a yes/no value"),
        ({"from": "A", "transforms": ["cnic"]}, {"A": "123"}, "not a CNIC"),
        (
            {"from": "A", "transforms": [{"code": "district"}]},
            {"A": "999"},
            "code not in code table district",
        ),
        ({"from": "B"}, {"A": "x"}, "the result has no column 'B'"),
    ],
)
def test_a_mapping_error_names_the_record_and_the_field(
    spec: dict[str, Any], row: dict[str, Any], reason: str
) -> None:
    with pytest.raises(MappingError) as e:
        mapping({"/out/field": spec}).apply(RowsNode([row]), "file X record 17")
    assert e.value.record == "file X record 17"
    assert e.value.field == "/out/field"
    assert reason in e.value.reason
    assert e.value.detail == {
        "record": "file X record 17",
        "field": "/out/field",
        "reason": e.value.reason,
    }
    assert "999" not in e.value.message
    assert "maybe" not in e.value.message


@pytest.mark.parametrize(
    ("spec", "value"),
    [
        ({"from": "N", "as": "integer"}, "1e400000"),
        ({"from": "N", "as": "number"}, "-9E+400000"),
        ({"from": "N"}, Decimal("1E+400000")),  # a NUMERIC column
    ],
)
def test_a_number_too_large_for_json_is_refused_at_once(spec: dict[str, Any], value: Any) -> None:
    # Nine bytes of text would otherwise become an integer of 400,001 digits: seconds of
    # CPU (minutes at 1e1000000), on the event loop for REST, SOAP and SQL answers.
    started = time.monotonic()
    with pytest.raises(MappingError, match="number out of range"):
        mapping({"/n": spec}).apply(RowsNode([{"N": value}]), "row 1")
    assert time.monotonic() - started < 0.1


def test_driver_types_become_json_or_a_mapping_error() -> None:
    # Types a database driver returns that JSON has no form for passed through untouched, and
    # json.dumps failed on them once the answer had been validated (an unexpected error).
    m = mapping({"/at": "AT", "/id": "ID", "/ref": {"from": "ID", "as": "string"}})
    row = {"AT": dt.time(9, 30), "ID": uuid.UUID(int=7)}
    assert m.apply(RowsNode([row]), "row 1") == {
        "at": "09:30:00",
        "id": "00000000-0000-0000-0000-000000000007",
        "ref": "00000000-0000-0000-0000-000000000007",
    }
    for value in (dt.timedelta(hours=26), {"a": 1}, [1], object()):
        for spec in ({"from": "V"}, {"from": "V", "as": "string"}):
            with pytest.raises(MappingError, match="has no JSON form; cast the column to text"):
                mapping({"/v": spec}).apply(RowsNode([{"V": value}]), "row 1")


def test_repeated_rows_become_arrays_of_objects_and_of_values() -> None:
    m = mapping(
        {
            "/parcel": "PARCEL",
            "/owners": {
                "each": "*",
                "required": True,
                "mapping": {"/cnic": {"from": "CNIC", "transforms": ["cnic"]}},
            },
            "/khasras": {"each": "*", "item": {"from": "KHASRA"}},
        }
    )
    rows = [
        {"PARCEL": "P1", "CNIC": "3520212345671", "KHASRA": "12"},
        {"PARCEL": "P1", "CNIC": "3520276543212", "KHASRA": None},
    ]
    assert m.apply(RowsNode(rows), "r") == {
        "parcel": "P1",
        "owners": [{"cnic": "35202-1234567-1"}, {"cnic": "35202-7654321-2"}],
        "khasras": ["12"],
    }
    with pytest.raises(
        MappingError,
        match=r"cannot map field /owners\[1\]/cnic|cannot map field /cnic of r /owners\[1\]",
    ):
        m.apply(RowsNode([*rows[:1], {**rows[1], "CNIC": "1"}]), "r")


def test_json_sources_are_read_with_pointers() -> None:
    m = mapping(
        {
            "/id": "/data/a~1b",
            "/first": "/list/0",
            "/items": {"each": "/list", "item": {"from": ""}},
        },
        paths="json",
    )
    doc = {"data": {"a/b": 7}, "list": ["x", "y"]}
    assert m.apply(JsonNode(doc), "r") == {"id": 7, "first": "x", "items": ["x", "y"]}
    with pytest.raises(MappingError, match="is an dict, not a single value"):
        mapping({"/id": "/data"}, paths="json").apply(JsonNode(doc), "r")


@given(st.lists(st.text(), min_size=1, max_size=5))
def test_json_pointers_round_trip(tokens: list[str]) -> None:
    assert pointer_tokens(json_pointer(tokens)) == tuple(tokens)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"/a": {"from": "A", "value": 1}}, "exactly one of"),
        ({"/a": {"each": "*"}}, "'each' goes with"),
        ({"/a": {"each": "*", "item": "A", "mapping": {"/b": "B"}}}, "not both"),
        ({"/a": {"each": "*", "item": "A", "as": "integer"}}, "'each' takes only"),
        ({"/a": {"from": []}}, "at least one path"),
    ],
)
def test_impossible_entries_are_refused(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mapping(spec)


def test_pointers_must_be_pointers_and_must_not_overlap() -> None:
    with pytest.raises(ConfigError, match="must start with '/'"):
        mapping({"name": "A"})
    with pytest.raises(ConfigError, match="overlaps with /a"):
        mapping({"/a": "A", "/a/b": "B"})
    with pytest.raises(ConfigError, match="output root"):
        mapping({"": "A"})
