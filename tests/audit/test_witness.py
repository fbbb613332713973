"""The witness over real HTTP, on a configuration the real registry published: it cosigns a
growing log, mirrors it, and refuses forks, rollbacks and malformed submissions."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import generate_latest

from audit import store
from audit.errors import WitnessConflictError, WitnessRefusedError, WitnessUnavailableError
from audit.note import (
    Checkpoint,
    Note,
    NoteSignature,
    log_origin,
    sign_checkpoint,
    verify_cosignature,
    verify_log_signature,
    witness_name,
)
from audit.verify import verify_export
from audit.witness_client import ADD_CHECKPOINT
from audit.writer import AuditWriter
from core.db import transaction
from core.keys import PrivateKey
from exchange.metrics import GatewayMetrics
from registry import service as ops
from registry.memberauth import sign_request
from registry.payloads import KeyCreate
from tests.audit.conftest import NADRA_CLIENT, WITNESS_KEY, Federation
from tests.audit.events import GATEWAY, event
from tests.audit.test_export import export
from tests.audit.trees import MemoryTree
from tests.registry.federation import LMC_TAX, NADRA_KEY
from tests.registry.test_globalconf import anchor_for

LOG = str(GATEWAY)
ORIGIN = log_origin(LOG)
ENTRIES = [event(n).entry() for n in range(40)]
HONEST = MemoryTree(ENTRIES)
FORK = MemoryTree([*ENTRIES[:6], *(event(100 + n).entry() for n in range(34))])  # agrees on 6


def checkpoint(tree: MemoryTree, size: int, key: PrivateKey = NADRA_KEY) -> Note:
    return sign_checkpoint(Checkpoint(ORIGIN, size, tree.root(size)), key)


async def submit(fed: Federation, tree: MemoryTree, old: int, new: int, **kw: object) -> int:
    client = fed.witness_client(**kw)  # type: ignore[arg-type]
    proof = tree.consistency(old, new)
    cosigned = await client.add_checkpoint(
        LOG, old, proof, checkpoint(tree, new), tree.entries[old:new]
    )
    return cosigned.timestamp


async def mirrored(fed: Federation) -> int:
    async with transaction(fed.witness_db, write=False) as s:
        return (await store.get_log(s, LOG, store.MIRROR)).size


def samples(exposition: str, name: str) -> dict[str, float]:
    """The samples of Prometheus text ``exposition`` whose name starts with ``name``."""
    return {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in exposition.splitlines()
        if line.startswith(name)
    }


async def metric(fed: Federation, name: str) -> dict[str, float]:
    async with fed.http.get(fed.audit_url + "/metrics") as resp:
        return samples(await resp.text(), name)


async def test_a_gateway_log_is_witnessed_mirrored_and_indexed(federation: Federation) -> None:
    fed = federation
    async with fed.nadra_writer(checkpoint_every=5) as writer:
        for n in range(12):
            await writer.append(event(n))
    async with transaction(fed.db, write=False) as s:
        local = await store.get_log(s, LOG)
        rows = await store.checkpoints(s, local)
        mirror = await store.get_log(s, LOG, store.MIRROR)
    assert [r.size for r in rows] == [5, 10, 12]
    for r in rows:
        assert r.cosigned is not None
        assert verify_cosignature(Note.parse(r.cosigned), witness_name("PK"), WITNESS_KEY.public())
    assert (mirror.size, mirror.root) == (local.size, local.root)
    status, page = await fed.regulator("POST", "/api/v1/search", {"gateway": LOG, "limit": 5})
    assert status == 200, page
    assert [r["index"] for r in page["results"]] == [11, 10, 9, 8, 7]
    assert page["results"][0]["witnessed"]["tree_size"] == 12
    counts = await metric(fed, "shahrah_audit_witness_submissions_total")
    assert counts['shahrah_audit_witness_submissions_total{result="cosigned"}'] == 3


def gateway_metrics(writer: AuditWriter) -> dict[str, float]:
    """What a gateway's /metrics says of its audit log (exchange.metrics)."""
    metrics = GatewayMetrics(lambda: None, lambda: None)
    metrics.follow_audit(writer.status)
    return samples(generate_latest(metrics.registry).decode(), "shahrah_gateway_audit_")


