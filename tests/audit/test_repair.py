"""Repairing a gateway's log restored from a backup older than what the witness cosigned,
against the real witness over HTTP: the mirror's records come back, the exchanges recorded
since the restore follow them, and witnessing resumes. A repair that cannot finish changes
nothing."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from click.testing import CliRunner, Result
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from audit import repair as repair_module
from audit import store
from audit.errors import WitnessError, WitnessRefusedError, WitnessUnavailableError
from audit.models import AuditNode
from audit.note import Checkpoint, Note, cosign, sign_checkpoint, witness_name
from audit.repair import RepairError, repair
from audit.witness_client import READ_BACK, Mirrored, WitnessClient
from audit.writer import AuditWriter
from core.db import Sessions, create_engine, sessions, transaction
from core.errors import ConflictError
from core.keys import PrivateKey
from registry import service as ops
from registry.payloads import KeyCreate
from shahrah.cli import main
from tests.audit.conftest import NADRA_CLIENT, WITNESS_KEY, Federation, start_federation
from tests.audit.events import event
from tests.audit.test_witness import FORK, HONEST, LOG, ORIGIN, gateway_metrics, mirrored, submit
from tests.audit.trees import MemoryTree
from tests.registry.federation import LMC_TAX, NADRA_KEY
from tests.registry.test_globalconf import anchor_for

SINCE_RESTORE = [event(200 + n).entry() for n in range(7)]


@pytest.fixture
async def federation(
    db: Sessions,
    db_url: str,
    serve: Any,
    http: aiohttp.ClientSession,
    tmp_path: Path,
    sqlite_template: Path,
) -> AsyncIterator[Federation]:
    """The witness on a database of its own, as deployed. A repair holds the gateway's write
    transaction while it reads the mirror back, and the witness writes as it answers (each
    signed request's nonce): in one SQLite file, one waits for the other until it fails.
    PostgreSQL locks rows, so there one database holds both."""
    if not db_url.startswith("sqlite"):
        yield await start_federation(db, db_url, serve, http)
        return
    path = tmp_path / "witness.db"
    shutil.copyfile(sqlite_template, path)
    witness_url = f"sqlite:///{path}"
    engine = create_engine(witness_url)
    try:
        yield await start_federation(db, db_url, serve, http, (witness_url, sessions(engine)))
    finally:
        await engine.dispose()


@pytest.fixture(autouse=True)
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three entries a page, so every test crosses pages as a long repair does."""
    monkeypatch.setattr(repair_module, "MAX_READ_BACK", 3)


@dataclass(frozen=True)
class Snapshot:
    """Everything a repair may touch of the local log."""

    size: int
    root: bytes
    entries: list[bytes]
    nodes: list[tuple[int, bytes]]
    checkpoints: list[tuple[int, bytes, str, str | None]]


async def snapshot(fed: Federation) -> Snapshot:
    async with transaction(fed.db, write=False) as s:
        head = await store.get_log(s, LOG)
        entries = [e for _, e in await store.entries(s, head, 0, head.size)]
        nodes = await s.execute(
            AuditNode.__table__.select()
            .with_only_columns(AuditNode.key, AuditNode.hash)
            .where(AuditNode.log_id == head.id)
            .order_by(AuditNode.key)
        )
        rows = await store.checkpoints(s, head)
        return Snapshot(
            head.size,
            head.root,
            entries,
            [(k, bytes(h)) for k, h in nodes],
            [(r.size, bytes(r.root), r.note, r.cosigned) for r in rows],
        )


async def restored(
    fed: Federation, *, backup: int, witnessed: int, since: int, cosigned: int | None = None
) -> None:
    """The gateway's log as a restore from a backup leaves it: the backup holds ``backup``
    entries, the first ``cosigned`` of them (all, by default) witnessed; the witness went on
    to cosign ``witnessed`` (the history the restore lost); and the restored gateway
    recorded ``since`` other exchanges, which the witness refuses."""
    cosigned = backup if cosigned is None else cosigned
    async with fed.nadra_writer(checkpoint_every=5) as writer:
        for n in range(cosigned):
            await writer.append(event(n))
        await writer.checkpoint()
        await writer.sync_witness()
    unwitnessed = AuditWriter(fed.db, LOG, NADRA_KEY, origin=ORIGIN, checkpoint_every=5)
    async with unwitnessed:
        for n in range(cosigned, backup):
            await unwitnessed.append(event(n))
    await submit(fed, HONEST, cosigned, witnessed)
    async with fed.nadra_writer(checkpoint_every=5) as writer:
        for n in range(since):
            await writer.append(event(200 + n))
        await writer.checkpoint()
        if since:
            with pytest.raises(WitnessError):
                await writer.sync_witness()


async def test_a_restored_log_gets_the_witnessed_records_back_and_keeps_its_own(
    federation: Federation,
) -> None:
    fed = federation
    await restored(fed, backup=4, witnessed=10, since=7)
    seen: list[tuple[int, int]] = []

    done = await repair(fed.db, LOG, fed.witness_client(), progress=lambda *a: seen.append(a))

    assert done is not None
    assert (done.witnessed, done.diverged, done.restored, done.moved, done.size) == (
        10,
        4,
        6,
        7,
        17,
    )
    after = await snapshot(fed)
    assert after.entries == HONEST.entries[:10] + SINCE_RESTORE
    assert after.root == MemoryTree(after.entries).root(17)
    # The tree is whole: every proof the log serves checks out against an independent tree.
    async with transaction(fed.db, write=False) as s:
        head = await store.get_log(s, LOG)
        assert await store.consistency_proof(s, head, 10, 17) == MemoryTree(
            after.entries
        ).consistency(10, 17)
        assert await store.root_at(s, head, 13) == MemoryTree(after.entries).root(13)
    # The abandoned history's checkpoints are gone; the witness's stands at 10.
    assert [(size, cosigned is not None) for size, _, _, cosigned in after.checkpoints] == [
        (4, True),
        (10, True),
    ]
    assert seen[-1] == (10, 10)  # progress reached the witnessed size

    async with fed.nadra_writer(checkpoint_every=5) as writer:
        await writer.append(event(300))
        await writer.checkpoint()
        await writer.sync_witness()
        assert gateway_metrics(writer) == {
            "shahrah_gateway_audit_log_size": 18.0,
            "shahrah_gateway_audit_witnessed_size": 18.0,
            "shahrah_gateway_audit_witness_failing": 0.0,
        }
    assert await mirrored(fed) == 18
    status, page = await fed.regulator("POST", "/api/v1/search", {"gateway": LOG, "limit": 8})
    assert status == 200, page
    assert [r["event"]["message_id"] for r in page["results"]] == [
        "msg-300",
        *(f"msg-{200 + n}" for n in reversed(range(7))),
    ]


async def test_a_restore_that_recorded_nothing_since_just_catches_up(
    federation: Federation,
) -> None:
    fed = federation
    await restored(fed, backup=5, witnessed=12, since=0)
    done = await repair(fed.db, LOG, fed.witness_client())
    assert done is not None
    assert (done.diverged, done.restored, done.moved, done.size) == (5, 7, 0, 12)
    assert (await snapshot(fed)).entries == HONEST.entries[:12]


async def test_a_log_the_witness_agrees_with_is_left_alone(federation: Federation) -> None:
    fed = federation
    async with fed.nadra_writer(checkpoint_every=5) as writer:
        for n in range(8):
            await writer.append(event(n))
        await writer.checkpoint()
        await writer.sync_witness()
        await writer.append(event(8))  # not yet witnessed: still the same history
    before = await snapshot(fed)
    assert await repair(fed.db, LOG, fed.witness_client()) is None
    assert await snapshot(fed) == before


class FailingWitness(WitnessClient):
    """The real witness, except that its ``fail_at``-th read-back fails as a network would,
    or, given ``meanwhile``, runs it first."""

    def __init__(self, fed: Federation, fail_at: int, meanwhile: Any = None) -> None:
        super().__init__(fed.gateway_conf.current, fed.http, key=NADRA_KEY, client=NADRA_CLIENT)
        self.fail_at = fail_at
        self.meanwhile = meanwhile
        self.calls = 0

    async def read_back(self, log_id: str, start: int, end: int) -> Mirrored:
        self.calls += 1
        if self.calls == self.fail_at:
            if self.meanwhile is None:
                raise WitnessUnavailableError("cannot reach the audit witness: connection reset")
            await self.meanwhile()
        return await super().read_back(log_id, start, end)


@pytest.mark.parametrize("fail_at", [2, 4])  # while comparing; while writing the mirror's
async def test_a_repair_cut_short_leaves_the_log_as_it_was(
    federation: Federation, fail_at: int
) -> None:
    """Pages of three: entries 2-4 and 5-7 match the mirror, 8 does not; the fourth page
    (11) is read inside the rewrite's transaction."""
    fed = federation
    await restored(fed, cosigned=2, backup=8, witnessed=12, since=2)
    before = await snapshot(fed)
    witness = FailingWitness(fed, fail_at)
    with pytest.raises(WitnessUnavailableError):
        await repair(fed.db, LOG, witness)
    assert await snapshot(fed) == before
    done = await repair(fed.db, LOG, fed.witness_client())  # and it can be done again
    assert done is not None
    assert (done.diverged, done.restored, done.moved) == (8, 4, 2)


async def test_a_log_that_grows_during_the_repair_is_not_rewritten(
    federation: Federation,
) -> None:
    """A gateway process still running would record exchanges while the mirror is read."""
    fed = federation
    await restored(fed, backup=2, witnessed=10, since=3)

    async def exchange() -> None:
        async with transaction(fed.db) as s:
            head = await store.get_log(s, LOG, lock=True)
            await store.append(s, head, [event(400).entry()])

    before = await snapshot(fed)
    with pytest.raises(ConflictError, match="stop every process of the gateway"):
        await repair(fed.db, LOG, FailingWitness(fed, 1, meanwhile=exchange))
    assert (await snapshot(fed)).entries == [*before.entries, event(400).entry()]


async def fake_witness(fed: Federation, serve: Any, answer: Any) -> None:
    """Publish a witness at a fake URL that answers read-backs with ``answer(body)``."""

    async def handle(request: web.Request) -> web.Response:
        return web.json_response(answer(await request.json()))

    app = web.Application()
    app.router.add_post(READ_BACK, handle)
    await fed.move_witness(await serve(app))


def cosigned(
    tree: MemoryTree,
    size: int,
    key: PrivateKey = WITNESS_KEY,
    *,
    log_key: PrivateKey | None = NADRA_KEY,
) -> str:
    """The checkpoint of ``tree`` at ``size`` signed by ``log_key`` (none if None), cosigned
    by ``key``."""
    checkpoint = Checkpoint(ORIGIN, size, tree.root(size))
    note = Note(checkpoint.text(), ()) if log_key is None else sign_checkpoint(checkpoint, log_key)
    cosignature = cosign(note, key, witness_name("PK"), 1_800_000_000)
    return Note(note.text, (*note.signatures, cosignature)).render()


def pages(tree: MemoryTree, size: int, note: str) -> Any:
    def answer(body: dict[str, Any]) -> dict[str, Any]:
        start, end = body["start"], min(body["end"], size)
        return {"checkpoint": note, "entries": [e.decode() for e in tree.entries[start:end]]}

    return answer


@pytest.mark.parametrize(
    ("answer", "error", "says"),
    [
        pytest.param(
            pages(FORK, 10, cosigned(HONEST, 10)),  # FORK agrees with HONEST on 6 entries
            RepairError,
            "do not produce the root the witness cosigned",
            id="entries-of-another-history",
        ),
        pytest.param(
            pages(HONEST, 10, cosigned(HONEST, 10, PrivateKey.generate())),
            WitnessUnavailableError,
            "no cosignature of its key",
            id="cosigned-by-another-key",
        ),
        # The witness's key alone: a history it made up, consistent with a root it cosigned.
        pytest.param(
            pages(FORK, 10, cosigned(FORK, 10, log_key=PrivateKey.generate())),
            WitnessUnavailableError,
            "not signed by a key of the log valid when it was cosigned",
            id="a-history-the-gateway-never-signed",
        ),
        pytest.param(
            pages(FORK, 10, cosigned(FORK, 10, log_key=None)),
            WitnessUnavailableError,
            "not signed by a key of the log",
            id="a-history-nobody-signed",
        ),
        pytest.param(
            pages(HONEST, 10, cosigned(HONEST, 10).replace("shahrah/PK/FED", "shahrah/PK/GOV")),
            WitnessUnavailableError,
            "answered a checkpoint of shahrah/PK/GOV/NADRA/gw1",
            id="another-logs-checkpoint",
        ),
        pytest.param(
            lambda body: {
                "checkpoint": cosigned(HONEST, 10),
                "entries": [HONEST.entries[0].decode()],
            },
            WitnessUnavailableError,
            "answered 1 entries from 4",
            id="fewer-entries-than-asked",
        ),
    ],
)
async def test_a_witness_answer_that_does_not_add_up_changes_nothing(
    federation: Federation, serve: Any, answer: Any, error: type[Exception], says: str
) -> None:
    fed = federation
    await restored(fed, backup=4, witnessed=10, since=2)
    before = await snapshot(fed)
    await fake_witness(fed, serve, answer)
    with pytest.raises(error, match=says):
        await repair(fed.db, LOG, fed.witness_client())
    assert await snapshot(fed) == before


async def test_a_checkpoint_that_changes_between_pages_stops_the_repair(
    federation: Federation, serve: Any
) -> None:
    """The witness cosigned more while the mirror was read: another process of the gateway
    is still running, and the pages read so far may be of another tree."""
    fed = federation
    await restored(fed, backup=4, witnessed=10, since=2)
    before = await snapshot(fed)
    first, then = pages(HONEST, 10, cosigned(HONEST, 10)), pages(HONEST, 11, cosigned(HONEST, 11))

    calls: list[int] = []

    def counted(body: dict[str, Any]) -> dict[str, Any]:
        calls.append(body["start"])
        return first(body) if len(calls) == 1 else then(body)

    await fake_witness(fed, serve, counted)
    with pytest.raises(ConflictError, match=r"newest checkpoint of \S+ changed during the repair"):
        await repair(fed.db, LOG, fed.witness_client())
    assert calls == [4, 7]
    assert await snapshot(fed) == before


async def test_only_the_gateways_own_member_reads_its_log_back(federation: Federation) -> None:
    fed = federation
    await submit(fed, HONEST, 0, 5)
    page = await fed.witness_client().read_back(LOG, 1, 4)
    assert (page.start, page.entries, page.checkpoint.size) == (1, HONEST.entries[1:4], 5)
    assert Note.parse(page.note.render()) == page.note

    lmc_key = PrivateKey.generate()
    async with transaction(fed.db) as s:
        await ops.add_key(s, KeyCreate(member=LMC_TAX.member, jwk=lmc_key.public().to_jwk()))
    await fed.publish()
    with pytest.raises(WitnessRefusedError, match="only PK/FED/NADRA may read back"):
        await fed.witness_client(key=lmc_key, client=LMC_TAX).read_back(LOG, 0, 3)
    unsigned = WitnessClient(fed.gateway_conf.current, fed.http)
    with pytest.raises(WitnessRefusedError, match="must be signed by PK/FED/NADRA"):
        await unsigned.read_back(LOG, 0, 3)
    with pytest.raises(WitnessRefusedError, match="only the central service audit-witness may"):
        await fed.witness_client().read_back("audit-witness", 0, 3)
    with pytest.raises(WitnessRefusedError, match="at most 250 entries"):
        await fed.witness_client().read_back(LOG, 0, 251)
    with pytest.raises(WitnessRefusedError, match="start 6 is beyond the 5 entries"):
        await fed.witness_client().read_back(LOG, 6, 7)


class MemoryMirror:
    """A witness's mirror of ``history``, in memory: what the repair reads back."""

    def __init__(self, history: list[bytes], page: int) -> None:
        self.tree = MemoryTree(history)
        self.note = Note.parse(cosigned(self.tree, self.tree.size))
        self.page = page  # at most this many entries an answer, whatever was asked

    async def read_back(self, log_id: str, start: int, end: int) -> Mirrored:
        size = self.tree.size
        checkpoint = Checkpoint(ORIGIN, size, self.tree.root(size))
        entries = self.tree.entries[start : min(end, start + self.page)]
        return Mirrored(self.note, checkpoint, 1_800_000_000, start, entries)


_example = iter(range(10**6))


@settings(max_examples=25)
@given(
    sizes=st.tuples(st.integers(0, 40), st.integers(0, 40), st.integers(0, 40)).map(sorted),
    since=st.integers(0, 12),
    page=st.integers(1, 4),
)
async def test_a_repair_stores_the_tree_of_the_witnessed_history_then_its_own(
    db: Sessions, sizes: list[int], since: int, page: int
) -> None:
    """Any restore: the first ``cosigned`` entries witnessed when the backup was made, the
    backup holding ``kept``, the witness ``witnessed``. The repaired log stores the very tree
    (every node, the head) of the witnessed history followed by the entries recorded since
    the restore, with the witness's checkpoint and no checkpoint of the abandoned history."""
    cosigned_size, kept, witnessed = sizes
    n = next(_example)
    name, reference = f"PK/FED/NADRA/restored{n}", f"PK/FED/NADRA/reference{n}"
    history = [b"witnessed %d" % i for i in range(witnessed)]
    own = [b"since the restore %d %d" % (n, i) for i in range(since)]
    async with transaction(db) as s:
        heads = {}
        for log in (name, reference):
            heads[log] = await store.create_log(s, log, store.LOCAL, ORIGIN)
        local, _ = await store.append(s, heads[name], history[:kept] + own)
        tree = MemoryTree(history[:kept] + own)
        for size in sorted({cosigned_size, kept, local.size} - {0}):
            note = sign_checkpoint(Checkpoint(ORIGIN, size, tree.root(size)), NADRA_KEY)
            await store.add_checkpoint(
                s,
                local,
                size,
                tree.root(size),
                note.render(),
                cosigned=note.render() if size <= cosigned_size else None,
            )
        await store.append(s, heads[reference], history + own)

    done = await repair(db, name, MemoryMirror(history, page))

    if kept == witnessed:  # the local log extends the witnessed one
        assert done is None
        return
    assert done is not None
    assert (done.diverged, done.moved, done.size) == (kept, since, witnessed + since)
    async with transaction(db, write=False) as s:
        repaired = await store.get_log(s, name)
        expected = await store.get_log(s, reference)
        nodes = []
        for head in (repaired, expected):
            rows = await s.execute(
                select(AuditNode.key, AuditNode.hash).where(AuditNode.log_id == head.id)
            )
            nodes.append({(key, bytes(value)) for key, value in rows})
        assert (repaired.size, repaired.root) == (expected.size, expected.root)
        assert nodes[0] == nodes[1]
        assert await store.entries(s, repaired, 0, repaired.size) == list(enumerate(history + own))
        kept_checkpoints = await store.checkpoints(s, repaired)
    assert [r.size for r in kept_checkpoints] == sorted({cosigned_size, kept, witnessed} - {0})


async def test_the_gateway_command_repairs_its_log_from_the_witness(
    federation: Federation, db_url: str, tmp_path: Path
) -> None:
    """``shahrah gateway repair-audit`` on a gateway's folder: its configuration, key,
    anchor and database, the real registry and witness."""
    fed = federation
    await restored(fed, backup=4, witnessed=10, since=3)
    anchor = tmp_path / "anchor.json"
    anchor.write_text(
        anchor_for().model_copy(update={"url": fed.registry_url + "/globalconf"}).dumps()
    )
    d = tmp_path / "gw"
    init = ["gateway", "init", "--data-dir", str(d), "--id", LOG, "--anchor", str(anchor)]
    made = CliRunner().invoke(main, [*init, "--no-passphrase"])
    assert made.exit_code == 0, made.output
    (d / "signing-key.pem").unlink()
    NADRA_KEY.save(d / "signing-key.pem", None)  # the member key the registry knows
    config = d / "gateway.toml"
    config.write_text(f'database = "{db_url}"\n' + config.read_text())

    def repair_audit() -> Result:
        args = ["gateway", "repair-audit", "--data-dir", str(d), "--no-passphrase"]
        return CliRunner().invoke(main, args)

    done = await asyncio.to_thread(repair_audit)
    assert done.exit_code == 0, done.output
    assert done.stderr.splitlines()[-1] == (
        f"audit log {LOG} repaired: it left the witnessed history at entry 4; 6 entries "
        "restored from the witness's mirror, 3 recorded since the restore moved after them; "
        "13 entries"
    )
    assert "10 of 10 witnessed entries" in done.stderr
    assert (await snapshot(fed)).entries == HONEST.entries[:10] + SINCE_RESTORE[:3]
    again = await asyncio.to_thread(repair_audit)
    assert again.exit_code == 0, again.output
    assert "already extends what the witness cosigned" in again.stderr
