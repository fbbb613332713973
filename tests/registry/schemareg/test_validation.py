"""Hot-path validation: the cache over a real registry on loopback and straight from the
database, violations with their pointers, and the JSON Pointer helpers consents use."""

from __future__ import annotations

import copy
from typing import Any

import aiohttp
import pytest
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
    DatabaseSchemaSource,
    HttpSchemaSource,
    SchemaUnavailableError,
    SchemaViolationError,
    ValidatorCache,
    defines_pointer,
    parse_pointer,
    project,
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
