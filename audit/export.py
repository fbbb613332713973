"""Writing a regulator export from the audit server's mirror (format: audit.export_format).

Only witnessed history is exported: each log up to the newest checkpoint the
witness cosigned. When the filters only choose logs (gateway, member) the
export is *complete* (every entry of each log); otherwise it holds the
matching entries, each with its inclusion proof. Everything is read in one
transaction and streamed, so exports of millions of entries need little memory.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import IO, Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from audit import store
from audit.export_format import EXPORT_TYP, FORMAT, seal_payload
from audit.mirror import Filters
from audit.models import AuditCheckpoint, AuditEntry, AuditEventIndex
from audit.note import b64encode_hash
from audit.store import LogHead
from core import jws
from core.db import Sessions, transaction, utcnow
from core.errors import BadRequestError, ShahrahError
from core.ids import GatewayId
from core.keys import PrivateKey
from core.pseudonym import Pseudonymizer

__all__ = ["ExportSummary", "write_export"]

_PAGE = 1000  # checkpoints read per query
PROGRESS_EVERY = 4096  # entries between two progress reports
#: The most entries a selected log may hold: its list of indices is one line, which must stay
#: well within what the verifier reads (audit.verify.MAX_LINE; 11 bytes an index at most).
MAX_SELECTED = 2_000_000

Progress = Callable[[int], None]  # entries written so far


@dataclass(frozen=True)
class ExportSummary:
    logs: int
    entries: int
    checkpoints: int
    sha256: str


class _Out:
    """Writes JSON lines and hashes exactly the bytes written."""

    def __init__(self, out: IO[bytes], progress: Progress | None = None) -> None:
        self.out = out
        self.sha256 = hashlib.sha256()
        self.progress = progress
        self.entries = 0

    def line(self, value: dict[str, Any]) -> None:
        data = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        self.out.write(data)
        self.sha256.update(data)
        if value["type"] == "entry":
            self.entries += 1
            if self.progress is not None and self.entries % PROGRESS_EVERY == 0:
                self.progress(self.entries)


def _chooses(log: LogHead, filters: Filters) -> bool:
    if filters.gateway is None and filters.member is None:
        return True
    try:
        gateway = GatewayId.parse(log.name)
    except ShahrahError:
        return False  # a central service's log belongs to no gateway or member
    if filters.gateway is not None and gateway != filters.gateway:
        return False
    return filters.member is None or gateway.member == filters.member


async def write_export(
    sessions: Sessions,
    out: IO[bytes],
    *,
    filters: Filters,
    pseudonymize: Pseudonymizer | None,
    witness_key: PrivateKey,
    witness_name: str,
    globalconf: str | None,
    now: dt.datetime | None = None,
    progress: Progress | None = None,
) -> ExportSummary:
    """Write the export of what ``filters`` choose to ``out``; returns what it holds.
    ``progress``, if given, is told the number of entries written every
    :data:`PROGRESS_EVERY` entries and once at the end."""
    created = (now or utcnow()).astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    writer = _Out(out, progress)
    writer.line(
        {
            "type": "header",
            "format": FORMAT,
            "created_at": created,
            "query": filters.model_dump(mode="json", exclude_none=True, exclude={"cnic"})
            | ({"cnic": "(pseudonymised)"} if filters.cnic else {}),
            "witness": {"name": witness_name, "jwk": witness_key.public().to_jwk()},
            "globalconf": globalconf,
        }
    )
    complete = filters.whole_logs()
    conditions = filters.conditions(pseudonymize)
    entries = checkpoints = exported_logs = 0
    async with transaction(sessions, write=False) as s:
        for head in await store.logs(s, store.MIRROR):
            if not _chooses(head, filters):
                continue
            latest = await store.latest_checkpoint(s, head, cosigned=True)
            if latest is None:
                continue
            size = latest.size
            indices = None if complete else await _matching(s, head, conditions, size)
            if indices == []:
                continue
            exported_logs += 1
            checkpoints += await _log_head(s, writer, head, size, indices)
            entries += await _entries(s, writer, head, size, indices)
    if progress is not None:
        progress(entries)
    digest = writer.sha256.hexdigest()
    signature = jws.sign(
        seal_payload(created, entries, digest, witness_name),
        witness_key,
        typ=EXPORT_TYP,
        detached=True,
    )
    end = {"type": "end", "entries": entries, "sha256": digest, "signature": signature}
    out.write(json.dumps(end, separators=(",", ":")).encode() + b"\n")
    return ExportSummary(exported_logs, entries, checkpoints, digest)


async def _matching(s: AsyncSession, head: LogHead, conditions: list[Any], size: int) -> list[int]:
    i = AuditEventIndex
    rows = list(
        await s.scalars(
            select(i.idx)
            .where(i.log_id == head.id, i.idx < size, *conditions)
            .order_by(i.idx)
            .limit(MAX_SELECTED + 1)
        )
    )
    if len(rows) > MAX_SELECTED:
        # Refused (the caller discards what was written) rather than a file no verifier reads.
        raise BadRequestError(
            f"the search matches more than {MAX_SELECTED:,} entries of log {head.name}: "
            "narrow it (a shorter period, one service), or export whole logs "
            "(no filters but gateway or member)"
        )
    return rows


async def _log_head(
    s: AsyncSession, writer: _Out, head: LogHead, size: int, indices: list[int] | None
) -> int:
    """The log line, its witnessed checkpoints up to ``size`` and the proofs between them.

    A busy log has millions of checkpoints: they are read a page at a time, once for their
    lines and once for the proofs, so memory stays that of a page. The transaction is one
    snapshot, so the passes and the keys' query read the same rows."""
    keys = sorted(await store.checkpoint_keys(s, head, upto=size))
    line: dict[str, Any] = {
        "type": "log",
        "log_id": head.name,
        "origin": head.origin,
        "tree_size": size,
        "keys": [json.loads(k) for k in keys],
        "mode": "complete" if indices is None else "selected",
    }
    if indices is not None:
        line["indices"] = indices
    writer.line(line)
    count = 0
    async for r in _cosigned(s, head, size):
        writer.line({"type": "checkpoint", "log_id": head.name, "note": r.cosigned})
        count += 1
    previous: AuditCheckpoint | None = None
    async for r in _cosigned(s, head, size):
        if previous is not None:
            proof = await store.consistency_proof(s, head, previous.size, r.size)
            writer.line(
                {
                    "type": "consistency",
                    "log_id": head.name,
                    "size1": previous.size,
                    "size2": r.size,
                    "proof": [b64encode_hash(h) for h in proof],
                }
            )
        previous = r
    return count


