"""The audit server's regulator APIs: search by every filter, paging, proofs, the mirror's
read API, health and metrics, and who may call them."""

from __future__ import annotations

import base64
import json
from typing import Any

from openapi_spec_validator import validate

from audit import merkle
from audit.note import Checkpoint, Note, verify_cosignature, witness_name
from audit.regulators import authorization
from audit.server import AuditServerConfig, build_app
from audit.witness_client import WITNESS_SERVICE
from tests.audit.conftest import NADRA_CLIENT, REGULATOR, REGULATOR_KEY, WITNESS_KEY, Federation
from tests.audit.events import CITIZEN, GATEWAY, PSEUDONYMS, T0
from tests.audit.test_export import N, witnessed  # noqa: F401 (fixture)
from tests.registry.federation import LMC_TAX, NADRA_KEY, PERSON

LOG = str(GATEWAY)


async def search(fed: Federation, **query: Any) -> dict[str, Any]:
    status, page = await fed.regulator("POST", "/api/v1/search", query)
    assert status == 200, page
    return page


def indices(page: dict[str, Any]) -> list[int]:
    return [r["index"] for r in page["results"]]


async def test_search_by_each_filter(witnessed: Federation) -> None:  # noqa: F811
    fed = witnessed
    citizen = list(range(0, N, 3))[::-1]
    assert indices(await search(fed, cnic=CITIZEN.value)) == citizen
    assert indices(await search(fed, subject=PSEUDONYMS(CITIZEN))) == citizen
    assert indices(await search(fed, outcome="denied")) == [9]
    assert len(indices(await search(fed, member="PK/FED/NADRA", limit=1000))) == N
    assert len(indices(await search(fed, client=str(LMC_TAX), service=str(PERSON)))) == N
    assert indices(await search(fed, gateway="PK/FED/NADRA/gw2")) == []
    since, until = (T0.replace(second=5).isoformat(), T0.replace(second=8).isoformat())
    assert indices(await search(fed, since=since, until=until)) == [7, 6, 5]
    page = await search(fed, cnic=CITIZEN.value, limit=1)
    found = page["results"][0]
    assert found["event"]["subject"] == PSEUDONYMS(CITIZEN)
    assert found["witnessed"]["tree_size"] == 20  # the first checkpoint with entry 18
    assert CITIZEN.value not in str(page)


async def test_paging_and_proofs(witnessed: Federation) -> None:  # noqa: F811
    fed = witnessed
    seen: list[int] = []
    cursor = None
    while True:
        page = await search(fed, limit=4, cursor=cursor)
        seen += indices(page)
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(range(N))[::-1]
    page = await search(fed, cnic=CITIZEN.value, with_proofs=True)
    note = Note.parse(page["checkpoints"][LOG])
    verify_cosignature(note, witness_name("PK"), WITNESS_KEY.public())
    head = Checkpoint.parse(note.text)
    for r in page["results"]:
        leaf = base64.b64decode(r["leaf_hash"])
        assert leaf == merkle.leaf_hash(r["entry"].encode())
        proof = [base64.b64decode(h) for h in r["proof"]]
        merkle.verify_inclusion(leaf, r["index"], head.size, proof, head.root)


async def test_bad_searches_and_strangers_are_refused(witnessed: Federation) -> None:  # noqa: F811
    fed = witnessed
    for query, message in [
        ({"cnic": "1234"}, "a CNIC must be 13 digits"),
        ({"cnic": CITIZEN.value, "subject": PSEUDONYMS(CITIZEN)}, "not both"),
        ({"cursor": "nonsense"}, "cursor is not one this server issued"),
        ({"limit": 0}, "limit"),
        ({"since": "2026-11-28T09:00:00"}, "time zone"),
    ]:
        status, body = await fed.regulator("POST", "/api/v1/search", query)
        assert status == 400, query
        assert message in body["message"], body
    status, body = await fed.regulator(
        "POST", "/api/v1/search", {}, key=NADRA_KEY, client=NADRA_CLIENT
    )
    assert status == 403
    async with fed.http.post(fed.audit_url + "/api/v1/search", json={}) as resp:
        assert resp.status == 401


