"""The embedded federation's make-up, and creating it on disk.

Who the members are, which legacy systems stand behind which services, who may
call what, and :func:`create`, which makes every component's folder (keys
without a passphrase: this is a demonstration) and registers it all with the
registry, as the operator would. ``shahrah.demo`` runs what this creates.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.legacy import build as build_legacy
from adapters.legacy import config_path
from adapters.legacy.land_records import PATH as SOAP_PATH
from audit.bootstrap import default_db_url as audit_db_url
from audit.bootstrap import init_audit_server
from audit.console.accounts import RegulatorAccounts
from consent import bootstrap as consent_bootstrap
from consent import operators as consent_operators
from consent.artefact import Relation
from consent.citizens import Accounts, GuardianshipCreate, add_guardianship
from core.db import create_engine, sessions, transaction, utcnow
from core.errors import BadRequestError, ConflictError, ShahrahError
from core.files import write_atomic
from core.ids import Cnic, MemberId, ServiceId
from core.keys import PrivateKey
from exchange.config import GatewayConfig
from exchange.setup import CONFIG_FILE, init_gateway
from registry import bootstrap as registry_bootstrap
from registry import service as ops
from registry.globalconf import Anchor, Jwks, SchemaRef
from registry.payloads import (
    AccessRightCreate,
    CentralServiceSet,
    GatewayCreate,
    GatewayUpdate,
    GroupCreate,
    KeyCreate,
    MemberCreate,
    PurposeCreate,
    ServiceCreate,
    SubsystemCreate,
)

__all__ = [
    "CONSENTED_FIELDS",
    "FEDERATION_FILE",
    "HOST",
    "MEMBERS",
    "Member",
    "Ports",
    "create",
    "follow_ports",
    "read_federation",
    "write_federation",
]

INSTANCE = "PK"
HOST = "127.0.0.1"
FEDERATION_FILE = "federation.json"
REGULATORS = "audit-regulators"  # the global group whose members may read the audit trail


@dataclass(frozen=True)
class Member:
    name: str  # short name, the folder of its gateway
    id: MemberId
    title: str
    subsystems: tuple[str, ...]
    adapters: tuple[str, ...]  # legacy systems (adapters.legacy configs) behind its services
    port: int  # offset from the base port: local listener; the remote listener is one above


NADRA = MemberId(INSTANCE, "FED", "NADRA")
PLRA = MemberId(INSTANCE, "PROV", "PLRA")
LMC = MemberId(INSTANCE, "LG", "LMC")
NCPDP = MemberId(INSTANCE, "FED", "NCPDP")

MEMBERS = (
    Member(
        "nadra",
        NADRA,
        "National Database and Registration Authority",
        ("civil-registry",),
        ("nadra",),
        10,
    ),
    Member("plra", PLRA, "Punjab Land Records Authority", ("land-records",), ("plra",), 20),
    Member(
        "lmc",
        LMC,
        "Lahore Metropolitan Corporation",
        ("property-tax", "civil-registration"),
        ("lmc", "births"),
        30,
    ),
)
REGULATOR = NCPDP.subsystem("audit")
REGULATOR_USER = "regulator"  # the demo's account on the regulator console

PERSON = NADRA.subsystem("civil-registry").service("person", "v1")
PARCEL = PLRA.subsystem("land-records").service("parcel", "v1")
ASSESSMENT = LMC.subsystem("property-tax").service("assessment", "v1")
BIRTH = LMC.subsystem("civil-registration").service("birth", "v1")
TAX_OFFICE = LMC.subsystem("property-tax")
LAND_OFFICE = PLRA.subsystem("land-records")
REGISTRY_OFFICE = NADRA.subsystem("civil-registry")

PURPOSES = (
    (
        "identity-verification",
        "Identity verification",
        "Confirming a person's identity before a public service is given.",
    ),
    (
        "property-tax-assessment",
        "Property tax assessment",
        "Assessing and collecting urban immovable property tax.",
    ),
    ("land-transfer", "Land transfer and mutation", "Checking dues before land changes hands."),
    (
        "birth-registration",
        "Birth registration",
        "Issuing a child's registration certificate (B-form).",
    ),
)


@dataclass(frozen=True)
class DemoService:
    id: ServiceId
    title: str
    requires_consent: bool
    purposes: tuple[str, ...]
    schema: str  # the response schema's subject (version 1)
    #: Where an answer names the person it is about; None where no single person is (a
    #: parcel's several owners, a child who may not have an identity number yet).
    subject_field: str | None


SERVICES = (
    DemoService(
        PERSON,
        "Person record (CNIC identity)",
        True,
        ("identity-verification", "property-tax-assessment"),
        "pk.nadra.person",
        "/cnic",
    ),
    DemoService(
        PARCEL,
        "Land parcel (record of rights)",
        False,
        ("land-transfer", "property-tax-assessment"),
        "pk.plra.land-parcel",
        None,
    ),
    DemoService(
        ASSESSMENT,
        "Property tax assessment",
        False,
        ("land-transfer", "property-tax-assessment"),
        "pk.lmc.property-tax-assessment",
        "/owner_cnic",
    ),
    DemoService(
        BIRTH,
        "Birth registration",
        False,
        ("birth-registration",),
        "pk.nadra.birth-registration",
        None,
    ),
)
GRANTS = (
    (PERSON, TAX_OFFICE, "/persons/*"),
    (PARCEL, TAX_OFFICE, "/parcels/*"),
    (ASSESSMENT, LAND_OFFICE, "/assessments/*"),
    (BIRTH, REGISTRY_OFFICE, "/registrations/*"),
)
#: What the demo's standing consent releases to the corporation from NADRA's person record.
CONSENTED_FIELDS = ["/cnic", "/name", "/permanent_address"]


class Ports:
    def __init__(self, base: int) -> None:
        if not 1024 <= base <= 65535 - 40:
            raise ShahrahError(f"--base-port {base} leaves no room: use 1024 to {65535 - 40}")
        self.base = base
        self.registry, self.consent, self.audit, self.soap = base, base + 1, base + 2, base + 3

    def require_free(self) -> None:
        """Refuse a base port whose range is partly taken, before anything is made or started."""
        named = {"registry": self.registry, "consent service": self.consent}
        named |= {"audit witness": self.audit, "land records SOAP service": self.soap}
        for m in MEMBERS:
            named |= {
                f"{m.name} gateway r1": self.local(m),
                f"{m.name} gateway mTLS": self.remote(m),
            }
        span = f"{self.base} to {max(named.values())}"
        for name, port in named.items():
            with socket.socket() as probe:
                # As the listeners do, so a port in TIME_WAIT is not taken for a used one.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((HOST, port))
                except OSError as e:
                    reason = os.strerror(e.errno or 0)
                    raise ConflictError(
                        f"cannot listen on {HOST}:{port} (the {name}): {reason}; "
                        f"choose another --base-port (the demo uses ports {span})"
                    ) from e

    def local(self, m: Member) -> int:
        return self.base + m.port

    def remote(self, m: Member) -> int:
        return self.base + m.port + 1


def url(port: int) -> str:
    return f"http://{HOST}:{port}"


# --- creation ---------------------------------------------------------------------------------


async def create(data_dir: Path, ports: Ports, *, people: int = 200) -> dict[str, Any]:
    """Make every component's folder and register the federation; returns federation.json."""
    await asyncio.to_thread(_empty_private_folder, data_dir)
    reg_dir = data_dir / "registry"
    made = await registry_bootstrap.init_registry(
        reg_dir, INSTANCE, url=f"{url(ports.registry)}/globalconf", passphrase=None, refresh=10
    )
    anchor_file = reg_dir / registry_bootstrap.ANCHOR_FILE
    consent_made = await consent_bootstrap.init_consent(
        data_dir / "consent", anchor_file, passphrase=None
    )
    audit_made = await asyncio.to_thread(
        init_audit_server,
        data_dir / "audit",
        anchor_file,
        passphrase=None,
        pseudonym_key=data_dir / "consent" / consent_bootstrap.PSEUDONYM_FILE,
    )
    legacy = await asyncio.to_thread(build_legacy, data_dir / "legacy", people=people)
    await asyncio.to_thread(_settle_drops, data_dir / "legacy")
    regulator_key = PrivateKey.generate()
    regulator_key.save(data_dir / "regulator-key.pem", None)

    gateways: dict[str, Any] = {}
    member_keys: dict[MemberId, PrivateKey] = {}
    for m in MEMBERS:
        gid = m.id.gateway("gw1")
        folder = data_dir / "gateways" / m.name
        created = await asyncio.to_thread(
            init_gateway,
            folder,
            gid,
            anchor_file,
            passphrase=None,
            local_port=ports.local(m),
            remote_port=ports.remote(m),
        )
        member_keys[m.id] = created.key
        _attach_adapters(folder / CONFIG_FILE, m, legacy.variables, ports)
        gateways[m.name] = {"id": str(gid), "data_dir": str(folder)}

    engine = create_engine(made.db_url)
    try:
        async with transaction(sessions(engine)) as s:
            for m in (
                *MEMBERS,
                Member(
                    "ncpdp",
                    NCPDP,
                    "National Commission for Personal Data Protection",
                    ("audit",),
                    (),
                    0,
                ),
            ):
                await ops.add_member(
                    s,
                    MemberCreate(
                        member_class=m.id.member_class, member_code=m.id.member_code, name=m.title
                    ),
                )
                for sub in m.subsystems:
                    await ops.add_subsystem(s, SubsystemCreate(id=m.id.subsystem(sub)))
            for m in MEMBERS:
                await ops.add_key(
                    s, KeyCreate(member=m.id, jwk=member_keys[m.id].public().to_jwk())
                )
                folder = data_dir / "gateways" / m.name
                await ops.add_gateway(s, _gateway_registration(m, folder, ports))
            await ops.add_key(s, KeyCreate(member=NCPDP, jwk=regulator_key.public().to_jwk()))
            await ops.add_global_group(
                s, GroupCreate(code=REGULATORS, description="may read the audit trail")
            )
            await ops.add_global_group_member(s, REGULATORS, REGULATOR)
            for code, name, description in PURPOSES:
                await ops.add_purpose(
                    s, PurposeCreate(code=code, name=name, description=description)
                )
            for service in SERVICES:
                await ops.add_service(
                    s,
                    ServiceCreate(
                        id=service.id,
                        title=service.title,
                        requires_consent=service.requires_consent,
                        subject_field=service.subject_field,
                        purposes=list(service.purposes),
                        response_schema=SchemaRef(subject=service.schema, version=1),
                    ),
                )
            for sid, client, path in GRANTS:
                await ops.grant(
                    s, AccessRightCreate(service=sid, client=client, method="GET", path=path)
                )
            await _central_services(s, ports, consent_made.jwks, audit_made.jwks)
    finally:
        await engine.dispose()

    citizens = [
        {
            "cnic": str(Cnic.parse(p.cnic)),
            "name": f"{p.first} {p.family}",
            "name_ur": f"{p.first_ur} {p.family_ur}",
            "password": secrets.token_urlsafe(12),
        }
        for p in legacy.people[:3]
    ]
    # The first citizen is a parent who acts for a minor child (a ward with no account).
    child = legacy.people[len(citizens)]
    ward = {
        "cnic": str(Cnic.parse(child.cnic)),
        "name": f"{child.first} {child.family}",
        "guardian": citizens[0]["cnic"],
        "relation": Relation.PARENT.value,
    }
    consent_db = consent_bootstrap.default_db_url(data_dir / "consent")
    engine = create_engine(consent_db)
    try:
        factory = sessions(engine)
        accounts = Accounts(factory)
        for c in citizens:
            await accounts.add(Cnic(c["cnic"]), c["name"], c["password"])
        async with transaction(factory) as s:
            await add_guardianship(
                s,
                GuardianshipCreate(
                    guardian=Cnic(ward["guardian"]),
                    ward=Cnic(ward["cnic"]),
                    relation=Relation.PARENT,
                    reference="B-form (child registration certificate), demonstration",
                ),
                utcnow(),
            )
    finally:
        await engine.dispose()

    regulator_password = secrets.token_urlsafe(12)
    engine = create_engine(audit_db_url(data_dir / "audit"))
    try:
        await RegulatorAccounts(sessions(engine)).add(REGULATOR_USER, REGULATOR, regulator_password)
    finally:
        await engine.dispose()

    federation = {
        "instance": INSTANCE,
        "note": "demonstration federation: keys are stored without a passphrase",
        "operator_token": made.operator_token,
        # The registry's operator console registers guardianships in the consent service.
        "consent_operator_token": await consent_operator_token(data_dir),
        "regulator": {
            "client": str(REGULATOR),
            "key": str(data_dir / "regulator-key.pem"),
            "group": REGULATORS,
            "username": REGULATOR_USER,
            "password": regulator_password,
        },
        "citizens": citizens,
        "wards": [ward],
        "samples": {
            "parcel_id": legacy.parcel_ids[0],
            "property_id": legacy.property_ids[0],
            # Assessments are about their owner: a call names the owner as its data subject.
            "property_owner": str(Cnic.parse(legacy.property_owners[legacy.property_ids[0]])),
            "birth_registration": legacy.birth_numbers[0],
        },
        "gateways": gateways,
        "seeded": False,
    }
    write_federation(data_dir, federation, ports)
    return federation


