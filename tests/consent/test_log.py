"""The consent log: every change is in a Merkle log whose checkpoints the consent service signs,
and a regulator proves a citizen's history is in it; plus the service's OpenAPI document."""

from __future__ import annotations

import base64
import json
from typing import Any, get_args
from urllib.parse import quote

from openapi_spec_validator import validate

from audit.merkle import leaf_hash, verify_inclusion
from audit.note import Checkpoint, Note, b64decode_hash, log_origin, verify_log_signature
from audit.regulators import REGULATORS_GROUP, authorization
from consent import operators
from consent.artefact import StatusName
from consent.history import LOG_ID
from consent.lifecycle import Status
from consent.server import LOG_WRITER
from consent.state import api
from core.db import transaction, utcnow
from registry import publisher
from registry import service as ops
from registry.payloads import GroupCreate
from tests.consent.conftest import CONSENT_KEY, PLRA_KEY, Harness
from tests.registry.federation import OPERATOR, PLRA_LAND


async def _as_regulator(harness: Harness) -> None:
    async with transaction(harness.db) as s:
        await ops.add_global_group(s, GroupCreate(code=REGULATORS_GROUP))
        await ops.add_global_group_member(s, REGULATORS_GROUP, PLRA_LAND)
    harness.conf.accept((await publisher.publish(harness.db, OPERATOR, now=utcnow())).signed)


async def _read(harness: Harness, path: str) -> tuple[int, str]:
    url = harness.base + "/v1/log" + path
    headers = {
        "Authorization": authorization(
            PLRA_KEY, PLRA_LAND, audience="consent", method="GET", url=url
        )
    }
    async with harness.http.get(url, headers=headers) as r:
        return r.status, await r.text()


async def test_a_citizens_history_is_provably_in_the_signed_consent_log(harness: Harness) -> None:
    consent = await harness.active_consent()
    token = await harness.sign_in()
    _, history = await harness.citizen(
        "GET", f"/v1/citizen/consents/{consent['id']}/history", token
    )
    writer = harness.app[LOG_WRITER]
    signed = await writer.checkpoint()
    assert signed is not None
    assert Checkpoint.parse(signed.text).size == 2

    status, _ = await _read(harness, f"/logs/{LOG_ID}/checkpoint")
    assert status == 403  # not (yet) a regulator
    await _as_regulator(harness)
    status, text = await _read(harness, f"/logs/{LOG_ID}/checkpoint")
    assert status == 200
    note = Note.parse(text)
    verify_log_signature(note, log_origin(LOG_ID), [CONSENT_KEY.public()])
    checkpoint = Checkpoint.parse(note.text)
    assert (checkpoint.origin, checkpoint.size) == ("shahrah/consent", 2)

    approve = history[1]
    leaf = leaf_hash(approve["log_entry"].encode())
    status, text = await _read(
        harness,
        f"/logs/{LOG_ID}/ct/v1/get-proof-by-hash?tree_size=2"
        f"&hash={quote(base64.b64encode(leaf).decode())}",
    )
    assert status == 200
    proof = json.loads(text)
    assert proof["leaf_index"] == approve["log_index"]
    verify_inclusion(
        leaf,
        proof["leaf_index"],
        2,
        [b64decode_hash(h, "audit_path") for h in proof["audit_path"]],
        checkpoint.root,
    )
    # Nothing new: the same checkpoint.
    again = await writer.checkpoint()
    assert again is not None
    assert again.text == signed.text


def test_the_openapi_document_is_valid() -> None:
    assert set(get_args(StatusName)) == {s.value for s in Status}
    document = api.document()
    validate(document)
    paths = document["paths"]
    for path in (
        "/v1/consents",
        "/v1/decisions",
        "/v1/feed",
        "/v1/pseudonyms",
        "/v1/citizen/session",
        "/v1/citizen/consents/{consent_id}/{action}",
        "/v1/citizen/consents/{consent_id}/receipt",
        "/v1/operator/guardianships",
    ):
        assert path in paths, path


async def test_the_operator_api_registers_guardianships(harness: Harness) -> None:
    async with transaction(harness.db) as s:
        token = await operators.tokens.create(s, "ops")
    body = {
        "guardian": "35202-1234567-1",
        "ward": "35202-7654321-3",
        "relation": "attorney",
        "reference": "Deed 77/2026",
    }
    async with harness.http.post(harness.base + "/v1/operator/guardianships", json=body) as r:
        assert r.status == 401
    headers = {"Authorization": f"Bearer {token}"}
    url = harness.base + "/v1/operator/guardianships"
    async with harness.http.post(url, json=body, headers=headers) as r:
        assert r.status == 201
        made = await r.json()
    async with harness.http.post(url, json={**body, "relation": "self"}, headers=headers) as r:
        assert r.status == 400
    async with harness.http.get(url + "?cnic=35202-7654321-3", headers=headers) as r:
        assert [g["id"] for g in await r.json()] == [made["id"]]
    async with harness.http.post(f"{url}/{made['id']}/end", headers=headers) as r:
        assert (r.status, (await r.json())["ended_at"] is not None) == (200, True)
    async with harness.http.post(f"{url}/{made['id']}/end", headers=headers) as r:
        assert r.status == 404
    # Beyond any row id the database holds (PostgreSQL's INTEGER): not found, not a crash.
    for gid in ("2147483648", "99999999999999999"):
        async with harness.http.post(f"{url}/{gid}/end", headers=headers) as r:
            assert (r.status, (await r.json())["type"]) == (404, "Client.NotFound"), gid


async def test_the_consent_log_is_cosigned_by_the_audit_witness(
    harness: Harness, serve: Any, db_url: str
) -> None:
    """The federation's witness (the regulator's audit server) cosigns the consent log's
    checkpoints, checking them against the consent service's key in the configuration."""
    await harness.active_consent()
    await harness.witnessed(serve, db_url)

    writer = harness.app[LOG_WRITER]
    await writer.checkpoint()
    await writer.sync_witness()
    assert writer.status().witnessed_size == 2
    await _as_regulator(harness)
    status, text = await _read(harness, f"/logs/{LOG_ID}/checkpoint")
    assert status == 200
    note = Note.parse(text)
    assert len(note.signatures) == 2  # the consent service's and the witness's
    verify_log_signature(note, log_origin(LOG_ID), [CONSENT_KEY.public()])
