"""Regulator exports and the offline verifier: honest exports verify; edited database rows,
edited files and forged or inconsistent checkpoints are each named."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select, update

from audit import export as export_module
from audit import merkle, store
from audit.export import write_export
from audit.export_format import EXPORT_TYP, seal_payload
from audit.mirror import Filters
from audit.models import AuditEntry
from audit.note import (
    Checkpoint,
    Note,
    b64encode_hash,
    cosign,
    log_origin,
    sign_checkpoint,
    witness_name,
)
from audit.verify import verify_export
from core import jws
from core.db import transaction
from core.errors import BadRequestError
from core.keys import KeySet
from tests.audit.conftest import WITNESS_KEY, Federation
from tests.audit.events import CITIZEN, GATEWAY, PSEUDONYMS, event
from tests.registry.federation import NADRA_KEY
from tests.registry.test_globalconf import anchor_for

LOG = str(GATEWAY)
N = 21


@pytest.fixture
async def witnessed(federation: Federation) -> Federation:
    """21 events of NADRA's gateway, checkpointed every 4 and all witnessed and mirrored."""
    async with federation.nadra_writer(checkpoint_every=4) as writer:
        for n in range(N):
            await writer.append(
                event(n, subject=CITIZEN if n % 3 == 0 else _other(n), denied=n == 9)
            )
    return federation


def _other(n: int) -> Any:
    from core.ids import Cnic

    return Cnic(f"42101-76543{n:02d}-3")


async def export(
    fed: Federation, path: Path, *, witness: str = witness_name("PK"), **filters: Any
) -> Path:
    with path.open("wb") as f:
        await write_export(
            fed.db,
            f,
            filters=Filters.model_validate(filters),
            pseudonymize=PSEUDONYMS,
            witness_key=WITNESS_KEY,
            witness_name=witness,
            globalconf=fed.audit_conf.current().signed,
        )
    return path


def problems(path: Path, **kw: Any) -> list[str]:
    return verify_export(path, **kw).problems


async def test_a_complete_export_verifies_offline(witnessed: Federation, tmp_path: Path) -> None:
    path = await export(witnessed, tmp_path / "all.jsonl")
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x["type"] for x in lines[:2]] == ["header", "log"]
    assert lines[1]["mode"] == "complete"
    assert lines[1]["tree_size"] == N
    assert sum(x["type"] == "checkpoint" for x in lines) == 6  # 4, 8, ..., 20, 21
    assert sum(x["type"] == "consistency" for x in lines) == 5
    assert sum(x["type"] == "entry" for x in lines) == N
    assert CITIZEN.value not in path.read_text()
    report = verify_export(path)
    assert report.ok, report.problems
    assert (report.logs, report.entries, report.checkpoints) == (1, N, 6)
    assert "keys taken from the file itself" in report.notes[0]
    anchored = verify_export(path, anchor=anchor_for())
    assert anchored.ok, anchored.problems
    assert "checked against the anchor of PK" in anchored.notes[0]
    pinned = verify_export(path, witness_keys=KeySet([WITNESS_KEY.public()]))
    assert pinned.ok


