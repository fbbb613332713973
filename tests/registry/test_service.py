"""Operator actions: validation, conflicts, missing objects, and all-or-nothing writes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from pydantic import ValidationError

from core.db import Sessions, transaction
from core.errors import BadRequestError, ConflictError, NotFoundError
from core.ids import GatewayId, MemberId
from core.keys import PrivateKey
from core.tls import make_certificate
from registry import service as ops
from registry import store
from registry.payloads import (
    AccessRightCreate,
    FederationSettings,
    GatewayCreate,
    GatewayUpdate,
    KeyCreate,
    LocalGroupCreate,
    MemberCreate,
    MemberUpdate,
    PurposeCreate,
    ServiceCreate,
    SubsystemCreate,
)
from tests.registry.federation import (
    CIVIL,
    LMC_TAX,
    NADRA,
    NADRA_KEY,
    NADRA_TLS_PEM,
    PERSON,
    PIN,
    PLRA_LAND,
)


async def _run(db: Sessions, action: Any) -> Any:
    async with transaction(db) as s:
        return await action(s)


async def test_seeded_federation_reads_back(seeded: Sessions) -> None:
    async with transaction(seeded, write=False) as s:
        snap = await store.snapshot(s)
    assert [str(m.id) for m in snap.members] == ["PK/FED/NADRA", "PK/LG/LMC", "PK/PROV/PLRA"]
    nadra = snap.members[0]
    assert [k.kid for k in nadra.keys] == [NADRA_KEY.kid]
    assert snap.gateways[0].clients == [CIVIL]
    assert snap.services[0].purposes == ["identity-verification"]
    assert snap.access_rights[0].client == LMC_TAX
    assert snap.access_rights[0].path == "/persons/*"


async def test_each_item_reads_back_as_the_snapshot_shows_it(seeded: Sessions) -> None:
    """An action answers with the item it changed, read on its own; it must be the item the
    published configuration carries, for every kind and with every part filled in."""
    plra = PLRA_LAND.member
    second = PrivateKey.generate()
    tls = make_certificate("plra-gw", ec.generate_private_key(ec.SECP256R1()))
    async with transaction(seeded) as s:
        await ops.add_subsystem(s, SubsystemCreate(id=plra.subsystem("archive"), name="Archive"))
        await ops.add_key(s, KeyCreate(member=NADRA, jwk=second.public().to_jwk()))
        await ops.revoke_key(s, NADRA_KEY.kid)
        await ops.add_gateway(
            s,
            GatewayCreate(
                id=plra.gateway("gw1"),
                address="https://127.0.0.1:9444",
                tls_certificate=tls.public_bytes(Encoding.PEM).decode(),
                clients=[plra.subsystem("archive"), PLRA_LAND],
            ),
        )
        await ops.add_purpose(s, PurposeCreate(code="land-transfer", name="Land transfer"))
        await ops.add_service(
            s,
            ServiceCreate(
                id=PLRA_LAND.service("parcel"),
                title="Parcel",
                purposes=["land-transfer", "identity-verification"],
            ),
        )
        for client in (PLRA_LAND, LMC_TAX):
            await ops.add_global_group_member(s, "local-governments", client)
            await ops.add_local_group_member(s, CIVIL, "land", client)
    async with transaction(seeded, write=False) as s:
        snap = await store.snapshot(s)
        assert [await ops.get_member(s, x.id) for x in snap.members] == snap.members
        assert [await ops.get_gateway(s, x.id) for x in snap.gateways] == snap.gateways
        assert [await ops.get_service(s, x.id) for x in snap.services] == snap.services
        assert [
            await ops.get_global_group(s, x.code) for x in snap.global_groups
        ] == snap.global_groups
        assert [
            await ops.get_local_group(s, x.owner, x.code) for x in snap.local_groups
        ] == snap.local_groups
    # Every part was filled in, so the comparison above compared something.
    assert [len(x.keys) for x in snap.members if x.id == NADRA] == [2]
    assert [len(x.subsystems) for x in snap.members if x.id == plra] == [2]
    assert [g.clients for g in snap.gateways if g.id.member == plra] == [
        sorted([plra.subsystem("archive"), PLRA_LAND], key=str)
    ]
    assert snap.global_groups[0].members == snap.local_groups[0].members == [LMC_TAX, PLRA_LAND]
    assert [x.purposes for x in snap.services if x.id.provider == PLRA_LAND] == [
        ["identity-verification", "land-transfer"]
    ]


@pytest.mark.parametrize(
    ("action", "error", "message"),
    [
        (
            lambda s: ops.add_member(
                s, MemberCreate(member_class="FED", member_code="NADRA", name="again")
            ),
            ConflictError,
            "already exists",
        ),
        (
            lambda s: ops.add_subsystem(s, SubsystemCreate(id=CIVIL)),
            ConflictError,
            "already exists",
        ),
        (
            lambda s: ops.add_subsystem(
                s, SubsystemCreate(id=MemberId("PK", "FED", "FBR").subsystem("x"))
            ),
            NotFoundError,
            "PK/FED/FBR is not registered",
        ),
        (
            lambda s: ops.add_subsystem(
                s, SubsystemCreate(id=MemberId("IN", "FED", "NADRA").subsystem("x"))
            ),
            BadRequestError,
            "not this federation",
        ),
        (
            lambda s: ops.add_key(s, KeyCreate(member=NADRA, jwk=NADRA_KEY.public().to_jwk())),
            ConflictError,
            "already registered",
        ),
        (lambda s: ops.revoke_key(s, "no-such-kid"), NotFoundError, "no key"),
        (
            lambda s: ops.add_service(
                s, ServiceCreate(id=CIVIL.service("x"), title="x", purposes=["unknown"])
            ),
            NotFoundError,
            "unknown purposes",
        ),
        (
            lambda s: ops.add_service(
                s, ServiceCreate(id=CIVIL.service("x"), title="x", requires_consent=True)
            ),
            BadRequestError,
            "allowed purposes",
        ),
        (
            lambda s: ops.add_service(
                s,
                ServiceCreate(
                    id=CIVIL.service("x"),
                    title="x",
                    requires_consent=True,
                    purposes=["identity-verification"],
                ),
            ),
            BadRequestError,
            "subject field",
        ),
        (
            lambda s: ops.grant(
                s,
                AccessRightCreate(service=PERSON, client=LMC_TAX, method="GET", path="/persons/*"),
            ),
            ConflictError,
            "already exists",
        ),
        (
            lambda s: ops.grant(s, AccessRightCreate(service=PERSON, global_group="nobody")),
            NotFoundError,
            "global group",
        ),
        (
            lambda s: ops.grant(s, AccessRightCreate(service=PERSON, local_group="other")),
            NotFoundError,
            "local group",
        ),
        (lambda s: ops.revoke_access(s, 999), NotFoundError, "999"),
        (
            lambda s: ops.update_federation(
                s, FederationSettings(globalconf_validity=100, globalconf_refresh=60)
            ),
            BadRequestError,
            "twice the refresh",
        ),
        (
            lambda s: ops.update_member(
                s, MemberId("PK", "FED", "FBR"), MemberUpdate(status="suspended")
            ),
            NotFoundError,
            "FBR",
        ),
    ],
)
async def test_refusals_are_precise(
    seeded: Sessions, action: Any, error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        await _run(seeded, action)


async def test_local_group_of_another_subsystem_cannot_be_granted(seeded: Sessions) -> None:
    await _run(
        seeded, lambda s: ops.add_local_group(s, LocalGroupCreate(owner=LMC_TAX, code="mine"))
    )
    with pytest.raises(NotFoundError, match="local group 'mine' of PK/FED/NADRA/civil-registry"):
        await _run(
            seeded, lambda s: ops.grant(s, AccessRightCreate(service=PERSON, local_group="mine"))
        )


async def test_a_gateway_serves_only_its_own_members_subsystems(seeded: Sessions) -> None:
    body = GatewayCreate(
        id=NADRA.gateway("gw2"),
        address="https://127.0.0.1:9444",
        tls_certificate=_cert_pem("nadra-gw2"),
        clients=[CIVIL, LMC_TAX],
    )
    with pytest.raises(BadRequestError, match="can only serve subsystems of PK/FED/NADRA"):
        await _run(seeded, lambda s: ops.add_gateway(s, body))
    # The refused action wrote nothing, not even the gateway row that came before the bad client.
    async with transaction(seeded, write=False) as s:
        assert [g.id for g in (await store.snapshot(s)).gateways] == [
            GatewayId("PK", "FED", "NADRA", "gw1")
        ]


def _cert_pem(name: str, *, ca: bool = False) -> str:
    cert = make_certificate(name, ec.generate_private_key(ec.SECP256R1()), ca=ca)
    return cert.public_bytes(Encoding.PEM).decode()


async def test_a_gateway_certificate_that_could_sign_others_is_refused(seeded: Sessions) -> None:
    """Gateways pin a registered certificate as a trust anchor: a CA there would make every
    certificate it issued a trusted gateway."""
    ca = _cert_pem("some CA", ca=True)
    add = GatewayCreate(id=NADRA.gateway("gw2"), address="https://127.0.0.1:9", tls_certificate=ca)
    with pytest.raises(BadRequestError, match=r"CA certificate \(basicConstraints CA:TRUE\)") as e:
        await _run(seeded, lambda s: ops.add_gateway(s, add))
    assert e.value.detail == {"field": "tls_certificate"}
    with pytest.raises(BadRequestError, match="CA:TRUE"):
        await _run(
            seeded,
            lambda s: ops.update_gateway(
                s, NADRA.gateway("gw1"), GatewayUpdate(tls_certificate=ca)
            ),
        )
    gateway = await _run(seeded, lambda s: ops.get_gateway(s, NADRA.gateway("gw1")))
    assert gateway.tls_sha256 == PIN


@pytest.mark.parametrize("address", ["http://127.0.0.1:9443", "ftp://x", "https://"])
def test_a_gateway_is_registered_only_at_an_https_address(address: str) -> None:
    """Gateways exchange envelopes and bodies over pinned TLS only: an http:// address
    would carry them in the clear."""
    with pytest.raises(ValidationError):
        GatewayCreate(id=NADRA.gateway("gw2"), address=address, tls_certificate="x")
    with pytest.raises(ValidationError):
        GatewayUpdate(address=address)


async def test_the_database_holds_one_gateway_per_pin_when_the_check_is_raced(
    seeded: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two registrations at once can both pass the service's check; the unique index on the
    pin refuses the second as a conflict, not a 500."""

    async def raced(*_: Any) -> None:
        return None  # as if the other registration had not committed yet

    monkeypatch.setattr(ops, "_refuse_pinned_elsewhere", raced)
    taken = GatewayCreate(
        id=PLRA_LAND.member.gateway("gw1"),
        address="https://127.0.0.1:9",
        tls_certificate=NADRA_TLS_PEM,
    )
    with pytest.raises(ConflictError, match="its TLS certificate is another's"):
        await _run(seeded, lambda s: ops.add_gateway(s, taken))