async def test_a_gateway_reports_its_log_witnessed(federation: Federation) -> None:
    async with federation.nadra_writer() as writer:
        for n in range(7):
            await writer.append(event(n))
        await writer.checkpoint()
        await writer.sync_witness()
        assert gateway_metrics(writer) == {
            "shahrah_gateway_audit_log_size": 7.0,
            "shahrah_gateway_audit_witnessed_size": 7.0,
            "shahrah_gateway_audit_witness_failing": 0.0,
        }


async def test_a_gateway_restored_from_a_backup_says_its_log_goes_unwitnessed(
    federation: Federation,
) -> None:
    """The witness cosigned 10 entries; the gateway's database, restored from a backup, has
    none of them and records other exchanges. Every checkpoint is refused, and the gateway's
    metrics say so: its log grows, the witnessed part does not, witnessing fails."""
    await submit(federation, HONEST, 0, 10)
    async with federation.nadra_writer(checkpoint_every=5) as writer:
        for n in range(12):
            await writer.append(event(200 + n))
        for _ in range(100):  # the background submission fails within moments
            if writer.status().witness_error is not None:
                break
            await asyncio.sleep(0.05)
        assert gateway_metrics(writer) == {
            "shahrah_gateway_audit_log_size": 12.0,
            "shahrah_gateway_audit_witnessed_size": 0.0,
            "shahrah_gateway_audit_witness_failing": 1.0,
        }
    assert await mirrored(federation) == 10  # nothing of the restored log reached regulators


async def test_the_witness_refuses_a_forked_log_with_an_alarm(federation: Federation) -> None:
    fed = federation
    await submit(fed, HONEST, 0, 10)
    with pytest.raises(WitnessRefusedError, match="consistency proof does not verify"):
        await submit(fed, FORK, 10, 14)  # a history that agrees only on its first 6 entries
    with pytest.raises(WitnessRefusedError, match=r"contradicts the witnessed log \(fork\)"):
        await fed.witness_client().add_checkpoint(LOG, 10, [], checkpoint(FORK, 10), [])
    for _ in range(3):  # a gateway retrying: refused each time, kept as evidence once
        with pytest.raises(WitnessRefusedError, match=r"\(rollback\)"):
            await fed.witness_client().add_checkpoint(LOG, 8, [], checkpoint(FORK, 8), [])
    assert await mirrored(fed) == 10
    alarms = await metric(fed, "shahrah_audit_witness_alarms_total")
    assert alarms == {
        f'shahrah_audit_witness_alarms_total{{log="{LOG}",reason="inconsistent"}}': 1.0,
        f'shahrah_audit_witness_alarms_total{{log="{LOG}",reason="fork"}}': 1.0,
        f'shahrah_audit_witness_alarms_total{{log="{LOG}",reason="rollback"}}': 1.0,
    }
    status, listed = await fed.regulator("GET", "/api/v1/alarms")
    assert status == 200
    assert [a["reason"] for a in listed] == ["rollback", "fork", "inconsistent"]
    assert Checkpoint.parse(Note.parse(listed[2]["evidence"]).text).size == 14
    # Paged, since each alarm carries its evidence: newest first, then older than the last id.
    status, first = await fed.regulator("GET", "/api/v1/alarms?limit=2")
    assert [a["reason"] for a in first] == ["rollback", "fork"]
    status, rest = await fed.regulator("GET", f"/api/v1/alarms?limit=2&before={first[-1]['id']}")
    assert [a["reason"] for a in rest] == ["inconsistent"]
    for bad in ("limit=0", "limit=1001", "before=0", "before=x", "other=1"):
        assert (await fed.regulator("GET", f"/api/v1/alarms?{bad}"))[0] == 400, bad
    await submit(fed, HONEST, 10, 20)  # the honest log goes on
    assert await mirrored(fed) == 20


