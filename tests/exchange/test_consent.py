"""Consent enforced on the exchange: only consented fields leave, a revoke stops the next call."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import time
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from consent.messages import DECISION_TYP, PSEUDONYM_TYP, PseudonymAnswer
from consent.state import STATE
from core import jws
from core.db import transaction, utcnow
from core.errors import ConflictError
from core.ids import Cnic, MemberId
from core.keys import PrivateKey
from core.ratelimit import RateLimiter
from exchange import envelope as env_
from registry import service as ops
from registry.memberauth import sign_request
from registry.payloads import AccessRightCreate, ServiceCreate
from tests.exchange.harness import (
    CIVIL,
    CONSENT_KEY,
    LMC,
    LMC_TAX,
    NADRA,
    PERSON,
    PERSON_EXAMPLE,
    PERSON_SCHEMA,
    PLRA_LAND,
    PSEUDONYMS,
    Federation,
)
from tests.exchange.test_refusals import _envelope, _raw

PERSON_PATH = "/r1/PK/FED/NADRA/civil-registry/person/v1/persons/"
ECHO_PATH = "/r1/PK/FED/NADRA/civil-registry/echo"
CITIZEN = Cnic("35202-1234567-1")
PASSWORD = "a long citizen passphrase"
RELEASED = ["/name", "/present_address/district", "/cnic"]


async def _consent(
    fed: Federation,
    subject: Cnic = CITIZEN,
    fields: list[str] | None = None,
    lasting: dt.timedelta = dt.timedelta(days=7),
) -> str:
    """An ACTIVE consent: LMC requests it, the citizen signs in and approves it."""
    now = utcnow()
    body = json.dumps(
        {
            "subject": str(subject),
            "consumer": str(LMC_TAX),
            "purpose": "identity-verification",
            "services": [{"service": str(PERSON), "fields": fields or RELEASED}],
            "legal_basis": "consent",
            "valid_from": (now - dt.timedelta(minutes=1)).isoformat(),
            "expires_at": (now + lasting).isoformat(),
            "notice": "Property tax assessment.",
        }
    ).encode()
    auth = sign_request(
        fed.member_keys[LMC],
        LMC_TAX,
        audience="consent",
        method="POST",
        path="/v1/consents",
        body=body,
    )
    async with fed.http.post(
        fed.consent_url + "/v1/consents",
        data=body,
        headers={"Authorization": auth, "Content-Type": "application/json"},
    ) as r:
        assert r.status == 201, await r.text()
        consent_id = str((await r.json())["id"])
    await _act(fed, consent_id, "approve", subject)
    return consent_id


async def _sign_in(fed: Federation, cnic: Cnic) -> str:
    accounts = fed.consent_app[STATE].accounts
    with contextlib.suppress(ConflictError):
        await accounts.add(cnic, "Muhammad Ali", PASSWORD)
    return str((await accounts.sign_in(cnic, PASSWORD)).token)


async def _act(fed: Federation, consent_id: str, action: str, subject: Cnic = CITIZEN) -> None:
    """The citizen signs in and approves, revokes, ... the consent."""
    token = await _sign_in(fed, subject)
    async with fed.http.post(
        f"{fed.consent_url}/v1/citizen/consents/{consent_id}/{action}",
        headers={"Authorization": f"Bearer {token}"},
    ) as r:
        assert r.status == 200, await r.text()


def _headers(consent_id: str, subject: Cnic = CITIZEN) -> dict[str, str]:
    return {
        "Shahrah-Data-Subject": subject.to_user_id(),
        "Shahrah-Purpose": "identity-verification",
        "Shahrah-Consent": consent_id,
    }


async def _error(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    body: dict[str, Any] = await resp.json()
    assert resp.headers["X-Road-Error"] == body["type"]
    return body


async def test_only_the_consented_fields_are_released_and_recorded(fed: Federation) -> None:
    consent_id = await _consent(fed)
    resp = await fed.call("lmc", "GET", PERSON_PATH + str(CITIZEN), headers=_headers(consent_id))
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body == {
        "cnic": str(CITIZEN),
        "name": {"en": "Muhammad Ali", "ur": "محمد علی"},
        "present_address": {"district": "Lahore"},
    }
    # Not the backend's headers (any could carry the record), and nothing for a cache to keep.
    assert resp.headers["Cache-Control"] == "no-store"
    assert "X-Custom" not in resp.headers
    for node in ("lmc", "nadra"):
        event = (await fed.events(node))[-1]
        assert event.outcome == "delivered"
        assert event.subject == PSEUDONYMS(CITIZEN)  # a pseudonym, never the CNIC
        assert event.consent_id == consent_id
        assert event.fields_released == RELEASED
        assert event.purpose == "identity-verification"
        assert str(CITIZEN.digits) not in event.model_dump_json()


async def test_a_revoke_stops_the_next_call_within_a_second(fed: Federation) -> None:
    consent_id = await _consent(fed)
    assert (
        await fed.call("lmc", "GET", PERSON_PATH + str(CITIZEN), headers=_headers(consent_id))
    ).status == 200
    await _act(fed, consent_id, "revoke")
    revoked_at = time.monotonic()
    while True:
        resp = await fed.call(
            "lmc", "GET", PERSON_PATH + str(CITIZEN), headers=_headers(consent_id)
        )
        if resp.status != 200:
            break
        assert time.monotonic() - revoked_at < 1.0, (
            "a revoked consent still released data after 1 s"
        )
        await asyncio.sleep(0.02)
    assert time.monotonic() - revoked_at < 1.0
    error = await _error(resp)
    assert error["type"] == "Server.ServerProxy.ConsentDenied"
    assert "REVOKED" in error["message"]
    assert (await fed.events("nadra"))[-1].error_type == "Server.ServerProxy.ConsentDenied"


async def test_an_expired_consent_releases_nothing(fed: Federation) -> None:
    lasting = dt.timedelta(seconds=3)
    consent_id = await _consent(fed, lasting=lasting)
    granted_until = time.monotonic() + lasting.total_seconds()
    first = await fed.call("lmc", "GET", PERSON_PATH + str(CITIZEN), headers=_headers(consent_id))
    assert first.status == 200
    await asyncio.sleep(max(0.0, granted_until - time.monotonic()) + 0.2)
    resp = await fed.call("lmc", "GET", PERSON_PATH + str(CITIZEN), headers=_headers(consent_id))
    error = await _error(resp)
    assert error["type"] == "Server.ServerProxy.ConsentDenied"
    assert "expired" in error["message"].lower()
    assert (await fed.events("nadra"))[-1].error_type == "Server.ServerProxy.ConsentDenied"


async def test_consent_must_match_subject_purpose_and_exist(fed: Federation) -> None:
    consent_id = await _consent(fed)
    other = Cnic("42101-1111111-1")
    resp = await fed.call(
        "lmc", "GET", PERSON_PATH + str(other), headers=_headers(consent_id, other)
    )
    assert "another data subject" in (await _error(resp))["message"]
    unknown = await fed.call(
        "lmc", "GET", PERSON_PATH + str(CITIZEN), headers=_headers("no-such-consent")
    )
    assert (await _error(unknown))["type"] == "Server.ServerProxy.ConsentDenied"
    wrong = await fed.call(
        "lmc",
        "GET",
        PERSON_PATH + str(CITIZEN),
        headers={**_headers(consent_id), "Shahrah-Purpose": "marketing"},
    )
    assert "not allowed" in (await _error(wrong))["message"]
    missing = await fed.call("lmc", "GET", PERSON_PATH + str(CITIZEN))
    assert "Shahrah-Data-Subject" in (await _error(missing))["message"]
    assert len(fed.backend.seen) == 0


async def test_a_refused_consent_or_purpose_is_not_quoted_in_the_log(
    fed: Federation, caplog: pytest.LogCaptureFixture
) -> None:
    """Both headers are free codes a caller can put a CNIC in; the refusal's message quotes
    them to the caller, and the gateways' logs must not."""
    consent_id = await _consent(fed)
    cnic_like = "35202-7654321-9"
    with caplog.at_level(logging.INFO):  # what a gateway logs (drivers log SQL at DEBUG)
        for headers in (
            {**_headers(consent_id), "Shahrah-Consent": cnic_like},
            {**_headers(consent_id), "Shahrah-Purpose": cnic_like.replace("-", "")},
        ):
            resp = await fed.call("lmc", "GET", PERSON_PATH + str(CITIZEN), headers=headers)
            assert (await _error(resp))["type"] == "Server.ServerProxy.ConsentDenied"
    assert [r.getMessage() for r in caplog.records if "7654321" in r.getMessage()] == []
    assert fed.backend.seen == []


