"""Publishing and verifying the signed global configuration, and the gateway's index of it."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from core import jws
from core.canonical import b64url_decode
from core.db import Sessions, transaction
from core.errors import AccessDeniedError, InvalidSignatureError, UnknownServiceError
from core.keys import KeySet, PrivateKey
from registry import publisher
from registry import service as ops
from registry.globalconf import (
    GLOBALCONF_TYP,
    Anchor,
    GlobalConfRejectedError,
    GlobalConfView,
    Jwks,
    anchor_schema,
    document_schema,
    path_matches,
    verify_globalconf,
)
from registry.payloads import AccessRightCreate, KeyCreate, MemberUpdate, SubsystemUpdate
from tests.registry.federation import (
    CIVIL,
    LMC_TAX,
    NADRA,
    NADRA_KEY,
    OPERATOR,
    PERSON,
    PIN,
    PLRA_LAND,
)

T0 = dt.datetime(2026, 11, 1, 9, 0, tzinfo=dt.UTC)
SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def anchor_for(key: PrivateKey = OPERATOR, instance: str = "PK") -> Anchor:
    return Anchor(
        instance=instance,
        url="http://127.0.0.1/globalconf",
        keys=Jwks.model_validate(KeySet([key.public()]).to_jwks()),
        generated_at=T0,
    )


async def test_publishing_is_driven_by_change_and_half_life(seeded: Sessions) -> None:
    first = await publisher.publish(seeded, OPERATOR, now=T0)
    assert first.serial == 1
    same = await publisher.publish(seeded, OPERATOR, now=T0 + dt.timedelta(seconds=10))
    assert same.serial == 1
    async with transaction(seeded) as s:
        await ops.add_global_group_member(s, "local-governments", LMC_TAX)
    changed = await publisher.publish(seeded, OPERATOR, now=T0 + dt.timedelta(seconds=20))
    assert changed.serial == 2
    aged = await publisher.publish(seeded, OPERATOR, now=T0 + dt.timedelta(seconds=20 + 301))
    assert aged.serial == 3
    assert (
        await publisher.publish(seeded, OPERATOR, now=T0 + dt.timedelta(seconds=330), force=True)
    ).serial == 4
    assert (await publisher.latest(seeded)) == (
        await publisher.publish(seeded, OPERATOR, now=T0 + dt.timedelta(seconds=331))
    )


async def test_a_published_configuration_verifies_and_carries_everything(seeded: Sessions) -> None:
    pub = await publisher.publish(seeded, OPERATOR, now=T0)
    conf = verify_globalconf(pub.signed, anchor_for(), now=T0 + dt.timedelta(minutes=1))
    assert conf.serial == 1
    assert conf.expires_at == T0 + dt.timedelta(seconds=600)
    assert conf.refresh_interval == 60
    assert {str(m.id) for m in conf.members} == {"PK/FED/NADRA", "PK/LG/LMC", "PK/PROV/PLRA"}
    assert conf.services[0].id == PERSON
    assert conf.access_rights[0].client == LMC_TAX
    assert conf.operator_keys.keys[0]["kid"] == OPERATOR.kid
    payload = json.loads(b64url_decode(pub.signed.split(".")[1]))
    jsonschema.validate(payload, json.loads((SCHEMAS / "globalconf.schema.json").read_text()))


@pytest.fixture
async def signed(seeded: Sessions) -> str:
    return (await publisher.publish(seeded, OPERATOR, now=T0)).signed


@settings(max_examples=60)
@given(index=st.integers(min_value=0), bit=st.integers(0, 5))
def test_any_changed_character_of_a_served_configuration_is_refused(
    signed: str, index: int, bit: int
) -> None:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    i = index % len(signed)
    if signed[i] == ".":
        i += 1
    flipped = alphabet[alphabet.index(signed[i]) ^ (1 << bit)]
    tampered = signed[:i] + flipped + signed[i + 1 :]
    with pytest.raises(GlobalConfRejectedError):
        verify_globalconf(tampered, anchor_for(), now=T0)


def test_older_serial_is_refused_as_rollback(signed: str) -> None:
    newer = _resign(signed, serial=7)
    held = verify_globalconf(newer, anchor_for(), now=T0)
    with pytest.raises(GlobalConfRejectedError, match="rollback"):
        verify_globalconf(signed, anchor_for(), now=T0, previous=held)


def test_same_serial_with_other_content_is_refused(signed: str) -> None:
    held = verify_globalconf(signed, anchor_for(), now=T0)
    other = _resign(signed, refresh_interval=5)
    with pytest.raises(GlobalConfRejectedError, match="two different"):
        verify_globalconf(other, anchor_for(), now=T0, previous=held)
    assert verify_globalconf(signed, anchor_for(), now=T0, previous=held) == held


def test_expired_configuration_is_refused(signed: str) -> None:
    with pytest.raises(GlobalConfRejectedError, match="expired"):
        verify_globalconf(signed, anchor_for(), now=T0 + dt.timedelta(seconds=600))


def test_configuration_from_the_future_is_refused(signed: str) -> None:
    with pytest.raises(GlobalConfRejectedError, match="future"):
        verify_globalconf(signed, anchor_for(), now=T0 - dt.timedelta(minutes=6))


def test_other_signer_and_other_instance_are_refused(signed: str) -> None:
    with pytest.raises(GlobalConfRejectedError, match="no trusted key"):
        verify_globalconf(signed, anchor_for(PrivateKey.generate()), now=T0)
    with pytest.raises(GlobalConfRejectedError, match="instance 'PK', anchor is 'EE'"):
        verify_globalconf(signed, anchor_for(instance="EE"), now=T0)


def test_a_validity_longer_than_the_registry_ever_gives_is_refused(signed: str) -> None:
    """Signed by mistake or with a stolen key, one that never expires would outlive every
    later serial's rollback protection."""
    doc = json.loads(b64url_decode(signed.split(".")[1]))
    for days, accepted in ((7, True), (8, False)):
        expires = dt.datetime.fromisoformat(doc["issued_at"]) + dt.timedelta(days=days)
        resigned = _resign(signed, expires_at=expires.isoformat().replace("+00:00", "Z"))
        if accepted:
            verify_globalconf(resigned, anchor_for(), now=T0)
        else:
            with pytest.raises(GlobalConfRejectedError, match="longer than 7 days"):
                verify_globalconf(resigned, anchor_for(), now=T0)