async def _cosigned(s: AsyncSession, head: LogHead, size: int) -> AsyncIterator[AuditCheckpoint]:
    """The log's cosigned checkpoints up to ``size``, smallest first, a page at a time."""
    after = -1
    while True:
        page = await store.checkpoints(s, head, after=after, cosigned=True, limit=_PAGE)
        for r in page:
            if r.size > size:
                return
            yield r
        if len(page) < _PAGE:
            return
        after = page[-1].size


def _entry_line(name: str, index: int, leaf: bytes, entry: bytes) -> dict[str, Any]:
    return {
        "type": "entry",
        "log_id": name,
        "index": index,
        "leaf_hash": b64encode_hash(leaf),
        "entry": entry.decode("utf-8"),
    }


async def _entries(
    s: AsyncSession, writer: _Out, head: LogHead, size: int, indices: list[int] | None
) -> int:
    if indices is None:
        count = 0
        async for index, leaf, entry in store.stream_entries(s, head, 0, size):
            writer.line(_entry_line(head.name, index, leaf, entry))
            count += 1
        return count
    for index in indices:
        row = await s.get(AuditEntry, (head.id, index))
        if row is None:
            raise store.LogStorageError(f"audit log {head.name!r} is missing entry {index}")
        line = _entry_line(head.name, index, row.leaf_hash, bytes(row.entry))
        proof = await store.inclusion_proof(s, head, index, size)
        line["proof"] = [b64encode_hash(h) for h in proof]
        writer.line(line)
    return len(indices)