async def test_without_a_consent_service_it_fails_closed(fed: Federation) -> None:
    consent_id = await _consent(fed)
    fed.nodes["nadra"].gateway.consent = None
    resp = await fed.call("lmc", "GET", PERSON_PATH + str(CITIZEN), headers=_headers(consent_id))
    assert "fail closed" in (await _error(resp))["message"]
    assert fed.backend.seen == []


async def test_a_failed_answer_under_consent_carries_no_record(fed: Federation) -> None:
    # The backend answers 404 with the whole record in the body and a name in a header;
    # an error body is not schema-checked, so it cannot be projected: none of it leaves.
    consent_id = await _consent(fed)
    resp = await fed.call("lmc", "GET", PERSON_PATH + "gone", headers=_headers(consent_id))
    assert resp.status == 404
    text = await resp.text()
    assert "Muhammad" not in text
    assert "date_of_birth" not in text
    assert json.loads(text)["status"] == 404
    assert "X-Name" not in resp.headers
    for node in ("lmc", "nadra"):
        assert (await fed.events(node))[-1].fields_released == []
    # A delivered answer under consent keeps none of the backend's own headers either.
    ok = await fed.call("lmc", "GET", PERSON_PATH + str(CITIZEN), headers=_headers(consent_id))
    assert ok.status == 200
    assert "X-Custom" not in ok.headers


