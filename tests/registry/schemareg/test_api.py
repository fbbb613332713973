"""The Confluent-compatible API over real HTTP, on SQLite and PostgreSQL: what clients
written for Confluent rely on, and every refusal with Confluent's status and code."""

from __future__ import annotations

import json
import threading
from typing import Any

import aiohttp
import pytest
from openapi_spec_validator import validate
from sqlalchemy import func, select

from core.db import Sessions, transaction
from registry import service as ops
from registry import tokens
from registry.globalconf import SchemaRef
from registry.payloads import ServiceCreate
from registry.schemareg import compat, service
from registry.schemareg import models as m
from registry.schemareg.documents import MAX_PATTERN_PROPERTIES
from registry.server import RegistryConfig, build_app
from tests.registry.federation import CIVIL, OPERATOR

V1 = "application/vnd.schemaregistry.v1+json"
SR = "/schema-registry"
PERSON_V1 = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"cnic": {"type": "string"}, "name": {"type": "string"}},
    "required": ["cnic"],
}
PERSON_V2 = {**PERSON_V1, "properties": {**PERSON_V1["properties"], "district": {"type": "string"}}}
PERSON_BAD = {**PERSON_V1, "properties": {"cnic": {"type": "integer"}, "name": {"type": "string"}}}


@pytest.fixture
async def base(seeded: Sessions, db_url: str, serve: Any) -> tuple[str, dict[str, str]]:
    """(base URL of a running registry, operator auth headers)."""
    async with transaction(seeded) as s:
        token = await tokens.create(s, "schemas")
    app = build_app(
        RegistryConfig(db_url=db_url, instance="PK", operator_key=OPERATOR, publish_interval=3600)
    )
    return (await serve(app)) + SR, {"Authorization": f"Bearer {token}", "Content-Type": V1}


def body(schema: Any, **extra: Any) -> dict[str, Any]:
    return {"schema": json.dumps(schema), "schemaType": "JSON", **extra}


async def call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    json_body: Any = None,
    data: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    payload = data if data is not None else (None if json_body is None else json.dumps(json_body))
    sent = {"Content-Type": V1, **(headers or {})} if json_body is not None else headers or {}
    async with http.request(method, url, data=payload, headers=sent) as r:
        text = await r.text()
        return r.status, json.loads(text) if text else None


async def count_rows(db: Sessions) -> tuple[int, int]:
    async with transaction(db, write=False) as s:
        schemas_ = await s.scalar(select(func.count()).select_from(m.Schema))
        versions = await s.scalar(select(func.count()).select_from(m.SubjectVersion))
    return int(schemas_ or 0), int(versions or 0)


