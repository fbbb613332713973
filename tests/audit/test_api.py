"""A gateway's RFC 6962 read API, mounted on its own app under a prefix, for regulators only."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from openapi_spec_validator import validate

from audit import merkle, store
from audit.api import register_read_api
from audit.note import Checkpoint, Note, log_origin, verify_log_signature
from audit.regulators import RegulatorAuthenticator
from audit.writer import AuditWriter
from core.db import transaction
from registry.memberauth import MemberRequestVerifier
from tests.audit.conftest import NADRA_CLIENT, Federation
from tests.audit.events import GATEWAY, event
from tests.registry.federation import NADRA_KEY

LOG = str(GATEWAY)
BASE = f"/audit/logs/{LOG}"


@pytest.fixture
async def gateway(federation: Federation, serve: Any) -> str:
    """A gateway app with 12 logged events and checkpoints at 5, 10 and 12."""
    async with AuditWriter(
        federation.db, LOG, NADRA_KEY, origin=log_origin(LOG), checkpoint_every=5
    ) as writer:
        for n in range(12):
            await writer.append(event(n))
    app = web.Application()
    register_read_api(
        app,
        federation.db,
        RegulatorAuthenticator(MemberRequestVerifier(LOG, federation.gateway_conf.current, None)),
    )
    return str(await serve(app))


async def get(fed: Federation, base: str, path: str, **kw: Any) -> tuple[int, Any]:
    return await fed.regulator("GET", path, base=base, **({"audience": LOG} | kw))


async def test_tree_head_proofs_and_entries(federation: Federation, gateway: str) -> None:
    fed = federation
    status, sth = await get(fed, gateway, f"{BASE}/ct/v1/get-sth")
    assert status == 200, sth
    assert sth["tree_size"] == 12
    assert sth["witnessed"] is False
    note = Note.parse(sth["checkpoint"])
    verify_log_signature(note, log_origin(LOG), [NADRA_KEY.public()])
    root12 = base64.b64decode(sth["sha256_root_hash"])
    assert Checkpoint.parse(note.text).root == root12
    async with transaction(fed.db, write=False) as s:
        root5 = await store.root_at(s, await store.get_log(s, LOG), 5)

    status, body = await get(fed, gateway, f"{BASE}/ct/v1/get-sth-consistency?first=5&second=12")
    assert status == 200
    proof = [base64.b64decode(h) for h in body["consistency"]]
    merkle.verify_consistency(5, 12, proof, root5, root12)

    leaf = merkle.leaf_hash(event(3).entry())
    hashed = quote(base64.b64encode(leaf).decode(), safe="")
    status, body = await get(
        fed, gateway, f"{BASE}/ct/v1/get-proof-by-hash?hash={hashed}&tree_size=12"
    )
    assert status == 200, body
    assert body["leaf_index"] == 3
    path = [base64.b64decode(h) for h in body["audit_path"]]
    merkle.verify_inclusion(leaf, 3, 12, path, root12)

    status, body = await get(fed, gateway, f"{BASE}/ct/v1/get-entries?start=10&end=20")
    assert status == 200
    assert [e["index"] for e in body["entries"]] == [10, 11]
    assert base64.b64decode(body["entries"][0]["leaf_input"]) == event(10).entry()

    async with fed.http.get(gateway + f"{BASE}/checkpoint") as resp:
        assert resp.status == 401
    status, text = await get(fed, gateway, f"{BASE}/checkpoint")
    assert status == 200
    assert text == sth["checkpoint"]

    status, logs = await get(fed, gateway, "/audit/logs")
    assert [(x["log_id"], x["tree_size"]) for x in logs] == [(LOG, 12)]

    async with fed.http.get(gateway + "/audit/openapi.json") as resp:
        validate(await resp.json())


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        (
            "/ct/v1/get-sth-consistency?first=6&second=5",
            400,
            "first 6 must be between 0 and second 5",
        ),
        ("/ct/v1/get-sth-consistency?first=1&second=13", 400, "second 13 is outside the log"),
        ("/ct/v1/get-sth-consistency?first=01&second=5", 400, "leading zeros"),
        ("/ct/v1/get-sth-consistency?first=1", 400, "query field 'second': Field required"),
        ("/ct/v1/get-proof-by-hash?hash=abc&tree_size=5", 400, "hash is not base64"),
        ("/ct/v1/get-proof-by-hash?hash=AAAA&tree_size=5", 400, "base64 of 32 bytes"),
        (
            f"/ct/v1/get-proof-by-hash?hash={quote(base64.b64encode(bytes(32)).decode())}"
            "&tree_size=5",
            404,
            "no entry with that hash in the first 5 entries",
        ),
        (
            f"/ct/v1/get-proof-by-hash?hash={quote(base64.b64encode(bytes(32)).decode())}"
            "&tree_size=0",
            400,
            "tree_size 0 is outside the log",
        ),
        ("/ct/v1/get-entries?start=12&end=13", 400, "start 12 is beyond the log"),
        ("/ct/v1/get-entries?start=3&end=2", 400, "end must not be before start"),
        ("/ct/v1/get-entries?start=-1&end=2", 400, "decimal number"),
    ],
)
async def test_bad_requests_get_precise_answers(
    federation: Federation, gateway: str, path: str, status: int, message: str
) -> None:
    got, body = await get(federation, gateway, BASE + path)
    assert got == status
    assert message in body["message"]


async def test_unknown_logs_and_other_callers_are_refused(
    federation: Federation, gateway: str
) -> None:
    fed = federation
    status, body = await get(fed, gateway, "/audit/logs/PK/FED/NADRA/gw2/ct/v1/get-sth")
    assert (status, body["message"]) == (404, "no audit log 'PK/FED/NADRA/gw2'")
    status, body = await get(fed, gateway, f"{BASE}/ct/v1/get-sth", audience="audit-witness")
    assert status == 401
    assert "not 'PK/FED/NADRA/gw1'" in body["message"]
    status, body = await get(
        fed, gateway, f"{BASE}/ct/v1/get-sth", key=NADRA_KEY, client=NADRA_CLIENT
    )
    assert status == 403
    assert "not in the global group 'audit-regulators'" in body["message"]