async def test_the_backend_is_told_exactly_the_consented_subject(fed: Federation) -> None:
    consent_id = await _consent(fed)
    assert (
        await fed.call("lmc", "GET", PERSON_PATH + str(CITIZEN), headers=_headers(consent_id))
    ).status == 200
    seen = fed.backend.seen[-1].headers
    assert seen.getall("Shahrah-Data-Subject") == [CITIZEN.to_user_id()]
    assert seen.getall("Shahrah-Consent") == [consent_id]
    # Two subjects (or two consents) in one request are refused before anything is sent.
    other = Cnic("42101-1111111-1").to_user_id()
    for name, extra in (
        ("Shahrah-Data-Subject", other),
        ("Shahrah-Consent", "cns-other"),
        ("Shahrah-Purpose", "identity-verification"),
    ):
        headers = CIMultiDict(_headers(consent_id))
        headers.add(name, extra)
        headers["X-Road-Client"] = str(LMC_TAX)
        async with fed.http.get(
            fed.nodes["lmc"].local_url + PERSON_PATH + str(CITIZEN), headers=headers
        ) as r:
            error = await _error(r)
        assert (r.status, error["type"]) == (400, "Client.BadRequest")
        assert f"{name} is sent more than once" in error["message"]
    assert len(fed.backend.seen) == 1


async def test_a_consent_for_one_citizen_does_not_fetch_anothers_record(
    fed: Federation,
) -> None:
    # The headers name the consenting citizen; the path asks the backend for someone else.
    consent_id = await _consent(fed)
    other = Cnic("42101-1111111-1")
    resp = await fed.call("lmc", "GET", PERSON_PATH + str(other), headers=_headers(consent_id))
    error = await _error(resp)
    assert error["type"] == "Server.ServerProxy.ConsentDenied"
    assert "not the consented data subject's" in error["message"]
    assert str(other) not in await resp.text()
    refused = (await fed.events("nadra"))[-1]
    assert refused.outcome == "denied"
    assert not refused.fields_released
    # Without a subject field to check, an answer under consent is never released.
    view = fed.nodes["nadra"].gateway.globalconf.current()
    info = view.services[PERSON]
    view.services[PERSON] = info.model_copy(update={"subject_field": None})
    try:
        unbound = await fed.call(
            "lmc", "GET", PERSON_PATH + str(CITIZEN), headers=_headers(consent_id)
        )
    finally:
        view.services[PERSON] = info
    assert (await _error(unbound))["type"] == "Server.ServerProxy.ServiceFailed"
    assert "names no subject field" in (await _error(unbound))["message"]


