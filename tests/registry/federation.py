"""A small federation, seeded through the operator actions themselves."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from core.db import Sessions, transaction
from core.ids import ClientId, MemberId
from core.keys import PrivateKey
from core.tls import Certificate, make_certificate
from registry import service as ops
from registry.payloads import (
    AccessRightCreate,
    GatewayCreate,
    GroupCreate,
    KeyCreate,
    LocalGroupCreate,
    MemberCreate,
    PurposeCreate,
    ServiceCreate,
    SubsystemCreate,
)

OPERATOR = PrivateKey.generate()
NADRA_KEY = PrivateKey.generate()

NADRA = MemberId("PK", "FED", "NADRA")
CIVIL = NADRA.subsystem("civil-registry")
PERSON = CIVIL.service("person", "v1")
LMC_TAX = ClientId("PK", "LG", "LMC", "property-tax")
PLRA_LAND = ClientId("PK", "PROV", "PLRA", "land-records")
# NADRA's gateway presents a self-signed TLS certificate; the registry derives its pin.
NADRA_TLS_KEY = ec.generate_private_key(ec.SECP256R1())
NADRA_TLS_PEM = make_certificate("nadra-gw1", NADRA_TLS_KEY).public_bytes(Encoding.PEM).decode()
PIN = Certificate.from_pem(NADRA_TLS_PEM).sha256


async def seed(db: Sessions) -> None:
    """NADRA (provider), the Lahore corporation and Punjab land records (consumers)."""
    async with transaction(db) as s:
        await ops.init_federation(s, "PK")
        for cls, code, name in [
            ("FED", "NADRA", "National Database and Registration Authority"),
            ("LG", "LMC", "Lahore Metropolitan Corporation"),
            ("PROV", "PLRA", "Punjab Land Records Authority"),
        ]:
            await ops.add_member(s, MemberCreate(member_class=cls, member_code=code, name=name))
        for sub in (CIVIL, LMC_TAX, PLRA_LAND):
            await ops.add_subsystem(s, SubsystemCreate(id=sub))
        await ops.add_key(s, KeyCreate(member=NADRA, jwk=NADRA_KEY.public().to_jwk()))
        await ops.add_gateway(
            s,
            GatewayCreate(
                id=NADRA.gateway("gw1"),
                address="https://127.0.0.1:9443",
                tls_certificate=NADRA_TLS_PEM,
                clients=[CIVIL],
            ),
        )
        await ops.add_purpose(
            s, PurposeCreate(code="identity-verification", name="Identity verification")
        )
        await ops.add_service(
            s,
            ServiceCreate(
                id=PERSON,
                title="Person record",
                requires_consent=True,
                subject_field="/cnic",
                purposes=["identity-verification"],
            ),
        )
        await ops.add_global_group(s, GroupCreate(code="local-governments"))
        await ops.add_local_group(s, LocalGroupCreate(owner=CIVIL, code="land"))
        await ops.grant(
            s, AccessRightCreate(service=PERSON, client=LMC_TAX, method="GET", path="/persons/*")
        )