async def test_register_read_lookup_like_confluent(
    base: tuple[str, dict[str, str]], http: aiohttp.ClientSession
) -> None:
    url, auth = base
    status, answer = await call(
        http, "POST", f"{url}/subjects/pk.test.person/versions", json_body=body(PERSON_V1),
        headers=auth,
    )  # fmt: skip
    assert (status, answer) == (200, {"id": 1})
    # The same document with its keys in another order is the same schema: same id, no version.
    reordered = dict(reversed(list(PERSON_V1.items())))
    status, answer = await call(
        http, "POST", f"{url}/subjects/pk.test.person/versions", json_body=body(reordered),
        headers=auth,
    )  # fmt: skip
    assert (status, answer) == (200, {"id": 1})
    # The same schema under another subject keeps its global id.
    plain = {"Authorization": auth["Authorization"], "Content-Type": "application/json"}
    status, answer = await call(
        http, "POST", f"{url}/subjects/pk.other/versions", json_body=body(PERSON_V1), headers=plain
    )
    assert (status, answer) == (200, {"id": 1})
    status, answer = await call(
        http, "POST", f"{url}/subjects/pk.test.person/versions", json_body=body(PERSON_V2),
        headers=auth,
    )  # fmt: skip
    assert (status, answer) == (200, {"id": 2})

    async with http.get(f"{url}/subjects/pk.test.person/versions/latest") as r:
        assert r.status == 200
        assert r.content_type == V1
        latest = await r.json(content_type=None)
    assert latest["subject"] == "pk.test.person"
    assert latest["version"] == 2
    assert latest["id"] == 2
    assert latest["schemaType"] == "JSON"
    assert json.loads(latest["schema"]) == PERSON_V2
    assert (await call(http, "GET", f"{url}/subjects"))[1] == ["pk.other", "pk.test.person"]
    assert (await call(http, "GET", f"{url}/subjects/pk.test.person/versions"))[1] == [1, 2]
    status, raw = await call(http, "GET", f"{url}/subjects/pk.test.person/versions/1/schema")
    assert (status, raw) == (200, PERSON_V1)
    status, by_id = await call(http, "GET", f"{url}/schemas/ids/1")
    assert status == 200
    assert json.loads(by_id["schema"]) == PERSON_V1
    assert (await call(http, "GET", f"{url}/schemas/ids/1/versions"))[1] == [
        {"subject": "pk.other", "version": 1},
        {"subject": "pk.test.person", "version": 1},
    ]
    assert (await call(http, "GET", f"{url}/schemas/types"))[1] == ["JSON"]
    status, found = await call(
        http, "POST", f"{url}/subjects/pk.test.person", json_body=body(PERSON_V1),
        headers={"Content-Type": V1},
    )  # fmt: skip
    assert (status, found["version"], found["id"]) == (200, 1, 1)


async def test_incompatible_or_invalid_registration_changes_nothing(
    base: tuple[str, dict[str, str]], http: aiohttp.ClientSession, seeded: Sessions
) -> None:
    url, auth = base
    await call(http, "POST", f"{url}/subjects/s/versions", json_body=body(PERSON_V1), headers=auth)
    before = await count_rows(seeded)
    status, answer = await call(
        http, "POST", f"{url}/subjects/s/versions", json_body=body(PERSON_BAD), headers=auth
    )
    assert status == 409
    assert answer["error_code"] == 409
    assert answer["message"].startswith(
        'Schema being registered is incompatible with an earlier schema for subject "s", details: '
    )
    assert "TYPE_CHANGED" in answer["message"]
    assert "#/properties/cnic" in answer["message"]
    # A new subject has nothing to compare with: only the schema's own checks stand in the way.
    for subject, bad in (
        ("s", {"type": 7}),
        ("s", {"$ref": "https://example.com/x.json"}),
        ("new", {"$ref": "#/definitions/x"}),
    ):
        status, answer = await call(
            http, "POST", f"{url}/subjects/{subject}/versions", json_body=body(bad), headers=auth
        )
        assert (status, answer["error_code"]) == (422, 42201)
    assert await count_rows(seeded) == before
    assert (await call(http, "GET", f"{url}/subjects/s/versions"))[1] == [1]