async def test_an_answer_is_not_released_after_a_revoke_heard_while_the_backend_worked(
    fed: Federation,
) -> None:
    """Consent is decided before the backend call, which may take up to backend_timeout. A
    revoke heard meanwhile stops the answer: nothing of it leaves, the consumer gets the
    refusal the next call would get, and both audit trails record a denial."""
    consent_id = await _consent(fed)
    fed.backend.delay = 1.5
    call = asyncio.create_task(
        fed.call("lmc", "GET", PERSON_PATH + str(CITIZEN), headers=_headers(consent_id))
    )
    deadline = time.monotonic() + 5
    while not fed.backend.seen:  # decided, and the backend is at work
        assert time.monotonic() < deadline, "the request never reached the backend"
        await asyncio.sleep(0.01)
    await _act(fed, consent_id, "revoke")
    resp = await call
    assert "Muhammad" not in await resp.text()
    error = await _error(resp)
    assert error["type"] == "Server.ServerProxy.ConsentDenied"
    assert "REVOKED" in error["message"]
    fed.backend.delay = 0.0
    again = await fed.call("lmc", "GET", PERSON_PATH + str(CITIZEN), headers=_headers(consent_id))
    assert again.status == resp.status
    assert (await _error(again))["message"] == error["message"]
    assert len(fed.backend.seen) == 1  # asked once, before the revoke
    for node in ("lmc", "nadra"):
        event = (await fed.events(node))[-2]  # the refusal after the backend, then the next
        assert (event.outcome, event.error_type) == ("denied", "Server.ServerProxy.ConsentDenied")
        assert event.fields_released == []
        assert event.subject == PSEUDONYMS(CITIZEN)
        assert event.consent_id == consent_id


def _spent_lookups(fed: Federation, member: MemberId) -> None:
    """Give the consent service a pseudonym limit of one lookup an hour (the default's tokens
    come back every 50 ms, which a loaded machine can take between a test's lines), and have
    ``member`` spend it."""
    limiter = RateLimiter(rate=1 / 3600, burst=1, what="pseudonym lookups")
    fed.consent_app[STATE].pseudonym_limiter = limiter
    limiter.take(str(member))


async def test_a_consumer_refused_a_pseudonym_lookup_sends_nothing(
    fed: Federation, caplog: pytest.LogCaptureFixture
) -> None:
    """The consent service limits each member's pseudonym lookups (429). A consumer gateway
    over the limit cannot name the subject in its audit record, so it refuses the exchange
    before sending anything, rather than let a citizen's record be read unseen by them; the
    log says so without the CNIC."""
    consent_id = await _consent(fed)
    _spent_lookups(fed, LMC)
    seen = len(fed.backend.seen)
    with caplog.at_level(logging.DEBUG):
        resp = await fed.call(
            "lmc", "GET", PERSON_PATH + str(CITIZEN), headers=_headers(consent_id)
        )
    assert resp.status == 500
    error = await _error(resp)
    assert error["type"] == "Server.ClientProxy.PseudonymUnavailable"
    assert "cannot name the data subject" in error["message"]
    assert len(fed.backend.seen) == seen
    assert [e for e in await fed.events("nadra") if e.consent_id == consent_id] == []
    consumer = (await fed.events("lmc"))[-1]
    assert (consumer.outcome, consumer.error_type, consumer.subject) == (
        "denied",
        "Server.ClientProxy.PseudonymUnavailable",
        None,
    )
    messages = [r.getMessage() for r in caplog.records]
    assert any("no pseudonym for the data subject" in m and "429" in m for m in messages)
    assert not [m for m in messages if CITIZEN.digits[5:12] in m]


async def test_refused_requests_spend_none_of_the_providers_pseudonym_lookups(
    fed: Federation,
) -> None:
    """Anyone can send requests that get refused. Were a refusal's record to look its
    subject up, a member without any access right could spend the provider's lookups, and
    then every exchange about a new subject would be refused. A refusal is recorded with a
    pseudonym the gateway knows already or the envelope states, or without one."""
    fed.consent_app[STATE].pseudonym_limiter = RateLimiter(
        rate=1 / 3600, burst=6, what="pseudonym lookups"
    )
    for i in range(5):  # PLRA has no access right to the person service
        subject = Cnic(f"35202-{1_000_000 + i}-1")
        resp = await fed.call(
            "plra",
            "GET",
            PERSON_PATH + str(subject),
            client=PLRA_LAND,
            headers={"Shahrah-Data-Subject": subject.to_user_id()},
        )
        assert (await _error(resp))["type"] == "Server.ServerProxy.AccessDenied"
        # Named from the statement PLRA's gateway sent: the attempt is the citizen's to see.
        refusal = (await fed.events("nadra"))[-1]
        assert (refusal.outcome, refusal.subject) == ("denied", PSEUDONYMS(subject))
    limiter = fed.consent_app[STATE].pseudonym_limiter
    for _ in range(6):  # NADRA's six lookups are all still there
        limiter.take(str(NADRA))


