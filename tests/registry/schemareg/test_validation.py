"""Hot-path validation: the cache over a real registry on loopback and straight from the
database, violations with their pointers, and the JSON Pointer helpers consents use."""

from __future__ import annotations

import copy
from typing import Any

import aiohttp
import jsonschema
import pytest
import referencing
import referencing.jsonschema
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

import schemas
from core.db import Sessions, transaction
from core.errors import BadRequestError
from registry.globalconf import SchemaRef
from registry.schemareg.documents import DRAFT7, DRAFT202012, Bundle
from registry.schemareg.records import register_records
from registry.schemareg.validation import (
    CompiledSchema,
    DatabaseSchemaSource,
    HttpSchemaSource,
    SchemaUnavailableError,
    SchemaViolationError,
    ValidatorCache,
    defines_pointer,
    parse_pointer,
    project,
    reference_validator,
)
from registry.server import RegistryConfig, build_app
from tests.registry.federation import OPERATOR

PERSON = SchemaRef(subject="pk.nadra.person", version=1)


def example(subject: str) -> dict[str, Any]:
    record = next(r for r in schemas.records() if r.subject == subject)
    return copy.deepcopy(record.schema["examples"][0])


@pytest.fixture
async def registered(seeded: Sessions) -> Sessions:
    async with transaction(seeded) as s:
        await register_records(s)
    return seeded


async def test_cache_over_http_validates_and_reuses_compiled_schemas(
    registered: Sessions, db_url: str, serve: Any
) -> None:
    app = build_app(
        RegistryConfig(db_url=db_url, instance="PK", operator_key=OPERATOR, publish_interval=3600)
    )
    base = await serve(app)
    source = HttpSchemaSource(base, timeout=5)
    fetched = 0
    real_fetch = source.fetch

    async def counting(ref: SchemaRef) -> Any:
        nonlocal fetched
        fetched += 1
        return await real_fetch(ref)

    source.fetch = counting  # type: ignore[method-assign]
    cache = ValidatorCache(source)
    try:
        person = example("pk.nadra.person")
        await cache.validate(PERSON, person)
        await cache.validate(PERSON, person)
        assert fetched == 1
        person["cnic"] = "35202-123456-1"
        person["gender"] = "m"
        del person["name"]
        with pytest.raises(SchemaViolationError) as caught:
            await cache.validate(PERSON, person, what="response body")
        error = caught.value
        assert isinstance(error, BadRequestError)
        assert error.message.startswith("response body does not match pk.nadra.person version 1")
        assert "(and 2 more)" in error.message
        pointers = {(v["pointer"], v["keyword"]) for v in error.detail}
        assert pointers == {("", "required"), ("/cnic", "pattern"), ("/gender", "enum")}
        with pytest.raises(SchemaUnavailableError):
            await cache.get(SchemaRef(subject="pk.nadra.person", version=9))
    finally:
        await source.aclose()


async def test_http_source_fails_closed_on_bad_answers(serve: Any) -> None:
    async def huge(_: web.Request) -> web.Response:
        return web.Response(text='{"id": 1, "schema": "' + "x" * 5000 + '"}')

    async def broken(_: web.Request) -> web.Response:
        return web.Response(text="{not json")

    app = web.Application()
    app.router.add_get("/schema-registry/subjects/huge/versions/1", huge)
    app.router.add_get("/schema-registry/subjects/broken/versions/1", broken)
    base = await serve(app)
    async with aiohttp.ClientSession() as session:
        source = HttpSchemaSource(base, session=session, max_bytes=1000)
        for subject in ("huge", "broken", "missing"):
            with pytest.raises(SchemaUnavailableError):
                await source.fetch(SchemaRef(subject=subject, version=1))
    unreachable = HttpSchemaSource("http://127.0.0.1:9", timeout=2)
    try:
        with pytest.raises(SchemaUnavailableError, match="cannot reach"):
            await unreachable.fetch(PERSON)
    finally:
        await unreachable.aclose()


async def test_database_source_and_shared_compiled_validators(registered: Sessions) -> None:
    cache = ValidatorCache(DatabaseSchemaSource(registered), max_validators=2)
    for record in schemas.records():
        if record.subject == schemas.COMMON:
            continue
        ref = SchemaRef(subject=record.subject, version=1)
        for instance in record.schema["examples"]:
            await cache.validate(ref, instance)
    assert len(cache._by_id) == 2  # bounded
    compiled = await cache.get(PERSON)
    assert compiled.defines("/permanent_address/union_council/code")


