"""The embedded federation: every Shahrah component on one machine, on SQLite.

``shahrah demo --data-dir DIR --base-port P`` creates (on first run) and runs
the central registry, the consent service, the audit witness, the legacy
systems of three agencies behind adapters, and each agency's gateway:

* NADRA (federal civil registry): a legacy SQL registry behind ``person/v1``,
  which requires the citizen's consent;
* the Punjab Land Records Authority: a SOAP service behind ``parcel/v1``;
* the Lahore Metropolitan Corporation: a mainframe's fixed-width EBCDIC
  extracts behind ``assessment/v1``, and union councils' CSV birth sheets
  behind ``birth/v1``;

plus a regulator (the data protection commission) allowed to search and
export the audit trail. Everything is described in ``DIR/federation.json``
(URLs, identifiers, the operator token, demo citizens' passwords); it and the
keys stay in DIR with owner-only permissions. Keys are kept without a
passphrase: this is a demonstration, and it says so.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from adapters.legacy import land_records_app
from audit.server import AuditServerConfig
from audit.server import build_app as audit_app
from consent import bootstrap as consent_bootstrap
from consent.schemafields import RegistryFields
from consent.server import ConsentConfig
from consent.server import build_app as consent_app
from core.errors import ShahrahError
from core.ids import Cnic, MemberId
from core.keys import PrivateKey
from core.pseudonym import Pseudonymizer
from core.web import listening
from exchange.config import GatewayConfig
from exchange.runtime import Running
from exchange.runtime import running as running_gateway
from exchange.setup import CONFIG_FILE
from registry import bootstrap as registry_bootstrap
from registry.globalconf import Anchor
from registry.globalconf_client import GlobalConfClient
from registry.memberauth import sign_request
from registry.schemareg.validation import HttpSchemaSource, ValidatorCache
from registry.server import RegistryConfig
from registry.server import build_app as registry_app
from shahrah.federation import (
    CONSENTED_FIELDS,
    FEDERATION_FILE,
    HOST,
    INSTANCE,
    LMC,
    MEMBERS,
    PERSON,
    TAX_OFFICE,
    Ports,
    consent_operator_token,
    create,
    follow_ports,
    read_federation,
    url,
    write_federation,
)

__all__ = [
    "COMPONENTS",
    "Live",
    "citizen_action",
    "describe",
    "request_consent",
    "running",
    "serving",
]

log = logging.getLogger(__name__)


# --- running ----------------------------------------------------------------------------------


@dataclass
class Live:
    """A running embedded federation."""

    data_dir: Path
    ports: Ports
    federation: dict[str, Any]
    gateways: dict[str, Running]
    http: aiohttp.ClientSession
    audit_db_url: str

    def citizen(self, index: int = 0) -> dict[str, str]:
        return dict(self.federation["citizens"][index])

    def key(self, member: MemberId) -> PrivateKey:
        m = next(m for m in MEMBERS if m.id == member)
        return PrivateKey.load(self.data_dir / "gateways" / m.name / "signing-key.pem", None)


@contextlib.asynccontextmanager
async def running(data_dir: Path, base_port: int, *, people: int = 200) -> AsyncIterator[Live]:
    """Create the federation in ``data_dir`` if needed, then run every component until the
    block ends."""
    ports = Ports(base_port)
    ports.require_free()
    federation_file = data_dir / FEDERATION_FILE
    if federation_file.exists():
        federation = read_federation(data_dir)
        if federation.get("base_port") != base_port:
            await follow_ports(data_dir, ports)
            write_federation(data_dir, federation, ports)
    else:
        federation = await create(data_dir, ports, people=people)
    if "consent_operator_token" not in federation:  # a folder made before the console
        federation["consent_operator_token"] = await consent_operator_token(data_dir)
        write_federation(data_dir, federation, ports)

    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(aiohttp.ClientSession())
        gateways: dict[str, Running] = {}
        for name in COMPONENTS:
            started = await stack.enter_async_context(serving(name, data_dir, ports, http))
            if started is not None:
                gateways[name] = started
        live = Live(data_dir, ports, federation, gateways, http, _audit_db(data_dir))
        if not federation.get("seeded"):
            await _seed_consents(live)
            federation["seeded"] = True
            write_federation(data_dir, federation, ports)
        yield live


#: Every component of the federation, in the order they must start (and the reverse of the one
#: they stop in): the registry first, whose configuration everyone loads; the witness before
#: the consent service, whose log it cosigns; the gateways last.
COMPONENTS = ("registry", "audit", "consent", "land-records", *(m.name for m in MEMBERS))


def _audit_db(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / 'audit' / 'audit.db').resolve()}"


@contextlib.asynccontextmanager
async def serving(
    name: str, data_dir: Path, ports: Ports, http: aiohttp.ClientSession
) -> AsyncIterator[Running | None]:
    """Run one component of a created federation (one of :data:`COMPONENTS`) until the block
    ends; yields the gateway for a gateway. The benchmark runs each in a process of its own,
    as a real deployment would."""
    reg_dir = data_dir / "registry"
    anchor = Anchor.load(reg_dir / registry_bootstrap.ANCHOR_FILE)
    if name == "registry":
        app = registry_app(
            RegistryConfig(
                db_url=registry_bootstrap.default_db_url(reg_dir),
                instance=INSTANCE,
                operator_key=PrivateKey.load(reg_dir / registry_bootstrap.KEY_FILE, None),
                publish_interval=5.0,
                # For the operator console's guardianship pages (the consent service's API).
                consent_operator_token=read_federation(data_dir).get("consent_operator_token"),
            )
        )
        port = ports.registry
    elif name == "audit":
        audit_dir = data_dir / "audit"
        app = audit_app(
            AuditServerConfig(
                db_url=_audit_db(data_dir),
                witness_key=PrivateKey.load(audit_dir / "witness-key.pem", None),
                pseudonyms=Pseudonymizer.load(audit_dir / "pseudonym.key"),
            ),
            GlobalConfClient(anchor, cache_file=audit_dir / "globalconf.jws"),
        )
        port = ports.audit
    elif name == "consent":
        consent_dir = data_dir / "consent"
        source = HttpSchemaSource(url(ports.registry), session=http)
        app = consent_app(
            ConsentConfig(
                db_url=consent_bootstrap.default_db_url(consent_dir),
                signing_key=PrivateKey.load(consent_dir / consent_bootstrap.KEY_FILE, None),
                pseudonymizer=Pseudonymizer.load(consent_dir / consent_bootstrap.PSEUDONYM_FILE),
                globalconf=GlobalConfClient(anchor, cache_file=consent_dir / "globalconf.jws"),
                fields=RegistryFields(ValidatorCache(source)),
            )
        )
        port = ports.consent
    elif name == "land-records":
        app = land_records_app(data_dir / "legacy" / "land-records.json")
        port = ports.soap
    elif name in {m.name for m in MEMBERS}:
        config = GatewayConfig.load(data_dir / "gateways" / name / CONFIG_FILE)
        async with running_gateway(config, passphrase=None, consent_feed_bound=10.0) as gateway:
            yield gateway
        return
    else:
        raise ShahrahError(f"no component {name!r}: one of {', '.join(COMPONENTS)}")
    async with listening(app, HOST, port):
        yield None


async def _seed_consents(live: Live) -> None:
    """A standing consent for the first citizen, a pending request for the second, and one for
    the first citizen's child (their ward), made the way members and citizens make them (over
    the consent service's APIs)."""
    first = await request_consent(live, Cnic(live.citizen(0)["cnic"]))
    await citizen_action(live, 0, first, "approve")
    pending = await request_consent(live, Cnic(live.citizen(1)["cnic"]))
    consents = {"active": first, "pending": pending}
    for ward in live.federation.get("wards", []):
        consents["ward_pending"] = await request_consent(live, Cnic(ward["cnic"]))
    live.federation["consents"] = consents


