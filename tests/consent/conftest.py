"""A running consent service on each database, inside the small test federation.

The registry's tables are seeded through the operator's own actions and a
global configuration is signed and verified as a real one; the consent
service is served on a loopback port and called over HTTP with
member-signed requests and citizen sessions.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from argon2 import PasswordHasher

from audit import store as logstore
from audit.server import AuditServerConfig
from audit.server import build_app as audit_app
from audit.witness_client import WITNESS_SERVICE
from consent import store
from consent.citizens import Accounts, GuardianshipCreate, add_guardianship
from consent.client import ConsentClient
from consent.history import LOG_ID
from consent.schemafields import RegistryFields
from consent.server import ConsentConfig, build_app
from consent.state import STATE
from core.db import Sessions, transaction, utcnow
from core.errors import ConflictError
from core.ids import ClientId, Cnic, MemberId
from core.keys import KeySet, PrivateKey
from core.pseudonym import Pseudonymizer
from registry import publisher
from registry import service as ops
from registry.globalconf import CentralServiceInfo, Jwks, SchemaRef
from registry.globalconf_client import GlobalConfClient
from registry.memberauth import sign_request
from registry.payloads import (
    AccessRightCreate,
    CentralServiceSet,
    KeyCreate,
    ServiceCreate,
    ServiceUpdate,
)
from registry.schemareg import service as schemas
from registry.schemareg.payloads import SchemaRequest
from registry.schemareg.validation import DatabaseSchemaSource, ValidatorCache
from tests.registry.federation import (
    LMC_TAX,
    NADRA_KEY,
    OPERATOR,
    PERSON,
    PLRA_LAND,
    seed,
)
from tests.registry.test_globalconf import anchor_for

CONSENT_KEY = PrivateKey.generate()
LMC_KEY = PrivateKey.generate()
PLRA_KEY = PrivateKey.generate()
LMC = MemberId("PK", "LG", "LMC")
PLRA = MemberId("PK", "PROV", "PLRA")
PARCELS = PLRA_LAND.service("parcels", "v1")
PURPOSE = "identity-verification"
PSEUDONYM_KEY = b"consent-test-pseudonym-key-32byt"
PSEUDONYMS = Pseudonymizer(PSEUDONYM_KEY)
FAST_HASH = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)

CITIZEN = Cnic("35202-1234567-1")
WARD = Cnic("35202-7654321-3")
STRANGER = Cnic("42101-1111111-1")
PASSWORD = "correct horse battery"

PERSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "cnic": {"type": "string"},
        "name": {"type": "string"},
        "birth_date": {"type": "string"},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "street": {"type": "string"}},
        },
        "photo": {"type": "string"},
    },
}
PARCEL_SCHEMA: dict[str, Any] = {"type": "object", "properties": {"owner": {"type": "string"}}}


async def seed_federation(db: Sessions) -> GlobalConfClient:
    """The registry's test federation plus what consent needs; returns a configuration client
    holding a freshly signed configuration."""
    await seed(db)
    async with transaction(db) as s:
        for subject, schema in [("nadra-person", PERSON_SCHEMA), ("plra-parcel", PARCEL_SCHEMA)]:
            await schemas.register(
                s, subject, SchemaRequest.model_validate({"schema": json.dumps(schema)})
            )
        await ops.add_key(s, KeyCreate(member=LMC, jwk=LMC_KEY.public().to_jwk()))
        await ops.add_key(s, KeyCreate(member=PLRA, jwk=PLRA_KEY.public().to_jwk()))
        await ops.update_service(
            s, PERSON, ServiceUpdate(response_schema=SchemaRef(subject="nadra-person", version=1))
        )
        await ops.add_service(
            s,
            ServiceCreate(
                id=PARCELS,
                title="Land parcels",
                requires_consent=True,
                subject_field="/owners/0/cnic",
                purposes=[PURPOSE],
                response_schema=SchemaRef(subject="plra-parcel", version=1),
            ),
        )
        await ops.grant(s, AccessRightCreate(service=PERSON, client=PLRA_LAND))
        await ops.grant(s, AccessRightCreate(service=PARCELS, client=LMC_TAX))
    conf = GlobalConfClient(anchor_for())
    conf.accept((await publisher.publish(db, OPERATOR, now=utcnow(), force=True)).signed)
    return conf


@dataclass
class Harness:
    base: str
    db: Sessions
    http: aiohttp.ClientSession
    conf: GlobalConfClient
    app: Any

    async def log_entries(self) -> list[bytes]:
        """Everything in the consent log, in order."""
        async with transaction(self.db, write=False) as s:
            head = await logstore.get_log(s, LOG_ID)
            return [e for _, e in await logstore.entries(s, head, 0, head.size)]

    async def witnessed(self, serve: Any, db_url: str) -> None:
        """Start the federation's audit witness (the regulator's audit server) and publish it
        in the configuration beside this consent service."""
        witness_key = PrivateKey.generate()
        audit_conf = GlobalConfClient(anchor_for())
        audit_url = await serve(audit_app(AuditServerConfig(db_url, witness_key), audit_conf))
        async with transaction(self.db) as s:
            for name, url, key in [
                (WITNESS_SERVICE, audit_url, witness_key),
                ("consent", self.base, CONSENT_KEY),
            ]:
                jwks = Jwks.model_validate(KeySet([key.public()]).to_jwks())
                await ops.set_central_service(s, name, CentralServiceSet(url=url, keys=jwks))
        signed = (await publisher.publish(self.db, OPERATOR, now=utcnow())).signed
        for conf in (self.conf, audit_conf):
            conf.accept(signed)

    async def feed_head(self) -> int:
        """The newest change number: where a gateway that has caught up on the feed stands."""
        async with transaction(self.db, write=False) as s:
            return await store.head(s)

    @property
    def accounts(self) -> Accounts:
        return self.app[STATE].accounts  # type: ignore[no-any-return]

    @property
    def service_info(self) -> CentralServiceInfo:
        return CentralServiceInfo(
            name="consent",
            url=self.base,
            keys=Jwks.model_validate(KeySet([CONSENT_KEY.public()]).to_jwks()),
        )

    def client(self, **kwargs: Any) -> ConsentClient:
        """A gateway-side client for NADRA's gateway."""
        info = self.service_info
        return ConsentClient(
            lambda: info, key=NADRA_KEY, member=ClientId("PK", "FED", "NADRA"), **kwargs
        )

    async def member(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        key: PrivateKey = LMC_KEY,
        client: ClientId = LMC_TAX,
    ) -> tuple[int, Any]:
        data = b"" if body is None else json.dumps(body).encode()
        headers = {
            "Authorization": sign_request(
                key, client, audience="consent", method=method, path=path, body=data
            )
        }
        if body is not None:
            headers["Content-Type"] = "application/json"
        async with self.http.request(method, self.base + path, data=data, headers=headers) as r:
            text = await r.text()
            return r.status, (json.loads(text) if r.content_type == "application/json" else text)

    async def citizen(
        self, method: str, path: str, token: str, body: Any = None
    ) -> tuple[int, Any]:
        async with self.http.request(
            method,
            self.base + path,
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        ) as r:
            text = await r.text()
            return r.status, (json.loads(text) if r.content_type == "application/json" else text)

    async def request_consent(self, **changes: Any) -> dict[str, Any]:
        """A PENDING consent for LMC's property-tax system about CITIZEN (201 asserted)."""
        status, body = await self.member("POST", "/v1/consents", consent_body(**changes))
        assert status == 201, body
        return body  # type: ignore[no-any-return]

    async def sign_in(self, cnic: Cnic = CITIZEN) -> str:
        """Create the citizen's account if needed and return a session token."""
        with contextlib.suppress(ConflictError):  # the account exists already
            await self.accounts.add(cnic, f"Citizen {cnic.digits[-4:]}", PASSWORD)
        return (await self.accounts.sign_in(cnic, PASSWORD)).token

    async def active_consent(self, **changes: Any) -> dict[str, Any]:
        consent = await self.request_consent(**changes)
        token = await self.sign_in(Cnic(consent["subject"]))
        status, body = await self.citizen(
            "POST", f"/v1/citizen/consents/{consent['id']}/approve", token
        )
        assert status == 200, body
        return body  # type: ignore[no-any-return]

    async def add_ward(self, guardian: Cnic, ward: Cnic, relation: str = "parent") -> None:
        async with transaction(self.db) as s:
            await add_guardianship(
                s,
                GuardianshipCreate(
                    guardian=guardian, ward=ward, relation=relation, reference="B-form 42"
                ),
                utcnow() - dt.timedelta(seconds=1),
            )