async def test_a_metaservice_answer_is_about_no_subject(fed: Federation) -> None:
    """listMethods tells about a service, not a citizen: a subject header sent along (as a
    local system may send it everywhere) is looked up by neither gateway, and neither
    record names it, even with both members' lookups spent."""
    _spent_lookups(fed, LMC)
    fed.consent_app[STATE].pseudonym_limiter.take(str(NADRA))
    resp = await fed.call(
        "lmc",
        "GET",
        "/r1/PK/FED/NADRA/civil-registry/listMethods",
        headers={"Shahrah-Data-Subject": CITIZEN.to_user_id()},
    )
    assert resp.status == 200, await resp.text()
    for node in ("lmc", "nadra"):
        event = (await fed.events(node))[-1]
        assert (event.outcome, event.subject) == ("delivered", None)


async def test_the_provider_records_the_subject_from_the_consumers_statement(
    fed: Federation,
) -> None:
    """A service without consent, asked about a data subject: the consumer gateway's lookup
    travels in the envelope as the consent service's signed statement, and the provider
    records the subject from it without asking. So it spends none of its own member's
    lookups (here: none left), which a consumer could otherwise exhaust by asking about
    many subjects, and have the provider's other consumers refused."""
    _spent_lookups(fed, NADRA)
    subject = Cnic("35202-7654321-9")
    resp = await fed.call(
        "lmc", "GET", ECHO_PATH, headers={"Shahrah-Data-Subject": subject.to_user_id()}
    )
    assert resp.status == 200, await resp.text()
    for node in ("nadra", "lmc"):
        event = (await fed.events(node))[-1]
        assert (event.outcome, event.subject) == ("delivered", PSEUDONYMS(subject))


@pytest.mark.parametrize("case", ["missing", "forged", "another-subject", "not-a-statement"])
async def test_a_subject_without_a_valid_statement_of_its_pseudonym_reaches_no_backend(
    fed: Federation, case: str
) -> None:
    """A peer gateway's envelope naming a subject must carry the consent service's statement
    of that subject's pseudonym; without one, with one signed by another key, about
    another subject, or of another kind, nothing reaches the backend."""
    subject = Cnic("35202-7654321-9")
    about = Cnic("35202-1111111-1") if case == "another-subject" else subject
    answer = PseudonymAnswer(
        request_sha256="A" * 43, subject=about, pseudonym=PSEUDONYMS(about)
    ).model_dump(mode="json")
    key = PrivateKey.generate() if case == "forged" else CONSENT_KEY
    typ = DECISION_TYP if case == "not-a-statement" else PSEUDONYM_TYP
    statement = None if case == "missing" else jws.sign_json(answer, key, typ=typ)
    envelope = _envelope(fed, subject=subject.to_user_id(), subject_statement=statement)
    resp = await _raw(fed, env_.seal(envelope, fed.member_keys[LMC]))
    body = await _error(resp)
    if case == "missing":
        assert (resp.status, body["type"]) == (400, "Client.BadRequest")
        assert "statement of the subject's pseudonym" in body["message"]
    else:
        assert (resp.status, body["type"]) == (500, "Server.ServerProxy.InvalidSignature")
        assert body["message"].startswith("subject pseudonym statement: ")
    assert fed.backend.seen == []