class _Fixed:
    """A schema source that knows one bundle, under global id 1."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle

    async def fetch(self, ref: SchemaRef) -> tuple[int, Bundle]:
        return 1, self.bundle


async def _gateway(bundle: Bundle) -> CompiledSchema:
    """``bundle`` compiled as gateways compile it: through a :class:`ValidatorCache`."""
    return await ValidatorCache(_Fixed(bundle)).get(SchemaRef(subject="t", version=1))


def _draft7(bundle: Bundle) -> Any:
    """jsonschema's draft 7 validator over ``bundle``, every document read as draft 7."""
    registry: referencing.Registry[Any] = referencing.Registry().with_resources(
        (uri, referencing.jsonschema.DRAFT7.create_resource(doc)) for uri, doc in bundle.resources()
    )
    return jsonschema.Draft7Validator({"$id": bundle.base_uri, **bundle.root}, registry=registry)


# Schemas without $schema, which are draft 7, each written with keywords that 2020-12 (what
# jsonschema-rs assumes without $schema) reads otherwise; then instances, valid or not.
WITHOUT_SCHEMA: list[tuple[Any, list[tuple[Any, bool]]]] = [
    # draft 7 ignores keywords beside $ref: the checker allows adding them
    ({"properties": {"p": {"$ref": "#/definitions/s", "maxLength": 1}},
      "definitions": {"s": {"type": "string"}}},
     [({"p": "abc"}, True), ({"p": 1}, False)]),
    # tuple items: an array of schemas, and additionalItems for the rest
    ({"items": [{"type": "string"}], "additionalItems": False},
     [(["a"], True), (["a", 1], False), ([1], False)]),
    # "$id": "#name" is an anchor in draft 7
    ({"properties": {"p": {"$ref": "#short"}},
      "definitions": {"s": {"$id": "#short", "type": "string", "maxLength": 2}}},
     [({"p": "ab"}, True), ({"p": "abc"}, False), ({"p": 1}, False)]),
]  # fmt: skip


@pytest.mark.parametrize(("schema", "instances"), WITHOUT_SCHEMA)
async def test_gateways_read_a_schema_without_dollar_schema_as_draft7(
    schema: Any, instances: list[tuple[Any, bool]]
) -> None:
    bundle = Bundle(schema, DRAFT7)
    compiled = await _gateway(bundle)
    reference = _draft7(bundle)
    for instance, valid in instances:
        assert reference.is_valid(instance) is valid, instance
        assert compiled.validator.is_valid(instance) is valid, instance
        assert reference_validator(bundle).is_valid(instance) is valid, instance


async def test_references_without_dollar_schema_are_draft7_whatever_the_root() -> None:
    common = {
        "definitions": {
            "s": {"type": "string"},
            "short": {"$ref": "#/definitions/s", "maxLength": 1},  # maxLength ignored
            "pair": {"items": [{"type": "string"}], "additionalItems": False},
        }
    }
    properties = {
        "p": {"$ref": "common.json#/definitions/short"},
        "q": {"$ref": "common.json#/definitions/pair"},
    }
    cases = [({"p": "abc", "q": ["a"]}, True), ({"p": 1}, False), ({"q": ["a", "b"]}, False)]
    draft7 = Bundle({"properties": properties}, DRAFT7, {"common.json": common})
    compiled = await _gateway(draft7)
    for instance, valid in cases:
        assert _draft7(draft7).is_valid(instance) is valid, instance
        assert compiled.validator.is_valid(instance) is valid, instance
    # A 2020-12 root does not make its references 2020-12 (the checker reads each document
    # in its own draft, draft_of), and a 2020-12 reference stays 2020-12 under a draft 7 root.
    # (jsonschema reads a referenced document in its referrer's draft: no reference here.)
    mixed = Bundle({"$schema": DRAFT202012, "properties": properties}, DRAFT202012,
                   {"common.json": common})  # fmt: skip
    compiled = await _gateway(mixed)
    for instance, valid in cases:
        assert compiled.validator.is_valid(instance) is valid, instance
    common2020 = {"$schema": DRAFT202012, "$defs": {"s": {"type": "string"},
                  "short": {"$ref": "#/$defs/s", "maxLength": 1}}}  # fmt: skip
    other = Bundle({"$ref": "c.json#/$defs/short"}, DRAFT7, {"c.json": common2020})
    compiled = await _gateway(other)
    for instance, valid in [("a", True), ("abc", False), (1, False)]:
        assert compiled.validator.is_valid(instance) is valid, instance