@pytest.mark.parametrize(
    "payload",
    [
        # A repeated key: this reader takes the last, a reader elsewhere may take the first.
        lambda text: text.replace('"serial":', '"serial":1,"serial":', 1),
        lambda text: text.replace(",", ", ", 1),  # the same document, not in RFC 8785 form
    ],
)
def test_a_payload_not_in_canonical_form_is_refused(signed: str, payload: Any) -> None:
    text = b64url_decode(signed.split(".")[1]).decode()
    other = jws.sign(payload(text).encode(), OPERATOR, typ=GLOBALCONF_TYP)
    with pytest.raises(GlobalConfRejectedError, match="canonical"):
        verify_globalconf(other, anchor_for(), now=T0)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://registry:TopSecret@127.0.0.1/globalconf", "user name or password"),
        ("http://registry@127.0.0.1/globalconf", "user name or password"),
        ("file:///etc/passwd", "http:// or https://"),
    ],
)
def test_an_anchor_url_with_credentials_is_refused(url: str, message: str) -> None:
    """A fetch error quotes the URL, and reaches the health endpoint, local systems and peers."""
    doc = json.loads(anchor_for().dumps())
    with pytest.raises(ValidationError, match=message):
        Anchor.model_validate({**doc, "url": url})


def test_a_differently_typed_signature_by_the_operator_is_refused(signed: str) -> None:
    payload = b64url_decode(signed.split(".")[1])
    other = jws.sign(payload, OPERATOR, typ="shahrah-envelope+jws")
    with pytest.raises(GlobalConfRejectedError, match="not of type 'shahrah-globalconf"):
        verify_globalconf(other, anchor_for(), now=T0)


def _resign(signed: str, **changes: object) -> str:
    doc = json.loads(b64url_decode(signed.split(".")[1]))
    doc.update(changes)
    return jws.sign_json(doc, OPERATOR, typ=GLOBALCONF_TYP)


def test_published_schemas_match_the_models() -> None:
    assert json.loads((SCHEMAS / "globalconf.schema.json").read_text()) == document_schema()
    assert json.loads((SCHEMAS / "anchor.schema.json").read_text()) == anchor_schema()


# --- the gateway's view -----------------------------------------------------------------------


async def _view(db: Sessions, at: dt.datetime = T0) -> GlobalConfView:
    pub = await publisher.publish(db, OPERATOR, now=at, force=True)
    return GlobalConfView(verify_globalconf(pub.signed, anchor_for(), now=at), pub.signed)


async def test_access_rights_by_client_group_local_group_and_endpoint(seeded: Sessions) -> None:
    view = await _view(seeded)
    assert view.is_allowed(LMC_TAX, PERSON, "GET", "/persons/3520212345671")
    assert not view.is_allowed(LMC_TAX, PERSON, "POST", "/persons/3520212345671")
    assert not view.is_allowed(LMC_TAX, PERSON, "GET", "/persons/1/photo")
    # One record's right does not reach the collection, which backends route '/persons/' to.
    assert not view.is_allowed(LMC_TAX, PERSON, "GET", "/persons/")
    assert not view.is_allowed(PLRA_LAND, PERSON, "GET", "/persons/1")
    async with transaction(seeded) as s:
        await ops.add_global_group_member(s, "local-governments", PLRA_LAND)
        await ops.grant(
            s, AccessRightCreate(service=PERSON, global_group="local-governments", path="/a/**")
        )
        await ops.add_local_group_member(s, CIVIL, "land", LMC_TAX)
        await ops.grant(
            s, AccessRightCreate(service=PERSON, local_group="land", method="DELETE", path="/x")
        )
    view = await _view(seeded, T0 + dt.timedelta(seconds=1))
    assert view.is_allowed(PLRA_LAND, PERSON, "PUT", "/a/b/c")
    assert view.is_allowed(PLRA_LAND, PERSON, "GET", "/a")
    assert not view.is_allowed(PLRA_LAND, PERSON, "GET", "/b")
    assert view.is_allowed(LMC_TAX, PERSON, "DELETE", "/x")
    assert view.allowed_services(PLRA_LAND) == [PERSON]


