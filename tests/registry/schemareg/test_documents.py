"""What a registered schema must be before the registry accepts it: every ``$ref`` points at a
part of the bundle that is there, and the bundle is small enough in the ways the
compatibility checker pays for."""

from __future__ import annotations

from typing import Any

import pytest

from registry.schemareg.documents import (
    DRAFT7,
    DRAFT202012,
    MAX_PATTERN_PROPERTIES,
    Bundle,
    check_schema,
)
from registry.schemareg.errors import InvalidSchemaError

COMMON = {"$defs": {"cnic": {"type": "string"}}}


@pytest.mark.parametrize(
    ("schema", "where"),
    [
        ({"$ref": "#/definitions/x"}, "/$ref"),
        ({"properties": {"a": {"$ref": "#/definitions/x"}}, "definitions": {}},
         "/properties/a/$ref"),
        ({"$schema": DRAFT202012, "$ref": "#nothere"}, "/$ref"),
        ({"$schema": DRAFT202012, "$dynamicRef": "#meta"}, "/$dynamicRef"),
        ({"$ref": "pk.common.json#/$defs/nope"}, "/$ref"),
        # Inside a resource with its own $id, "#/..." is relative to that resource.
        ({"definitions": {"y": {}}, "properties": {"p": {"$id": "sub.json",
                                                          "$ref": "#/definitions/y"}}},
         "/properties/p/$ref"),
    ],
)  # fmt: skip
def test_a_ref_to_nothing_is_refused_as_the_validators_would(schema: Any, where: str) -> None:
    bundle = Bundle(schema, DRAFT7, {"pk.common.json": COMMON})
    with pytest.raises(InvalidSchemaError) as refused:
        check_schema(bundle)
    assert refused.value.error_code == 42201
    assert "validators could not compile" in refused.value.message
    assert refused.value.detail["pointer"] == where


@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": "#/definitions/x", "definitions": {"x": {"type": "string"}}},
        {"$ref": "#", "type": "object"},
        {"$ref": "pk.common.json#/$defs/cnic"},
        {"$ref": "./pk.common.json#/$defs/cnic"},
        {"$ref": "root.json#/definitions/x", "definitions": {"x": {}}},  # the root's own URI
        {"$ref": "#/properties/a~1b", "properties": {"a/b": {"type": "string"}}},
        {"properties": {"p": {"$id": "sub.json", "definitions": {"x": {}},
                              "$ref": "#/definitions/x"}}},
        {"$ref": "sub.json#/definitions/x",
         "definitions": {"s": {"$id": "sub.json", "definitions": {"x": {}}}}},
        {"$schema": DRAFT202012, "$ref": "#cnic", "$defs": {"c": {"$anchor": "cnic"}}},
    ],
)  # fmt: skip
def test_a_ref_into_the_bundle_is_accepted(schema: Any) -> None:
    check_schema(Bundle(schema, DRAFT7, {"pk.common.json": COMMON}))


def test_more_pattern_properties_than_the_checker_may_compile_are_refused() -> None:
    def closed(patterns: int, tag: str) -> dict[str, Any]:
        keys = {f"^{tag}{i}_": {"type": "string"} for i in range(patterns)}
        return {"type": "object", "patternProperties": keys, "additionalProperties": False}

    check_schema(Bundle(closed(MAX_PATTERN_PROPERTIES, "a"), DRAFT7))
    # Counted over the bundle: its references' patterns are compiled too.
    over = Bundle(
        {**closed(MAX_PATTERN_PROPERTIES, "a"), "properties": {"c": {"$ref": "c.json"}}},
        DRAFT7,
        {"c.json": closed(1, "c")},
    )
    with pytest.raises(InvalidSchemaError) as refused:
        check_schema(over)
    assert refused.value.error_code == 42201
    assert refused.value.message == (
        f"Invalid schema: {MAX_PATTERN_PROPERTIES + 1} distinct patternProperties regular "
        f"expressions, with its references; at most {MAX_PATTERN_PROPERTIES} are accepted"
    )