async def test_every_bad_input_gets_confluents_status_and_code(
    base: tuple[str, dict[str, str]], http: aiohttp.ClientSession
) -> None:
    url, auth = base
    await call(http, "POST", f"{url}/subjects/s/versions", json_body=body(PERSON_V1), headers=auth)
    reg = f"{url}/subjects/s/versions"
    cases: list[tuple[str, str, dict[str, Any], int, int]] = [
        ("POST", reg, {"data": "{not json", "headers": auth}, 400, 400),
        ("POST", reg, {"json_body": [1], "headers": auth}, 422, 422),
        ("POST", reg, {"json_body": {"schemaType": "JSON"}, "headers": auth}, 422, 422),
        ("POST", reg, {"json_body": body(PERSON_V1, extra=1), "headers": auth}, 422, 422),
        ("POST", reg, {"json_body": body(PERSON_V1, schemaType="AVRO"), "headers": auth}, 422,
         42201),
        ("POST", reg, {"json_body": {"schema": "{oops"}, "headers": auth}, 422, 42201),
        ("POST", reg, {"json_body": {"schema": "[1]"}, "headers": auth}, 422, 42201),
        ("POST", reg, {"json_body": body({"type": "object", "required": "cnic"}), "headers": auth},
         422, 42201),
        ("POST", reg,
         {"json_body": body({"$schema": "http://json-schema.org/draft-04/schema#"}),
          "headers": auth}, 422, 42201),
        ("POST", reg, {"json_body": body({"$ref": "http://evil.example/x.json#/a"}),
                       "headers": auth}, 422, 42201),
        ("POST", reg,
         {"json_body": body({"$ref": "c.json"},
                            references=[{"name": "c.json", "subject": "nope", "version": 1}]),
          "headers": auth}, 422, 42201),
        ("POST", reg, {"json_body": body(PERSON_V1, metadata={"properties": {"a": "b"}}),
                       "headers": auth}, 422, 42201),
        ("POST", reg, {"json_body": body(PERSON_V1), "headers": {"Content-Type": V1}}, 401, 40101),
        ("POST", reg, {"json_body": body(PERSON_V1),
                       "headers": {**auth, "Authorization": "Bearer wrong"}}, 401, 40101),
        ("POST", reg, {"data": "x", "headers": {**auth, "Content-Type": "text/plain"}}, 415, 415),
        ("POST", f"{url}/subjects/bad%20name/versions",
         {"json_body": body(PERSON_V1), "headers": auth}, 422, 422),
        ("GET", f"{url}/subjects/nobody/versions", {}, 404, 40401),
        ("GET", f"{url}/subjects/nobody/versions/1", {}, 404, 40401),
        ("GET", f"{url}/subjects/s/versions/9", {}, 404, 40402),
        ("GET", f"{url}/subjects/s/versions/abc", {}, 422, 42202),
        ("GET", f"{url}/subjects/s/versions/0", {}, 422, 42202),
        ("GET", f"{url}/subjects/s/versions/99999999999", {}, 422, 42202),
        ("GET", f"{url}/schemas/ids/999", {}, 404, 40403),
        ("GET", f"{url}/schemas/ids/x", {}, 404, 40403),
        ("GET", f"{url}/schemas/ids/%C2%B2", {}, 404, 40403),  # '²'.isdigit(), not int()
        ("GET", f"{url}/schemas/ids/2147483648", {}, 404, 40403),  # past PostgreSQL's INTEGER
        ("GET", f"{url}/schemas/ids/2147483648/versions", {}, 404, 40403),
        ("POST", f"{url}/subjects/s", {"json_body": body(PERSON_V2), "headers": {}}, 404, 40403),
        ("POST", f"{url}/subjects/nobody", {"json_body": body(PERSON_V2)}, 404, 40401),
        ("POST", f"{url}/compatibility/subjects/nobody/versions/latest",
         {"json_body": body(PERSON_V2)}, 404, 40401),
        ("PUT", f"{url}/config", {"json_body": {"compatibility": "SIDEWAYS"}, "headers": auth},
         422, 42203),
        ("PUT", f"{url}/config", {"json_body": {"compatibilityPolicy": "LAX"}, "headers": auth},
         422, 42203),
        ("PUT", f"{url}/config", {"json_body": {"compatibility": "FULL"},
                                  "headers": {"Content-Type": V1}}, 401, 40101),
        ("GET", f"{url}/config/s", {}, 404, 40408),
        ("DELETE", f"{url}/config/s", {"headers": auth}, 404, 40408),
        ("DELETE", f"{url}/subjects/s?permanent=true", {"headers": auth}, 404, 40405),
        ("DELETE", f"{url}/subjects/s/versions/1?permanent=true", {"headers": auth}, 404, 40407),
        ("DELETE", f"{url}/subjects/s", {}, 401, 40101),
        ("GET", f"{url}/no/such/path", {}, 404, 404),
    ]  # fmt: skip
    for method, target, options, status, code in cases:
        got_status, answer = await call(http, method, target, **options)
        assert (got_status, answer["error_code"]) == (status, code), (method, target, answer)
        assert set(answer) == {"error_code", "message"}
        assert answer["message"]