_SEGMENT = st.text(alphabet="abcxyz019-_.~", min_size=1, max_size=4)


@given(st.lists(st.tuples(_SEGMENT, st.booleans()), min_size=1, max_size=6), st.data())
def test_a_star_stands_for_exactly_one_non_empty_segment(
    parts: list[tuple[str, bool]], data: st.DataObject
) -> None:
    pattern = "/" + "/".join("*" if star else seg for seg, star in parts)
    path = "/" + "/".join(seg for seg, _ in parts)
    assert path_matches(pattern, path)
    assert not path_matches(pattern, path + "/x")
    assert not path_matches(pattern, path + "/")
    i = data.draw(st.integers(0, len(parts) - 1))
    emptied = "/" + "/".join("" if j == i else seg for j, (seg, _) in enumerate(parts))
    assert not path_matches(pattern, emptied)
    assert path_matches(pattern.rsplit("/", 1)[0] + "/**", path)


async def test_keys_are_valid_only_in_their_window_and_until_revoked(seeded: Sessions) -> None:
    later = PrivateKey.generate()
    async with transaction(seeded) as s:
        await ops.add_key(
            s,
            KeyCreate(
                member=NADRA,
                jwk=later.public().to_jwk(),
                not_before=T0 + dt.timedelta(days=1),
                not_after=T0 + dt.timedelta(days=2),
            ),
        )
    view = await _view(seeded)
    now = dt.datetime.now(dt.UTC)
    assert view.signing_key(NADRA, NADRA_KEY.kid, now).kid == NADRA_KEY.kid
    with pytest.raises(InvalidSignatureError, match="not a registered key of PK/LG/LMC"):
        view.signing_key(LMC_TAX.member, NADRA_KEY.kid, now)
    with pytest.raises(InvalidSignatureError, match="not valid"):
        view.signing_key(NADRA, later.kid, T0)
    assert view.signing_key(NADRA, later.kid, T0 + dt.timedelta(days=1, hours=1)).kid == later.kid
    with pytest.raises(InvalidSignatureError, match="not valid"):
        view.signing_key(NADRA, later.kid, T0 + dt.timedelta(days=2))
    async with transaction(seeded) as s:
        await ops.revoke_key(s, NADRA_KEY.kid)
    view = await _view(seeded, T0 + dt.timedelta(seconds=1))
    with pytest.raises(InvalidSignatureError, match="revoked"):
        view.signing_key(NADRA, NADRA_KEY.kid, now)


async def test_suspended_members_and_subsystems_are_refused(seeded: Sessions) -> None:
    view = await _view(seeded)
    view.require_active_client(LMC_TAX)
    async with transaction(seeded) as s:
        await ops.update_subsystem(s, LMC_TAX, SubsystemUpdate(status="suspended"))
        await ops.update_member(s, PLRA_LAND.member, MemberUpdate(status="suspended"))
    view = await _view(seeded, T0 + dt.timedelta(seconds=1))
    with pytest.raises(AccessDeniedError, match="subsystem PK/LG/LMC/property-tax is suspended"):
        view.require_active_client(LMC_TAX)
    with pytest.raises(AccessDeniedError, match="member PK/PROV/PLRA is suspended"):
        view.require_active_client(PLRA_LAND)
    with pytest.raises(AccessDeniedError, match="not a member"):
        view.require_active_client(LMC_TAX.member.__class__("PK", "FED", "FBR").subsystem("x"))


async def test_r1_service_resolution_takes_the_version_from_the_path(seeded: Sessions) -> None:
    view = await _view(seeded)
    sid, rest = view.resolve_service(CIVIL, "person", ["v1", "persons", "1"])
    assert (sid, rest) == (PERSON, ["persons", "1"])
    with pytest.raises(UnknownServiceError):
        view.resolve_service(CIVIL, "person", ["v2", "persons"])
    with pytest.raises(UnknownServiceError):
        view.resolve_service(CIVIL, "vehicles", [])
    assert [g.address for g in view.gateways_for(CIVIL)] == ["https://127.0.0.1:9443"]
    assert view.gateway_by_pin(PIN) is not None
