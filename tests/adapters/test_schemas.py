"""Response schemas from files: references bundled in, so the canonical records work as they are."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import validators

from adapters.schemas import FileSchemas, ResponseValidator, bundle
from core.ids import ServiceId
from tests.adapters.conftest import SCHEMAS

SERVICE = ServiceId.parse("PK/FED/NADRA/civil-registry/person/v1")
RECORDS = sorted(p for p in SCHEMAS.glob("*.json") if p.name != "pk.common.json")


@pytest.mark.parametrize("path", RECORDS, ids=lambda p: p.stem)
def test_canonical_records_validate_their_examples_once_bundled(path: Path) -> None:
    schema = FileSchemas({SERVICE: path})(SERVICE)
    assert schema is not None
    assert "pk.common.json" in schema["$defs"]
    validator = ResponseValidator(schema)
    for example in schema["examples"]:
        assert validator.problem(example) is None
    broken = {**schema["examples"][0], "unexpected": 1}
    assert validator.problem(broken) == (
        "/",
        "fails 'additionalProperties' (schema /additionalProperties)",
    )


def test_references_are_rewritten_into_the_bundle() -> None:
    common = {"$schema": "x", "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"type": "integer"}}}
    root = {"properties": {"n": {"$ref": "common.json#/$defs/a"}}, "$defs": {"own": {}}}
    bundled = bundle(root, {"common.json": common})
    assert bundled["properties"]["n"] == {"$ref": "#/$defs/common.json/$defs/a"}
    assert bundled["$defs"]["common.json"]["$defs"]["a"] == {"$ref": "#/$defs/common.json/$defs/b"}
    assert "$schema" not in bundled["$defs"]["common.json"]
    validator = ResponseValidator(bundled)
    assert validator.problem({"n": 3}) is None
    assert validator.problem({"n": "3"}) == ("/n", "fails 'type' (schema /properties/n/type)")


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("other.json#/$defs/a", "not available"),
        ("common.json#anchor", "only JSON Pointer fragments"),
    ],
)
def test_unknown_references_fail_closed(ref: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bundle({"$ref": ref}, {"common.json": {}})


@pytest.mark.parametrize(
    "ref", ["../secret.json#/x", "/etc/passwd#/x", "https://example.org/s.json"]
)
def test_files_schemas_only_read_references_beside_the_schema(tmp_path: Path, ref: str) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"properties": {"x": {"$ref": ref}}}))
    with pytest.raises(ValueError, match="is not a schema beside it"):
        FileSchemas({SERVICE: path})(SERVICE)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=8)
    | st.sampled_from(["2024-25", "35202-1234567-1", "Lahore"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


@given(st.sampled_from(RECORDS), st.data())
def test_inlining_references_decides_as_the_bundled_schema(path: Path, data: st.DataObject) -> None:
    schema = FileSchemas({SERVICE: path})(SERVICE)
    assert schema is not None
    document = dict(data.draw(st.sampled_from(schema["examples"])))
    key = data.draw(st.sampled_from([*schema["properties"], "extra"]))
    document[key] = data.draw(json_values)
    plain = validators.validator_for(schema)(
        schema, format_checker=validators.Draft202012Validator.FORMAT_CHECKER
    )
    assert (ResponseValidator(schema).problem(document) is None) == plain.is_valid(document)


def test_recursive_references_still_validate() -> None:
    tree = {
        "$defs": {
            "node": {
                "type": "object",
                "properties": {
                    "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}},
                    "n": {"type": "integer"},
                },
            }
        },
        "$ref": "#/$defs/node",
    }
    validator = ResponseValidator(tree)
    assert validator.problem({"kids": [{"kids": [{"n": 1}]}]}) is None
    assert validator.problem({"kids": [{"kids": [{"n": "x"}]}]}) is not None