def _settle_drops(legacy: Path) -> None:
    """Date the generated drop files an hour back, as last night's extracts would be, so the
    adapters' readiness rule (size and time unchanged for a while) takes them at once."""
    an_hour_ago = time.time() - 3600
    for folder in ("property-tax", "births"):
        for f in (legacy / folder).iterdir():
            os.utime(f, (an_hour_ago, an_hour_ago))


def _empty_private_folder(data_dir: Path) -> None:
    try:
        if data_dir.exists() and any(data_dir.iterdir()):
            raise ConflictError(
                f"{data_dir} is not empty but holds no {FEDERATION_FILE}: "
                "an earlier set-up stopped half-way; remove the folder and start again"
            )
        data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(data_dir, 0o700)
    except OSError as e:  # a parent that is a file, a folder we may not write
        raise BadRequestError(f"cannot make the federation in {data_dir}: {e.strerror}") from e


def _attach_adapters(config_file: Path, m: Member, variables: dict[str, str], ports: Ports) -> None:
    """Point the gateway at its legacy systems' adapter configurations."""
    values = {**variables, "PLRA_SOAP_URL": f"{url(ports.soap)}{SOAP_PATH}"}
    lines = ["", "# The legacy systems behind this member's services (see docs/adapters.md)."]
    lines.append(
        "adapters = [" + ", ".join(json.dumps(str(config_path(a))) for a in m.adapters) + "]"
    )
    text = config_file.read_text()
    # Top-level keys must precede the first [table] of a TOML file.
    head, sep, tables = text.partition("\n[local]")
    body = head + "\n".join(lines) + "\n" + sep + tables
    body += "\n[adapter_variables]\n" + "".join(
        f"{k} = {json.dumps(v)}\n" for k, v in values.items()
    )
    write_atomic(config_file, body.encode("utf-8"))