async def test_compatibility_checks_and_config(
    base: tuple[str, dict[str, str]], http: aiohttp.ClientSession
) -> None:
    url, auth = base
    await call(http, "POST", f"{url}/subjects/s/versions", json_body=body(PERSON_V1), headers=auth)
    check = f"{url}/compatibility/subjects/s/versions"
    assert (await call(http, "POST", f"{check}/latest", json_body=body(PERSON_V2)))[1] == {
        "is_compatible": True
    }
    status, verdict = await call(
        http, "POST", f"{check}/1?verbose=true", json_body=body(PERSON_BAD)
    )
    assert status == 200
    assert verdict["is_compatible"] is False
    assert verdict["messages"][0].startswith('{errorType:"TYPE_CHANGED"')
    assert "{oldSchemaVersion: 1}" in verdict["messages"]
    assert (await call(http, "POST", f"{url}/compatibility/subjects/new/versions",
                       json_body=body(PERSON_BAD)))[1] == {"is_compatible": True}  # fmt: skip

    assert (await call(http, "GET", f"{url}/config"))[1] == {
        "compatibilityLevel": "BACKWARD",
        "compatibilityPolicy": "STRICT",
    }
    status, answer = await call(
        http, "PUT", f"{url}/config/s", json_body={"compatibility": "full"}, headers=auth
    )
    assert (status, answer) == (200, {"compatibility": "FULL", "compatibilityPolicy": "STRICT"})
    # FULL: an optional property added to a closed model cannot be read by old readers.
    assert (await call(http, "POST", check, json_body=body(PERSON_V2)))[1] == {
        "is_compatible": False
    }
    status, refused = await call(
        http, "POST", f"{url}/subjects/s/versions", json_body=body(PERSON_V2), headers=auth
    )
    assert (status, refused["error_code"]) == (409, 409)
    await call(http, "PUT", f"{url}/config/s", json_body={"compatibilityPolicy": "LENIENT"},
               headers=auth)  # fmt: skip
    assert (await call(http, "GET", f"{url}/config/s"))[1] == {
        "compatibilityLevel": "FULL",
        "compatibilityPolicy": "LENIENT",
    }
    status, answer = await call(
        http, "POST", f"{url}/subjects/s/versions", json_body=body(PERSON_V2), headers=auth
    )
    assert (status, answer) == (200, {"id": 2})
    await call(http, "DELETE", f"{url}/config/s", headers=auth)
    assert (await call(http, "GET", f"{url}/config/s?defaultToGlobal=true"))[1][
        "compatibilityLevel"
    ] == "BACKWARD"