async def request_consent(live: Live, subject: Cnic, *, days: int = 90) -> str:
    """The corporation's property-tax office asks for a consent (it starts PENDING)."""
    now = dt.datetime.now(dt.UTC)
    body = json.dumps(
        {
            "subject": str(subject),
            "consumer": str(TAX_OFFICE),
            "purpose": "property-tax-assessment",
            "services": [{"service": str(PERSON), "fields": CONSENTED_FIELDS}],
            "legal_basis": "consent",
            "valid_from": (now - dt.timedelta(minutes=1)).isoformat(),
            "expires_at": (now + dt.timedelta(days=days)).isoformat(),
            "notice": "The Lahore Metropolitan Corporation will use your name, CNIC and "
            "address to assess property tax on your plot.",
        }
    ).encode()
    auth = sign_request(
        live.key(LMC), TAX_OFFICE, audience="consent", method="POST", path="/v1/consents", body=body
    )
    async with live.http.post(
        f"{url(live.ports.consent)}/v1/consents",
        data=body,
        headers={"Authorization": auth, "Content-Type": "application/json"},
    ) as r:
        answer = await r.json()
        if r.status != 201:
            raise ShahrahError(f"the consent service refused the request: {answer}")
        return str(answer["id"])


async def citizen_action(live: Live, index: int, consent_id: str, action: str) -> dict[str, Any]:
    """Sign in as demo citizen ``index`` and approve, revoke, ... a consent."""
    citizen = live.citizen(index)
    base = f"{url(live.ports.consent)}/v1/citizen"
    async with live.http.post(
        f"{base}/session", json={"cnic": citizen["cnic"], "password": citizen["password"]}
    ) as r:
        session = await r.json()
        if r.status not in (200, 201):
            raise ShahrahError(f"citizen sign-in refused: {session}")
    token = session["token"]
    async with live.http.post(
        f"{base}/consents/{consent_id}/{action}", headers={"Authorization": f"Bearer {token}"}
    ) as r:
        answer: dict[str, Any] = await r.json()
        if r.status != 200:
            raise ShahrahError(f"citizen {action} refused: {answer}")
        return answer


