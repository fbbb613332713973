"""Audit trail performance: durable group commit, proofs at a million entries, export checks.

1. Durable appends per second through AuditWriter, group commit against one
   transaction per append (``max_batch=1``), with the same number of
   concurrent appenders, rounds interleaved (target: >= 20x).
2. Inclusion and consistency proof generation from SQL on a log of
   ``--entries`` entries (default one million, bulk-loaded through
   store.append in large batches) (target: <= 1 ms).
3. Offline verification of a complete export of ``--export`` realistic
   audit events, against merely parsing the same file (target: >= 50,000
   entries/s).
4. The verifier's memory for each checkpoint it holds until the entries reach
   it: the peak while verifying an export checkpointed every 2 entries, less
   that of the same entries checkpointed every 1,000, per extra checkpoint;
   beside it, what the same checkpoints took in the dictionaries and sets the
   verifier held them in before, built in the same run.

    python -m bench.audit [--db URL] [--entries N] [--export N] [--rounds R]

SQLite files go in a temporary folder on the same file system as the
working directory (fsync must reach the disk to mean anything); pass
``--db postgresql://...`` to measure appends and proofs on PostgreSQL
instead (the database is wiped).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import itertools
import json
import os
import random
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from sqlalchemy import text

from audit import merkle, store
from audit.events import AuditEvent
from audit.export import write_export
from audit.mirror import Filters
from audit.note import Checkpoint, cosign, log_origin, sign_checkpoint, witness_name
from audit.verify import verify_export
from audit.writer import AuditWriter
from core.db import Sessions, create_engine, create_sync_engine, sessions, transaction, upgrade
from core.keys import PrivateKey
from shahrah.models import metadata

LOG = "PK/FED/NADRA/gw1"
_T = TypeVar("_T")
KEY = PrivateKey.generate()
WITNESS = PrivateKey.generate()


def _event(n: int) -> AuditEvent:
    return AuditEvent.model_validate(
        {
            "time": dt.datetime(2026, 11, 28, tzinfo=dt.UTC) + dt.timedelta(milliseconds=n),
            "gateway": LOG,
            "role": "provider",
            "message_id": f"msg-{n:09d}",
            "client": "PK/LG/LMC/property-tax",
            "service": "PK/FED/NADRA/civil-registry/person/v1",
            "method": "GET",
            "subject": "ps1:" + "A" * 43,
            "purpose": "identity-verification",
            "legal_basis": "consent",
            "consent_id": f"c-{n:09d}",
            "outcome": "delivered",
            "request_digest": "sha256:" + "B" * 43,
            "response_digest": "sha256:" + "C" * 43,
            "request_signature_digest": "sha256:" + "D" * 43,
            "response_signature_digest": "sha256:" + "E" * 43,
            "fields_released": ["/name", "/father_name", "/address", "/date_of_birth"],
        }
    )


def _entries(count: int) -> list[bytes]:
    """Realistic, distinct, canonical entries without paying for pydantic on each one."""
    template = _event(0).entry()
    marker = b"msg-000000000"
    return [template.replace(marker, b"msg-%09d" % n) for n in range(count)]


def _wipe(url: str) -> None:
    engine = create_sync_engine(url)
    try:
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
                conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
            else:
                for table in reversed(metadata.sorted_tables):
                    conn.execute(table.delete())
    finally:
        engine.dispose()


def _median_rounds(
    cases: dict[str, Callable[[], Awaitable[float]]], rounds: int
) -> dict[str, float]:
    """Seconds per operation, median over rounds, the cases interleaved round by round."""
    samples: dict[str, list[float]] = {name: [] for name in cases}

    async def run() -> None:
        for _ in range(rounds):
            for name, case in cases.items():
                samples[name].append(await case())

    asyncio.run(run())
    return {name: statistics.median(v) for name, v in samples.items()}


# --- 1. group commit ------------------------------------------------------------------------------


def bench_appends(url: str, *, appends: int, concurrency: int, rounds: int) -> None:
    entries = [_event(n) for n in range(appends)]

    def case(max_batch: int) -> Callable[[], Awaitable[float]]:
        async def once() -> float:
            _wipe(url)
            engine = create_engine(url, pool_size=4)
            db = sessions(engine)
            async with AuditWriter(
                db, LOG, KEY, origin=log_origin(LOG), max_batch=max_batch
            ) as writer:
                queue = iter(entries)

                async def appender() -> None:
                    for e in queue:
                        await writer.append(e)

                start = time.perf_counter()
                await asyncio.gather(*(appender() for _ in range(concurrency)))
                elapsed = time.perf_counter() - start
            await engine.dispose()
            return elapsed / appends

        return once

    result = _median_rounds(
        {"group commit": case(1000), "one transaction per append": case(1)}, rounds
    )
    group, single = result["group commit"], result["one transaction per append"]
    print(f"Durable appends, {concurrency} concurrent appenders, {appends} appends per round")
    print(f"{'case':<34}{'µs/append':>12}{'appends/s':>12}{'× baseline':>12}")
    for name, per in result.items():
        print(f"{name:<34}{per * 1e6:>12.1f}{1 / per:>12,.0f}{single / per:>12.1f}")
    print(f"group commit speed-up: {single / group:.1f}x (target >= 20x)\n")


# --- 2. proofs at a million entries ---------------------------------------------------------------


async def _load(db: Sessions, count: int, chunk: int = 50_000) -> float:
    entries = [b'{"n":%d}' % n for n in range(chunk)]
    start = time.perf_counter()
    async with transaction(db) as s:
        await store.create_log(s, LOG, store.LOCAL, log_origin(LOG))
    done = 0
    while done < count:
        n = min(chunk, count - done)
        async with transaction(db) as s:
            head = await store.get_log(s, LOG, lock=True)
            await store.append(s, head, [e + b" " * (done % 7) for e in entries[:n]])
        done += n
    return time.perf_counter() - start


def bench_proofs(url: str, *, count: int, rounds: int, ops: int) -> None:
    async def measure() -> dict[str, float]:
        _wipe(url)
        engine = create_engine(url)
        db = sessions(engine)
        loaded = await _load(db, count)
        print(f"Proofs from SQL on a log of {count:,} entries (bulk load: {loaded:.1f} s)")
        rng = random.Random(7)
        samples: dict[str, list[float]] = {"inclusion proof": [], "consistency proof": []}
        async with transaction(db, write=False) as s:
            head = await store.get_log(s, LOG)
            root = head.root
            for _ in range(rounds):
                start = time.perf_counter()
                for _ in range(ops):
                    index = rng.randrange(count)
                    proof = await store.inclusion_proof(s, head, index, count)
                samples["inclusion proof"].append((time.perf_counter() - start) / ops)
                leaf = (await store.entries(s, head, index, index + 1))[0][1]
                merkle.verify_inclusion(merkle.leaf_hash(leaf), index, count, proof, root)
                start = time.perf_counter()
                for _ in range(ops):
                    size1 = rng.randrange(1, count)
                    await store.consistency_proof(s, head, size1, count)
                samples["consistency proof"].append((time.perf_counter() - start) / ops)
        await engine.dispose()
        return {k: statistics.median(v) for k, v in samples.items()}

    result = asyncio.run(measure())
    for name, per in result.items():
        print(f"{name:<34}{per * 1e3:>9.3f} ms (target <= 1 ms)")
    print()


# --- 3. export verification -----------------------------------------------------------------------


async def _mirror(db: Sessions, entries: list[bytes], every: int = 1000) -> None:
    """A witnessed mirror log, as the witness would have built it: a checkpoint every
    ``every`` entries (a hundred checkpoints to a transaction, to build many quickly)."""
    name = witness_name("PK")
    async with transaction(db) as s:
        head = await store.create_log(s, LOG, store.MIRROR, log_origin(LOG))
    for first in range(0, len(entries), every * 100):
        async with transaction(db) as s:
            head = await store.get_log(s, LOG, store.MIRROR, lock=True)
            for start in range(first, min(first + every * 100, len(entries)), every):
                head, _ = await store.append(s, head, entries[start : start + every])
                note = sign_checkpoint(Checkpoint(head.origin, head.size, head.root), KEY)
                cosigned = note.with_signatures([cosign(note, WITNESS, name, 1800000000)])
                await store.add_checkpoint(
                    s,
                    head,
                    head.size,
                    head.root,
                    note.render(),
                    cosigned=cosigned.render(),
                    cosigned_at=dt.datetime.now(dt.UTC),
                    key_jwk=json.dumps(KEY.public().to_jwk()),
                )


def _export(folder: Path, entries: list[bytes], every: int) -> tuple[Path, float]:
    """A complete export of a mirror of ``entries`` checkpointed every ``every``, and the
    seconds writing it took."""
    name = f"export-{len(entries)}-every-{every}"  # a log of its own, never one built before
    url = f"sqlite:///{folder / f'{name}.db'}"
    upgrade(url)
    path = folder / f"{name}.jsonl"

    async def write() -> float:
        engine = create_engine(url)
        db = sessions(engine)
        await _mirror(db, entries, every)
        start = time.perf_counter()
        with path.open("wb") as f:
            await write_export(
                db,
                f,
                filters=Filters(),
                pseudonymize=None,
                witness_key=WITNESS,
                witness_name=witness_name("PK"),
                globalconf=None,
            )
        await engine.dispose()
        return time.perf_counter() - start

    return path, asyncio.run(write())


def bench_verify(folder: Path, *, count: int, rounds: int) -> None:
    path, exported = _export(folder, _entries(count), 1000)
    size = path.stat().st_size

    def parse_only() -> None:
        with path.open("rb") as f:
            for line in f:
                json.loads(line)

    times: dict[str, list[float]] = {"verify_export": [], "parse the JSON lines only": []}
    for _ in range(rounds):
        start = time.perf_counter()
        report = verify_export(path)
        times["verify_export"].append(time.perf_counter() - start)
        assert report.ok, report.problems
        start = time.perf_counter()
        parse_only()
        times["parse the JSON lines only"].append(time.perf_counter() - start)
    print(
        f"Complete export of {count:,} audit events ({size / 2**20:.0f} MiB, "
        f"{count // 1000} checkpoints; written at {count / exported:,.0f} entries/s)"
    )
    base = statistics.median(times["parse the JSON lines only"])
    for name, values in times.items():
        t = statistics.median(values)
        print(f"{name:<34}{count / t:>12,.0f} entries/s{t / base:>8.2f}x parse time")
    print("target: verify_export >= 50,000 entries/s\n")


# --- 4. the verifier's memory per checkpoint ------------------------------------------------------


def _peak(action: Callable[[], _T]) -> tuple[_T, int]:
    """What ``action`` returned, and the most memory Python held at once while it ran."""
    tracemalloc.start()
    try:
        result = action()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _held_as_before(count: int) -> dict[str, object]:
    """``count`` verified checkpoints in the shapes the verifier kept them in before it used
    flat arrays: roots by size, every size in order, the consistency proofs seen as pairs,
    and the sizes compared with the entries."""
    sizes = list(range(2, 2 * count + 1, 2))
    return {
        "roots": {size: os.urandom(32) for size in sizes},
        "sizes": sizes,
        "proven": set(itertools.pairwise(sizes)),
        "checked": set(sizes),
    }


def bench_verifier_memory(folder: Path, *, count: int) -> None:
    entries = _entries(count)
    few, many = (_export(folder, entries, every)[0] for every in (1000, 2))
    extra = count // 2 - count // 1000
    (report_few, peak_few), (report_many, peak_many) = (
        _peak(functools.partial(verify_export, path)) for path in (few, many)
    )
    for report in (report_few, report_many):
        assert report.ok, report.problems
    now = (peak_many - peak_few) / extra
    before = _peak(functools.partial(_held_as_before, extra))[1] / extra
    print(
        f"Verifier memory per checkpoint held ({count:,} entries checkpointed every 2 against "
        f"every 1,000; {extra:,} more checkpoints)"
    )
    print(f"{'flat arrays (the verifier)':<34}{now:>9.0f} bytes")
    print(f"{'dicts and sets, as before':<34}{before:>9.0f} bytes{before / now:>8.1f}x")
    per_year = 365 * 24 * 3600 // 10
    print(
        f"a year checkpointed every 10 s ({per_year:,} checkpoints): "
        f"{now * per_year / 2**20:,.0f} MiB against {before * per_year / 2**20:,.0f} MiB\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", help="postgresql://... to measure appends and proofs there")
    parser.add_argument("--entries", type=int, default=1_000_000, help="log size for proofs")
    parser.add_argument("--export", type=int, default=200_000, help="entries in the export")
    parser.add_argument(
        "--checkpointed", type=int, default=40_000, help="entries of the memory measure"
    )
    parser.add_argument("--appends", type=int, default=2000, help="appends per round")
    parser.add_argument("--concurrency", type=int, default=100, help="concurrent appenders")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs\n")
    with tempfile.TemporaryDirectory(dir=Path.cwd(), prefix=".bench-audit-") as tmp:
        folder = Path(tmp)
        url = args.db or f"sqlite:///{folder / 'bench.db'}"
        upgrade(url)
        bench_appends(url, appends=args.appends, concurrency=args.concurrency, rounds=args.rounds)
        bench_proofs(url, count=args.entries, rounds=args.rounds, ops=200)
        bench_verify(folder, count=args.export, rounds=args.rounds)
        bench_verifier_memory(folder, count=args.checkpointed)


if __name__ == "__main__":
    main()