async def test_an_export_is_one_snapshot_while_the_witness_goes_on(
    witnessed: Federation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log grows and is cosigned again after the export read the heads: on PostgreSQL's
    default isolation it then saw a checkpoint larger than the log it had read."""
    real = export_module.store.logs

    async def logs_then_more(s: Any, kind: str) -> Any:
        heads = await real(s, kind)
        async with witnessed.nadra_writer(checkpoint_every=4) as writer:
            for n in range(N, N + 8):
                await writer.append(event(n))
        return heads

    monkeypatch.setattr(export_module.store, "logs", logs_then_more)
    path = await export(witnessed, tmp_path / "during.jsonl")
    report = verify_export(path)
    assert report.ok, report.problems
    assert report.entries == N  # as the log stood when the export began


async def test_checkpoints_read_a_page_at_a_time_make_the_same_export(
    witnessed: Federation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = await export(witnessed, tmp_path / "whole.jsonl")
    monkeypatch.setattr(export_module, "_PAGE", 2)  # six checkpoints: three pages, and a rest
    paged = await export(witnessed, tmp_path / "paged.jsonl")

    def body(path: Path) -> list[str]:
        return [x for x in path.read_text().splitlines() if '"type":"header"' not in x][:-1]

    assert body(paged) == body(whole)
    assert verify_export(paged).ok


async def test_a_selected_export_carries_inclusion_proofs(
    witnessed: Federation, tmp_path: Path
) -> None:
    path = await export(witnessed, tmp_path / "citizen.jsonl", cnic=CITIZEN)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    log = lines[1]
    assert log["mode"] == "selected"
    assert log["indices"] == list(range(0, N, 3))
    entries = [x for x in lines if x["type"] == "entry"]
    assert all(4 <= len(x["proof"]) <= 5 for x in entries)
    assert verify_export(path, anchor=anchor_for()).ok
    denied = await export(witnessed, tmp_path / "denied.jsonl", outcome="denied")
    assert [
        x["index"] for x in map(json.loads, denied.read_text().splitlines()) if x["type"] == "entry"
    ] == [9]
    assert verify_export(denied).ok


async def test_a_selection_too_large_for_one_line_is_refused_with_a_way_out(
    witnessed: Federation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The selected log's indices are one line, which the verifier reads only up to its
    bound: a selection past MAX_SELECTED is refused, not written unverifiable."""
    monkeypatch.setattr(export_module, "MAX_SELECTED", N // 3 + 1)
    assert verify_export(await export(witnessed, tmp_path / "fits.jsonl", cnic=CITIZEN)).ok
    with pytest.raises(BadRequestError, match=f"more than {N // 3 + 1} entries of log {LOG}"):
        await export(witnessed, tmp_path / "too-many.jsonl", outcome="delivered")
    # Whole logs carry no list, so they are never refused for their size.
    assert verify_export(await export(witnessed, tmp_path / "whole.jsonl")).ok


async def test_with_an_anchor_the_witness_must_be_the_federations_own(
    witnessed: Federation, tmp_path: Path
) -> None:
    path = await export(witnessed, tmp_path / "renamed.jsonl", witness="shahrah/XX/audit-witness")
    assert (
        "the header names witness 'shahrah/XX/audit-witness'; the anchored federation's "
        "witness is 'shahrah/PK/audit-witness'"
    ) in problems(path, anchor=anchor_for())


# --- tampering with the mirror's rows ---------------------------------------------------------


async def _mirror_rows(fed: Federation, change: Any) -> None:
    async with transaction(fed.db) as s:
        head = await store.get_log(s, LOG, store.MIRROR)
        await change(s, head.id)


async def test_an_edited_row_is_named(witnessed: Federation, tmp_path: Path) -> None:
    async def edit(s: Any, log_id: int) -> None:
        await s.execute(
            update(AuditEntry)
            .where(AuditEntry.log_id == log_id, AuditEntry.idx == 5)
            .values(entry=event(5, denied=True).entry())
        )

    await _mirror_rows(witnessed, edit)
    found = problems(await export(witnessed, tmp_path / "x.jsonl"))
    assert found == [f"{LOG} entry #5: changed (its content does not hash to its leaf hash)"]
    found = problems(await export(witnessed, tmp_path / "y.jsonl", cnic=CITIZEN))
    assert f"{LOG} entry #5" not in " ".join(found)  # entry 5 is not the citizen's
    found = problems(await export(witnessed, tmp_path / "z.jsonl", service=str(event(0).service)))
    assert found[0] == f"{LOG} entry #5: changed (its content does not hash to its leaf hash)"


async def test_a_deleted_row_is_named(witnessed: Federation, tmp_path: Path) -> None:
    async def drop(s: Any, log_id: int) -> None:
        await s.execute(delete(AuditEntry).where(AuditEntry.log_id == log_id, AuditEntry.idx == 7))

    await _mirror_rows(witnessed, drop)
    found = problems(await export(witnessed, tmp_path / "x.jsonl"))
    assert f"{LOG} entry #7: missing" in found
    assert any("could not be checked" in p for p in found)


async def test_reordered_rows_are_caught(witnessed: Federation, tmp_path: Path) -> None:
    async def swap(s: Any, log_id: int) -> None:
        rows = {
            r.idx: (r.entry, r.leaf_hash)
            for r in await s.scalars(
                select(AuditEntry).where(AuditEntry.log_id == log_id, AuditEntry.idx.in_([12, 13]))
            )
        }
        for idx, other in ((12, 13), (13, 12)):
            entry, leaf = rows[other]
            await s.execute(
                update(AuditEntry)
                .where(AuditEntry.log_id == log_id, AuditEntry.idx == idx)
                .values(entry=entry, leaf_hash=leaf)
            )

    await _mirror_rows(witnessed, swap)
    found = problems(await export(witnessed, tmp_path / "x.jsonl"))
    assert found[0] == (
        f"{LOG}: entries #12..#15 do not produce the root of the checkpoint at size 16 "
        "(an entry was changed, added, removed or reordered)"
    )
    found = problems(await export(witnessed, tmp_path / "y.jsonl", cnic=CITIZEN))
    assert found == [
        f"{LOG} entry #12: not in the witnessed log (root does not match the proof): "
        "changed or forged"
    ]


# --- tampering with the file ------------------------------------------------------------------


def _rewrite(path: Path, change: Any) -> Path:
    lines = path.read_text().splitlines(keepends=True)
    out = path.with_name("tampered-" + path.name)
    out.write_text("".join(change(lines)))
    return out


def _entry_line(lines: list[str], index: int) -> int:
    return next(
        n
        for n, x in enumerate(lines)
        if json.loads(x)["type"] == "entry" and json.loads(x)["index"] == index
    )


DIGEST = "the file was edited after export: its digest does not match"


async def test_edits_of_the_file_are_each_named(witnessed: Federation, tmp_path: Path) -> None:
    path = await export(witnessed, tmp_path / "all.jsonl")

    def changed(lines: list[str]) -> list[str]:
        n = _entry_line(lines, 3)
        line = json.loads(lines[n])
        line["entry"] = line["entry"].replace("msg-3", "msg-X")
        return [*lines[:n], json.dumps(line) + "\n", *lines[n + 1 :]]

    def missing(lines: list[str]) -> list[str]:
        n = _entry_line(lines, 3)
        return [*lines[:n], *lines[n + 1 :]]

    def duplicated(lines: list[str]) -> list[str]:
        n = _entry_line(lines, 3)
        return [*lines[: n + 1], lines[n], *lines[n + 1 :]]

    def reordered(lines: list[str]) -> list[str]:
        n = _entry_line(lines, 3)
        return [*lines[:n], lines[n + 1], lines[n], *lines[n + 2 :]]

    cases = {
        changed: [f"{LOG} entry #3: changed (its content does not hash to its leaf hash)", DIGEST],
        missing: [
            f"{LOG} entry #3: missing",
            f"{LOG}: checkpoints at sizes 4..21 could not be checked against the entries",
            f"the export declares {N} entries but holds {N - 1}",
            DIGEST,
        ],
        duplicated: [
            f"{LOG} entry #3: duplicated (found after entry #3)",
            f"{LOG}: checkpoints at sizes 4..21 could not be checked against the entries",
            f"the export declares {N} entries but holds {N + 1}",
            DIGEST,
        ],
        reordered: [
            f"{LOG} entry #3: reordered (found after entry #4)",
            f"{LOG}: checkpoints at sizes 4..21 could not be checked against the entries",
            DIGEST,
        ],
    }
    for change, expected in cases.items():
        assert problems(_rewrite(path, change)) == expected, change.__name__

    def resealed(lines: list[str]) -> list[str]:
        """An edit with the digest recomputed: only the witness's signature can tell."""
        edited = changed(lines)
        end = json.loads(edited[-1])
        end["sha256"] = hashlib.sha256("".join(edited[:-1]).encode()).hexdigest()
        return [*edited[:-1], json.dumps(end) + "\n"]

    assert problems(_rewrite(path, resealed)) == [
        f"{LOG} entry #3: changed (its content does not hash to its leaf hash)",
        "the export's closing signature by the witness does not verify",
    ]
    truncated = _rewrite(path, lambda lines: lines[:-1])
    assert problems(truncated)[-1] == "the export is truncated: it has no end line"


async def test_forged_and_inconsistent_checkpoints_are_named(
    witnessed: Federation, tmp_path: Path
) -> None:
    path = await export(witnessed, tmp_path / "all.jsonl")

    def checkpoint_line(lines: list[str], size: int) -> int:
        return next(
            n
            for n, x in enumerate(lines)
            if json.loads(x)["type"] == "checkpoint"
            and Checkpoint.parse(Note.parse(json.loads(x)["note"]).text).size == size
        )

    def forged(lines: list[str]) -> list[str]:
        n = checkpoint_line(lines, 8)
        line = json.loads(lines[n])
        text, _, sigs = line["note"].partition("\n\n")
        size_line = text.split("\n")
        size_line[2] = "A" * 43 + "="
        line["note"] = "\n".join(size_line) + "\n\n" + sigs
        return [*lines[:n], json.dumps(line) + "\n", *lines[n + 1 :]]

    def equivocated(lines: list[str]) -> list[str]:
        """The log and the witness both sign another root at size 8 (as if both lied)."""
        n = checkpoint_line(lines, 8)
        note = sign_checkpoint(Checkpoint(log_origin(LOG), 8, b"\x07" * 32), NADRA_KEY)
        both = note.with_signatures([cosign(note, WITNESS_KEY, witness_name("PK"), 1800000000)])
        line = {"type": "checkpoint", "log_id": LOG, "note": both.render()}
        return [*lines[:n], json.dumps(line) + "\n", *lines[n + 1 :]]

    found = problems(_rewrite(path, forged))
    assert found[0] == (
        f"{LOG} checkpoint at size 8: forged: the signature of shahrah/PK/FED/NADRA/gw1 does "
        "not verify"
    )
    found = problems(_rewrite(path, equivocated))
    assert found[:3] == [
        f"{LOG}: checkpoints at sizes 4 and 8 are inconsistent: root2 does not match the proof",
        f"{LOG}: checkpoints at sizes 8 and 12 are inconsistent: root2 does not match the proof",
        f"{LOG}: entries #4..#7 do not produce the root of the checkpoint at size 8 (an entry "
        "was changed, added, removed or reordered)",
    ]


async def test_keys_the_anchor_does_not_vouch_for_are_refused(
    witnessed: Federation, tmp_path: Path
) -> None:
    path = await export(witnessed, tmp_path / "all.jsonl")
    other_witness = KeySet([NADRA_KEY.public()])
    found = problems(path, witness_keys=other_witness)
    assert found[0] == f"the export names witness key {WITNESS_KEY.kid}, which is not trusted"
    assert f"{LOG} checkpoint at size 4: no valid cosignature" in found[1]


def _sealed_again(lines: list[str]) -> list[str]:
    """Seal edited lines with the witness key itself: the per-log checks must stand alone."""
    header, end = json.loads(lines[0]), json.loads(lines[-1])
    body = lines[:-1]
    end["entries"] = sum(json.loads(x)["type"] == "entry" for x in body)
    end["sha256"] = hashlib.sha256("".join(body).encode()).hexdigest()
    payload = seal_payload(header["created_at"], end["entries"], end["sha256"], witness_name("PK"))
    end["signature"] = jws.sign(payload, WITNESS_KEY, typ=EXPORT_TYP, detached=True)
    return [*body, json.dumps(end) + "\n"]


async def test_entries_no_checkpoint_covers_are_refused_even_when_resealed(
    witnessed: Federation, tmp_path: Path
) -> None:
    path = await export(witnessed, tmp_path / "all.jsonl")
    pinned = {"witness_keys": KeySet([WITNESS_KEY.public()])}
    assert problems(_rewrite(path, _sealed_again), **pinned) == []

    def fabricated(lines: list[str]) -> list[str]:
        """Two entries past the newest checkpoint (size 21), with matching leaf hashes."""
        last = json.loads(lines[_entry_line(lines, N - 1)])
        extra = []
        for index in (N, N + 1):
            text = last["entry"].replace(f"msg-{N - 1}", f"msg-{index}")
            leaf = b64encode_hash(merkle.leaf_hash(text.encode()))
            extra.append(json.dumps(last | {"index": index, "entry": text, "leaf_hash": leaf}))
        return _sealed_again([*lines[:-1], *(x + "\n" for x in extra), lines[-1]])

    assert problems(_rewrite(path, fabricated), **pinned) == [
        f"{LOG} entry #{N}..#{N + 1}: beyond the witnessed tree size {N} (no checkpoint covers it)"
    ]