async def test_references_and_deletion(
    base: tuple[str, dict[str, str]], http: aiohttp.ClientSession
) -> None:
    url, auth = base
    common = {"$defs": {"cnic": {"type": "string", "pattern": "^[0-9]{5}-[0-9]{7}-[0-9]$"}}}
    await call(http, "POST", f"{url}/subjects/pk.common/versions", json_body=body(common),
               headers=auth)  # fmt: skip
    ref = [{"name": "pk.common.json", "subject": "pk.common", "version": 1}]
    person = {"type": "object", "properties": {"cnic": {"$ref": "pk.common.json#/$defs/cnic"}}}
    status, answer = await call(
        http, "POST", f"{url}/subjects/pk.person/versions",
        json_body=body(person, references=ref), headers=auth,
    )  # fmt: skip
    assert (status, answer) == (200, {"id": 2})
    shown = (await call(http, "GET", f"{url}/subjects/pk.person/versions/1"))[1]
    assert shown["references"] == ref
    assert (await call(http, "GET", f"{url}/subjects/pk.common/versions/1/referencedby"))[1] == [2]
    status, answer = await call(
        http, "DELETE", f"{url}/subjects/pk.common/versions/1", headers=auth
    )
    assert (status, answer["error_code"]) == (422, 42206)

    assert (await call(http, "DELETE", f"{url}/subjects/pk.person", headers=auth))[1] == [1]
    status, answer = await call(http, "DELETE", f"{url}/subjects/pk.person", headers=auth)
    assert (status, answer["error_code"]) == (404, 40404)
    assert (await call(http, "GET", f"{url}/subjects"))[1] == ["pk.common"]
    assert (await call(http, "GET", f"{url}/subjects?deleted=true"))[1] == [
        "pk.common",
        "pk.person",
    ]
    assert (await call(http, "GET", f"{url}/subjects/pk.person/versions/1?deleted=true"))[0] == 200
    status, answer = await call(
        http, "DELETE", f"{url}/subjects/pk.person?permanent=true", headers=auth
    )
    assert (status, answer) == (200, [1])
    assert (await call(http, "GET", f"{url}/schemas/ids/2"))[1]["error_code"] == 40403
    # Soft-deleted versions keep their numbers: the next registration is a new version.
    assert (await call(http, "DELETE", f"{url}/subjects/pk.common/versions/1", headers=auth))[
        1
    ] == 1
    status, answer = await call(
        http, "DELETE", f"{url}/subjects/pk.common/versions/1", headers=auth
    )
    assert (status, answer["error_code"]) == (404, 40406)
    await call(http, "POST", f"{url}/subjects/pk.common/versions", json_body=body(common),
               headers=auth)  # fmt: skip
    assert (await call(http, "GET", f"{url}/subjects/pk.common/versions"))[1] == [2]


async def test_a_soft_deleted_referrer_still_holds_its_reference(
    base: tuple[str, dict[str, str]], http: aiohttp.ClientSession
) -> None:
    url, auth = base
    ref = [{"name": "a.json", "subject": "pk.a", "version": 1}]
    await call(http, "POST", f"{url}/subjects/pk.a/versions", json_body=body({"type": "string"}),
               headers=auth)  # fmt: skip
    status, answer = await call(
        http, "POST", f"{url}/subjects/pk.b/versions",
        json_body=body({"$ref": "a.json"}, references=ref), headers=auth,
    )  # fmt: skip
    assert (status, answer) == (200, {"id": 2})
    assert (await call(http, "DELETE", f"{url}/subjects/pk.b/versions/1", headers=auth))[0] == 200
    # Had pk.a version 1 gone, a new pk.a version 1 (say, an integer) and pk.b registered
    # again would have been given id 2 back, meaning something else to gateways that cached it.
    for path in ("/subjects/pk.a/versions/1", "/subjects/pk.a"):
        status, answer = await call(http, "DELETE", url + path, headers=auth)
        assert (status, answer["error_code"]) == (422, 42206)
        assert answer["message"].startswith("One or more references exist to the ")
        assert "[2], soft-deleted ones included" in answer["message"]
    # As in Confluent, referencedby lists only live referrers.
    assert (await call(http, "GET", f"{url}/subjects/pk.a/versions/1/referencedby"))[1] == []
    status, _ = await call(
        http, "DELETE", f"{url}/subjects/pk.b/versions/1?permanent=true", headers=auth
    )
    assert status == 200
    for path in ("/subjects/pk.a/versions/1", "/subjects/pk.a/versions/1?permanent=true"):
        assert (await call(http, "DELETE", url + path, headers=auth))[0] == 200