def _gateway_registration(m: Member, folder: Path, ports: Ports) -> GatewayCreate:
    return GatewayCreate(
        id=m.id.gateway("gw1"),
        address=f"https://{HOST}:{ports.remote(m)}",
        tls_certificate=(folder / "tls-cert.pem").read_text(),
        clients=[m.id.subsystem(sub) for sub in m.subsystems],
    )


async def _central_services(s: Any, ports: Ports, consent_jwks: Any, witness_jwks: Any) -> None:
    await ops.set_central_service(
        s,
        "consent",
        CentralServiceSet(url=url(ports.consent), keys=Jwks.model_validate(consent_jwks)),
    )
    await ops.set_central_service(
        s,
        "audit-witness",
        CentralServiceSet(url=url(ports.audit), keys=Jwks.model_validate(witness_jwks)),
    )


async def follow_ports(data_dir: Path, ports: Ports) -> None:
    """Another --base-port than last time: move every registered address and URL there."""
    reg_dir = data_dir / "registry"
    anchor_file = reg_dir / registry_bootstrap.ANCHOR_FILE
    anchor = Anchor.load(anchor_file)
    wanted = f"{url(ports.registry)}/globalconf"
    if anchor.url != wanted:
        anchor = anchor.model_copy(update={"url": wanted})
        for folder in (
            reg_dir,
            data_dir / "consent",
            data_dir / "audit",
            *(data_dir / "gateways" / m.name for m in MEMBERS),
        ):
            write_atomic(folder / "anchor.json", anchor.dumps().encode("utf-8"))
            (folder / "globalconf.jws").unlink(missing_ok=True)
    for m in MEMBERS:
        config_file = data_dir / "gateways" / m.name / CONFIG_FILE
        text = config_file.read_text()
        config = GatewayConfig.load(config_file)
        text = text.replace(f"port = {config.local.port}\n", f"port = {ports.local(m)}\n", 1)
        text = text.replace(f"port = {config.remote.port}\n", f"port = {ports.remote(m)}\n", 1)
        old_soap = config.adapter_variables.get("PLRA_SOAP_URL", "")
        if old_soap:
            text = text.replace(old_soap, f"{url(ports.soap)}{SOAP_PATH}")
        write_atomic(config_file, text.encode("utf-8"))
    engine = create_engine(registry_bootstrap.default_db_url(reg_dir))
    try:
        async with transaction(sessions(engine)) as s:
            for m in MEMBERS:
                await ops.update_gateway(
                    s,
                    m.id.gateway("gw1"),
                    GatewayUpdate(address=f"https://{HOST}:{ports.remote(m)}"),
                )
            await _central_services(
                s,
                ports,
                json.loads((data_dir / "consent" / consent_bootstrap.JWKS_FILE).read_text()),
                json.loads((data_dir / "audit" / "witness.jwks.json").read_text()),
            )
    finally:
        await engine.dispose()