async def test_a_checkpoint_alarmed_once_does_not_hide_a_different_one(
    federation: Federation,
) -> None:
    """Evidence is kept once per checkpoint, matched exactly: a root differing only in the
    case of its base64 (which SQLite's LIKE would not tell apart) is another checkpoint."""
    fed = federation
    await submit(fed, HONEST, 0, 10)
    root = FORK.root(8)
    text = base64.b64encode(root).decode()
    first = next(i for i, c in enumerate(text) if c.isalpha())  # not the last: it is canonical
    swapped = base64.b64decode(text[:first] + text[first].swapcase() + text[first + 1 :])
    assert base64.b64encode(swapped).decode().lower() == text.lower()
    assert swapped != root
    for variant in (root, swapped):
        note = sign_checkpoint(Checkpoint(ORIGIN, 8, variant), NADRA_KEY)
        with pytest.raises(WitnessRefusedError, match=r"\(rollback\)"):
            await fed.witness_client().add_checkpoint(LOG, 8, [], note, [])
    _status, listed = await fed.regulator("GET", "/api/v1/alarms")
    assert [a["reason"] for a in listed] == ["rollback", "rollback"]


async def test_entries_that_do_not_produce_the_signed_root_raise_an_alarm(
    federation: Federation,
) -> None:
    fed = federation
    await submit(fed, HONEST, 0, 4)
    swapped = [ENTRIES[5], ENTRIES[4]]
    with pytest.raises(WitnessRefusedError, match="entries do not produce"):
        await fed.witness_client().add_checkpoint(
            LOG, 4, HONEST.consistency(4, 6), checkpoint(HONEST, 6), swapped
        )
    assert await mirrored(fed) == 4
    alarms = await metric(fed, "shahrah_audit_witness_alarms_total")
    assert list(alarms.values()) == [1.0]


async def test_stale_and_out_of_step_submissions_get_409_with_the_size(
    federation: Federation,
) -> None:
    fed = federation
    await submit(fed, HONEST, 0, 10)
    with pytest.raises(WitnessConflictError) as stale:
        await submit(fed, HONEST, 0, 5)  # an older checkpoint of the same history
    assert stale.value.size == 10
    with pytest.raises(WitnessConflictError) as behind:
        await submit(fed, HONEST, 5, 15)
    assert behind.value.size == 10
    assert await metric(fed, "shahrah_audit_witness_alarms_total") == {}
    # The same checkpoint again is cosigned again, changing nothing.
    await fed.witness_client().add_checkpoint(LOG, 10, [], checkpoint(HONEST, 10), [])
    assert await mirrored(fed) == 10


@pytest.mark.parametrize(
    ("tamper", "status", "message"),
    [
        (
            lambda b: b | {"entries": b["entries"][:-1]},
            400,
            "3 entries given; the checkpoint adds 4",
        ),
        (lambda b: b | {"old_size": 9}, 400, "old_size 9 is larger than the checkpoint size 4"),
        (lambda b: b | {"consistency": ["!" * 44]}, 400, "not base64"),
        (lambda b: b | {"checkpoint": "junk"}, 400, "no blank line"),
        (lambda b: b | {"log_id": "PK/FED/NADRA/gw9"}, 404, "not in the global configuration"),
        (lambda b: b | {"log_id": "PK/LG/LMC/gw1"}, 404, "not in the global configuration"),
        (lambda b: b | {"extra": 1}, 400, "extra"),
        (
            lambda b: b | {"checkpoint": checkpoint(HONEST, 4, PrivateKey.generate()).render()},
            403,
            "no signature by a known key",
        ),
    ],
)
async def test_malformed_submissions_change_nothing(
    federation: Federation, tamper: object, status: int, message: str
) -> None:
    fed = federation
    body = {
        "log_id": LOG,
        "old_size": 0,
        "consistency": [],
        "checkpoint": checkpoint(HONEST, 4).render(),
        "entries": [e.decode() for e in ENTRIES[:4]],
    }
    body = tamper(body)  # type: ignore[operator]
    data = json.dumps(body).encode()
    auth = sign_request(
        NADRA_KEY,
        NADRA_CLIENT,
        audience="audit-witness",
        method="POST",
        path=ADD_CHECKPOINT,
        body=data,
    )
    async with fed.http.post(
        fed.audit_url + ADD_CHECKPOINT,
        data=data,
        headers={"Authorization": auth, "Content-Type": "application/json"},
    ) as resp:
        assert resp.status == status
        assert message in (await resp.json())["message"]
    async with transaction(fed.db, write=False) as s:
        assert await store.logs(s, store.MIRROR) == []
    assert await metric(fed, "shahrah_audit_witness_alarms_total") == {}