async def test_a_certificate_registered_to_another_gateway_is_a_conflict(
    seeded: Sessions,
) -> None:
    """A pin names one gateway: a second gateway with the same certificate would take the
    first one's place in every gateway's eyes, and the first would be refused everywhere."""
    plra_gw = PLRA_LAND.member.gateway("gw1")
    taken = GatewayCreate(id=plra_gw, address="https://127.0.0.1:9", tls_certificate=NADRA_TLS_PEM)
    with pytest.raises(ConflictError, match="already registered to gateway PK/FED/NADRA/gw1") as e:
        await _run(seeded, lambda s: ops.add_gateway(s, taken))
    assert e.value.detail == {"field": "tls_certificate", "gateway": "PK/FED/NADRA/gw1"}

    own = _cert_pem("plra-gw1")
    await _run(
        seeded, lambda s: ops.add_gateway(s, taken.model_copy(update={"tls_certificate": own}))
    )
    with pytest.raises(ConflictError, match="already registered to gateway PK/PROV/PLRA/gw1"):
        await _run(
            seeded,
            lambda s: ops.update_gateway(
                s, NADRA.gateway("gw1"), GatewayUpdate(tls_certificate=own)
            ),
        )
    # Registering a gateway's own certificate again changes nothing and is no conflict.
    same = GatewayUpdate(tls_certificate=NADRA_TLS_PEM)
    info = await _run(seeded, lambda s: ops.update_gateway(s, NADRA.gateway("gw1"), same))
    assert info.tls_sha256 == PIN