async def test_an_answer_about_a_subject_must_be_about_the_one_the_request_names(
    fed: Federation,
) -> None:
    """A service without consent whose answers are a person's record (it names the subject
    field): both audit records name the subject the request names, so the answer must be
    that subject's. Naming one citizen while reading another's record, or naming no one,
    would hide the reading from the citizen read; nothing is released then."""
    directory = CIVIL.service("directory")
    async with transaction(fed.registry_db) as s:
        await ops.add_service(
            s,
            ServiceCreate(
                id=directory,
                title="Person directory (no consent)",
                subject_field="/cnic",
                response_schema=PERSON_SCHEMA,
            ),
        )
        await ops.grant(s, AccessRightCreate(service=directory, client=LMC_TAX))
    await fed.refresh()
    nadra = fed.nodes["nadra"].gateway
    nadra.backends = {**nadra.backends, directory: nadra.backends[PERSON]}  # the same system
    read, named = Cnic("35202-7654321-9"), Cnic("35202-1111111-1")
    path = "/r1/PK/FED/NADRA/civil-registry/directory/persons/" + str(read)

    seen = len(fed.backend.seen)
    unnamed = await fed.call("lmc", "DELETE", path)
    body = await _error(unnamed)
    assert (unnamed.status, body["type"]) == (500, "Server.ServerProxy.AccessDenied")
    assert "must name them in Shahrah-Data-Subject" in body["message"]
    assert len(fed.backend.seen) == seen  # refused before the backend could act on it

    other = await fed.call("lmc", "GET", path, headers={"Shahrah-Data-Subject": named.to_user_id()})
    body = await _error(other)
    assert (other.status, body["type"]) == (500, "Server.ServerProxy.AccessDenied")
    assert "not the named data subject's" in body["message"]
    assert str(read) not in json.dumps(body)

    right = await fed.call("lmc", "GET", path, headers={"Shahrah-Data-Subject": read.to_user_id()})
    assert right.status == 200, await right.text()
    for node in ("nadra", "lmc"):
        event = (await fed.events(node))[-1]
        assert (event.outcome, event.subject) == ("delivered", PSEUDONYMS(read))

    # A failed answer is not checked against the schema, so its subject cannot be either:
    # only its status leaves (the backend's 404 carries a record, and a header).
    gone = await fed.call(
        "lmc", "GET", path + "/gone", headers={"Shahrah-Data-Subject": named.to_user_id()}
    )
    assert gone.status == 404
    assert "concerns a data subject" in (await gone.json())["message"]
    assert "X-Name" not in gone.headers
    assert PERSON_EXAMPLE["date_of_birth"] not in await gone.text()
    # HEAD sends no body, so none is signed: both gateways agree on what was answered.
    head = await fed.call(
        "lmc", "HEAD", path + "/gone", headers={"Shahrah-Data-Subject": named.to_user_id()}
    )
    assert (head.status, "X-Road-Error" in head.headers) == (404, False)
    assert [(await fed.events(n))[-1].outcome for n in ("nadra", "lmc")] == ["delivered"] * 2
    refused = await fed.call("lmc", "HEAD", path)  # no subject named: refused, not "tampered"
    assert (refused.status, refused.headers["X-Road-Error"]) == (
        500,
        "Server.ServerProxy.AccessDenied",
    )
    # A redirect leaves without its Location, which nothing here has checked.
    moved = await fed.call(
        "lmc",
        "GET",
        "/r1/PK/FED/NADRA/civil-registry/directory/redirect",
        headers={"Shahrah-Data-Subject": named.to_user_id()},
    )
    assert (moved.status, "Location" in moved.headers) == (302, False)


async def test_a_subject_field_without_a_response_schema_releases_nothing(
    fed: Federation,
) -> None:
    """The subject field is read from the answer the response schema has checked: without
    a schema there is nothing to check it in, so nothing is released (fail closed)."""
    unchecked = CIVIL.service("unchecked")
    async with transaction(fed.registry_db) as s:
        await ops.add_service(
            s, ServiceCreate(id=unchecked, title="Unchecked", subject_field="/cnic")
        )
        await ops.grant(s, AccessRightCreate(service=unchecked, client=LMC_TAX))
    await fed.refresh()
    nadra = fed.nodes["nadra"].gateway
    nadra.backends = {**nadra.backends, unchecked: nadra.backends[PERSON]}
    subject = Cnic("35202-7654321-9")
    resp = await fed.call(
        "lmc",
        "GET",
        "/r1/PK/FED/NADRA/civil-registry/unchecked/persons/" + str(subject),
        headers={"Shahrah-Data-Subject": subject.to_user_id()},
    )
    body = await _error(resp)
    assert (resp.status, body["type"]) == (500, "Server.ServerProxy.ServiceFailed")
    assert "no response schema" in body["message"]
