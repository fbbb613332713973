"""The citizen timeline on the audit server: one citizen's exchanges, both gateways' records of
an exchange as one item, denied attempts too; only the consent service may ask."""

from __future__ import annotations

import json

import pytest
from openapi_spec_validator import validate

from audit.errors import TimelineUnavailableError
from audit.events import AuditEvent
from audit.note import log_origin
from audit.timeline_client import TIMELINE_PATH, TimelineClient
from audit.witness_client import WITNESS_SERVICE
from audit.writer import AuditWriter
from core.db import transaction
from core.ids import Cnic
from core.keys import KeySet, PrivateKey
from registry import service as ops
from registry.globalconf import Jwks
from registry.payloads import CentralServiceSet
from registry.serviceauth import sign_service_request
from tests.audit.conftest import WITNESS_KEY, Federation
from tests.audit.events import CITIZEN, GATEWAY, OTHER, event
from tests.registry.federation import NADRA_KEY

CONSENT_KEY = PrivateKey.generate()


@pytest.fixture
async def timelines(federation: Federation) -> Federation:
    """The consent service registered as a central service, and six records witnessed:
    exchange 0 as both gateways saw it, exchange 1 denied at the provider (both records),
    exchange 2 about someone else, exchange 3 only on the consumer's side."""
    async with transaction(federation.db) as s:
        await ops.set_central_service(
            s,
            "consent",
            CentralServiceSet(
                url="http://127.0.0.1:1/consent",
                keys=Jwks.model_validate(KeySet([CONSENT_KEY.public()]).to_jwks()),
            ),
        )
    await federation.publish()

    def consumer_side(e: AuditEvent, **changes: object) -> AuditEvent:
        return e.model_copy(
            update={"role": "consumer", "event_id": e.event_id[:-1] + "f", **changes}
        )

    records = [
        event(0),
        consumer_side(event(0)),
        event(1, denied=True),
        consumer_side(event(1, denied=True)),
        event(2, subject=OTHER),
        consumer_side(event(3), fields_released=[]),
    ]
    async with AuditWriter(
        federation.db,
        str(GATEWAY),
        NADRA_KEY,
        origin=log_origin(str(GATEWAY)),
        checkpoint_every=len(records),
        witness=federation.witness_client(),
    ) as writer:
        for r in records:
            await writer.append(r)
    return federation


def client(fed: Federation, key: PrivateKey = CONSENT_KEY, **kw: object) -> TimelineClient:
    return TimelineClient(fed.gateway_conf.current, fed.http, key, **kw)  # type: ignore[arg-type]


async def test_a_citizen_sees_each_exchange_once_with_denials(timelines: Federation) -> None:
    page = await client(timelines).timeline(CITIZEN)
    assert page.next_cursor is None
    items = page.items
    assert [i.consent_id for i in items] == ["c-3", "c-1", "c-0"]  # newest first, c-2 not theirs
    latest, denied, delivered = items
    assert (delivered.outcome, delivered.fields_released) == ("delivered", ["/name", "/address"])
    assert delivered.purpose == "identity-verification"
    assert str(delivered.client) == "PK/LG/LMC/property-tax"
    assert str(delivered.service) == "PK/FED/NADRA/civil-registry/person/v1"
    assert delivered.witnessed
    assert (denied.outcome, denied.error_type) == ("denied", "Server.ServerProxy.ConsentDenied")
    assert denied.fields_released == []
    assert latest.outcome == "delivered"  # the consumer's record alone still shows


async def test_paging_and_a_stranger_with_no_records(timelines: Federation) -> None:
    c = client(timelines)
    first = await c.timeline(CITIZEN, limit=2)
    assert [i.consent_id for i in first.items] == ["c-3", "c-1"]
    assert first.next_cursor is not None
    rest = await c.timeline(CITIZEN, limit=2, cursor=first.next_cursor)
    # The page boundary fell between exchange 1's two records; each page shows its part.
    assert [i.consent_id for i in rest.items] == ["c-1", "c-0"]
    assert (await c.timeline(Cnic("61101-0000000-1"))).items == []


async def _post(fed: Federation, authorization: str | None, body: bytes) -> tuple[int, str]:
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    async with fed.http.post(fed.audit_url + TIMELINE_PATH, data=body, headers=headers) as r:
        return r.status, await r.text()


async def test_only_the_consent_service_may_ask(timelines: Federation) -> None:
    fed = timelines
    body = json.dumps({"cnic": str(CITIZEN)}).encode()

    def signed(key: PrivateKey = CONSENT_KEY, **kw: object) -> str:
        args: dict[str, object] = {
            "audience": WITNESS_SERVICE,
            "method": "POST",
            "path": TIMELINE_PATH,
            "body": body,
        }
        args.update(kw)
        service = str(args.pop("service", "consent"))
        return sign_service_request(key, service, **args)  # type: ignore[arg-type]

    ok = signed()
    assert (await _post(fed, ok, body))[0] == 200
    status, text = await _post(fed, ok, body)  # the same assertion again
    assert (status, "replay" in text) == (401, True)
    assert (await _post(fed, None, body))[0] == 401
    forged = signed(PrivateKey.generate())
    assert (await _post(fed, forged, body))[0] == 401
    elsewhere = signed(audience="consent")
    status, text = await _post(fed, elsewhere, body)
    assert (status, "not 'audit-witness'" in text) == (401, True)
    other_body = signed(body=json.dumps({"cnic": str(OTHER)}).encode())
    assert (await _post(fed, other_body, body))[0] == 401
    witness_itself = signed(WITNESS_KEY, service=WITNESS_SERVICE)
    assert (await _post(fed, witness_itself, body))[0] == 403
    # A regulator's member-signed request is the wrong credential here.
    status, _ = await fed.regulator("POST", TIMELINE_PATH, {"cnic": str(CITIZEN)})
    assert status == 401
    status, text = await _post(fed, signed(body=b'{"cnic":"1234"}'), b'{"cnic":"1234"}')
    assert status == 400
    assert "13 digits" in text
    assert str(CITIZEN) not in text


async def test_failures_reach_the_portal_as_one_clear_error(timelines: Federation) -> None:
    with pytest.raises(TimelineUnavailableError, match="HTTP 401"):
        await client(timelines, PrivateKey.generate()).timeline(CITIZEN)
    async with transaction(timelines.db) as s:
        await ops.set_central_service(
            s,
            WITNESS_SERVICE,
            CentralServiceSet(
                url="http://127.0.0.1:9",  # discard port: nothing listens
                keys=Jwks.model_validate(KeySet([WITNESS_KEY.public()]).to_jwks()),
            ),
        )
    await timelines.publish()
    with pytest.raises(TimelineUnavailableError, match="cannot be reached"):
        await client(timelines).timeline(CITIZEN)


async def test_the_route_is_in_the_openapi_document(timelines: Federation) -> None:
    async with timelines.http.get(timelines.audit_url + "/openapi.json") as r:
        document = await r.json()
    validate(document)
    operation = document["paths"][TIMELINE_PATH]["post"]
    assert operation["security"] == [{"consent-service": []}]
    assert (
        "Shahrah-Service"
        in document["components"]["securitySchemes"]["consent-service"]["description"]
    )