async def test_a_renewed_certificate_is_registered_beside_the_current_one_then_promoted(
    seeded: Sessions,
) -> None:
    """The renewal's registry side: peers accept both pins while it is registered; making it
    the current certificate drops the old one; an abandoned one can be dropped."""
    gw = NADRA.gateway("gw1")

    async def update(**fields: Any) -> Any:
        body = GatewayUpdate.model_validate(fields)
        return await _run(seeded, lambda s: ops.update_gateway(s, gw, body))

    plain = await _run(seeded, lambda s: ops.get_gateway(s, gw))
    # Unset, the fields are absent, not null: gateways of the previous release (strict)
    # still accept a configuration in which no gateway is renewing.
    assert "next_tls_sha256" not in plain.model_dump(mode="json")
    renewed_pem = _cert_pem("nadra-gw1-renewed")
    info = await update(next_tls_certificate=renewed_pem)
    assert info.tls_sha256 == PIN
    assert info.next_tls_sha256 is not None
    assert list(info.certificates()) == [PIN, info.next_tls_sha256]
    renewed_pin = info.next_tls_sha256

    with pytest.raises(BadRequestError, match="current TLS certificate, not a renewed one") as e:
        await update(next_tls_certificate=NADRA_TLS_PEM)
    assert e.value.detail == {"field": "next_tls_certificate"}
    with pytest.raises(BadRequestError, match="CA:TRUE") as e:
        await update(next_tls_certificate=_cert_pem("a CA", ca=True))
    assert e.value.detail == {"field": "next_tls_certificate"}
    with pytest.raises(BadRequestError, match="or drop it, not both"):
        await update(next_tls_certificate=renewed_pem, drop_next_tls_certificate=True)

    # A pin names one gateway, whichever of its certificates it is.
    plra_gw = PLRA_LAND.member.gateway("gw1")
    taken = GatewayCreate(id=plra_gw, address="https://127.0.0.1:9", tls_certificate=renewed_pem)
    with pytest.raises(ConflictError, match="already registered to gateway PK/FED/NADRA/gw1"):
        await _run(seeded, lambda s: ops.add_gateway(s, taken))
    plra_pem = _cert_pem("plra-gw1")
    await _run(
        seeded, lambda s: ops.add_gateway(s, taken.model_copy(update={"tls_certificate": plra_pem}))
    )
    with pytest.raises(ConflictError, match="PK/PROV/PLRA/gw1") as e:
        await update(next_tls_certificate=plra_pem)
    assert e.value.detail == {"field": "next_tls_certificate", "gateway": str(plra_gw)}

    promoted = await update(tls_certificate=renewed_pem)
    assert promoted.certificates() == {renewed_pin: promoted.tls_certificate}
    assert promoted.next_tls_sha256 is None

    again = await update(next_tls_certificate=NADRA_TLS_PEM)  # renewing back, say
    assert again.next_tls_sha256 == PIN
    dropped = await update(drop_next_tls_certificate=True)
    assert list(dropped.certificates()) == [renewed_pin]