async def test_only_the_gateways_member_may_submit(federation: Federation) -> None:
    fed = federation
    lmc_key = PrivateKey.generate()
    with pytest.raises(WitnessRefusedError, match="not a registered key of PK/LG/LMC"):
        await submit(fed, HONEST, 0, 3, key=lmc_key, client=LMC_TAX)
    async with transaction(fed.db) as s:
        await ops.add_key(s, KeyCreate(member=LMC_TAX.member, jwk=lmc_key.public().to_jwk()))
    await fed.publish()
    with pytest.raises(WitnessRefusedError, match="only PK/FED/NADRA may submit"):
        await submit(fed, HONEST, 0, 3, key=lmc_key, client=LMC_TAX)
    async with fed.http.post(
        fed.audit_url + ADD_CHECKPOINT,
        json={"log_id": LOG, "old_size": 0, "consistency": [], "checkpoint": "", "entries": []},
    ) as resp:
        assert resp.status == 401
        assert "must be signed by PK/FED/NADRA" in (await resp.json())["message"]
    assert await metric(fed, "shahrah_audit_witness_alarms_total") == {}


async def test_the_witness_keeps_only_the_verified_signature(federation: Federation) -> None:
    fed = federation
    note = checkpoint(HONEST, 3)
    junk = NoteSignature(witness_name("PK"), b"\0\0\0\0", b"\1" * 70)
    await fed.witness_client().add_checkpoint(
        LOG, 0, [], note.with_signatures([junk]), HONEST.entries[:3]
    )
    async with transaction(fed.db, write=False) as s:
        row = await store.checkpoint_at(s, await store.get_log(s, LOG, store.MIRROR), 3)
    assert row is not None
    assert row.cosigned is not None
    stored = Note.parse(row.cosigned)
    assert [x.name for x in stored.signatures] == [ORIGIN, witness_name("PK")]
    verify_cosignature(stored, witness_name("PK"), WITNESS_KEY.public())


async def test_a_witness_answering_garbage_is_unavailable_not_a_crash(
    federation: Federation, serve: Any
) -> None:
    """Whatever comes back from the URL the configuration names, the client raises one of
    its own errors (unavailable, or refused for a 4xx): the writer's retry and status rely
    on it."""
    fed = federation
    answers: list[tuple[int, bytes]] = []

    async def answer(request: web.Request) -> web.Response:
        status, body = answers.pop()
        return web.Response(status=status, body=body, content_type="application/json")

    fake = web.Application()
    fake.router.add_post(ADD_CHECKPOINT, answer)
    await fed.move_witness(await serve(fake))
    for status, body, error in [
        (200, b"[" * 60_000, WitnessUnavailableError),
        (409, b'{"detail": ' * 20_000, WitnessRefusedError),
        (
            200,
            b'{"cosignatures": ["\\u2014 shahrah/PK/audit-witness \\ud800\\n"]}',
            WitnessUnavailableError,
        ),
        (200, b'{"cosignatures": "none"}', WitnessUnavailableError),
        (500, b"\xff\xfe", WitnessUnavailableError),
    ]:
        answers.append((status, body))
        with pytest.raises(error):
            await fed.witness_client().add_checkpoint(
                LOG, 0, [], checkpoint(HONEST, 3), HONEST.entries[:3]
            )


