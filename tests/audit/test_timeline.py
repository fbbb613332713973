"""The citizen timeline on the audit server: one citizen's exchanges, both gateways' records of
an exchange as one item, denied attempts too; only the consent service may ask."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate

from audit.errors import TimelineUnavailableError
from audit.events import AuditEvent
from audit.mirror import Found, Witnessed
from audit.note import log_origin
from audit.timeline import TimelineItem, merge
from audit.timeline_client import TIMELINE_PATH, TimelineClient
from audit.witness_client import WITNESS_SERVICE
from audit.writer import AuditWriter
from core.db import Sessions, transaction
from core.ids import ClientId, Cnic, GatewayId
from core.keys import KeySet, PrivateKey
from core.tls import make_certificate
from registry import service as ops
from registry.globalconf import Jwks
from registry.payloads import CentralServiceSet, GatewayCreate, KeyCreate
from registry.serviceauth import sign_service_request
from tests.audit.conftest import WITNESS_KEY, Federation
from tests.audit.events import CITIZEN, GATEWAY, OTHER, event
from tests.registry.federation import LMC_TAX, NADRA_KEY, PLRA_LAND

CONSENT_KEY = PrivateKey.generate()
LMC_KEY = PrivateKey.generate()
LMC_GATEWAY = LMC_TAX.member.gateway("gw1")
LMC = ClientId("PK", "LG", "LMC")


def consumer_side(e: AuditEvent, **changes: object) -> AuditEvent:
    """The consumer's record of exchange ``e``, as LMC's gateway logs it."""
    update = {"role": "consumer", "gateway": LMC_GATEWAY, "event_id": e.event_id[:-1] + "f"}
    return e.model_copy(update=update | changes)


async def _lmc_gateway(fed: Federation) -> None:
    """LMC, the consumer, runs a gateway of its own that keeps a witnessed log."""
    tls = make_certificate("lmc-gw1", ec.generate_private_key(ec.SECP256R1()))
    async with transaction(fed.db) as s:
        await ops.add_key(s, KeyCreate(member=LMC_TAX.member, jwk=LMC_KEY.public().to_jwk()))
        await ops.add_gateway(
            s,
            GatewayCreate(
                id=LMC_GATEWAY,
                address="https://127.0.0.1:9444",
                tls_certificate=tls.public_bytes(Encoding.PEM).decode(),
                clients=[LMC_TAX],
            ),
        )


async def write_log(
    fed: Federation, gateway: GatewayId, records: Sequence[AuditEvent], *, lmc: bool = False
) -> None:
    """Append ``records`` to ``gateway``'s log and have them witnessed (NADRA's key, or LMC's)."""
    key, member = (LMC_KEY, LMC) if lmc else (NADRA_KEY, ClientId("PK", "FED", "NADRA"))
    db: Sessions = fed.db
    async with AuditWriter(
        db,
        str(gateway),
        key,
        origin=log_origin(str(gateway)),
        checkpoint_every=len(records),
        witness=fed.witness_client(key, member),
    ) as writer:
        for r in records:
            await writer.append(r)


@pytest.fixture
async def timelines(federation: Federation) -> Federation:
    """The consent service registered as a central service, and six records witnessed, each
    in the log of the gateway that saw it: exchange 0 as both gateways saw it, exchange 1
    denied at the provider (both records), exchange 2 about someone else, exchange 3 only on
    the consumer's side."""
    async with transaction(federation.db) as s:
        await ops.set_central_service(
            s,
            "consent",
            CentralServiceSet(
                url="http://127.0.0.1:1/consent",
                keys=Jwks.model_validate(KeySet([CONSENT_KEY.public()]).to_jwks()),
            ),
        )
    await _lmc_gateway(federation)
    await federation.publish()
    await write_log(federation, GATEWAY, [event(0), event(1, denied=True), event(2, subject=OTHER)])
    consumer = [
        consumer_side(event(0)),
        consumer_side(event(1, denied=True)),
        consumer_side(event(3), fields_released=[]),
    ]
    await write_log(federation, LMC_GATEWAY, consumer, lmc=True)
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