async def test_a_permanently_deleted_schemas_id_is_never_given_again(
    base: tuple[str, dict[str, str]], http: aiohttp.ClientSession
) -> None:
    """Gateways keep compiled validators by id for good: an id given to another schema would
    have them validate against the deleted one. SQLite reused the highest rowid."""
    url, auth = base
    for subject, schema in (("pk.a", {"type": "string"}), ("pk.b", {"type": "integer"})):
        await call(http, "POST", f"{url}/subjects/{subject}/versions", json_body=body(schema),
                   headers=auth)  # fmt: skip
    for path in ("/subjects/pk.b", "/subjects/pk.b?permanent=true"):
        assert (await call(http, "DELETE", url + path, headers=auth))[0] == 200
    assert (await call(http, "GET", f"{url}/schemas/ids/2"))[1]["error_code"] == 40403
    status, answer = await call(
        http, "POST", f"{url}/subjects/pk.c/versions", json_body=body({"type": "boolean"}),
        headers=auth,
    )  # fmt: skip
    assert (status, answer) == (200, {"id": 3})
    assert (await call(http, "GET", f"{url}/schemas/ids/2"))[1]["error_code"] == 40403


async def test_comparisons_are_bounded_and_off_the_event_loop(
    base: tuple[str, dict[str, str]], http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, auth = base
    await call(http, "POST", f"{url}/subjects/s/versions", json_body=body(PERSON_V1), headers=auth)
    threads: list[threading.Thread] = []

    def check(*args: Any) -> Any:
        threads.append(threading.current_thread())
        return compat.check(*args)

    monkeypatch.setattr(service, "check", check)
    compatible = f"{url}/compatibility/subjects/s/versions/latest"
    assert (await call(http, "POST", compatible, json_body=body(PERSON_V2)))[1] == {
        "is_compatible": True
    }
    status, _ = await call(
        http, "POST", f"{url}/subjects/s/versions", json_body=body(PERSON_V2), headers=auth
    )
    assert status == 200
    assert len(threads) == 2
    assert threading.main_thread() not in threads
    # Each lookahead pattern takes the validators' engine ~40 ms to compile: a thousand of them
    # tried against each property the update drops held the registry for ten minutes.
    slow = {f"(?=x)\\w{{100}}(?:q{{{i}}})?": {} for i in range(MAX_PATTERN_PROPERTIES + 1)}
    update = {"type": "object", "additionalProperties": False, "patternProperties": slow}
    for method_url, headers in ((compatible, {}), (f"{url}/subjects/s/versions", auth)):
        status, answer = await call(
            http, "POST", method_url, json_body=body(update), headers=headers
        )
        assert (status, answer["error_code"]) == (422, 42201)
        assert "distinct patternProperties regular expressions" in answer["message"]


async def test_a_version_a_service_validates_against_is_not_deleted(
    base: tuple[str, dict[str, str]], http: aiohttp.ClientSession, seeded: Sessions
) -> None:
    url, auth = base
    person = {"type": "object", "properties": {"cnic": {"type": "string"}}}
    await call(http, "POST", f"{url}/subjects/pk.person/versions", json_body=body(person),
               headers=auth)  # fmt: skip
    async with transaction(seeded) as s:
        await ops.add_service(
            s,
            ServiceCreate(
                id=CIVIL.service("people", "v1"),
                title="People",
                response_schema=SchemaRef(subject="pk.person", version=1),
            ),
        )
    # Deleted, version 1 could be given to another schema, and gateways would check this
    # service's answers against that one.
    for path in ("/subjects/pk.person/versions/1", "/subjects/pk.person"):
        status, answer = await call(http, "DELETE", url + path, headers=auth)
        assert (status, answer["error_code"]) == (422, 42206)
        assert "people/v1" in answer["message"]
    assert (await call(http, "GET", f"{url}/subjects/pk.person/versions"))[1] == [1]


async def test_openapi_document(
    base: tuple[str, dict[str, str]], http: aiohttp.ClientSession
) -> None:
    url, _ = base
    async with http.get(f"{url}/openapi.json") as r:
        document = await r.json()
    validate(document)
    register = document["paths"]["/subjects/{subject}/versions"]["post"]
    assert register["security"] == [{"operator": []}]
    assert "requestBody" in register
    assert document["components"]["schemas"]["Error"]["required"] == ["error_code", "message"]
