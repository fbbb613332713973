"""The hot-path validator (jsonschema-rs) must decide as the drafts we accept say.

Keyword by keyword cases for draft 7 and 2020-12, then a differential
property: on generated schemas and instances it agrees with jsonschema, the
reference Python implementation.
"""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry.schemareg.documents import DRAFT7, DRAFT202012, Bundle
from registry.schemareg.validation import compile_bundle

# (schema without $schema, instance, valid) — each holds in both drafts unless marked.
BOTH: list[tuple[Any, Any, bool]] = [
    ({"type": "integer"}, 3, True),
    ({"type": "integer"}, 3.0, True),  # a number with zero fraction is an integer
    ({"type": "integer"}, 3.5, False),
    ({"type": "integer"}, True, False),  # booleans are not numbers
    ({"type": "number"}, False, False),
    ({"type": ["string", "null"]}, None, True),
    ({"type": "string", "minLength": 2}, "آ", False),  # counted in code points
    ({"type": "string", "maxLength": 3}, "محمد", False),
    ({"pattern": "^[0-9]{5}-[0-9]{7}-[0-9]$"}, "35202-1234567-1", True),
    ({"pattern": "^[0-9]{5}-[0-9]{7}-[0-9]$"}, "3520-21234567-1", False),
    ({"pattern": "^a"}, 12, True),  # keywords apply to their own type only
    ({"minimum": 1, "exclusiveMaximum": 20}, 20, False),
    ({"multipleOf": 0.01}, 19.99, True),
    ({"enum": [1, "a", None]}, 1.0, True),
    ({"enum": [1]}, True, False),
    ({"const": {"a": [1]}}, {"a": [1.0]}, True),
    ({"required": ["cnic"]}, {}, False),
    ({"properties": {"a": {"type": "string"}}, "additionalProperties": False}, {"b": 1}, False),
    ({"patternProperties": {"^n_": {"type": "number"}}}, {"n_1": "x"}, False),
    ({"propertyNames": {"maxLength": 3}}, {"long": 1}, False),
    ({"minProperties": 1}, {}, False),
    ({"uniqueItems": True}, [1, 1.0], False),
    ({"contains": {"const": 2}}, [1, 3], False),
    ({"items": {"type": "string"}}, ["a", 1], False),
    ({"allOf": [{"minimum": 1}, {"maximum": 3}]}, 4, False),
    ({"anyOf": [{"type": "string"}, {"minimum": 5}]}, 6, True),
    ({"oneOf": [{"minimum": 1}, {"minimum": 2}]}, 3, False),
    ({"not": {"type": "null"}}, None, False),
    ({"if": {"minimum": 10}, "then": {"multipleOf": 5}, "else": {"maximum": 3}}, 12, False),
    ({"if": {"minimum": 10}, "then": {"multipleOf": 5}, "else": {"maximum": 3}}, 2, True),
    ({"$defs": {"p": {"type": "string"}}, "properties": {"x": {"$ref": "#/$defs/p"}}},
     {"x": 1}, False),
    ({"definitions": {"p": {"type": "string"}}, "items": {"$ref": "#/definitions/p"}},
     ["ok"], True),
    ({"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#"}}},
      "required": ["n"]}, {"n": 1, "kids": [{"n": 2, "kids": [{}]}]}, False),
    ({"format": "date"}, "2024-02-30", False),
    ({"format": "date"}, "2024-02-29", True),
    ({"format": "email"}, "not an email", False),
]  # fmt: skip

DRAFT7_ONLY: list[tuple[Any, Any, bool]] = [
    ({"dependencies": {"a": ["b"]}}, {"a": 1}, False),  # refused in 2020-12 (check_draft)
    ({"items": [{"type": "string"}], "additionalItems": False}, ["a", 1], False),
    ({"$ref": "#/definitions/s", "definitions": {"s": {"type": "string"}}, "maxLength": 1},
     "abc", True),  # draft 7 ignores keywords beside $ref
]  # fmt: skip
DRAFT2020_ONLY: list[tuple[Any, Any, bool]] = [
    ({"prefixItems": [{"type": "string"}], "items": False}, ["a", 1], False),
    ({"prefixItems": [{"type": "string"}], "items": False}, ["a"], True),
    ({"$ref": "#/$defs/s", "$defs": {"s": {"type": "string"}}, "maxLength": 1}, "abc", False),
    ({"dependentRequired": {"a": ["b"]}}, {"a": 1}, False),
    ({"properties": {"a": {}}, "unevaluatedProperties": False}, {"a": 1, "b": 2}, False),
    ({"allOf": [{"properties": {"a": {}}}], "unevaluatedProperties": False}, {"a": 1}, True),
    ({"contains": {"const": 1}, "minContains": 2}, [1, 2], False),
]  # fmt: skip


