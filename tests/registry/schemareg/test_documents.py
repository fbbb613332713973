"""What a registered schema must be before the registry accepts it: every ``$ref`` points at a
part of the bundle that is there, and the bundle is small enough in the ways the
compatibility checker pays for."""

from __future__ import annotations

from typing import Any

import jsonschema_rs
import pytest

from registry.schemareg.documents import (
    DRAFT7,
    DRAFT202012,
    MAX_PATTERN_PROPERTIES,
    Bundle,
    check_schema,
    draft_of,
)
from registry.schemareg.errors import InvalidSchemaError
from registry.schemareg.validation import compile_bundle

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
        # Inside a resource with its own $id, "#/..." is relative to that resource ...
        ({"$schema": DRAFT202012, "$defs": {"y": {}},
          "properties": {"p": {"$id": "sub.json", "$ref": "#/$defs/y"}}}, "/properties/p/$ref"),
        # ... but draft 7 ignores an $id beside $ref, like every other keyword there.
        ({"properties": {"p": {"$id": "sub.json", "definitions": {"x": {}},
                               "$ref": "#/definitions/x"}}}, "/properties/p/$ref"),
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
        {"type": "object", "properties": {"a": {"$ref": "#"}}},  # ({"$ref": "#"}: a loop)
        {"$ref": "pk.common.json#/$defs/cnic"},
        {"$ref": "./pk.common.json#/$defs/cnic"},
        {"$ref": "root.json#/definitions/x", "definitions": {"x": {}}},  # the root's own URI
        {"$ref": "#/properties/a~1b", "properties": {"a/b": {"type": "string"}}},
        {"$schema": DRAFT202012, "properties": {"p": {"$id": "sub.json", "$defs": {"x": {}},
                                                      "$ref": "#/$defs/x"}}},
        {"definitions": {"y": {}}, "properties": {"p": {"$id": "sub.json",
                                                        "$ref": "#/definitions/y"}}},
        {"$ref": "sub.json#/definitions/x",
         "definitions": {"s": {"$id": "sub.json", "definitions": {"x": {}}}}},
        {"$schema": DRAFT202012, "$ref": "#cnic", "$defs": {"c": {"$anchor": "cnic"}}},
    ],
)  # fmt: skip
def test_a_ref_into_the_bundle_is_accepted(schema: Any) -> None:
    check_schema(Bundle(schema, DRAFT7, {"pk.common.json": COMMON}))


NESTED = "https://n.example/dir/sub.json"


@pytest.mark.parametrize(
    ("schema", "compiles"),
    [
        # A relative $id or $ref resolves against the innermost enclosing $id.
        ({"$defs": {"n": {"$id": NESTED, "$defs": {"b": {"$id": "b.json"}}}},
          "$ref": "https://n.example/dir/b.json"}, True),
        ({"$defs": {"n": {"$id": NESTED, "$defs": {"b": {"$id": "b.json"}}}}, "$ref": "b.json"},
         False),
        ({"properties": {"p": {"$id": NESTED, "$ref": "pk.common.json#/$defs/cnic"}}}, False),
        ({"properties": {"p": {"$id": "sub/sub.json", "$ref": "pk.common.json#/$defs/cnic"}}},
         False),
        ({"properties": {"p": {"$id": "sub/sub.json", "$ref": "../pk.common.json#/$defs/cnic"}}},
         True),
        # An anchor belongs to one resource, and only where a schema can be.
        ({"$defs": {"n": {"$id": NESTED, "$defs": {"a": {"$anchor": "x"}}}}, "$ref": "#x"},
         False),
        ({"$defs": {"n": {"$id": NESTED, "$defs": {"a": {"$anchor": "x"}}}},
          "$ref": f"{NESTED}#x"}, True),
        ({"examples": [{"$anchor": "x"}], "$ref": "#x"}, False),
        # Draft 7 names anchors with "$id": "#name" and knows no $anchor.
        ({"$schema": DRAFT7, "definitions": {"c": {"$id": "#cnic"}}, "$ref": "#cnic"}, True),
        ({"$schema": DRAFT7, "definitions": {"c": {"$anchor": "cnic"}}, "$ref": "#cnic"}, False),
    ],
)  # fmt: skip
def test_a_ref_is_accepted_exactly_when_the_validators_resolve_it(
    schema: Any, compiles: bool
) -> None:
    root = {"$schema": DRAFT202012, **schema}
    bundle = Bundle(root, draft_of(root), {"pk.common.json": COMMON})
    try:
        compile_bundle(1, bundle)
    except (ValueError, jsonschema_rs.ReferencingError):
        assert not compiles, "the validators should compile it"
        with pytest.raises(InvalidSchemaError):
            check_schema(bundle)
    else:
        assert compiles, "the validators should refuse it"
        check_schema(bundle)


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


def test_draft7_dependencies_in_a_2020_12_schema_are_refused() -> None:
    """2020-12 spells it dependentRequired and dependentSchemas. jsonschema-rs, which gateways
    run, still enforces draft 7's ``dependencies`` there; the reference validator and the
    compatibility checker ignore it, so adding one would be judged compatible while gateways
    refuse data the old schema took."""
    nested = {"properties": {"a": {"type": "object", "dependencies": {"b": ["c"]}}}}
    for schema in ({"dependencies": {"b": ["c"]}}, nested):
        with pytest.raises(InvalidSchemaError, match="dependentRequired or dependentSchemas"):
            check_schema(Bundle({"$schema": DRAFT202012, **schema}, DRAFT202012))
        check_schema(Bundle(schema, DRAFT7))  # draft 7's own keyword
    # A property of that name is no keyword.
    check_schema(Bundle({"$schema": DRAFT202012, "properties": {"dependencies": {}}}, DRAFT202012))


LOOPS = [
    {"$ref": "#/definitions/d", "definitions": {"d": {"anyOf": [{"$ref": "#/definitions/d"}]}}},
    {"$ref": "#"},
    {"anyOf": [{"type": "null"}, {"$ref": "#"}]},
    {"allOf": [{"not": {"$ref": "#/definitions/a"}}],
     "definitions": {"a": {"if": {"$ref": "#"}}}},
    {"$schema": DRAFT202012, "$defs": {"a": {"oneOf": [{"$ref": "#/$defs/b"}]},
                                        "b": {"dependentSchemas": {"x": {"$ref": "#/$defs/a"}}}},
     "properties": {"p": {"$ref": "#/$defs/a"}}},
]  # fmt: skip


@pytest.mark.parametrize("schema", LOOPS)
def test_a_ref_loop_that_never_steps_into_the_instance_is_refused(schema: Any) -> None:
    """jsonschema-rs takes anything such a loop reaches, the reference validator recurses
    without end, and the compatibility checker, meeting a pair again, assumes it compatible:
    a change hidden behind it would pass unseen."""
    with pytest.raises(InvalidSchemaError, match="never steps into the instance"):
        check_schema(Bundle(schema, draft_of(schema)))


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#"}}}},
        {"$ref": "#/definitions/a",
         "definitions": {"a": {"anyOf": [{"type": "string"},
                                         {"items": {"$ref": "#/definitions/a"}}]}}},
        {"$ref": "#/definitions/a", "definitions": {"a": {"$ref": "#/definitions/b"},
                                                    "b": {"type": "string"}}},
    ],
)  # fmt: skip
def test_recursion_through_the_instance_is_accepted(schema: Any) -> None:
    check_schema(Bundle(schema, draft_of(schema)))