async def test_an_answer_that_does_not_parse_is_logged_without_its_values(
    timelines: Federation, serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The answer is a citizen's records: the log says where it fails, never what it holds."""

    async def garbled(_: web.Request) -> web.Response:
        return web.json_response({"items": [{"subject": str(CITIZEN)}], "next": None})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", garbled)
    url = await serve(app)
    async with transaction(timelines.db) as s:
        await ops.set_central_service(
            s,
            WITNESS_SERVICE,
            CentralServiceSet(
                url=url, keys=Jwks.model_validate(KeySet([WITNESS_KEY.public()]).to_jwks())
            ),
        )
    await timelines.publish()
    with caplog.at_level(logging.INFO), pytest.raises(TimelineUnavailableError, match="parse"):
        await client(timelines).timeline(CITIZEN)
    logged = [r.getMessage() for r in caplog.records if "timeline" in r.getMessage()]
    assert logged
    assert not [m for m in logged if str(CITIZEN) in m]


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


# --- who may speak for which side ----------------------------------------------------------


async def test_the_consumer_cannot_rewrite_the_providers_account(
    timelines: Federation, caplog: pytest.LogCaptureFixture
) -> None:
    """LMC's gateway logs, under exchange 0's message id, a "provider" record saying it was
    denied and a consumer record agreeing; NADRA's gateway logs an access by LMC that LMC never
    logged. None of it changes what the citizen sees."""
    forged_provider = event(0, denied=True).model_copy(
        update={"gateway": LMC_GATEWAY, "event_id": "00000000-0000-0000-0000-0000000000aa"}
    )
    second_opinion = consumer_side(
        event(0, denied=True), event_id="00000000-0000-0000-0000-0000000000ab"
    )
    await write_log(timelines, LMC_GATEWAY, [forged_provider, second_opinion], lmc=True)
    await write_log(timelines, GATEWAY, [consumer_side(event(4), gateway=GATEWAY)])
    with caplog.at_level(logging.WARNING, logger="audit.timeline"):
        page = await client(timelines).timeline(CITIZEN)
    assert [i.consent_id for i in page.items] == ["c-3", "c-1", "c-0"]
    delivered = page.items[-1]
    assert (delivered.outcome, delivered.error_type) == ("delivered", None)
    assert delivered.fields_released == ["/name", "/address"]
    left_out = [r.getMessage() for r in caplog.records if r.name == "audit.timeline"]
    assert len(left_out) == 2
    assert f"left out {LMC_GATEWAY} entry #3, a provider record" in left_out[-1]
    assert f"left out {GATEWAY} entry #3, a consumer record" in left_out[0]


T = PLRA_LAND.member.gateway("gw1")  # a third member's gateway: speaks for neither side


def found(e: AuditEvent, log: GatewayId, index: int) -> Found:
    return Found(
        log_id=str(log),
        index=index,
        leaf_hash="A" * 43 + "=",
        entry=e.entry().decode(),
        event=json.loads(e.entry()),
        witnessed=Witnessed(tree_size=index + 1, root="A" * 43 + "=", cosigned_at=e.time),
    )


def claim(role: str, denied: bool, n: int) -> AuditEvent:
    """A record of exchange 0 in ``role`` with either outcome, whoever wrote it."""
    return event(0, denied=denied).model_copy(
        update={"role": role, "event_id": f"00000000-0000-0000-0000-{n:012d}"}
    )


forgeries = st.lists(
    st.tuples(
        st.sampled_from(
            [("provider", LMC_GATEWAY), ("provider", T), ("consumer", GATEWAY), ("consumer", T)]
        ),
        st.booleans(),
    ),
    max_size=4,
)


def _items(records: Sequence[Found]) -> list[TimelineItem]:
    logging.disable(logging.WARNING)  # the left-out records are logged; not the point here
    try:
        return merge(records)
    finally:
        logging.disable(logging.NOTSET)


@settings(max_examples=60, deadline=None)
@given(st.booleans(), st.booleans(), forgeries, st.randoms(use_true_random=False))
def test_records_from_the_wrong_members_log_never_change_an_item(
    provider_denied: bool, consumer_denied: bool, forged: list[Any], order: Any
) -> None:
    honest = [
        found(claim("provider", provider_denied, 1), GATEWAY, 0),
        found(claim("consumer", consumer_denied, 2), LMC_GATEWAY, 0),
    ]
    fakes = [
        found(claim(role, denied, 10 + n), log, 1 + n)
        for n, ((role, log), denied) in enumerate(forged)
    ]
    mixed = honest + fakes
    order.shuffle(mixed)
    assert _items(mixed) == _items(honest)
    (item,) = _items(mixed)
    # The provider's account decides, whatever the consumer's own record says.
    assert item.outcome == ("denied" if provider_denied else "delivered")
    assert item.fields_released == ([] if provider_denied else ["/name", "/address"])


def test_a_repeated_x_road_id_never_lets_one_refusal_stand_for_other_deliveries() -> None:
    """The calling system chooses X-Road-Id and may send the same one again: each request
    (its own request id, which the provider admits once) is its own item."""
    same_id = [
        event(n, denied=n == 1).model_copy(update={"message_id": "reused"}) for n in range(3)
    ]
    items = _items(
        [found(e, GATEWAY, i) for i, e in enumerate(same_id)]
        + [found(consumer_side(e), LMC_GATEWAY, i) for i, e in enumerate(same_id)]
    )
    assert [(i.consent_id, i.outcome) for i in items] == [
        ("c-0", "delivered"),
        ("c-1", "denied"),
        ("c-2", "delivered"),
    ]
    assert items[0].fields_released == ["/name", "/address"]
    # The same request replayed to the provider (refused) is an attempt of its own.
    replayed = event(0, denied=True).model_copy(
        update={
            "event_id": "00000000-0000-0000-0000-0000000000ee",
            "error_type": "Server.ServerProxy.ReplayedMessage",
        }
    )
    items = _items(
        [
            found(replayed, GATEWAY, 1),
            found(event(0), GATEWAY, 0),
            found(consumer_side(event(0)), LMC_GATEWAY, 0),
        ]
    )
    assert [(i.outcome, i.error_type) for i in items] == [
        ("denied", "Server.ServerProxy.ReplayedMessage"),
        ("delivered", None),
    ]
    assert items[1].fields_released == ["/name", "/address"]
    # A refusal before any envelope existed has no request id: an item of its own.
    early = consumer_side(event(5, denied=True)).model_copy(update={"request_id": None})
    assert len(_items([found(early, LMC_GATEWAY, 0), found(early, LMC_GATEWAY, 1)])) == 2


@settings(max_examples=30, deadline=None)
@given(st.booleans())
def test_without_the_providers_record_the_consumers_own_account_shows(denied: bool) -> None:
    (item,) = _items([found(claim("consumer", denied, 1), LMC_GATEWAY, 0)])
    assert item.outcome == ("denied" if denied else "delivered")
    assert _items([found(claim("provider", denied, 1), LMC_GATEWAY, 0)]) == []
    assert _items([found(claim("consumer", denied, 1), GATEWAY, 0)]) == []
