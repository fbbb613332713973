"""The consent service restored from a backup older than what the audit witness cosigned:
the revocation the restore lost is taken back from the witness's mirror, the changes made
since the restore keep their place after the mirror's, and witnessing resumes. The real
consent service and the real witness over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from audit.errors import WitnessError, WitnessRefusedError
from audit.note import Checkpoint, log_origin, sign_checkpoint
from audit.witness_client import WitnessClient
from consent import bootstrap, history
from consent import store as cstore
from consent.artefact import ConsentView
from consent.history import LOG_ID
from consent.lifecycle import Status
from consent.restore import repair
from consent.server import LOG_WRITER
from consent.state import STATE
from core.db import transaction, utcnow
from core.keys import PrivateKey
from registry import publisher
from shahrah.cli import main
from tests.audit.trees import MemoryTree
from tests.consent.conftest import CONSENT_KEY, PSEUDONYM_KEY, PSEUDONYMS, Harness
from tests.registry.federation import OPERATOR
from tests.registry.test_globalconf import anchor_for

ORIGIN = log_origin(LOG_ID)


def _lost(consent: dict[str, Any], status: Status, action: str, at: dt.datetime) -> bytes:
    """The consent log entry of a change the restore lost."""
    view = ConsentView.model_validate({**consent, "status": status.value})
    return history.entry(
        seq=int(consent["version"]) + 100,
        consent=view,
        action=action,
        actor_kind="citizen",
        actor=PSEUDONYMS(view.subject),
        relation="self",
        at=at,
        pseudonymize=PSEUDONYMS,
    )


async def _witness_lost(harness: Harness, lost: list[bytes]) -> int:
    """The history the restore lost: the witness cosigned ``lost`` after the local log (as
    the service did before its database was restored). Returns the witnessed size."""
    local = await harness.log_entries()
    tree = MemoryTree(local + lost)
    note = sign_checkpoint(Checkpoint(ORIGIN, tree.size, tree.root(tree.size)), CONSENT_KEY)
    client = WitnessClient(harness.conf.current, harness.http)
    await client.add_checkpoint(
        LOG_ID, len(local), tree.consistency(len(local), tree.size), note, lost
    )
    return tree.size


async def _status(harness: Harness, cid: str) -> str:
    async with transaction(harness.db, write=False) as s:
        row = await cstore.consent(s, cid)
        assert row is not None
        return row.status


def _reader(harness: Harness) -> WitnessClient:
    return WitnessClient(harness.conf.current, harness.http, key=CONSENT_KEY, service="consent")


async def _repair_log_command(harness: Harness, tmp: Path, db_url: str) -> Result:
    """``shahrah consent repair-log`` on a folder of this consent service: its anchor, key,
    pseudonym key and cached configuration, and its database."""
    folder = tmp / "consent"
    folder.mkdir()
    (folder / bootstrap.ANCHOR_FILE).write_text(anchor_for().dumps())
    CONSENT_KEY.save(folder / bootstrap.KEY_FILE, None)
    (folder / bootstrap.PSEUDONYM_FILE).write_bytes(PSEUDONYM_KEY)
    signed = (await publisher.publish(harness.db, OPERATOR, now=utcnow())).signed
    (folder / bootstrap.GLOBALCONF_FILE).write_text(signed)
    args = ["consent", "repair-log", "--data-dir", str(folder), "--db", db_url, "--no-passphrase"]
    return await asyncio.to_thread(CliRunner().invoke, main, args)


@pytest.mark.parametrize("how", ["api", "cli"])
async def test_a_restore_does_not_bring_back_a_revoked_consent(
    harness: Harness, serve: Any, db_url: str, tmp_path: Path, how: str
) -> None:
    revoked = await harness.active_consent()
    paused_then_resumed_here = await harness.active_consent()
    await harness.witnessed(serve, db_url)
    writer = harness.app[LOG_WRITER]
    await writer.checkpoint()
    await writer.sync_witness()  # the backup: everything so far witnessed
    backup = len(await harness.log_entries())

    # Lost with the restore: one consent revoked; another paused, which the citizen paused
    # and resumed again here after the restore (newer changes, which stand).
    lost_at = utcnow()
    witnessed = await _witness_lost(
        harness,
        [
            _lost(revoked, Status.REVOKED, "revoke", lost_at),
            _lost(paused_then_resumed_here, Status.PAUSED, "pause", lost_at),
        ],
    )
    token = await harness.sign_in()
    cid = paused_then_resumed_here["id"]
    for action in ("pause", "resume"):
        status, _ = await harness.citizen("POST", f"/v1/citizen/consents/{cid}/{action}", token)
        assert status == 200
    since = await harness.request_consent()  # and a new request, made after the restore
    assert await _status(harness, revoked["id"]) == "ACTIVE"  # what the restore brought back
    await writer.checkpoint()
    with pytest.raises(WitnessError):
        await writer.sync_witness()  # the witness refuses the restored history

    if how == "api":
        done = await repair(harness.app[STATE].service, _reader(harness))
        assert done is not None
        assert (done.log.diverged, done.log.witnessed, done.log.moved) == (backup, witnessed, 3)
        assert done.reapplied == {revoked["id"]: "REVOKED"}
        assert done.left == 1  # the pause: the citizen's changes since are newer
    else:
        told = await _repair_log_command(harness, tmp_path, db_url)
        assert told.exit_code == 0, told.output
        assert told.stdout == f"{revoked['id']}\tREVOKED\n"
        assert (
            f"consent log repaired: it left the witnessed history at entry {backup}; "
            f"{witnessed - backup} entries restored from the witness's mirror, 3 made since "
            "the restore moved after them"
        ) in told.stderr
        assert "1 lost revocations, rejections, pauses or expiries made again; 1 consents" in (
            told.stderr
        )
    assert await _status(harness, revoked["id"]) == "REVOKED"
    assert await _status(harness, cid) == "ACTIVE"
    assert await _status(harness, since["id"]) == "PENDING"
    entries = await harness.log_entries()
    assert len(entries) == witnessed + 3 + 1  # the mirror's, the three since, the re-applied
    # Each change keeps the index of its entry: the history's proofs hold.
    async with transaction(harness.db, write=False) as s:
        for cid_ in (revoked["id"], cid, since["id"]):
            for event in await cstore.events_of(s, cid_):
                assert entries[event.leaf_index] == event.entry.encode()
    _, log = await harness.citizen("GET", f"/v1/citizen/consents/{revoked['id']}/history", token)
    assert [(e["action"], e["actor_kind"]) for e in log][-1] == ("revoke", "system")

    await writer.checkpoint()
    await writer.sync_witness()
    assert writer.status().witnessed_size == len(entries)
    assert await repair(harness.app[STATE].service, _reader(harness)) is None  # all done


async def test_only_the_consent_service_reads_its_log_back(
    harness: Harness, serve: Any, db_url: str
) -> None:
    await harness.active_consent()
    await harness.witnessed(serve, db_url)
    writer = harness.app[LOG_WRITER]
    await writer.checkpoint()
    await writer.sync_witness()
    mine = WitnessClient(harness.conf.current, harness.http, key=CONSENT_KEY, service="consent")
    page = await mine.read_back(LOG_ID, 0, 2)
    assert page.entries == (await harness.log_entries())[:2]
    with pytest.raises(WitnessRefusedError, match="only the central service consent may"):
        await WitnessClient(harness.conf.current, harness.http).read_back(LOG_ID, 0, 2)
    impostor = WitnessClient(
        harness.conf.current, harness.http, key=PrivateKey.generate(), service="consent"
    )
    with pytest.raises(WitnessRefusedError, match=r"401|not a key of central service"):
        await impostor.read_back(LOG_ID, 0, 2)