async def test_certificate_changes_at_once_are_checked_one_after_the_other(
    seeded: Sessions,
) -> None:
    """Registering one certificate as NADRA's renewed one and as PLRA's current one at the
    same moment: no unique index spans both columns, so unless the changes are checked one
    after the other, both would pass and two gateways share a pin. And the same gateway's
    renewed certificate set and promoted at once never leaves both pins equal."""
    plra_gw = PLRA_LAND.member.gateway("gw1")
    await _run(
        seeded,
        lambda s: ops.add_gateway(
            s,
            GatewayCreate(
                id=plra_gw, address="https://127.0.0.1:9", tls_certificate=_cert_pem("plra")
            ),
        ),
    )
    for _ in range(3):
        shared = _cert_pem("shared")
        outcomes = await asyncio.gather(
            _run(
                seeded,
                lambda s, pem=shared: ops.update_gateway(
                    s, NADRA.gateway("gw1"), GatewayUpdate(next_tls_certificate=pem)
                ),
            ),
            _run(
                seeded,
                lambda s, pem=shared: ops.update_gateway(
                    s, plra_gw, GatewayUpdate(tls_certificate=pem)
                ),
            ),
            return_exceptions=True,
        )
        assert sorted(type(o).__name__ for o in outcomes) == ["ConflictError", "GatewayInfo"]
        await _run(
            seeded,
            lambda s: ops.update_gateway(
                s, NADRA.gateway("gw1"), GatewayUpdate(drop_next_tls_certificate=True)
            ),
        )
        await _run(
            seeded,
            lambda s: ops.update_gateway(
                s, plra_gw, GatewayUpdate(tls_certificate=_cert_pem("plra"))
            ),
        )

    renewed_pem = _cert_pem("renewed")
    await asyncio.gather(
        _run(
            seeded,
            lambda s: ops.update_gateway(
                s, NADRA.gateway("gw1"), GatewayUpdate(next_tls_certificate=renewed_pem)
            ),
        ),
        _run(
            seeded,
            lambda s: ops.update_gateway(
                s, NADRA.gateway("gw1"), GatewayUpdate(tls_certificate=renewed_pem)
            ),
        ),
        return_exceptions=True,
    )
    async with transaction(seeded, write=False) as s:
        snap = await store.snapshot(s)  # would refuse a gateway whose two pins are equal
    [nadra] = [g for g in snap.gateways if g.id == NADRA.gateway("gw1")]
    assert nadra.next_tls_sha256 != nadra.tls_sha256


