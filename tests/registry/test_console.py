"""The operator console over real HTTP (no browser): sign-in, CSRF, escaping, the forms'
effects on the registry and the next global configuration, the schema preview, guardianships
through the consent service, gateway reports, Urdu and page weight."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from consent.operators import tokens as consent_tokens
from core.canonical import b64url_decode
from core.db import Sessions, transaction
from core.ids import ClientId
from core.keys import PrivateKey
from core.tls import Certificate
from registry import models as m
from registry import service as ops
from registry import store, tokens
from registry.globalconf import Jwks
from registry.globalconf_client import FetchIdentity, GlobalConfClient
from registry.payloads import CentralServiceSet
from registry.schemareg import service as schemas
from registry.schemareg.payloads import SchemaRequest
from registry.server import RegistryConfig, build_app
from tests.consent.conftest import (  # noqa: F401 (fixtures)
    CONSENT_KEY,
    Harness,
    harness,
    harness_config,
)
from tests.registry.federation import LMC_TAX, NADRA, NADRA_KEY, NADRA_TLS_PEM, OPERATOR, PERSON
from tests.registry.test_globalconf import anchor_for
from tests.registry.test_service import _cert_pem
from tests.web import MAX_PAGE, Fetched, PageClient

ENV_TOKEN = "env-admin-token-for-console-tests"


@dataclass
class Registry:
    base: str
    token: str
    db: Sessions


async def start_registry(db: Sessions, db_url: str, serve: Any, consent_token: str | None) -> str:
    app = build_app(
        RegistryConfig(
            db_url=db_url,
            instance="PK",
            operator_key=OPERATOR,
            admin_token=ENV_TOKEN,
            publish_interval=3600,
            consent_operator_token=consent_token,
        )
    )
    return str(await serve(app))


@pytest.fixture
async def registry(seeded: Sessions, db_url: str, serve: Any) -> Registry:
    async with transaction(seeded) as s:
        token = await tokens.create(s, "console-tester")
    return Registry(await start_registry(seeded, db_url, serve, None), token, seeded)


@pytest.fixture
async def operator(registry: Registry, http: aiohttp.ClientSession) -> PageClient:
    """A signed-in operator."""
    page = PageClient(http, registry.base)
    signed_in = await page.submit("/console/login", token=registry.token)
    assert signed_in.status == 200
    assert signed_in.url.endswith("/console/members")
    return page


async def member_names(db: Sessions) -> list[str]:
    async with transaction(db, write=False) as s:
        return list(await s.scalars(select(m.Member.name).order_by(m.Member.id)))


# --- signing in -----------------------------------------------------------------------------


async def test_every_page_needs_a_signed_in_operator(
    registry: Registry, http: aiohttp.ClientSession
) -> None:
    page = PageClient(http, registry.base)
    for path in ("/console/members", "/console/access-rights", "/console/status"):
        answer = await page.get(path, follow=False)
        assert answer.status == 303
        assert answer.headers["Location"].startswith("/console/login?next=")
    landed = await page.get("/console/schemas")
    assert landed.url.endswith("/console/login?next=/console/schemas")
    assert "Operator token" in landed.visible


async def test_sign_in_with_the_env_token_returns_to_the_page_asked_for_and_sign_out_ends_it(
    registry: Registry, http: aiohttp.ClientSession
) -> None:
    page = PageClient(http, registry.base)
    form = await page.get("/console/status")
    answer = await page.post(
        "/console/login?next=%2Fconsole%2Fstatus", {"csrf": form.csrf, "token": ENV_TOKEN}
    )
    assert answer.url.endswith("/console/status")
    assert "Configuration status" in answer.visible
    out = await page.post("/console/logout", {"csrf": answer.csrf})
    assert "You have signed out." in out.visible
    assert (await page.get("/console/members", follow=False)).status == 303


async def test_a_wrong_token_is_refused_and_repeated_failures_lock_the_address_out(
    registry: Registry, http: aiohttp.ClientSession
) -> None:
    page = PageClient(http, registry.base)
    for attempt in range(5):
        answer = await page.submit("/console/login", token=registry.token + "x")
        assert answer.status == 401, attempt
        assert "That operator token is not valid." in answer.visible
        assert registry.token not in answer.text  # what was typed is not echoed back
    locked = await page.submit("/console/login", token=registry.token)
    assert locked.status == 429
    assert "too many failed sign-ins" in locked.visible
    assert (await page.get("/console/members", follow=False)).status == 303


async def test_revoking_the_token_ends_the_sessions_it_began(
    registry: Registry, operator: PageClient
) -> None:
    page = await operator.get("/console/members")
    assert page.status == 200
    async with transaction(registry.db) as s:
        await tokens.revoke(s, "console-tester")
    before = await member_names(registry.db)
    # A change posted from the page already open is not made, and the session is over.
    refused = await operator.post(
        "/console/members",
        {"csrf": page.csrf, "member_class": "FED", "member_code": "FBR", "name": "FBR"},
    )
    assert refused.url.startswith(f"{registry.base}/console/login")
    assert await member_names(registry.db) == before
    answer = await operator.get("/console/members", follow=False)
    assert answer.status == 303
    assert answer.headers["Location"].startswith("/console/login")


# --- forms, CSRF and escaping ----------------------------------------------------------------


async def test_a_post_without_or_with_a_forged_csrf_token_changes_nothing(
    registry: Registry, operator: PageClient
) -> None:
    before = await member_names(registry.db)
    fields = {"member_class": "FED", "member_code": "FBR", "name": "Federal Board of Revenue"}
    for csrf in (None, "forged-token"):
        data = fields if csrf is None else {**fields, "csrf": csrf}
        answer = await operator.post("/console/members", data)
        assert answer.status == 403
        assert "Nothing was changed" in answer.visible
    # A right token from another origin is refused as well.
    page = await operator.get("/console/members")
    cross = await operator.post(
        "/console/members", {**fields, "csrf": page.csrf}, origin="https://evil.example"
    )
    assert cross.status == 403
    assert await member_names(registry.db) == before


async def test_a_member_is_added_and_script_in_its_name_is_shown_as_text(
    registry: Registry, operator: PageClient
) -> None:
    name = "<script>alert('x')</script> Revenue"
    answer = await operator.submit(
        "/console/members", member_class="FED", member_code="FBR", name=name
    )
    assert answer.status == 200
    assert "Member PK/FED/FBR admitted." in answer.visible
    assert "<script>" not in answer.text
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; Revenue" in answer.text
    assert name in await member_names(registry.db)


async def test_refusals_are_shown_next_to_the_field_they_are_about(
    registry: Registry, operator: PageClient
) -> None:
    before = await member_names(registry.db)
    duplicate = await operator.submit(
        "/console/members", member_class="FED", member_code="NADRA", name="Again"
    )
    assert duplicate.status == 400
    assert 'id="member_code-error">member PK/FED/NADRA already exists' in duplicate.text
    assert 'value="Again"' in duplicate.text  # what was typed is kept
    bad = await operator.submit(
        "/console/members", member_class="FED", member_code="N/A", name="Slash"
    )
    assert bad.status == 400
    assert 'id="member_code-error"' in bad.text
    assert 'id="name-error"' not in bad.text
    assert await member_names(registry.db) == before


async def test_suspending_a_member_goes_through_the_service(
    registry: Registry, operator: PageClient
) -> None:
    page = await operator.get("/console/members")
    answer = await operator.post(
        "/console/members/status",
        {"csrf": page.csrf, "member": str(NADRA), "status": "suspended"},
    )
    assert "PK/FED/NADRA is now suspended." in answer.visible
    async with transaction(registry.db, write=False) as s:
        assert (await ops.get_member(s, NADRA)).status == "suspended"


async def test_the_other_forms_change_the_registry_or_say_which_field_is_wrong(
    registry: Registry, operator: PageClient
) -> None:
    purpose = await operator.submit(
        "/console/purposes", code="land-transfer", name="Land transfer", description=""
    )
    assert "Purpose land-transfer added." in purpose.visible
    sub = await operator.submit(
        "/console/subsystems", member="PK/PROV/PLRA", code="mutations", name="Mutations"
    )
    assert "Subsystem PK/PROV/PLRA/mutations added." in sub.visible

    mutation = {
        "id": "PK/PROV/PLRA/mutations/mutation/v1",
        "title": "Mutation",
        "description": "",
        "requires_consent": "yes",
        "request_schema": "",
    }
    service = await operator.submit(
        "/console/services", **mutation, purposes="", response_schema="nobody:1"
    )
    assert service.status == 400
    assert 'id="response_schema-error">response_schema nobody:1 is not registered' in service.text
    unbound = await operator.submit(
        "/console/services", **mutation, purposes="land-transfer", response_schema=""
    )
    assert unbound.status == 400
    assert "must name its subject field" in unbound.visible
    consented = await operator.submit(
        "/console/services",
        **mutation,
        purposes="land-transfer",
        response_schema="",
        subject_field="/owner/cnic",
    )
    assert "Service PK/PROV/PLRA/mutations/mutation/v1 registered." in consented.visible

    not_json = await operator.submit(
        "/console/keys", member="PK/PROV/PLRA", jwk="{not json", not_before="", not_after=""
    )
    assert not_json.status == 400
    assert 'id="jwk-error"' in not_json.text
    key = PrivateKey.generate()
    added = await operator.submit(
        "/console/keys",
        member="PK/PROV/PLRA",
        jwk=json.dumps(key.public().to_jwk()),
        not_before="2026-01-01T00:00",
        not_after="",
    )
    assert f"Key {key.kid} registered." in added.visible
    confirm = await operator.get(f"/console/keys/{key.kid}/revoke")
    assert "Revoke this key of PK/PROV/PLRA?" in confirm.visible
    revoked = await operator.post(f"/console/keys/{key.kid}/revoke", {"csrf": confirm.csrf})
    assert f"Key {key.kid} revoked." in revoked.visible

    edit = f"/console/gateway?id={NADRA}/gw1"
    bad_pem = await operator.submit(
        edit, address="https://127.0.0.1:9443", tls_certificate="not a certificate", status=""
    )
    assert bad_pem.status == 400
    assert 'id="tls_certificate-error"' in bad_pem.text
    taken = await operator.submit(
        "/console/gateways",
        member="PK/PROV/PLRA",
        code="gw1",
        address="https://10.0.0.8:9443",
        tls_certificate=NADRA_TLS_PEM,
        clients="",
    )
    assert taken.status == 400
    assert 'id="tls_certificate-error"' in taken.text
    assert "already registered to gateway PK/FED/NADRA/gw1" in taken.visible
    moved = await operator.submit(
        edit, address="https://10.0.0.7:9443", tls_certificate="", status="active"
    )
    assert "Gateway PK/FED/NADRA/gw1 changed." in moved.visible
    renewed_pem = _cert_pem("nadra-gw1-renewed")
    renewing = await operator.submit(
        edit,
        address="https://10.0.0.7:9443",
        tls_certificate="",
        next_tls_certificate=renewed_pem,
        status="active",
    )
    assert "Gateway PK/FED/NADRA/gw1 changed." in renewing.visible
    page = await operator.get(edit)
    renewed_pin = Certificate.from_pem(renewed_pem).sha256
    assert renewed_pin in page.visible
    assert "Drop the renewed certificate" in page.visible
    await operator.post(
        edit,
        {
            "csrf": page.csrf,
            "address": "https://10.0.0.7:9443",
            "tls_certificate": "",
            "next_tls_certificate": "",
            "status": "active",
            "drop_next": "1",
        },
    )
    assert renewed_pin not in (await operator.get(edit)).visible
    async with transaction(registry.db, write=False) as s:
        snap = await store.snapshot(s)
    assert [g.address for g in snap.gateways] == ["https://10.0.0.7:9443"]
    assert "land-transfer" in [p.code for p in snap.purposes]
    [plra] = [m for m in snap.members if m.id.member_code == "PLRA"]
    assert [k.revoked_at is not None for k in plra.keys] == [True]


# --- access rights and the global configuration ----------------------------------------------


async def grant(page: PageClient, **fields: str) -> Fetched:
    """Submit the grant form (its ``path`` field would clash with ``PageClient.submit``'s)."""
    form = await page.get("/console/access-rights")
    return await page.post("/console/access-rights", {"csrf": form.csrf, **fields})


async def published_rights(http: aiohttp.ClientSession, base: str, serial_above: int) -> Any:
    """The access rights of the first configuration with a serial above ``serial_above``."""
    for _ in range(100):
        async with http.get(f"{base}/globalconf") as r:
            payload = json.loads(b64url_decode((await r.text()).split(".")[1]))
        if payload["serial"] > serial_above:
            return payload["access_rights"]
        await asyncio.sleep(0.05)
    raise AssertionError("no new configuration was published")


async def test_a_granted_access_right_is_in_the_next_global_configuration(
    registry: Registry, operator: PageClient, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{registry.base}/healthz") as r:
        serial = (await r.json())["serial"]
    plra = "PK/PROV/PLRA/land-records"
    answer = await grant(
        operator, service=str(PERSON), client=plra, method="GET", path="/persons/*"
    )
    assert answer.status == 200
    assert f"{plra} may call {PERSON}" in answer.visible
    rights = await published_rights(http, registry.base, serial)
    assert {
        "service": str(PERSON),
        "method": "GET",
        "path": "/persons/*",
        "client": plra,
    } in [{k: v for k, v in r.items() if v is not None} for r in rights]


async def test_a_grant_naming_two_grantees_is_refused_and_revoking_asks_first(
    registry: Registry, operator: PageClient
) -> None:
    both = await grant(
        operator,
        service=str(PERSON),
        client=str(LMC_TAX),
        global_group="local-governments",
        method="*",
        path="**",
    )
    assert both.status == 400
    assert "give exactly one of client, global_group, local_group" in both.visible
    listing = await operator.get("/console/access-rights")
    [right_id] = [int(x) for x in _revoke_links(listing.text)]
    confirm = await operator.get(f"/console/access-rights/{right_id}/revoke")
    assert "Revoke this access right?" in confirm.visible
    assert f"{LMC_TAX} can no longer call {PERSON}" in confirm.visible
    done = await operator.post(f"/console/access-rights/{right_id}/revoke", {"csrf": confirm.csrf})
    assert f"Access right {right_id} revoked." in done.visible
    assert _revoke_links(done.text) == []


def _revoke_links(html: str) -> list[str]:
    return re.findall(r"/console/access-rights/([0-9]+)/revoke", html)


# --- schemas ---------------------------------------------------------------------------------

# Closed, so that adding an optional property is a backward-compatible change.
V1 = {"type": "object", "properties": {"name": {"type": "string"}}, "additionalProperties": False}


async def test_the_compatibility_preview_shows_the_checkers_messages_before_registering(
    registry: Registry, operator: PageClient
) -> None:
    async with transaction(registry.db) as s:
        await schemas.register(
            s, "pk.test.person", SchemaRequest.model_validate({"schema": json.dumps(V1)})
        )
    narrowed = {**V1, "properties": {"name": {"type": "integer"}}}
    form = await operator.get("/console/schemas")
    preview = await operator.post(
        "/console/schemas/preview",
        {"csrf": form.csrf, "subject": "pk.test.person", "schema": json.dumps(narrowed)},
    )
    assert preview.status == 200  # the preview answered; the verdict is on the page
    assert "incompatible" in preview.visible
    assert 'errorType:"TYPE_CHANGED"' in preview.text.replace("&#34;", '"')
    assert "/schemas/register" not in preview.text  # nothing to confirm
    widened = {**V1, "properties": {**V1["properties"], "city": {"type": "string"}}}
    ok = await operator.post(
        "/console/schemas/preview",
        {"csrf": form.csrf, "subject": "pk.test.person", "schema": json.dumps(widened)},
    )
    assert ok.status == 200
    assert "compatible" in ok.visible
    done = await operator.post(
        "/console/schemas/register",
        {"csrf": ok.csrf, "subject": "pk.test.person", "schema": json.dumps(widened)},
    )
    assert "Registered pk.test.person version 2." in done.visible
    async with transaction(registry.db, write=False) as s:
        assert await schemas.list_versions(s, "pk.test.person") == [1, 2]


async def test_registering_straight_away_is_still_checked(
    registry: Registry, operator: PageClient
) -> None:
    async with transaction(registry.db) as s:
        await schemas.register(
            s, "pk.test.person", SchemaRequest.model_validate({"schema": json.dumps(V1)})
        )
    narrowed = {**V1, "properties": {"name": {"type": "integer"}}}
    refused = await operator.submit(
        "/console/schemas/register",
        form_page="/console/schemas",
        subject="pk.test.person",
        schema=json.dumps(narrowed),
    )
    assert refused.status == 400
    assert "incompatible with an earlier schema" in refused.visible
    async with transaction(registry.db, write=False) as s:
        assert await schemas.list_versions(s, "pk.test.person") == [1]


# --- guardianships ---------------------------------------------------------------------------


async def set_consent_url(db: Sessions, url: str) -> None:
    keys = Jwks.model_validate({"keys": [CONSENT_KEY.public().to_jwk()]})
    async with transaction(db) as s:
        await ops.set_central_service(s, "consent", CentralServiceSet(url=url, keys=keys))


async def test_guardianships_are_registered_and_ended_in_the_consent_service(
    harness: Harness,  # noqa: F811 (the fixture imported above)
    db_url: str,
    serve: Any,
    http: aiohttp.ClientSession,
) -> None:
    async with transaction(harness.db) as s:
        consent_token = await consent_tokens.create(s, "registry-console")
        token = await tokens.create(s, "console-tester")
    await set_consent_url(harness.db, harness.base)
    base = await start_registry(harness.db, db_url, serve, consent_token)
    page = PageClient(http, base)
    await page.submit("/console/login", token=token)

    parent = {"guardian": "35202-1234567-1", "relation": "parent", "reference": "B-form 7"}
    bad = await page.submit("/console/guardianships", **parent, ward="35202-1234567-1")
    assert bad.status == 400
    assert "a citizen cannot be their own guardian" in bad.visible

    added = await page.submit("/console/guardianships", **parent, ward="35202-7654321-3")
    assert "Guardianship" in added.visible
    assert "35202-7654321-3" in added.visible
    [gid] = re.findall(r"/console/guardianships/([0-9]+)/end", added.text)
    confirm = await page.get(f"/console/guardianships/{gid}/end")
    assert "End this guardianship now?" in confirm.visible
    ended = await page.post(f"/console/guardianships/{gid}/end", {"csrf": confirm.csrf})
    assert f"Guardianship {gid} ended." in ended.visible
    assert "not in force" in ended.visible


async def test_an_unreachable_consent_service_is_said_plainly(
    registry: Registry, operator: PageClient, serve: Any, db_url: str, http: aiohttp.ClientSession
) -> None:
    await set_consent_url(registry.db, "http://127.0.0.1:9")  # nothing listens on port 9
    base = await start_registry(registry.db, db_url, serve, "shr_cop_unused")
    page = PageClient(http, base)
    await page.submit("/console/login", token=registry.token)
    answer = await page.get("/console/guardianships")
    assert answer.status == 503
    assert "The consent service cannot be used right now" in answer.visible
    assert "cannot be reached" in answer.visible
    # Without a token configured, the page says that instead.
    unconfigured = await operator.get("/console/guardianships")
    assert "no operator token for the consent service" in unconfigured.visible


# --- configuration status --------------------------------------------------------------------


async def test_the_status_page_shows_what_each_gateway_last_fetched(
    registry: Registry, operator: PageClient, http: aiohttp.ClientSession
) -> None:
    before = await operator.get("/console/status")
    assert "never reported" in before.visible
    anchor = anchor_for().model_copy(update={"url": f"{registry.base}/globalconf"})
    nadra = ClientId(NADRA.instance, NADRA.member_class, NADRA.member_code)
    client = GlobalConfClient(anchor, identity=FetchIdentity(NADRA_KEY, nadra, "gw1"))
    assert await client.refresh(http)
    after = await operator.get("/console/status")
    assert "PK/FED/NADRA/gw1 1 " in after.visible
    assert "current" in after.visible
    assert "never reported" not in after.visible


# --- language and weight ---------------------------------------------------------------------

PAGES = [
    "/console/members",
    "/console/subsystems",
    "/console/gateways",
    "/console/keys",
    "/console/services",
    "/console/access-rights",
    "/console/schemas",
    "/console/purposes",
    "/console/guardianships",
    "/console/status",
    f"/console/service?id={PERSON}",
    f"/console/gateway?id={NADRA}/gw1",
]


@pytest.mark.parametrize("lang", ["en", "ur"])
async def test_every_page_renders_light_in_both_languages(
    registry: Registry, http: aiohttp.ClientSession, lang: str
) -> None:
    page = PageClient(http, registry.base, lang=lang)
    await page.submit("/console/login", token=registry.token)
    for path in PAGES:
        answer = await page.get(path)
        assert answer.status in (200, 503), path  # guardianships: no consent token here
        assert answer.dir == ("rtl" if lang == "ur" else "ltr"), path
        assert len(answer.text.encode()) < MAX_PAGE, path
        assert answer.headers["Content-Security-Policy"].startswith("default-src 'none'")
    if lang == "ur":
        assert "اراکین" in (await page.get("/console/members")).visible