def describe(live: Live) -> str:
    """Where to look, for the person who started the demo."""
    f = live.federation
    c = live.citizen(0)
    lines = [
        "Shahrah embedded federation is running (Ctrl-C stops it).",
        f"  registry        {f['registry']['url']}  (configuration {f['registry']['globalconf']})",
        f"  schema registry {f['registry']['schema_registry']}",
        f"  consent service {f['consent']['url']}  (citizen API {f['consent']['citizen_api']})",
        f"  audit witness   {f['audit']['url']}",
        "Web consoles (English and Urdu):",
        f"  citizen portal  {f['consent']['portal']}",
        f"    sign in as {c['name']}: CNIC {c['cnic']}  password {c['password']}"
        + ("  (parent of a ward)" if f.get("wards") else ""),
        f"  regulator console {f['regulator']['console']}",
        f"    user {f['regulator']['username']}  password {f['regulator']['password']}",
        f"  operator console {f['operator_console']['url']}",
        f"    sign in with the operator token {f['operator_token']}",
        "Gateways:",
    ]
    for name, g in f["gateways"].items():
        lines.append(f"  gateway {name:<6} r1 {g['local']}   mTLS {g['remote']}   {g['id']}")
    lines += [
        "Everything, with the operator token and the demo citizens' passwords:",
        f"  {live.data_dir / FEDERATION_FILE}",
        "Try (the corporation asks NADRA about a citizen who consented):",
        f"  curl -H 'X-Road-Client: {TAX_OFFICE}' \\",
        f"       -H 'Shahrah-Data-Subject: {Cnic(c['cnic']).to_user_id()}' \\",
        "       -H 'Shahrah-Purpose: property-tax-assessment' \\",
        f"       -H 'Shahrah-Consent: {f.get('consents', {}).get('active', '<consent id>')}' \\",
        f"       {f['gateways']['lmc']['local']}/r1/{PERSON.to_path()}/persons/{c['cnic']}",
    ]
    return "\n".join(lines)