async def test_the_mirror_serves_the_read_api_and_operations(witnessed: Federation) -> None:  # noqa: F811
    fed = witnessed
    status, sth = await fed.regulator("GET", f"/mirror/logs/{LOG}/ct/v1/get-sth")
    assert status == 200, sth
    assert (sth["tree_size"], sth["witnessed"]) == (N, True)
    status, body = await fed.regulator(
        "GET", f"/mirror/logs/{LOG}/ct/v1/get-sth-consistency?first=4&second={N}"
    )
    assert status == 200
    assert body["consistency"]
    async with fed.http.get(fed.audit_url + "/healthz") as resp:
        health = await resp.json()
    assert health["status"] == "ok"
    assert health["globalconf_serial"] == fed.audit_conf.current().serial
    async with fed.http.get(fed.audit_url + "/metrics") as resp:
        metrics = await resp.text()
    assert f'shahrah_audit_witnessed_size{{log="{LOG}"}} {float(N)}' in metrics
    for path in ("/openapi.json", "/mirror/openapi.json"):
        async with fed.http.get(fed.audit_url + path) as resp:
            validate(await resp.json())


async def test_tampered_cursors_are_refused_not_failed(witnessed: Federation) -> None:  # noqa: F811
    """A cursor comes back from the client: any change to it is a 400, never a 500, and never
    a page beyond what the filters choose."""
    fed = witnessed

    def cursor(value: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    for tampered in [
        ["2026-11-28T09:00:00+00:00", 10**40],
        ["2026-11-28T09:00:00+00:00", 2**63],
        ["2026-11-28T09:00:00+00:00", -(2**63) - 1],
        ["2026-11-28T09:00:00+00:00", True],
        ["2026-11-28T09:00:00+00:00", 1.5],
        ["2026-11-28T09:00:00", 5],
        [5, 5],
        ["2026-11-28T09:00:00+00:00", 5, 6],
        {"time": "2026-11-28T09:00:00+00:00"},
        # Times at the calendar's edges, which have no UTC form: they failed in the driver.
        ["0001-01-01T00:00:00+01:00", 5],
        ["9999-12-31T23:59:59-01:00", 5],
    ]:
        status, body = await fed.regulator("POST", "/api/v1/search", {"cursor": cursor(tampered)})
        assert status == 400, (tampered, body)
        assert "cursor is not one this server issued" in body["message"], body
    # A well-formed cursor from elsewhere only pages within the filters.
    page = await search(fed, cnic=CITIZEN.value, cursor=cursor([T0.isoformat(), 2**62]))
    assert [r["event"]["subject"] for r in page["results"]] == [PSEUDONYMS(CITIZEN)]


async def test_a_regulators_request_replayed_to_another_process_is_refused(
    witnessed: Federation,  # noqa: F811
    db_url: str,
    serve: Any,
) -> None:
    """Audit entries are personal data: a search request seen once (a proxy's log, say)
    must not read them again through a second process of the server, within its minute."""
    fed = witnessed
    second = await serve(
        build_app(AuditServerConfig(db_url, WITNESS_KEY, PSEUDONYMS), fed.audit_conf)
    )
    body = json.dumps({"cnic": CITIZEN.value}).encode()
    path = "/api/v1/search"
    header = authorization(
        REGULATOR_KEY, REGULATOR, audience=WITNESS_SERVICE, method="POST", url=path, body=body
    )
    sent = {"Authorization": header, "Content-Type": "application/json"}
    async with fed.http.post(fed.audit_url + path, data=body, headers=sent) as resp:
        assert resp.status == 200
    for base in (second, fed.audit_url):
        async with fed.http.post(base + path, data=body, headers=sent) as resp:
            assert resp.status == 401
            assert "already used (replay)" in (await resp.json())["message"]
