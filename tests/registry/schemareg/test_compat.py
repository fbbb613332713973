"""The compatibility checker: its rules case by case, its levels and policies, and the
properties every checker must have (hypothesis)."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from registry.schemareg.compat import (
    LEVELS,
    MAX_REPORTED,
    check,
    describe,
    differences,
    incompatibilities,
)
from registry.schemareg.documents import (
    DRAFT7,
    DRAFT202012,
    MAX_PATTERN_PROPERTIES,
    Bundle,
    check_schema,
    draft_of,
    fingerprint,
)
from registry.schemareg.errors import InvalidSchemaError
from registry.schemareg.validation import compile_bundle, reference_validator
from tests.registry.schemareg.test_patterns import finishes


def b(schema: Any, **refs: Any) -> Bundle:
    return Bundle(schema, draft_of(schema), refs)


def changes(old: Any, new: Any, policy: str = "STRICT") -> list[str]:
    return sorted(f"{d.type} {d.pointer}" for d in differences(b(old), b(new), policy))  # type: ignore[arg-type]


def compatible(old: Any, new: Any, policy: str = "STRICT") -> bool:
    return not incompatibilities(b(old), b(new), policy)  # type: ignore[arg-type]


S, N, I = {"type": "string"}, {"type": "number"}, {"type": "integer"}  # noqa: E741


def obj(props: dict[str, Any], *, closed: bool = False, **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": props, **extra}
    if closed:
        schema["additionalProperties"] = False
    return schema


CASES = [
    # (old, new, expected changes, compatible)
    ({"type": "string", "maxLength": 5}, {"type": "string", "maxLength": 9},
     ["MAX_LENGTH_INCREASED #/maxLength"], True),
    ({"type": "string", "maxLength": 9}, {"type": "string", "maxLength": 5},
     ["MAX_LENGTH_DECREASED #/maxLength"], False),
    ({"type": "string"}, {"type": "string", "pattern": "^[0-9]+$"}, ["PATTERN_ADDED #/pattern"],
     False),
    ({"type": "string", "pattern": "a"}, {"type": "string", "pattern": "b"},
     ["PATTERN_CHANGED #/pattern"], False),
    ({"type": "number", "minimum": 1}, {"type": "number"}, ["MINIMUM_REMOVED #/minimum"], True),
    ({"type": "number", "exclusiveMaximum": 5}, {"type": "number", "exclusiveMaximum": 3},
     ["EXCLUSIVE_MAXIMUM_DECREASED #/exclusiveMaximum"], False),
    ({"type": "number", "multipleOf": 0.5}, {"type": "number", "multipleOf": 1.5},
     ["MULTIPLE_OF_EXPANDED #/multipleOf"], False),
    ({"type": "number", "multipleOf": 1.5}, {"type": "number", "multipleOf": 0.5},
     ["MULTIPLE_OF_REDUCED #/multipleOf"], True),
    (I, N, ["TYPE_EXTENDED #/"], True),
    (N, I, ["TYPE_NARROWED #/"], False),
    (S, N, ["TYPE_CHANGED #/"], False),
    (S, {"type": ["string", "null"]}, ["SUM_TYPE_EXTENDED #/"], True),
    ({"type": ["string", "null"]}, S, ["TYPE_CHANGED #/"], False),
    ({"enum": ["a", "b"]}, {"enum": ["a", "b", "c"]}, ["ENUM_ARRAY_EXTENDED #/enum"], True),
    ({"enum": ["a", "b"]}, {"enum": ["a"]}, ["ENUM_ARRAY_NARROWED #/enum"], False),
    ({"enum": [1]}, {"enum": [1.0]}, [], True),
    ({"const": "x"}, {"const": "y"}, ["ENUM_ARRAY_CHANGED #/const"], False),
    ({"not": I}, {"not": N}, ["NOT_TYPE_EXTENDED #/not"], False),
    ({"anyOf": [S, N]}, {"anyOf": [S]}, ["SUM_TYPE_NARROWED #/"], False),
    ({"anyOf": [S]}, {"anyOf": [N, S, {"type": "null"}]}, ["SUM_TYPE_EXTENDED #/"], True),
    ({"allOf": [S, {"maxLength": 3}]}, {"allOf": [S]}, ["PRODUCT_TYPE_NARROWED #/"], True),
    ({"oneOf": [S, I]}, {"anyOf": [S, I]}, ["COMBINED_TYPE_EXTENDED #/"], True),
    ({"anyOf": [S, I]}, {"oneOf": [S, I]}, ["COMBINED_TYPE_CHANGED #/"], False),
    ({"anyOf": [S, I]}, {"anyOf": [N, S]}, ["TYPE_EXTENDED #/anyOf/1"], True),
    ({"anyOf": [S, I]}, {"anyOf": [{"type": "boolean"}, S]},
     ["COMBINED_TYPE_SUBSCHEMAS_CHANGED #/"], False),
    ({"type": "array", "items": S}, {"type": "array", "items": N}, ["TYPE_CHANGED #/items"], False),
    ({"type": "array", "minItems": 1}, {"type": "array"}, ["MIN_ITEMS_REMOVED #/minItems"], True),
    ({"type": "array"}, {"type": "array", "uniqueItems": True},
     ["UNIQUE_ITEMS_ADDED #/uniqueItems"], False),
    ({"type": "array", "items": [S], "additionalItems": False},
     {"type": "array", "items": [S, N], "additionalItems": False},
     ["ITEM_ADDED_TO_CLOSED_CONTENT_MODEL #/items/1"], True),
    ({"type": "array", "items": [S, N], "additionalItems": False},
     {"type": "array", "items": [S], "additionalItems": False},
     ["ITEM_REMOVED_FROM_CLOSED_CONTENT_MODEL #/items/1"], False),
    ({"$schema": DRAFT202012, "type": "array", "prefixItems": [S], "items": False},
     {"$schema": DRAFT202012, "type": "array", "prefixItems": [S, N], "items": False},
     ["ITEM_ADDED_TO_CLOSED_CONTENT_MODEL #/prefixItems/1"], True),
    (obj({"a": S}, required=["a"]), obj({"a": S}), ["REQUIRED_ATTRIBUTE_REMOVED #/required/a"],
     True),
    (obj({"a": S}), obj({"a": S}, required=["a"]), ["REQUIRED_ATTRIBUTE_ADDED #/required/a"],
     False),
    (obj({"a": S}), obj({"a": {**S, "default": "x"}}, required=["a"]),
     ["DEFAULT_CHANGED #/properties/a", "REQUIRED_ATTRIBUTE_WITH_DEFAULT_ADDED #/required/a"],
     True),
    (obj({"a": S}, closed=True), obj({"a": S, "b": N}, closed=True),
     ["OPTIONAL_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL #/properties/b"], True),
    (obj({"a": S}, closed=True), obj({"a": S, "b": N}, closed=True, required=["b"]),
     ["REQUIRED_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL #/properties/b"], False),
    (obj({"a": S}), obj({"a": S, "b": N}),
     ["OPTIONAL_PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL #/properties/b"], False),
    (obj({"a": S}), obj({"a": S, "b": {}}),
     ["PROPERTY_WITH_EMPTY_SCHEMA_ADDED_TO_OPEN_CONTENT_MODEL #/properties/b"], True),
    (obj({"a": S, "b": N}), obj({"a": S}),
     ["PROPERTY_REMOVED_FROM_OPEN_CONTENT_MODEL #/properties/b"], True),
    (obj({"a": S, "b": N}, closed=True), obj({"a": S}, closed=True),
     ["PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL #/properties/b"], False),
    (obj({"a": S, "b": False}, closed=True), obj({"a": S}, closed=True),
     ["PROPERTY_WITH_FALSE_REMOVED_FROM_CLOSED_CONTENT_MODEL #/properties/b"], True),
    (obj({"a": S}, additionalProperties=S), obj({"a": S, "b": S}, additionalProperties=S),
     ["OPTIONAL_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL #/properties/b",
      "PROPERTY_ADDED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL #/properties/b"], True),
    (obj({"a": S}, patternProperties={"^n_": N}, additionalProperties=False),
     obj({"a": S, "n_1": S}, patternProperties={"^n_": N}, additionalProperties=False),
     ["OPTIONAL_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL #/properties/n_1",
      "PROPERTY_ADDED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL #/properties/n_1",
      "TYPE_CHANGED #/properties/n_1"], False),
    (obj({"a": S}, closed=True), obj({"a": S}),
     ["ADDITIONAL_PROPERTIES_ADDED #/additionalProperties"], True),
    (obj({"a": S}), obj({"a": S}, closed=True),
     ["ADDITIONAL_PROPERTIES_REMOVED #/additionalProperties"], False),
    ({"type": "object", "maxProperties": 3}, {"type": "object", "maxProperties": 2},
     ["MAX_PROPERTIES_DECREASED #/maxProperties"], False),
    ({"type": "object", "dependencies": {"a": ["b", "c"]}},
     {"type": "object", "dependencies": {"a": ["b"]}},
     ["DEPENDENCY_ARRAY_NARROWED #/dependencies/a"], True),
    ({"$schema": DRAFT202012, "type": "object", "dependentRequired": {"a": ["b"]}},
     {"$schema": DRAFT202012, "type": "object", "dependentRequired": {"a": ["b", "c"]}},
     ["DEPENDENCY_ARRAY_EXTENDED #/dependentRequired/a"], False),
    ({"title": "x", "description": "y", "$id": "urn:a"}, {"title": "z", "$id": "urn:b"},
     ["DESCRIPTION_CHANGED #/", "ID_CHANGED #/", "TITLE_CHANGED #/"], True),
    # Keywords without "type" constrain only their own type; naming the type narrows.
    ({"minimum": 1}, {"type": "number", "minimum": 1}, ["TYPE_NARROWED #/"], False),
    ({"type": "number", "minimum": 1}, {"minimum": 1}, ["TYPE_EXTENDED #/"], True),
    ({"minimum": 1}, {"type": "integer", "minimum": 1}, ["TYPE_NARROWED #/"], False),
    ({"minLength": 2}, {"type": "string", "minLength": 2}, ["TYPE_NARROWED #/"], False),
    ({"properties": {"a": S}}, obj({"a": S}), ["TYPE_NARROWED #/"], False),
    ({"maxItems": 2}, {"type": "array", "maxItems": 3},
     ["MAX_ITEMS_INCREASED #/maxItems", "TYPE_NARROWED #/"], False),
    ({"minimum": 1, "minLength": 2}, {"minimum": 1}, ["PRODUCT_TYPE_NARROWED #/"], True),
    (S, {}, [], True),
    (False, S, [], True),
    ({}, S, ["TYPE_CHANGED #/"], False),
]  # fmt: skip


@pytest.mark.parametrize(("old", "new", "expected", "ok"), CASES)
def test_each_rule_names_the_change_and_its_pointer(
    old: Any, new: Any, expected: list[str], ok: bool
) -> None:
    assert changes(old, new) == sorted(expected)
    assert compatible(old, new) is ok


def test_refs_are_followed_across_references_and_recursion_terminates() -> None:
    tree = {
        "type": "object",
        "properties": {"name": S, "children": {"type": "array", "items": {"$ref": "#"}}},
    }
    assert changes(tree, tree) == []
    deeper = json.loads(json.dumps(tree))
    deeper["properties"]["name"] = {"type": "string", "maxLength": 3}
    assert changes(tree, deeper) == ["MAX_LENGTH_ADDED #/properties/name/maxLength"]
    common_v1 = {"$defs": {"cnic": {"type": "string"}}}
    common_v2 = {"$defs": {"cnic": {"type": "string", "pattern": "^[0-9-]+$"}}}
    person = {"$schema": DRAFT202012, **obj({"cnic": {"$ref": "common.json#/$defs/cnic"}})}
    found = incompatibilities(
        b(person, **{"common.json": common_v1}), b(person, **{"common.json": common_v2})
    )
    assert [(d.type, d.pointer) for d in found] == [("PATTERN_ADDED", "#/properties/cnic/pattern")]


# --- $ref inside nested schema resources --------------------------------------------------
# A subschema with its own "$id" is a resource of its own: "#/..." and "#name" inside it point
# into it, relative URIs resolve against its "$id", and an anchor belongs to one resource. The
# checker must compare the subschema the validators apply, or it passes changes that break.

NESTED = "https://n.example/sub.json"


def _accepts(bundle: Bundle, instance: Any) -> bool:
    """What gateways (jsonschema-rs) decide, checked against the reference implementation."""
    fast = compile_bundle(1, bundle).validator.is_valid(instance)
    assert reference_validator(bundle).is_valid(instance) == fast, "validators disagree"
    return bool(fast)


def _2020(**schema: Any) -> dict[str, Any]:
    return {"$schema": DRAFT202012, **schema}


def _d7(**schema: Any) -> dict[str, Any]:
    return {"$schema": DRAFT7, **schema}


def _nested_breaks() -> list[Any]:
    """(old, new, instance): old accepts the instance, new does not; ``t`` is what changes."""

    def case(make: Any, instance: Any, name: str) -> Any:
        return pytest.param(make(S), make(I), instance, id=name)

    return [
        case(lambda t: _2020(properties={"p": {"$id": NESTED, "$defs": {"x": t},
                                               "$ref": "#/$defs/x"}}, **{"$defs": {"x": S}}),
             {"p": "a"}, "pointer-inside-nested-resource"),
        case(lambda t: _d7(definitions={"x": S},
                           properties={"p": {"$id": NESTED, "definitions": {"x": t},
                                             "allOf": [{"$ref": "#/definitions/x"}]}}),
             {"p": "a"}, "pointer-inside-nested-resource-draft7"),
        case(lambda t: _2020(**{"$defs": {"x": S, "n": {
                                    "$id": NESTED, "$defs": {"x": t},
                                    "properties": {"v": {"$ref": "#/$defs/x"}}}},
                                "$ref": "#/$defs/n"}),
             {"v": "a"}, "pointer-through-a-nested-resource"),
        case(lambda t: _2020(**{"$defs": {"t": {"$id": "t.json", **t},
                                          "n": {"$id": NESTED, "$ref": "t.json",
                                                "$defs": {"t": {"$id": "t.json", **S}}}}},
                             properties={"p": {"$ref": "t.json"}, "q": {"$ref": NESTED}}),
             {"p": "a", "q": "a"}, "relative-id-under-the-root-and-a-nested-resource"),
        case(lambda t: _2020(**{"$defs": {"r": {"$anchor": "x", **t},
                                          "n": {"$id": NESTED, "$anchor": "x", **S}}},
                             properties={"p": {"$ref": "#x"}}),
             {"p": "a"}, "anchor-of-the-root-and-of-a-nested-resource"),
        case(lambda t: _2020(**{"$defs": {"r": {"$anchor": "x", **t}}},
                             examples=[{"$anchor": "x", **S}], properties={"p": {"$ref": "#x"}}),
             {"p": "a"}, "anchor-lookalike-in-examples"),
        pytest.param(_d7(definitions={"s": S},
                         properties={"p": {"$dynamicRef": "#/definitions/s"}}),
                     _d7(definitions={"s": S}, properties={"p": {"$ref": "#/definitions/s"}}),
                     {"p": 1}, id="dynamic-ref-is-no-keyword-in-draft7"),
        # Regressions: draft 7 ignores an "$id" beside "$ref"; an "$id" URI with a pointer.
        case(lambda t: _d7(definitions={"x": t},
                           properties={"p": {"$id": NESTED, "definitions": {"x": S},
                                             "$ref": "#/definitions/x"}}),
             {"p": "a"}, "draft7-id-beside-ref-is-ignored"),
        case(lambda t: _2020(**{"$defs": {"n": {"$id": NESTED, "$defs": {"x": t}}}},
                             properties={"p": {"$ref": f"{NESTED}#/$defs/x"}}),
             {"p": "a"}, "id-uri-and-pointer"),
    ]  # fmt: skip


@pytest.mark.parametrize(("old", "new", "instance"), _nested_breaks())
def test_a_ref_in_a_nested_resource_compares_what_the_validators_apply(
    old: Any, new: Any, instance: Any
) -> None:
    check_schema(b(old))
    check_schema(b(new))
    assert _accepts(b(old), instance)
    assert not _accepts(b(new), instance)
    assert not compatible(old, new)
    assert not check(b(new), [(1, b(old))], "BACKWARD").compatible


def test_a_change_only_another_resource_sees_is_no_change() -> None:
    def schema(t: Any) -> dict[str, Any]:
        nested = {"$id": NESTED, "$defs": {"t": {"$id": "t.json", **t}, "x": t}}
        return _2020(**{"$defs": {"t": {"$id": "t.json", **S}, "x": S, "n": nested}},
                     properties={"p": {"$ref": "t.json"}, "q": {"$ref": "#/$defs/x"}})  # fmt: skip

    assert changes(schema(S), schema(I)) == []


@pytest.mark.parametrize(
    "schema",
    [
        # Which of two schemas an $id or anchor names: jsonschema-rs takes the last,
        # jsonschema the first.
        _2020(**{"$defs": {"a": {"$id": NESTED, **S}, "b": {"$id": NESTED, **I}},
                 "$ref": NESTED}),
        _2020(**{"$defs": {"a": {"$anchor": "x", **S}, "b": {"$anchor": "x", **I}},
                 "$ref": "#x"}),
        _2020(**{"$defs": {"a": {"$id": "pk.common.json", **I}}, "$ref": "pk.common.json"}),
        # Which "#n" applies depends on the path that reached the $dynamicRef.
        _2020(**{"$dynamicAnchor": "n", "properties": {"p": {"$ref": NESTED}},
                 "$defs": {"n": {"$id": NESTED, "$dynamicAnchor": "n",
                                 "properties": {"c": {"$dynamicRef": "#n"}}}}}),
        # A subschema in another draft: the validators switch drafts there (jsonschema-rs
        # even beside a $ref, jsonschema not), and the checker cannot.
        _d7(properties={"p": {"$schema": DRAFT202012, "dependentRequired": {"a": ["b"]}}}),
        _d7(properties={"p": {"$ref": NESTED}},
            definitions={"m": {"$schema": DRAFT202012, "$id": NESTED, "$defs": {"s": S},
                               "$ref": "#/$defs/s", "maxLength": 1}}),
    ],
)  # fmt: skip
def test_what_the_validators_could_read_differently_is_refused(schema: Any) -> None:
    bundle = b(schema, **{"pk.common.json": _2020(**S)})
    with pytest.raises(InvalidSchemaError) as refused:
        check_schema(bundle)
    assert refused.value.error_code == 42201
    with pytest.raises(InvalidSchemaError):
        incompatibilities(bundle, bundle)


# A BACKWARD verdict on schemas with nested resources is a promise about data too: the
# template puts the same names (a pointer, an anchor, a relative $id) under the root and
# under a nested resource, and each $ref may mean either.
_nested_refs = st.sampled_from(["#/$defs/x", "#a", "t.json", f"{NESTED}#/$defs/x", "#/$defs/n"])
_nested_ids = st.sampled_from([NESTED, "sub.json", "dir/sub.json"])
_slots = st.lists(st.sampled_from([S, I, N, {"type": "string", "maxLength": 1},
                                   {"enum": ["a", 1]}, {}]), min_size=4, max_size=4)  # fmt: skip


def _resources(
    slots: list[Any], nested_id: str, refs: tuple[str, str], beside: bool, draft: str
) -> dict[str, Any]:
    defs, anchor = ("$defs", "$anchor") if draft == DRAFT202012 else ("definitions", "$id")

    def named(schema: Any) -> dict[str, Any]:
        return {anchor: "a" if anchor == "$anchor" else "#a", **schema}

    def ref(uri: str) -> str:
        return uri.replace("$defs", defs)

    inner = {"$ref": ref(refs[1])} if beside else {"allOf": [{"$ref": ref(refs[1])}]}
    nested = {"$id": nested_id, defs: {"x": named(slots[0]), "t": {"$id": "t.json", **slots[1]}},
              **inner}  # fmt: skip
    return {
        "$schema": draft,
        defs: {"x": named(slots[2]), "t": {"$id": "t.json", **slots[3]}, "n": nested},
        "type": "object",
        "properties": {"p": {"$ref": ref(refs[0])}, "q": {"$ref": ref("#/$defs/n")}},
    }


def _registrable(bundle: Bundle) -> bool:
    """Whether the registry accepts ``bundle``; if it does, the validators compile it."""
    try:
        check_schema(bundle)
    except InvalidSchemaError:
        return False
    compile_bundle(1, bundle)
    reference_validator(bundle)
    return True


_values = [None, 1, 1.5, "a", "ab", {}]
_pool = [{"p": p, "q": q} for p in _values for q in _values]


@settings(max_examples=300)
@given(
    _slots, _slots, _nested_ids, st.tuples(_nested_refs, _nested_refs), st.booleans(),
    st.sampled_from([DRAFT7, DRAFT202012]),
)  # fmt: skip
def test_a_backward_verdict_holds_for_data_through_nested_resources(
    old_slots: list[Any],
    new_slots: list[Any],
    nested_id: str,
    refs: tuple[str, str],
    beside: bool,
    draft: str,
) -> None:
    old = b(_resources(old_slots, nested_id, refs, beside, draft))
    new = b(_resources(new_slots, nested_id, refs, beside, draft))
    if not (_registrable(old) and _registrable(new)):
        return
    if not check(new, [(1, old)], "BACKWARD").compatible:
        return
    for instance in _pool:
        if _accepts(old, instance):
            assert _accepts(new, instance), instance


def _chain(levels: int) -> dict[str, Any]:
    """Definitions d0 … dn, each ``$ref``-ing the next twice: dn is met along 2^n paths."""
    to = {f"d{i}": {"type": "object", "properties": {"a": {"$ref": f"#/definitions/d{i + 1}"},
                                                     "b": {"$ref": f"#/definitions/d{i + 1}"}}}
          for i in range(levels)}  # fmt: skip
    return {"definitions": {**to, f"d{levels}": S}, "$ref": "#/definitions/d0"}


def test_a_definition_met_along_exponentially_many_paths_is_compared_once() -> None:
    tree = obj({"a": {"$ref": "#"}, "b": {"$ref": "#"}})
    # Copying each pair's differences into every place it is met took 8.7 s at 19 levels and
    # doubled with each; shared, 60 levels take milliseconds.
    verdict = finishes(lambda: check(b(_chain(60)), [(1, b(tree))], "BACKWARD"), within=5.0)
    assert not verdict.compatible
    assert len(verdict.findings) == MAX_REPORTED  # of 2^60 TYPE_CHANGED, one per path
    assert verdict.findings[0].difference.pointer == "#" + "/properties/a" * 60
    assert finishes(lambda: compatible(_chain(60), _chain(60)), within=5.0)


def test_a_comparison_has_a_bounded_amount_of_work() -> None:
    def branches(kind: dict[str, str]) -> dict[str, Any]:
        return {"anyOf": [obj({f"p{i}": kind}, required=[f"p{i}"]) for i in range(300)]}

    # 300 × 300 branches to match: 90,000 comparisons, past any real schema's needs.
    with pytest.raises(InvalidSchemaError) as refused:
        finishes(lambda: incompatibilities(b(branches(S)), b(branches(I))), within=5.0)
    assert refused.value.error_code == 42201
    assert refused.value.message.startswith(
        "Invalid schema: too complex to check for compatibility: comparing it with an earlier "
        "version takes more than "
    )


def _witness(old: Any, new: Any, instance: Any) -> None:
    """``instance`` proves a BACKWARD break: the old schema accepts it, the new one does not."""
    assert jsonschema.validators.validator_for(old)(old).is_valid(instance)
    assert not jsonschema.validators.validator_for(new)(new).is_valid(instance)
    assert not compatible(old, new)
    assert not check(b(new), [(1, b(old))], "BACKWARD").compatible
    assert not check(b(new), [(1, b(old))], "FULL").compatible


def test_a_failed_branch_leaves_no_verdict_resting_on_its_assumption() -> None:
    # Trying B1 meets (old, B1) again through p.r, assumes it compatible and so finds
    # (X, Y) compatible; B1 then fails on q. That (X, Y) verdict must not be reused
    # when B2 is tried: Y.r is B1, whose q is an integer.
    old = {
        "definitions": {"X": obj({"r": {"$ref": "#"}})},
        **obj({"p": {"$ref": "#/definitions/X"}, "q": S}),
    }
    new = {
        "definitions": {
            "B1": obj({"p": {"$ref": "#/definitions/Y"}, "q": I}),
            "B2": obj({"p": {"$ref": "#/definitions/Y"}, "q": S}),
            "Y": obj({"r": {"$ref": "#/definitions/B1"}}),
        },
        "anyOf": [{"$ref": "#/definitions/B1"}, {"$ref": "#/definitions/B2"}],
    }
    _witness(old, new, {"q": "s", "p": {"r": {"q": "s"}}})
    # The assumption still holds where it should: a recursive schema against itself.
    assert compatible(old, old)
    assert compatible(new, new)


def test_an_explicit_any_of_and_a_type_list_in_one_object_are_both_kept() -> None:
    # Both load as any-ofs of the same JSON object; deduplicating them by that object
    # dropped the type list, and with it the null the new schema no longer accepts.
    old = {"type": ["string", "null"], "anyOf": [S, {"type": "null"}]}
    new = {"type": ["string", "integer"], "anyOf": [S, {"type": "null"}]}
    _witness(old, new, None)
    assert compatible(old, old)


def test_keywords_without_a_type_do_not_require_that_type() -> None:
    # {"minimum": 1, "minLength": 2} is an all-of of "if a number, >= 1" and "if a
    # string, 2 long": "ab" passes it, and a schema demanding a number rejects "ab".
    _witness({"minimum": 1, "minLength": 2}, {"type": "number", "minimum": 1}, "ab")
    _witness({"minimum": 1}, {"type": "number", "minimum": 1}, "ab")
    _witness({"minLength": 2}, {"type": "string", "minLength": 2}, 5)


# Keywords that refuse instances whatever "properties" declares: a change the checker does not
# see is a change it passes. (old, new, instance): old accepts the instance, new does not.
_OPEN = {"type": "object"}
_CLOSED_X1 = {
    "type": "object",
    "properties": {"x1": {"type": "array"}},
    "additionalProperties": False,
}
_RESTRICTIONS = [
    pytest.param(_OPEN, {**_OPEN, "required": ["z"]}, {}, id="required-undeclared"),
    # A regex added to a closed model also applies to the properties it declares.
    pytest.param(
        _CLOSED_X1,
        {**_CLOSED_X1, "patternProperties": {"^x": {"type": "null"}}},
        {"x1": []},
        id="pattern-added-over-a-declared-property",
    ),
    pytest.param({"properties": {}}, {"properties": {}, "required": ["z"]}, {}, id="untyped"),
    pytest.param(
        {**_OPEN, "patternProperties": {"^z": S}},
        {**_OPEN, "patternProperties": {"^z": S}, "required": ["z"]},
        {},
        id="required-by-pattern",
    ),
    pytest.param(
        {**_OPEN, "additionalProperties": S},
        {**_OPEN, "additionalProperties": S, "required": ["z"]},
        {},
        id="required-by-additional",
    ),
    pytest.param(obj({"z": S}), {**_OPEN, "required": ["z"]}, {}, id="required-and-removed"),
    pytest.param(
        obj({"a": _OPEN}), obj({"a": {**_OPEN, "required": ["z"]}}), {"a": {}}, id="nested"
    ),
    pytest.param({"allOf": [_OPEN]}, {"allOf": [{**_OPEN, "required": ["z"]}]}, {}, id="allOf"),
    pytest.param(
        _OPEN, {**_OPEN, "propertyNames": {"maxLength": 1}}, {"ab": 1}, id="propertyNames"
    ),
    pytest.param(
        {**_OPEN, "propertyNames": {"maxLength": 3}},
        {**_OPEN, "propertyNames": {"maxLength": 1}},
        {"ab": 1},
        id="propertyNames-narrowed",
    ),
    pytest.param({"type": "array"}, {"type": "array", "contains": S}, [1], id="contains"),
    pytest.param(
        _2020(type="array", contains=S, maxContains=1),
        _2020(type="array", contains={}, maxContains=1),
        ["a", 1],
        id="contains-widened-under-maxContains",
    ),
    pytest.param(S, {**S, "format": "date"}, "x", id="format"),
    pytest.param(
        {**S, "format": "date"}, {**S, "format": "email"}, "2024-01-31", id="format-changed"
    ),
    pytest.param(
        {**_OPEN, "if": {"required": ["a"]}, "then": {"required": ["b"]}},
        {**_OPEN, "if": {"required": ["a"]}, "then": {"required": ["c"]}},
        {"a": 1, "b": 1},
        id="then",
    ),
    pytest.param(
        {**_OPEN, "if": {"required": ["a"]}, "else": {"required": ["b"]}},
        {**_OPEN, "if": {"required": ["b"]}, "else": {"required": ["b"]}},
        {"a": 1},
        id="if",
    ),
    # oneOf is not monotone: old data that now matches two branches matches none.
    pytest.param({"oneOf": [S, I]}, {"oneOf": [S, {}]}, "a", id="oneOf-branch-widened"),
    pytest.param({"oneOf": [S]}, {"oneOf": [S, {"minLength": 1}]}, "a", id="oneOf-branch-added"),
    pytest.param(S, {"oneOf": [S, {"minLength": 1}]}, "a", id="oneOf-of-the-old-schema"),
    pytest.param({"oneOf": [S]}, {"oneOf": [S, S]}, "a", id="oneOf-branch-repeated"),
    pytest.param(True, {"oneOf": [True, True]}, 1, id="oneOf-of-one-node-twice"),
    # A patternProperties schema applies to every name it matches.
    pytest.param(
        {**_OPEN, "patternProperties": {"^x": {}}},
        {**_OPEN, "patternProperties": {"^x": S}},
        {"x1": 1},
        id="patternProperties-narrowed",
    ),
    # minContains defaults to 1: dropping a 0 demands a match.
    pytest.param(
        _2020(type="array", contains=S, minContains=0),
        _2020(type="array", contains=S),
        [1],
        id="minContains-0-removed",
    ),
    # Draft 7 has no maxContains or unevaluated*: its validators ignore them, 2020-12's do not.
    pytest.param(
        {"type": "array", "contains": S, "maxContains": 1},
        _2020(type="array", contains=S, maxContains=1),
        ["a", "b"],
        id="maxContains-draft7",
    ),
    pytest.param(
        {"type": "array", "unevaluatedItems": False},
        _2020(type="array", unevaluatedItems=False),
        [1],
        id="unevaluatedItems-draft7",
    ),
    # unevaluatedItems leaves alone the items an allOf beside it evaluates.
    pytest.param(
        _2020(type="array", allOf=[{"prefixItems": [True]}], unevaluatedItems=False),
        _2020(type="array", allOf=[True], unevaluatedItems=False),
        [1],
        id="unevaluatedItems-beside-allOf",
    ),
]


@pytest.mark.parametrize(("old", "new", "instance"), _RESTRICTIONS)
def test_a_keyword_that_refuses_old_data_is_an_incompatibility(
    old: Any, new: Any, instance: Any
) -> None:
    assert _accepts(b(old), instance)
    assert not _accepts(b(new), instance)
    for policy in ("STRICT", "LENIENT"):
        assert not compatible(old, new, policy), policy
        for level in ("BACKWARD", "FULL", "BACKWARD_TRANSITIVE", "FULL_TRANSITIVE"):
            assert not check(b(new), [(1, b(old))], level, policy).compatible, (level, policy)  # type: ignore[arg-type]
        # Read the other way, the same pair is a relaxation for FORWARD to refuse.
        assert not check(b(old), [(1, b(new))], "FORWARD", policy).compatible, policy  # type: ignore[arg-type]


def test_a_requirement_is_named_where_it_is_added_or_removed() -> None:
    assert changes(_OPEN, {**_OPEN, "required": ["z"]}) == ["REQUIRED_ATTRIBUTE_ADDED #/required/z"]
    assert changes({**_OPEN, "required": ["z"]}, _OPEN) == [
        "REQUIRED_ATTRIBUTE_REMOVED #/required/z"
    ]
    assert compatible({**_OPEN, "required": ["z"]}, _OPEN)
    assert changes(S, {**S, "format": "date"}) == ["FORMAT_ADDED #/format"]
    assert compatible({**S, "format": "date"}, S)
    assert changes(_OPEN, {**_OPEN, "propertyNames": S}) == ["SCHEMA_ADDED #/propertyNames"]
    assert compatible({**_OPEN, "propertyNames": {"maxLength": 1}}, _OPEN)
    assert compatible(
        {"type": "array", "contains": {**S, "maxLength": 1}}, {"type": "array", "contains": S}
    )
    unchanged = {**_OPEN, "if": {"required": ["a"]}, "then": {"required": ["b"]}}
    assert not differences(b(unchanged), b({**unchanged, "then": {"required": ["b"]}}))
    assert compatible(unchanged, {**unchanged, "then": True})


# The 24 combinations of policy x content model x add/remove x required/with default/optional.
P_OPT = {"b": N}
P_DEF = {"b": {**N, "default": 0}}


@pytest.mark.parametrize(
    ("closed", "added", "prop", "required", "strict", "lenient"),
    [
        (False, True, P_OPT, True, False, False),
        (False, True, P_DEF, True, False, True),
        (False, True, P_OPT, False, False, True),
        (True, True, P_OPT, True, False, False),
        (True, True, P_DEF, True, True, True),
        (True, True, P_OPT, False, True, True),
        (False, False, P_OPT, True, True, True),
        (False, False, P_DEF, True, True, True),
        (False, False, P_OPT, False, True, True),
        (True, False, P_OPT, True, False, True),
        (True, False, P_DEF, True, False, True),
        (True, False, P_OPT, False, False, True),
    ],
)
def test_strict_and_lenient_policies(
    closed: bool, added: bool, prop: dict[str, Any], required: bool, strict: bool, lenient: bool
) -> None:
    small = obj({"a": S}, closed=closed)
    big = obj({"a": S, **prop}, closed=closed, **({"required": ["b"]} if required else {}))
    old, new = (small, big) if added else (big, small)
    assert compatible(old, new, "STRICT") is strict
    assert compatible(old, new, "LENIENT") is lenient


def test_lenient_accepts_closing_a_model_but_never_a_type_change() -> None:
    assert compatible(obj({"a": S}), obj({"a": S}, closed=True), "LENIENT")
    assert not compatible(obj({"a": S}), obj({"a": N}, closed=True), "LENIENT")


def test_levels_pick_directions_and_versions() -> None:
    v1 = obj({"a": S}, closed=True)
    v2 = obj({"a": S, "b": N}, closed=True)  # optional property added to a closed model
    v3 = obj({"a": S, "b": N}, closed=True, required=["b"])
    assert check(b(v2), [(1, b(v1))], "BACKWARD").compatible
    forward = check(b(v2), [(1, b(v1))], "FORWARD")
    assert not forward.compatible
    assert forward.findings[0].difference.type == "PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL"
    assert forward.findings[0].direction == "forward"
    # v3 only adds "required" against v2, but against v1 it adds a required property.
    assert not check(b(v3), [(1, b(v1)), (2, b(v2))], "BACKWARD").compatible
    transitive = check(b(v3), [(1, b(v1)), (2, b(v2))], "BACKWARD_TRANSITIVE")
    assert {f.version for f in transitive.findings} == {1, 2}
    assert check(b(S), [(1, b(N))], "NONE").compatible


def test_verbose_messages_follow_confluent() -> None:
    verdict = check(b(obj({"a": N})), [(3, b(obj({"a": S})))], "BACKWARD")
    assert verdict.messages == (
        '{errorType:"TYPE_CHANGED", description:"A type at path \'#/properties/a\' is different '
        'between the new schema and the old schema"}',
        "{oldSchemaVersion: 3}",
        '{oldSchema: \'{"type":"object","properties":{"a":{"type":"string"}}}\'}',
        "{compatibility: 'BACKWARD'}",
    )
    forward = check(b(obj({"a": N})), [(1, b(obj({"a": S})))], "FORWARD")
    assert "between the old schema and the new schema" in describe(
        forward.findings[0].difference, backward=False
    )


# --- properties ------------------------------------------------------------------------------

_leaf = st.sampled_from(
    [
        {"type": "string"},
        {"type": "string", "maxLength": 8},
        {"type": "string", "pattern": "^[a-z]+$"},
        {"type": "integer", "minimum": 0},
        {"type": "number", "maximum": 100},
        {"type": "boolean"},
        {"type": "null"},
        {"enum": ["a", "b", 1]},
        {"const": "x"},
        {},
    ]
)
_names = st.sampled_from(["cnic", "name", "age", "district", "province", "x"])


def _extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.builds(
            lambda props, req, closed: {
                "type": "object",
                "properties": props,
                "required": sorted(set(req) & set(props)),
                **({"additionalProperties": False} if closed else {}),
            },
            st.dictionaries(_names, children, max_size=4),
            st.lists(_names, max_size=3),
            st.booleans(),
        ),
        st.builds(
            lambda items, n: {"type": "array", "items": items, "maxItems": n},
            children,
            st.integers(1, 5),
        ),
        st.builds(lambda xs: {"anyOf": xs}, st.lists(children, min_size=1, max_size=3)),
        st.builds(lambda xs: {"allOf": xs}, st.lists(children, min_size=1, max_size=2)),
        st.builds(lambda x: {"not": x}, children),
    )


schemas_ = st.recursive(_leaf, _extend, max_leaves=10)
policies = st.sampled_from(["STRICT", "LENIENT"])


@given(schemas_, st.sampled_from(LEVELS), policies)
def test_every_schema_is_compatible_with_itself(schema: Any, level: Any, policy: Any) -> None:
    assert check(b(schema), [(1, b(schema))], level, policy).compatible


@given(schemas_, schemas_, policies)
def test_full_is_exactly_backward_and_forward(old: Any, new: Any, policy: Any) -> None:
    previous = [(1, b(old))]
    full = check(b(new), previous, "FULL", policy).compatible
    backward = check(b(new), previous, "BACKWARD", policy).compatible
    forward = check(b(new), previous, "FORWARD", policy).compatible
    assert full == (backward and forward)


@given(st.lists(schemas_, min_size=1, max_size=4), schemas_, policies)
def test_transitive_levels_check_every_earlier_version(
    history: list[Any], new: Any, policy: Any
) -> None:
    previous = [(i + 1, b(s)) for i, s in enumerate(history)]
    for base in ("BACKWARD", "FORWARD", "FULL"):
        transitive = check(b(new), previous, f"{base}_TRANSITIVE", policy)  # type: ignore[arg-type]
        each = [check(b(new), [p], base, policy).compatible for p in previous]  # type: ignore[arg-type]
        assert transitive.compatible == all(each)
        failing = {v for (v, _), ok in zip(previous, each, strict=True) if not ok}
        assert {f.version for f in transitive.findings} == failing


# A BACKWARD verdict is a promise about data: whatever the old schema accepts, the new
# one accepts. The new schema is the old one with some subschemas replaced or widened,
# so many pairs are near misses; the shapes include keywords without "type", a "type"
# list beside an explicit anyOf, and recursive $refs, where the checker went wrong.
_untyped = st.sampled_from(
    [
        {"type": ["string", "null"], "anyOf": [{"type": "string"}, {"type": "null"}]},
        {"minimum": 1},
        {"minLength": 2},
        {"minimum": 1, "minLength": 2},
        {"maxItems": 1},
        {"properties": {"x": {"type": "string"}}},
        {"type": ["string", "null"]},
        {"type": "string", "format": "date"},
        {"propertyNames": {"maxLength": 4}},
        {"contains": {"type": "string"}},
        {"if": {"type": "string"}, "then": {"minLength": 2}, "else": {"type": "integer"}},
    ]
)
_type_lists = st.sampled_from([["string", "integer"], ["number", "null"]])
_recursive = st.sampled_from([{"$ref": "#"}, {"$ref": "#/definitions/d"}])
_parts = st.recursive(st.one_of(_leaf, _untyped, _recursive), _extend, max_leaves=8)


def _guarded(schema: Any, *, consumed: bool = False) -> Any:
    """``schema`` with each $ref not under properties or items made ``{}``: every loop
    then steps into the instance, so the reference validator terminates on it."""
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema and not consumed:
        return {}
    out = dict(schema)
    if "items" in out:
        out["items"] = _guarded(out["items"], consumed=True)
    if "properties" in out:
        out["properties"] = {k: _guarded(v, consumed=True) for k, v in out["properties"].items()}
    if "not" in out:
        out["not"] = _guarded(out["not"], consumed=consumed)
    for key in ("anyOf", "allOf"):
        if key in out:
            out[key] = [_guarded(v, consumed=consumed) for v in out[key]]
    return out


_rooted = st.builds(
    lambda d, t: {"definitions": {"d": _guarded(d)}, "allOf": [_guarded(t)]}, _parts, _parts
)
_json = st.recursive(
    st.sampled_from([None, True, 0, 1, -1, 1.5, 101, "", "a", "ab", "x", "abcdefghij"]),
    lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(_names, c, max_size=3)),
    max_leaves=8,
)


_replace = st.sampled_from([False] * 5 + [True])  # not integers(): those lean to 0


def _mutated(schema: Any, data: st.DataObject, *, root: bool = False) -> Any:
    """``schema`` with some subschemas swapped for a leaf or widened into an anyOf."""
    if not isinstance(schema, dict):
        return schema
    if not root and data.draw(_replace):
        leaf = data.draw(st.one_of(_leaf, _untyped))
        return data.draw(st.sampled_from([leaf, {"anyOf": [schema, leaf]}]))
    out = dict(schema)
    if isinstance(out.get("type"), list) and data.draw(st.booleans()):
        out["type"] = data.draw(st.one_of(_type_lists, st.just(out["type"][:1])))
    for key in ("items", "not", "propertyNames", "contains", "if", "then", "else"):
        if key in out:
            out[key] = _mutated(out[key], data)
    if out.get("type") == "object" and data.draw(_replace):
        out["required"] = sorted({*out.get("required", []), data.draw(_names)})
    for key in ("anyOf", "allOf"):
        if key in out:
            out[key] = [_mutated(v, data) for v in out[key]]
    for key in ("properties", "definitions"):
        if key in out:
            out[key] = {name: _mutated(v, data) for name, v in out[key].items()}
    return out


@settings(max_examples=200)
@given(_rooted, st.data(), st.lists(_json, min_size=10, max_size=30))
def test_a_backward_verdict_holds_for_the_old_schemas_data(
    old: Any, data: st.DataObject, pool: list[Any]
) -> None:
    new = _mutated(old, data, root=True)
    if not check(b(new), [(1, b(old))], "BACKWARD").compatible:
        return
    formats = jsonschema.Draft7Validator.FORMAT_CHECKER  # asserted, as by the gateways
    reads = jsonschema.Draft7Validator(new, format_checker=formats)
    writes = jsonschema.Draft7Validator(old, format_checker=formats)
    for instance in pool:
        if writes.is_valid(instance):
            assert reads.is_valid(instance), instance


def _shuffled(value: Any, data: st.DataObject) -> Any:
    if isinstance(value, dict):
        keys = data.draw(st.permutations(list(value)))
        return {k: _shuffled(value[k], data) for k in keys}
    if isinstance(value, list):
        return [_shuffled(v, data) for v in value]
    return value


@given(schemas_, st.data())
def test_fingerprints_ignore_key_order(schema: Any, data: st.DataObject) -> None:
    reordered = _shuffled(schema, data)
    assert fingerprint(reordered) == fingerprint(schema)
    assert fingerprint({"wrapped": schema}) != fingerprint(schema)
    assert not differences(b(schema), b(reordered))


# unevaluatedProperties leaves alone the properties an allOf (or $ref, ...) beside it
# evaluates: the old schema takes any value there. (LENIENT accepts these, as it accepts
# adding a property to an open model or removing one from a closed model.)
_BESIDE = _2020(allOf=[{"properties": {"b": True}}], unevaluatedProperties=False)


@pytest.mark.parametrize(
    ("old", "new", "instance"),
    [
        pytest.param(_BESIDE, {**_BESIDE, "allOf": [True]}, {"b": 1}, id="evaluation-dropped"),
        pytest.param(_BESIDE, {**_BESIDE, "properties": {"b": I}}, {"b": "x"}, id="typed"),
        pytest.param(
            {**_BESIDE, "unevaluatedProperties": S},
            {**_BESIDE, "unevaluatedProperties": S, "properties": {"b": S}},
            {"b": 1},
            id="covered",
        ),
        pytest.param(
            _2020(**{"$ref": "#/$defs/base"}, unevaluatedProperties=False,
                  **{"$defs": {"base": {"properties": {"b": True}}}}),
            _2020(**{"$ref": "#/$defs/base"}, unevaluatedProperties=False,
                  **{"$defs": {"base": {}}}),
            {"b": 1},
            id="ref",
        ),
        pytest.param(
            {**_OPEN, "unevaluatedProperties": False},  # draft 7: no such keyword
            _2020(**_OPEN, unevaluatedProperties=False),
            {"a": 1},
            id="draft7",
        ),
    ],
)  # fmt: skip
def test_unevaluated_properties_beside_an_in_place_applicator(
    old: Any, new: Any, instance: Any
) -> None:
    assert _accepts(b(old), instance)
    assert not _accepts(b(new), instance)
    assert not compatible(old, new)
    assert compatible(old, old)
    assert compatible(new, new)


def test_one_of_branches_may_widen_where_no_other_branch_takes_the_type() -> None:
    nullable = {"oneOf": [{"type": "null"}, {**S, "maxLength": 2}]}
    assert compatible(nullable, {"oneOf": [{"type": "null"}, S]})
    assert compatible(nullable, {"oneOf": [{"type": "null"}, {**S, "maxLength": 2}, I]})
    assert compatible(S, {"oneOf": [{"type": "null"}, S]})
    assert not compatible(nullable, {"oneOf": [{}, {**S, "maxLength": 2}]})


@pytest.mark.parametrize(
    ("old", "new", "instance"),
    [
        pytest.param(
            {**_OPEN, "additionalProperties": {}},
            {**_OPEN, "additionalProperties": {}, "patternProperties": {"^x": S}},
            {"x1": 1},
            id="added",
        ),
        pytest.param(
            {**_OPEN, "patternProperties": {"^x": {}}, "additionalProperties": False},
            {**_OPEN, "additionalProperties": False},
            {"x1": 1},
            id="removed",
        ),
        pytest.param(  # no regex matches "a": the original took it with any value
            {**_OPEN, "patternProperties": {"^x": S}},
            {**_OPEN, "patternProperties": {"^x": S}, "properties": {"a": S}},
            {"a": 1},
            id="property-added-beside-them",
        ),
    ],
)
def test_pattern_properties_added_or_removed(old: Any, new: Any, instance: Any) -> None:
    # STRICT refuses both; LENIENT accepts them as it accepts properties added or removed.
    assert _accepts(b(old), instance)
    assert not _accepts(b(new), instance)
    assert not compatible(old, new)
    assert compatible(old, new, "LENIENT")
    assert compatible(
        {**_OPEN, "patternProperties": {"^x": S}}, {**_OPEN, "patternProperties": {"^x": {}}}
    )


def test_an_earlier_version_with_a_ref_loop_is_not_compared_through_it() -> None:
    """Registered before the registry refused it: behind the loop, the checker took a raised
    minLength (old data "ab" then refused) as compatible."""
    loop = {
        "$ref": "#/definitions/d",
        "definitions": {"d": {"anyOf": [{"$ref": "#/definitions/d"}]}},
    }
    old = {"allOf": [loop["definitions"]["d"], {"type": "string", "minLength": 2}], **loop}
    old.pop("$ref")
    new = {**old, "allOf": [old["allOf"][0], {"type": "string", "minLength": 4}]}
    with pytest.raises(InvalidSchemaError, match="never steps into the instance"):
        check(Bundle(new, DRAFT7), [(1, Bundle(old, DRAFT7))], "BACKWARD")


def test_an_earlier_version_with_more_patterns_than_the_limit_is_not_compared() -> None:
    """Registered before the limit: compiling its regexes could hold the registry."""
    patterns = {f"^a{i}_": {"type": "string"} for i in range(MAX_PATTERN_PROPERTIES + 1)}
    old = {"type": "object", "patternProperties": patterns}
    with pytest.raises(InvalidSchemaError, match="distinct patternProperties"):
        check(Bundle({"type": "object"}, DRAFT7), [(1, Bundle(old, DRAFT7))], "BACKWARD")