@pytest.mark.parametrize("witness_away", [False, True])
async def test_checkpoints_signed_before_a_key_rotation_are_witnessed_after_it(
    federation: Federation, witness_away: bool
) -> None:
    """A checkpoint signed with the old key and not yet cosigned when the key is revoked:
    the gateway revoked first and signing until its next refresh, or the witness out of reach
    across the rotation. The writer signs it again with the key it holds now, and witnessing
    goes on rather than stopping at it for good. The signed submissions carry the new key too
    (exchange.rotation: AuditWriter.use_key)."""
    fed = federation
    new = PrivateKey.generate()
    async with transaction(fed.db) as s:
        await ops.add_key(s, KeyCreate(member=NADRA_CLIENT.member, jwk=new.public().to_jwk()))
    await fed.publish()
    async with fed.nadra_writer() as writer:
        await writer.append(event(0))
        await writer.checkpoint()
        await writer.sync_witness()
        if witness_away:
            await fed.move_witness("http://127.0.0.1:9")
        async with transaction(fed.db) as s:
            await ops.revoke_key(s, NADRA_KEY.kid)
        await fed.publish()
        await writer.append(event(1))
        await writer.checkpoint()  # still under the old key
        writer.use_key(new)
        if witness_away:
            await fed.move_witness(fed.audit_url)
        for n in range(2, 4):
            await writer.append(event(n))
            await writer.checkpoint()
        await writer.sync_witness()
        assert gateway_metrics(writer)["shahrah_gateway_audit_witnessed_size"] == 4.0
    async with transaction(fed.db, write=False) as s:
        rows = await store.checkpoints(s, await store.get_log(s, LOG))
    for row in rows[1:]:  # each stored as cosigned, under the key that is valid
        assert row.cosigned is not None
        assert verify_log_signature(Note.parse(row.cosigned), ORIGIN, [new.public()])


async def test_the_same_checkpoint_cosigned_again_under_a_new_key_still_exports_and_verifies(
    federation: Federation, tmp_path: Path
) -> None:
    """A gateway re-signs after a key rotation a checkpoint whose cosignature it never heard
    (the answer was lost), and submits it again. The witness cosigns it again; the key it
    keeps on record must be the one that note carries, or the regulator's export of an honest
    log fails verification ("forged", and every entry uncovered)."""
    fed = federation
    await submit(fed, HONEST, 0, 10)
    new = PrivateKey.generate()
    async with transaction(fed.db) as s:
        await ops.add_key(s, KeyCreate(member=NADRA_CLIENT.member, jwk=new.public().to_jwk()))
    await fed.publish()
    await fed.witness_client().add_checkpoint(LOG, 10, [], checkpoint(HONEST, 10, key=new), [])
    path = await export(fed, tmp_path / "all.jsonl")
    assert verify_export(path, anchor=anchor_for()).problems == []


async def test_a_restored_log_as_long_as_the_witnessed_one_is_not_taken_for_witnessed(
    federation: Federation,
) -> None:
    """The witness refuses the restored log's checkpoint as a rollback and names its own size,
    which this log has too: that is not where to resume (the history differs), so the writer
    reports witnessing failing rather than the log witnessed."""
    await submit(federation, HONEST, 0, 10)
    async with federation.nadra_writer(checkpoint_every=5) as writer:
        for n in range(10):
            await writer.append(event(200 + n))
        await writer.checkpoint()
        with pytest.raises(WitnessRefusedError, match=r"\(rollback\)"):
            await writer.sync_witness()
        assert gateway_metrics(writer)["shahrah_gateway_audit_witnessed_size"] == 0.0