def _cases() -> list[tuple[str, Any, Any, bool]]:
    found = []
    for draft in (DRAFT7, DRAFT202012):
        found += [(draft, s, i, ok) for s, i, ok in BOTH]
    found += [(DRAFT7, s, i, ok) for s, i, ok in DRAFT7_ONLY]
    found += [(DRAFT202012, s, i, ok) for s, i, ok in DRAFT2020_ONLY]
    return found


def fast_valid(draft: str, schema: Any, instance: Any) -> bool:
    compiled = compile_bundle(1, Bundle({"$schema": draft, **schema}, draft))
    return bool(compiled.validator.is_valid(instance))


@pytest.mark.parametrize(("draft", "schema", "instance", "valid"), _cases())
def test_keywords_of_both_drafts(draft: str, schema: Any, instance: Any, valid: bool) -> None:
    assert fast_valid(draft, schema, instance) is valid


@pytest.mark.parametrize(("schema", "instance", "valid"), BOTH + DRAFT7_ONLY)
def test_a_schema_without_dollar_schema_is_draft7(schema: Any, instance: Any, valid: bool) -> None:
    # as the registry reads it (draft_of); jsonschema-rs alone would assume 2020-12
    compiled = compile_bundle(1, Bundle(schema, DRAFT7))
    assert compiled.validator.is_valid(instance) is valid


def reference_valid(draft: str, schema: Any, instance: Any) -> bool:
    cls = jsonschema.Draft7Validator if draft == DRAFT7 else jsonschema.Draft202012Validator
    return bool(cls({"$schema": draft, **schema}).is_valid(instance))


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-50, 50) | st.floats(-50, 50, allow_nan=False)
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from("abcn_"), inner,
                                                                 max_size=3),
    max_leaves=8,
)  # fmt: skip
_leaf_schema = st.one_of(
    st.builds(lambda t: {"type": t}, st.sampled_from(
        ["string", "integer", "number", "boolean", "null", "object", "array"])),
    st.builds(lambda n: {"minimum": n}, st.integers(-10, 10)),
    st.builds(lambda n: {"exclusiveMaximum": n}, st.integers(-10, 10)),
    st.builds(lambda n: {"maxLength": n}, st.integers(0, 4)),
    st.builds(lambda p: {"pattern": p}, st.sampled_from(["^a", "[0-9]", "^.{2}$"])),
    st.builds(lambda xs: {"enum": xs}, st.lists(_json, min_size=1, max_size=3)),
    st.builds(lambda n: {"multipleOf": n}, st.sampled_from([1, 2, 0.5])),
    st.builds(lambda r: {"required": r}, st.lists(st.sampled_from("abc"), max_size=2,
                                                  unique=True)),
    st.builds(lambda n: {"maxItems": n}, st.integers(0, 3)),
    st.just({"uniqueItems": True}),
)  # fmt: skip


def _compound(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.builds(lambda p, extra: {"properties": p, "additionalProperties": extra},
                  st.dictionaries(st.sampled_from("abc"), inner, max_size=2), st.booleans()),
        st.builds(lambda i: {"items": i}, inner),
        st.builds(lambda xs: {"anyOf": xs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda xs: {"oneOf": xs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda xs: {"allOf": xs}, st.lists(inner, min_size=1, max_size=2)),
        st.builds(lambda x: {"not": x}, inner),
        st.builds(lambda c: {"contains": c}, inner),
    )  # fmt: skip


@given(
    st.sampled_from([DRAFT7, DRAFT202012]),
    st.recursive(_leaf_schema, _compound, max_leaves=6),
    _json,
)
def test_agrees_with_the_reference_implementation(draft: str, schema: Any, instance: Any) -> None:
    assert fast_valid(draft, schema, instance) == reference_valid(draft, schema, instance)