async def test_revoking_a_key_twice_is_a_conflict(seeded: Sessions) -> None:
    info = await _run(seeded, lambda s: ops.revoke_key(s, NADRA_KEY.kid))
    assert info.revoked_at is not None
    with pytest.raises(ConflictError, match="already revoked"):
        await _run(seeded, lambda s: ops.revoke_key(s, NADRA_KEY.kid))


async def test_key_rotation_keeps_both_keys(seeded: Sessions) -> None:
    new = PrivateKey.generate()
    await _run(seeded, lambda s: ops.add_key(s, KeyCreate(member=NADRA, jwk=new.public().to_jwk())))
    member = await _run(seeded, lambda s: ops.get_member(s, NADRA))
    assert {k.kid for k in member.keys} == {NADRA_KEY.kid, new.kid}


async def test_group_membership_and_endpoint_grants(seeded: Sessions) -> None:
    await _run(seeded, lambda s: ops.add_global_group_member(s, "local-governments", LMC_TAX))
    with pytest.raises(ConflictError):
        await _run(seeded, lambda s: ops.add_global_group_member(s, "local-governments", LMC_TAX))
    right = await _run(
        seeded,
        lambda s: ops.grant(s, AccessRightCreate(service=PERSON, global_group="local-governments")),
    )
    await _run(seeded, lambda s: ops.add_local_group_member(s, CIVIL, "land", PLRA_LAND))
    await _run(
        seeded,
        lambda s: ops.grant(
            s, AccessRightCreate(service=PERSON, local_group="land", method="POST", path="/search")
        ),
    )
    await _run(seeded, lambda s: ops.revoke_access(s, right.id))
    async with transaction(seeded, write=False) as s:
        rights = (await store.snapshot(s)).access_rights
    assert {(r.global_group, r.local_group, r.method) for r in rights} == {
        (None, None, "GET"),
        (None, "land", "POST"),
    }
    group = await _run(
        seeded, lambda s: ops.remove_global_group_member(s, "local-governments", LMC_TAX)
    )
    assert group.members == []