def schema_fields(db: Sessions) -> RegistryFields:
    """The real field check, reading the schema registry's tables."""
    return RegistryFields(ValidatorCache(DatabaseSchemaSource(db)))


def consent_body(**changes: Any) -> dict[str, Any]:
    now = utcnow()
    body: dict[str, Any] = {
        "subject": str(CITIZEN),
        "consumer": str(LMC_TAX),
        "services": [{"service": str(PERSON), "fields": ["/name", "/address/city"]}],
        "purpose": PURPOSE,
        "legal_basis": "consent",
        "valid_from": (now - dt.timedelta(minutes=1)).isoformat(),
        "expires_at": (now + dt.timedelta(days=30)).isoformat(),
        "notice": "To assess property tax for your plot in Gulberg.",
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


@pytest.fixture
def harness_config() -> dict[str, Any]:
    """ConsentConfig settings a test module overrides (by defining this fixture)."""
    return {}


@pytest.fixture
async def harness(
    db: Sessions,
    db_url: str,
    serve: Any,
    http: aiohttp.ClientSession,
    harness_config: dict[str, Any],
) -> Harness:
    conf = await seed_federation(db)
    config = ConsentConfig(
        db_url=db_url,
        signing_key=CONSENT_KEY,
        pseudonymizer=PSEUDONYMS,
        globalconf=conf,
        fields=schema_fields(db),
        hasher=FAST_HASH,
        refresh_globalconf=False,
        heartbeat=0.1,
        poll_interval=0.1,
        **harness_config,
    )
    app = build_app(config)
    base = await serve(app)
    return Harness(base, db, http, conf, app)