async def consent_operator_token(data_dir: Path) -> str:
    """A new consent-service operator token for the registry's operator console, which
    registers guardianships through the consent service's operator API."""
    engine = create_engine(consent_bootstrap.default_db_url(data_dir / "consent"))
    try:
        async with transaction(sessions(engine)) as s:
            return await consent_operators.tokens.create(s, f"registry-console-{time.time_ns()}")
    finally:
        await engine.dispose()


def read_federation(data_dir: Path) -> dict[str, Any]:
    """``DIR/federation.json``, refused in one line if it is not what the demo wrote."""
    path = data_dir / FEDERATION_FILE
    try:
        federation = json.loads(path.read_bytes())
    except OSError as e:
        raise BadRequestError(f"cannot read {path}: {e.strerror}") from e
    except ValueError as e:  # not JSON, or not UTF-8
        raise BadRequestError(
            f"{path} is damaged ({e}): remove {data_dir} to make the federation again"
        ) from e
    if not isinstance(federation, dict) or not isinstance(federation.get("base_port"), int):
        raise BadRequestError(
            f"{path} is not a federation description: remove {data_dir} to make it again"
        )
    return federation


def write_federation(data_dir: Path, federation: dict[str, Any], ports: Ports) -> None:
    federation["base_port"] = ports.base
    federation["registry"] = {
        "url": url(ports.registry),
        "globalconf": f"{url(ports.registry)}/globalconf",
        "schema_registry": f"{url(ports.registry)}/schema-registry",
        "anchor": str(data_dir / "registry" / registry_bootstrap.ANCHOR_FILE),
    }
    federation["consent"] = {
        "url": url(ports.consent),
        "citizen_api": f"{url(ports.consent)}/v1/citizen",
        "portal": f"{url(ports.consent)}/portal/",
    }
    federation["audit"] = {"url": url(ports.audit)}
    federation["operator_console"] = {
        "url": f"{url(ports.registry)}/console/",
        "sign_in": "with operator_token",
    }
    federation["regulator"]["console"] = f"{url(ports.audit)}/console/"
    federation["legacy"] = {"land_records_soap": f"{url(ports.soap)}{SOAP_PATH}"}
    for m in MEMBERS:
        entry = federation["gateways"][m.name]
        entry.update(
            {
                "member": str(m.id),
                "name": m.title,
                "local": url(ports.local(m)),
                "remote": f"https://{HOST}:{ports.remote(m)}",
                "subsystems": [str(m.id.subsystem(s)) for s in m.subsystems],
            }
        )
    federation["services"] = [
        {
            "id": str(s.id),
            "title": s.title,
            "requires_consent": s.requires_consent,
            "subject_field": s.subject_field,
            "purposes": list(s.purposes),
            "response_schema": f"{s.schema}:1",
            "provider_gateway": _owner(s.id).name,
            "r1": f"/r1/{s.id.to_path()}",
        }
        for s in SERVICES
    ]
    federation["access_rights"] = [
        {"service": str(sid), "client": str(client), "method": "GET", "path": path}
        for sid, client, path in GRANTS
    ]
    write_atomic(
        data_dir / FEDERATION_FILE,
        (json.dumps(federation, indent=2, ensure_ascii=False) + "\n").encode("utf-8"),
        mode=0o600,
    )


def _owner(sid: ServiceId) -> Member:
    return next(m for m in MEMBERS if m.id == sid.member)
