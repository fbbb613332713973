"""The registry over real HTTP: the served configuration, operator authentication, and the
management API's answers to good and bad requests."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from jwcrypto import jwk as jwcrypto_jwk
from jwcrypto import jws as jwcrypto_jws
from openapi_spec_validator import validate

from core.canonical import b64url_decode
from core.db import Sessions, transaction
from core.errors import BadRequestError
from core.tls import make_certificate
from registry import tokens
from registry.server import RegistryConfig, build_app
from tests.registry.federation import CIVIL, LMC_TAX, NADRA_TLS_PEM, OPERATOR, PERSON
from tests.web import raw_status

ENV_TOKEN = "env-admin-token-for-tests"
CA_PEM = (
    make_certificate("a CA", ec.generate_private_key(ec.SECP256R1()), ca=True)
    .public_bytes(Encoding.PEM)
    .decode()
)


@pytest.fixture
async def registry(seeded: Sessions, db_url: str, serve: Any) -> tuple[str, str]:
    """(base URL, a database-issued operator token) of a running registry."""
    async with transaction(seeded) as s:
        token = await tokens.create(s, "tester")
    app = build_app(
        RegistryConfig(
            db_url=db_url,
            instance="PK",
            operator_key=OPERATOR,
            admin_token=ENV_TOKEN,
            publish_interval=3600,
        )
    )
    return await serve(app), token


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_globalconf_is_jose_with_etag_and_304(
    registry: tuple[str, str], http: aiohttp.ClientSession
) -> None:
    base, _ = registry
    async with http.get(f"{base}/globalconf") as r:
        assert r.status == 200
        assert r.content_type == "application/jose"
        etag = r.headers["ETag"]
        signed = await r.text()
    async with http.get(f"{base}/globalconf", headers={"If-None-Match": etag}) as r:
        assert r.status == 304
        assert await r.read() == b""
    # Any JOSE library verifies it with the operator key the anchor carries.
    checker = jwcrypto_jws.JWS()
    checker.deserialize(signed)
    checker.verify(jwcrypto_jwk.JWK(**OPERATOR.public().to_jwk()), alg="ES256")
    assert b'"instance":"PK"' in checker.payload


async def test_writes_need_a_valid_operator_token(
    registry: tuple[str, str], http: aiohttp.ClientSession, seeded: Sessions
) -> None:
    base, token = registry
    body = {"member_class": "FED", "member_code": "FBR", "name": "Federal Board of Revenue"}
    for headers in ({}, auth("wrong"), auth(token + "x")):
        async with http.post(f"{base}/api/v1/members", json=body, headers=headers) as r:
            assert r.status == 401, headers
    async with http.post(f"{base}/api/v1/members", json=body, headers=auth(token)) as r:
        assert r.status == 201
        assert (await r.json())["id"] == "PK/FED/FBR"
    async with http.get(f"{base}/api/v1/members/FED/FBR", headers=auth(ENV_TOKEN)) as r:
        assert r.status == 200
    async with transaction(seeded) as s:
        await tokens.revoke(s, "tester")
    async with http.get(f"{base}/api/v1/members", headers=auth(token)) as r:
        assert r.status == 401


async def test_a_bearer_token_that_is_not_utf8_is_refused(registry: tuple[str, str]) -> None:
    """Not UTF-8, the token arrives holding lone surrogates, which cannot be hashed or compared
    with SHAHRAH_ADMIN_TOKEN: a 401, not an internal error."""
    base, _ = registry
    headers = b"Authorization: Bearer shr_op_\xff\xfe\r\n"
    assert await raw_status(base, "/api/v1/members", headers) == 401


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        (
            "POST",
            "/api/v1/members",
            {"member_class": "FED", "member_code": "NADRA", "name": "x"},
            409,
            "already exists",
        ),
        (
            "POST",
            "/api/v1/members",
            {"member_class": "FED", "member_code": "N/A", "name": "x"},
            400,
            "'member_code'",
        ),
        ("POST", "/api/v1/members", {"member_class": "FED", "member_code": "X"}, 400, "'name'"),
        (
            "POST",
            "/api/v1/members",
            {"member_class": "FED", "member_code": "X", "name": "x", "extra": 1},
            400,
            "'extra'",
        ),
        ("GET", "/api/v1/members/FED/NOBODY", None, 404, "PK/FED/NOBODY is not registered"),
        ("POST", "/api/v1/subsystems", {"id": "PK/FED/NADRA"}, 400, "SUBSYSTEM"),
        (
            "POST",
            "/api/v1/gateways",
            {"id": "PK/FED/NADRA/gw9", "address": "ftp://x", "tls_certificate": NADRA_TLS_PEM},
            400,
            "'address'",
        ),
        (
            "POST",
            "/api/v1/gateways",
            {"id": "PK/FED/NADRA/gw9", "address": "https://x:1", "tls_certificate": "zz"},
            400,
            "exactly one PEM certificate",
        ),
        (
            "POST",
            "/api/v1/gateways",
            {"id": "PK/FED/NADRA/gw9", "address": "https://x:1", "tls_certificate": CA_PEM},
            400,
            "a CA certificate (basicConstraints CA:TRUE)",
        ),
        (
            "POST",
            "/api/v1/gateways",
            {"id": "PK/PROV/PLRA/gw1", "address": "https://x:1", "tls_certificate": NADRA_TLS_PEM},
            409,
            "already registered to gateway PK/FED/NADRA/gw1",
        ),
        ("POST", "/api/v1/keys", {"member": "PK/FED/NADRA", "jwk": {"kty": "RSA"}}, 400, "P-256"),
        (
            "POST",
            "/api/v1/keys",
            {"member": "PK/FED/NADRA", "jwk": {}, "not_after": "9999-12-31T23:00:00-05:00"},
            400,
            "out of range",
        ),
        (
            "POST",
            "/api/v1/access-rights",
            {"service": str(PERSON), "client": str(LMC_TAX), "global_group": "g"},
            400,
            "exactly one",
        ),
        (
            "POST",
            "/api/v1/access-rights",
            {"service": str(PERSON), "client": str(LMC_TAX), "path": "/a/**/b"},
            400,
            "'**' may only end",
        ),
        (
            "POST",
            "/api/v1/access-rights",
            {"service": "PK/FED/NADRA/civil-registry/none", "client": str(LMC_TAX)},
            404,
            "not registered",
        ),
        (
            "PATCH",
            "/api/v1/members/FED/NADRA/subsystems/civil-registry/services/person/v1",
            {"response_schema": {"subject": "nadra-person", "version": 2**31}},
            400,
            "'response_schema.version'",
        ),
        # Longer than the groups' description columns hold (PostgreSQL refuses, SQLite not).
        ("POST", "/api/v1/global-groups", {"code": "g2", "description": "x" * 1001}, 400, "1000"),
        (
            "POST",
            "/api/v1/local-groups",
            {"owner": str(CIVIL), "code": "g2", "description": "x" * 1001},
            400,
            "1000",
        ),
        ("DELETE", "/api/v1/access-rights/12345", None, 404, "12345"),
        ("DELETE", "/api/v1/access-rights/abc", None, 404, "abc"),
        # A digit to str.isdigit but not to int(), and ids no database column holds.
        ("DELETE", "/api/v1/access-rights/%C2%B2", None, 404, "\u00b2"),
        ("DELETE", "/api/v1/access-rights/2147483648", None, 404, "2147483648"),
        ("DELETE", "/api/v1/access-rights/99999999999999999999", None, 404, "99999999999999999999"),
        ("PATCH", "/api/v1/federation", {"globalconf_refresh": 0}, 400, "'globalconf_refresh'"),
        (
            "PUT",
            "/api/v1/central-services/Bad_Name",
            {"url": "https://c", "keys": {"keys": []}},
            400,
            "'name'",
        ),
    ],
)
async def test_bad_requests_get_precise_answers(
    registry: tuple[str, str],
    http: aiohttp.ClientSession,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    status: int,
    message: str,
) -> None:
    base, token = registry
    async with http.request(method, f"{base}{path}", json=body, headers=auth(token)) as r:
        answer = await r.json()
    assert r.status == status, answer
    assert message in answer["message"] or message in str(answer.get("detail")), answer


async def test_a_granted_access_right_reaches_the_next_configuration(
    registry: tuple[str, str], http: aiohttp.ClientSession
) -> None:
    base, token = registry
    async with http.get(f"{base}/healthz") as r:
        before = (await r.json())["serial"]
    grant = {
        "service": str(PERSON),
        "client": "PK/PROV/PLRA/land-records",
        "method": "GET",
        "path": "/persons/*",
    }
    async with http.post(f"{base}/api/v1/access-rights", json=grant, headers=auth(token)) as r:
        assert r.status == 201
        right = await r.json()
    for _ in range(100):
        async with http.get(f"{base}/healthz") as r:
            if (await r.json())["serial"] > before:
                break
        await asyncio.sleep(0.05)
    async with http.get(f"{base}/globalconf") as r:
        assert b"PK/PROV/PLRA/land-records" in _payload(await r.text())
    async with http.delete(f"{base}/api/v1/access-rights/{right['id']}", headers=auth(token)) as r:
        assert r.status == 204


def _payload(signed: str) -> bytes:
    return b64url_decode(signed.split(".")[1])


async def test_oversized_request_is_413(
    registry: tuple[str, str], http: aiohttp.ClientSession
) -> None:
    base, token = registry
    huge = io.BytesIO(b'{"name": "' + b"n" * (2 * 2**20) + b'"}')
    headers = {**auth(token), "Content-Type": "application/json"}
    async with http.post(f"{base}/api/v1/members", data=huge, headers=headers) as r:
        assert r.status == 413


async def test_openapi_describes_every_route_and_is_valid(
    registry: tuple[str, str], http: aiohttp.ClientSession
) -> None:
    base, _ = registry
    async with http.get(f"{base}/openapi.json") as r:
        doc = await r.json()
    validate(doc)
    assert "/api/v1/access-rights" in doc["paths"]
    assert doc["paths"]["/api/v1/members"]["post"]["security"] == [{"operator": []}]
    assert doc["paths"]["/globalconf"]["get"]["responses"]["200"]["content"].keys() == {
        "application/jose"
    }


async def test_token_names_of_the_environment_admin_are_reserved(seeded: Sessions) -> None:
    """The console tells the environment's admin token by the name env:SHAHRAH_ADMIN_TOKEN;
    a stored token so named kept its console sessions after it was revoked."""
    async with transaction(seeded) as s:
        with pytest.raises(BadRequestError, match="reserved"):
            await tokens.create(s, tokens.ENV_PRINCIPAL)
