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
from tests.consent.conftest import CONSENT_KEY, LMC, PSEUDONYM_KEY, PSEUDONYMS, Harness
from tests.registry.federation import OPERATOR
from tests.registry.test_globalconf import anchor_for

ORIGIN = log_origin(LOG_ID)


def _lost(consent: dict[str, Any], status: Status, action: str, seq: int) -> bytes:
    """The consent log entry of a change the restore lost, made an hour before the restore
    (earlier than the changes the backup holds, as a skewed clock could stamp it)."""
    view = ConsentView.model_validate({**consent, "status": status.value})
    return history.entry(
        seq=seq,
        consent=view,
        action=action,
        actor_kind="citizen",
        actor=PSEUDONYMS(view.subject),
        relation="self",
        at=utcnow() - dt.timedelta(hours=1),
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


async def _act(harness: Harness, cid: str, *actions: str) -> None:
    token = await harness.sign_in()
    for action in actions:
        status, body = await harness.citizen("POST", f"/v1/citizen/consents/{cid}/{action}", token)
        assert status == 200, body


@pytest.mark.parametrize("how", ["api", "cli"])
async def test_a_restore_does_not_bring_back_what_was_revoked(
    harness: Harness, serve: Any, db_url: str, tmp_path: Path, how: str
) -> None:
    """What the restore lost, and what the repair makes of each consent:

    * revoked: revoked again;
    * paused, and paused and resumed again here since: the citizen's newer decision stands;
    * paused then revoked: revoked (the last lost change counts);
    * revoked, and paused here since: revoked (a pause does not contradict it);
    * approved then revoked, pending in the backup: rejected, final either way;
    * paused then resumed: nothing to take away;
    * resumed, paused in the backup: stays paused (nothing that gives permission is redone);
    * revoked, of a consent the backup does not hold, and an entry that is no change."""
    a, b, c, d, f, g = [await harness.active_consent() for _ in range(6)]
    e = await harness.request_consent()
    await _act(harness, g["id"], "pause")
    await harness.witnessed(serve, db_url)
    writer = harness.app[LOG_WRITER]
    await writer.checkpoint()
    await writer.sync_witness()  # the backup: everything so far witnessed
    backup = len(await harness.log_entries())
    head = await harness.feed_head()

    lost = [
        (a, Status.REVOKED, "revoke"),
        (b, Status.PAUSED, "pause"),
        (c, Status.PAUSED, "pause"),
        (c, Status.REVOKED, "revoke"),
        (d, Status.REVOKED, "revoke"),
        (e, Status.ACTIVE, "approve"),
        (e, Status.REVOKED, "revoke"),
        (f, Status.PAUSED, "pause"),
        (f, Status.ACTIVE, "resume"),
        (g, Status.ACTIVE, "resume"),
        ({**a, "id": "cns-not-in-the-backup"}, Status.REVOKED, "revoke"),
    ]
    entries = [_lost(x, st, act, head + 1 + n) for n, (x, st, act) in enumerate(lost)]
    entries.insert(3, b'{"format": "something else"}')
    witnessed = await _witness_lost(harness, entries)
    last_heard = head + len(lost)  # a gateway heard every lost change on the feed

    await _act(harness, b["id"], "pause", "resume")  # here, since the restore
    await _act(harness, d["id"], "pause")
    since = await harness.request_consent()
    assert await _status(harness, a["id"]) == "ACTIVE"  # what the restore brought back
    await writer.checkpoint()
    with pytest.raises(WitnessError):
        await writer.sync_witness()  # the witness refuses the restored history

    expected = {a["id"]: "REVOKED", c["id"]: "REVOKED", d["id"]: "REVOKED", e["id"]: "REJECTED"}
    if how == "api":
        done = await repair(harness.app[STATE].service, _reader(harness))
        assert done is not None
        assert (done.log.diverged, done.log.witnessed, done.log.moved) == (backup, witnessed, 4)
        assert done.reapplied == expected
        assert done.left == 4  # b, f, g and the consent the backup does not hold
    else:
        told = await _repair_log_command(harness, tmp_path, db_url)
        assert told.exit_code == 0, told.output
        assert told.stdout.splitlines() == [f"{k}\t{v}" for k, v in sorted(expected.items())]
        assert (
            f"consent log repaired: it left the witnessed history at entry {backup}; "
            f"{witnessed - backup} entries restored from the witness's mirror, 4 made since "
            "the restore moved after them"
        ) in told.stderr
        assert "4 lost revocations, rejections, pauses or expiries made again; 4 consents" in (
            told.stderr
        )
    for consent, status in [(b, "ACTIVE"), (f, "ACTIVE"), (g, "PAUSED"), (since, "PENDING")]:
        assert await _status(harness, consent["id"]) == status
    for cid, status in expected.items():
        assert await _status(harness, cid) == status

    log = await harness.log_entries()
    assert len(log) == witnessed + 4 + len(expected)  # the mirror's, those since, re-applied
    async with transaction(harness.db, write=False) as s:
        for consent in (a, b, c, d, e, f, g, since):
            events = await cstore.events_of(s, consent["id"])
            for event in events:  # each change keeps the index of its entry: proofs hold
                assert log[event.leaf_index] == event.entry.encode()
            if consent["id"] in expected:
                assert (events[-1].actor_kind, events[-1].actor) == ("system", "restore")
                # Numbered after every lost change: a gateway that heard them is sent it.
                assert events[-1].seq > last_heard
        sent = {ev.consent_id for ev in await cstore.feed_after(s, last_heard, member=str(LMC))}
    assert set(expected) <= sent

    await writer.checkpoint()
    await writer.sync_witness()
    assert writer.status().witnessed_size == len(log)
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