def test_defines_pointer_follows_refs_items_and_branches() -> None:
    common = {"$defs": {"name": {"type": "object", "properties": {"en": {}, "ur": {}}}}}
    schema = {
        "$schema": DRAFT202012,
        "type": "object",
        "properties": {
            "name": {"$ref": "common.json#/$defs/name"},
            "owners": {"type": "array", "items": {"$ref": "#/$defs/owner"}},
            "pair": {"prefixItems": [{"properties": {"first": {}}}]},
            "contact": {"anyOf": [{"properties": {"phone": {}}}, {"properties": {"email": {}}}]},
            "extra": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        "patternProperties": {"^x_": {"properties": {"v": {}}}},
        "$defs": {"owner": {"allOf": [{"properties": {"cnic": {"type": "string"}}}]}},
    }
    bundle = Bundle(schema, DRAFT202012, {"common.json": common})
    for pointer in ("", "/name/ur", "/owners/3/cnic", "/pair/0/first", "/contact/email",
                    "/x_1/v", "/extra"):  # fmt: skip
        assert defines_pointer(bundle, pointer), pointer
    for pointer in ("/nope", "/name/fr", "/owners/x", "/pair/1", "/extra/anything", "/x_1/w"):
        assert not defines_pointer(bundle, pointer), pointer
    draft7 = Bundle({"items": [{"properties": {"a": {}}}], "additionalItems": {}}, DRAFT7)
    assert defines_pointer(draft7, "/0/a")
    assert not defines_pointer(draft7, "/0/b")


def test_defines_pointer_resolves_refs_where_they_are_written() -> None:
    # A subschema with its own "$id" is a schema resource: "#/..." and "#name" in it point
    # into it, and a relative $ref resolves against its "$id" (docs/schemas.md).
    nested = {
        "$id": "sub/n.json",
        "$defs": {"x": {"properties": {"nested_only": {}}}},
        "properties": {"q": {"$ref": "#/$defs/x"}, "c": {"$ref": "common.json#/$defs/c"}},
    }
    schema = {
        "$schema": DRAFT202012,
        "$defs": {"x": {"properties": {"root_only": {}}}},
        "properties": {"p": nested},
    }
    common = {"$schema": DRAFT202012, "$defs": {"c": {"properties": {"code": {}}}}}
    bundle = Bundle(schema, DRAFT202012, {"sub/common.json": common})
    for pointer in ("/p/q/nested_only", "/p/c/code"):
        assert defines_pointer(bundle, pointer), pointer
    assert not defines_pointer(bundle, "/p/q/root_only")
    draft7 = {
        "definitions": {"a": {"$id": "#a", "properties": {"root_only": {}}}},
        "properties": {
            "p": {
                "$id": "https://n.example/n.json",
                "definitions": {"a": {"$id": "#a", "properties": {"nested_only": {}}}},
                "properties": {"q": {"$ref": "#a"}},
            },
            "d": {"$dynamicRef": "#a"},  # no keyword in draft 7
        },
    }
    bundle = Bundle(draft7, DRAFT7)
    assert defines_pointer(bundle, "/p/q/nested_only")
    for pointer in ("/p/q/root_only", "/d/root_only"):
        assert not defines_pointer(bundle, pointer), pointer


def test_project_keeps_only_the_named_fields() -> None:
    record = example("pk.plra.land-parcel")
    kept = project(record, ["/khewat", "/owners/1/name/en", "/area", "/absent/field"])
    assert kept == {
        "khewat": "318",
        "owners": [{"name": {"en": "Usman Ali"}}],
        "area": record["area"],
    }
    assert project(record, [""]) == record
    assert project(record, []) == {}
    with pytest.raises(BadRequestError):
        parse_pointer("khewat")
    with pytest.raises(BadRequestError):
        parse_pointer("/a~2")
    assert parse_pointer("/a~1b/~0c") == ["a/b", "~c"]


# Objects only: a kept array element moves to the front of its array (JSON has no holes),
# so these properties are stated for object paths; arrays are covered above.
_docs = st.recursive(
    st.none() | st.integers() | st.text(max_size=4) | st.lists(st.integers(), max_size=2),
    lambda inner: st.dictionaries(st.text(max_size=3), inner, max_size=4),
    max_leaves=12,
).filter(lambda d: isinstance(d, dict))


def _leaves(value: Any, at: str = "") -> list[str]:
    if isinstance(value, dict) and value:
        esc = lambda k: k.replace("~", "~0").replace("/", "~1")  # noqa: E731
        return [p for k, v in value.items() for p in _leaves(v, f"{at}/{esc(k)}")]
    return [at]


@given(_docs, st.data())
def test_projection_properties(document: Any, data: st.DataObject) -> None:
    leaves = _leaves(document)
    assert project(document, leaves) == document
    chosen = data.draw(st.lists(st.sampled_from(leaves), unique=True)) if leaves else []
    kept = project(document, chosen)
    assert project(kept, chosen) == kept  # projecting twice changes nothing
    assert set(_leaves(kept)) <= set(leaves) | {""}
