"""File drops against real files written while the ingester runs, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
import tempfile
import threading
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from adapters import drops, store
from adapters.base import BackendRequest
from adapters.config import Adapters, load_adapters
from adapters.drops import FileSource
from adapters.records import FixedWidthFormat
from core.db import transaction
from core.ids import ClientId, ServiceId
from tests.adapters.conftest import SCHEMAS, write

TAX = ServiceId.parse("PK/LG/LMC/property-tax/assessment/v1")
BIRTH = ServiceId.parse("PK/PROV/LGCD/birth-registry/birth/v1")
CLIENT = ClientId.parse("PK/FED/NADRA/civil-registry")

FIXED = """
adapter: 1
state: "${STATE}"
services:
  PK/LG/LMC/property-tax/assessment/v1:
    kind: files
    directory: drops
    pattern: "*.DAT"
    ready: ${READY}
    settle_seconds: 0.3
    dead_letter: rejects
    response_schema: SCHEMA
    record:
      format: fixed-width
      encoding: cp037
      record_length: 60
      separator: none
      trailer: {value: TRL, count_start: 4, count_length: 6}
      fields:
        - {name: ID, start: 1, length: 14}
        - {name: CNIC, start: 15, length: 13, type: unsigned}
        - {name: NAME, start: 28, length: 20}
        - {name: YEAR, start: 48, length: 4, type: unsigned}
        - {name: DUE, start: 52, length: 5, type: packed}
        - {name: STATUS, start: 57, length: 1}
    key: /property_id
    mapping:
      /property_id: {from: ID, transforms: [trim], required: true}
      /fiscal_year: {value: "2024-25"}
      /owner_cnic: {from: CNIC, transforms: [cnic], required: true}
      /owner_name/en: {from: NAME, transforms: [collapse, title], required: true}
      /address/line1: {value: 12 Gulberg}
      /address/district: {value: Lahore}
      /address/province: {value: Punjab}
      /rating_area: {value: Gulberg}
      /category: {value: commercial}
      /annual_rental_value: {value: 0}
      /tax_due: {from: DUE, as: integer, required: true}
      /status: {from: STATUS, transforms: [{map: {P: paid, U: assessed}}], required: true}
    routes:
      GET /assessments/{id}:
        params:
          id: {transforms: [upper]}
""".replace("SCHEMA", str(SCHEMAS / "pk.lmc.property-tax-assessment.json"))


async def _tax(
    tmp_path: Path, db_url: str, ready: str, archive: str | None = None
) -> AsyncIterator[Adapters]:
    text = FIXED.replace("dead_letter: rejects", f"dead_letter: rejects\n    archive: {archive}")
    config = write(tmp_path / "tax.yaml", text if archive else FIXED)
    adapters = await load_adapters(config, environ={"STATE": db_url, "READY": ready}, migrate=False)
    yield adapters
    await adapters.close()


@pytest.fixture
async def tax(tmp_path: Path, db_url: str) -> AsyncIterator[Adapters]:
    async for adapters in _tax(tmp_path, db_url, "stable"):
        yield adapters


@pytest.fixture
async def marked(tmp_path: Path, db_url: str) -> AsyncIterator[Adapters]:
    """The property-tax extracts with ``ready: marker``."""
    async for adapters in _tax(tmp_path, db_url, "marker"):
        yield adapters


@pytest.fixture
async def archived(tmp_path: Path, db_url: str) -> AsyncIterator[Adapters]:
    """The property-tax extracts with ``ready: marker``, moved to ``archive`` once handled."""
    async for adapters in _tax(tmp_path, db_url, "marker", archive="archive"):
        yield adapters


def layout(adapters: Adapters) -> FixedWidthFormat:
    source = adapters.file_sources[0]
    assert isinstance(source.spec.record, FixedWidthFormat)
    return source.spec.record


def record(fmt: FixedWidthFormat, i: int, **over: Any) -> bytes:
    values = {
        "ID": f"LHR-GLB-{i:06d}",
        "CNIC": Decimal(f"35202{i:07d}1"),
        "NAME": f"OWNER {chr(65 + i % 26) * 2}",  # names are letters only
        "YEAR": Decimal(2024),
        "DUE": Decimal(i * 100 + 50),
        "STATUS": "P" if i % 2 else "U",
    } | over
    return fmt.encode(values)


def extract(fmt: FixedWidthFormat, records: list[bytes]) -> bytes:
    return b"".join(records) + fmt.encode_trailer(len(records))


async def get(adapters: Adapters, key: str, service: ServiceId = TAX) -> tuple[int, Any]:
    answer = await adapters.backends[service].call(
        BackendRequest(service=service, client=CLIENT, message_id="m", method="GET", path=key)
    )
    return answer.status, json.loads(answer.body)


async def settle() -> None:
    await asyncio.sleep(0.35)


async def test_a_file_still_being_written_is_never_read(tax: Adapters, tmp_path: Path) -> None:
    fmt = layout(tax)
    data = extract(fmt, [record(fmt, i) for i in range(1, 41)])
    drops = tmp_path / "drops"
    drops.mkdir()
    path = drops / "PTAX.D1.DAT"
    with path.open("wb") as f:
        for start in range(0, len(data), 700):  # the mainframe transfer, in blocks
            f.write(data[start : start + 700])
            f.flush()
            assert await tax.scan() == {str(TAX): []}
            await asyncio.sleep(0.05)
    assert (await get(tax, "/assessments/LHR-GLB-000001"))[0] == 404
    assert await tax.scan() == {str(TAX): []}  # complete, but not yet quiet for settle_seconds
    await settle()
    (report,) = (await tax.scan())[str(TAX)]
    assert (report.status, report.loaded, report.dead_letters) == ("loaded", 40, 0)
    status, doc = await get(tax, "/assessments/lhr-glb-000007")
    assert status == 200
    assert (doc["owner_cnic"], doc["owner_name"]) == ("35202-0000007-1", {"en": "Owner Hh"})
    assert doc["tax_due"] == 750
    assert doc["status"] == "paid"


async def test_a_file_is_loaded_once_whatever_its_name_and_however_often_it_is_seen(
    tax: Adapters, tmp_path: Path, db_url: str
) -> None:
    fmt = layout(tax)
    data = extract(fmt, [record(fmt, 1)])
    write_drop(tmp_path, "PTAX.A.DAT", data)
    await tax.scan()
    await settle()
    assert [r.status for r in (await tax.scan())[str(TAX)]] == ["loaded"]
    assert (await tax.scan())[str(TAX)] == []  # a kept file is not read at every scan
    write_drop(tmp_path, "PTAX.COPY.DAT", data)
    await tax.scan()
    await settle()
    assert [r.status for r in (await tax.scan())[str(TAX)]] == ["duplicate"]
    # A restarted adapter knows from its ledger what it loaded.
    again = await load_adapters(
        tmp_path / "tax.yaml", environ={"STATE": db_url, "READY": "stable"}, migrate=False
    )
    try:
        await again.scan()
        await settle()
        assert [r.status for r in (await again.scan())[str(TAX)]] == ["duplicate", "duplicate"]
    finally:
        await again.close()


def write_drop(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / "drops" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    return path


async def test_bad_records_go_to_the_dead_letter_file_and_the_rest_load(
    tax: Adapters, tmp_path: Path
) -> None:
    fmt = layout(tax)
    good = record(fmt, 1)
    bad_status = record(fmt, 2, STATUS="Z")
    bad_packed = record(fmt, 3)[:51] + b"\x12\x3a\x56\x78\x9c" + record(fmt, 3)[56:]
    duplicate = record(fmt, 1, NAME="SOMEONE ELSE")
    write_drop(tmp_path, "PTAX.B.DAT", extract(fmt, [good, bad_status, bad_packed, duplicate]))
    await tax.scan()
    await settle()
    (report,) = (await tax.scan())[str(TAX)]
    assert (report.status, report.loaded, report.dead_letters) == ("loaded", 1, 3)
    (rejects,) = (tmp_path / "rejects").iterdir()
    letters = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [(d["record"], d["field"], d["reason"]) for d in letters] == [
        (2, "/status", "code not in map"),
        (3, "DUE", "a packed decimal holds a nibble that is not a digit"),
        (4, "/property_id", "the key is used by record 1 of the same file"),
    ]
    assert letters[1]["raw"] == bad_packed.hex()
    assert letters[0]["raw"]["STATUS"] == "Z"
    assert (await get(tax, "/assessments/LHR-GLB-000001"))[1]["owner_name"]["en"] == "Owner Bb"


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda d, n: d[: -n - 25], "the file ends without its trailer record (truncated?)"),
        (lambda d, n: d[:60] + d[120:], "the trailer counts 3 records, the file has 2"),
    ],
)
async def test_a_truncated_file_loads_nothing(
    tax: Adapters, tmp_path: Path, damage: Any, reason: str
) -> None:
    fmt = layout(tax)
    data = extract(fmt, [record(fmt, i) for i in (1, 2, 3)])
    write_drop(tmp_path, "PTAX.C.DAT", damage(data, 60))
    await tax.scan()
    await settle()
    (report,) = (await tax.scan())[str(TAX)]
    assert (report.status, report.loaded, report.reason) == ("rejected", 0, reason)
    assert (await get(tax, "/assessments/LHR-GLB-000001"))[0] == 404
    (rejects,) = (tmp_path / "rejects").iterdir()
    assert json.loads(rejects.read_text().splitlines()[0])["reason"] == reason


async def test_files_renamed_into_place_or_hidden_are_handled(
    tax: Adapters, tmp_path: Path
) -> None:
    fmt = layout(tax)
    for name in (".PTAX.D.DAT", "PTAX.D.DAT.part", "PTAX.D.DAT.tmp", "OTHER.TXT"):
        write_drop(tmp_path, name, extract(fmt, [record(fmt, 9)]))
    await tax.scan()
    await settle()
    assert (await tax.scan())[str(TAX)] == []
    os.replace(tmp_path / "drops" / ".PTAX.D.DAT", tmp_path / "drops" / "PTAX.D.DAT")
    await tax.scan()
    await settle()
    assert [r.name for r in (await tax.scan())[str(TAX)]] == ["PTAX.D.DAT"]


async def test_with_markers_only_a_marked_file_is_read(marked: Adapters, tmp_path: Path) -> None:
    fmt = layout(marked)
    write_drop(tmp_path, "PTAX.E.DAT", extract(fmt, [record(fmt, 5)]))
    await settle()
    assert (await marked.scan())[str(TAX)] == []
    (tmp_path / "drops" / "PTAX.E.DAT.done").touch()
    assert [r.status for r in (await marked.scan())[str(TAX)]] == ["loaded"]


async def test_a_marker_left_from_the_last_drop_does_not_mark_the_next(
    marked: Adapters, tmp_path: Path
) -> None:
    # A mainframe job writes PTAX.E.DAT every night under the same name; without an archive
    # the adapter leaves yesterday's marker in place while tonight's file is written.
    fmt = layout(marked)
    write_drop(tmp_path, "PTAX.E.DAT", extract(fmt, [record(fmt, 5)]))
    marker = tmp_path / "drops" / "PTAX.E.DAT.done"
    marker.touch()
    assert [r.status for r in (await marked.scan())[str(TAX)]] == ["loaded"]
    await settle()
    tonight = extract(fmt, [record(fmt, i) for i in (6, 7, 8)])
    with (tmp_path / "drops" / "PTAX.E.DAT").open("wb") as f:
        f.write(tonight[:100])  # half-way through the transfer
        f.flush()
        assert (await marked.scan())[str(TAX)] == []
        f.write(tonight[100:])
    assert (await marked.scan())[str(TAX)] == []
    marker.touch()  # the job is done
    (report,) = (await marked.scan())[str(TAX)]
    assert (report.status, report.loaded) == ("loaded", 3)
    assert not (tmp_path / "rejects").exists()


async def test_a_file_swapped_for_a_symlink_during_a_scan_is_not_read(
    marked: Adapters, tmp_path: Path
) -> None:
    # Whoever can write to the drop directory must not make the adapter load a file it can
    # read elsewhere: B is listed as a plain file, then becomes a link while A loads.
    fmt = layout(marked)
    outside = tmp_path / "elsewhere.DAT"
    outside.write_bytes(extract(fmt, [record(fmt, 9)]))
    first = write_drop(tmp_path, "PTAX.A.DAT", extract(fmt, [record(fmt, 1)]))
    os.utime(first, (1, 1))  # listed, and loaded, first
    second = write_drop(tmp_path, "PTAX.B.DAT", extract(fmt, [record(fmt, 2)]))
    for path in (first, second):
        path.with_name(path.name + ".done").touch()
    scan = asyncio.create_task(marked.scan())
    await asyncio.sleep(0)  # the scan has listed both files and is reading A
    second.unlink()
    second.symlink_to(outside)
    assert [r.name for r in (await scan)[str(TAX)]] == ["PTAX.A.DAT"]
    assert (await get(marked, "/assessments/LHR-GLB-000009"))[0] == 404
    assert (await marked.scan())[str(TAX)] == []  # and a link is never listed


async def test_the_archive_keeps_every_drop_of_a_name(archived: Adapters, tmp_path: Path) -> None:
    fmt = layout(archived)
    nights = [extract(fmt, [record(fmt, i)]) for i in (1, 2)]
    for data in nights:  # the same name every night
        drop = write_drop(tmp_path, "PTAX.E.DAT", data)
        drop.with_name(drop.name + ".done").touch()
        assert [r.status for r in (await archived.scan())[str(TAX)]] == ["loaded"]
        assert list((tmp_path / "drops").iterdir()) == []
    kept = sorted((tmp_path / "archive").iterdir())
    assert sorted(p.read_bytes() for p in kept if not p.name.endswith(".done")) == sorted(nights)
    assert len(kept) == 4  # and each file's marker


@pytest.fixture
def elsewhere(tmp_path: Path) -> Iterator[Path]:
    """A folder on another file system than ``tmp_path`` (tmpfs), removed afterwards."""
    shm = Path("/dev/shm")  # noqa: S108 -- chosen for its file system; a private folder in it
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on another file system than the test's folder")
    with tempfile.TemporaryDirectory(dir=shm) as folder:
        yield Path(folder)


async def test_an_archive_on_another_file_system_takes_the_files(
    tmp_path: Path, db_url: str, elsewhere: Path
) -> None:
    # os.replace cannot cross file systems: every scan failed on the first loaded file
    # (already in the ledger), so no file behind it was ever loaded.
    async for adapters in _tax(tmp_path, db_url, "marker", archive=str(elsewhere)):
        fmt = layout(adapters)
        for i, name in enumerate(("PTAX.A.DAT", "PTAX.B.DAT")):
            drop = write_drop(tmp_path, name, extract(fmt, [record(fmt, i)]))
            os.utime(drop, (i + 1, i + 1))
            drop.with_name(name + ".done").touch()
        reports = (await adapters.scan())[str(TAX)]
        assert [(r.name, r.status) for r in reports] == [
            ("PTAX.A.DAT", "loaded"),
            ("PTAX.B.DAT", "loaded"),
        ]
        assert os.listdir(tmp_path / "drops") == []
        assert len(os.listdir(elsewhere)) == 4


async def test_a_file_that_cannot_be_handled_does_not_hold_up_the_others(
    marked: Adapters, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A name of 255 bytes can have no marker (the marker's name would be too long): the
    # error stopped every scan at that file, so no file listed after it was ever loaded.
    fmt = layout(marked)
    stuck = write_drop(tmp_path, "PTAX." + "L" * 246 + ".DAT", extract(fmt, [record(fmt, 1)]))
    os.utime(stuck, (1, 1))  # listed first
    later = write_drop(tmp_path, "PTAX.B.DAT", extract(fmt, [record(fmt, 2)]))
    later.with_name(later.name + ".done").touch()
    first, second = (await marked.scan())[str(TAX)]
    assert (first.name, first.status) == (stuck.name, "failed")
    assert first.reason == "OSError: File name too long"
    assert (second.name, second.status) == ("PTAX.B.DAT", "loaded")
    assert (await get(marked, "/assessments/LHR-GLB-000002"))[0] == 200
    assert f"cannot ingest {stuck.name}" in caplog.text


# --- a loaded file the archive cannot take ------------------------------------------------------


async def ledger(adapters: Adapters) -> list[tuple[str, str]]:
    async with transaction(adapters.file_sources[0].state, write=False) as s:
        return [(f.name, f.status) for f in await store.files(s, str(TAX))]


def counted(adapters: Adapters, metric: str, **labels: str) -> float:
    """A counter of the property-tax source (0 when it was never incremented)."""
    name = f"shahrah_adapter_{metric}_total"
    return adapters.registry.get_sample_value(name, {"source": str(TAX), **labels}) or 0


async def test_a_loaded_file_the_archive_cannot_take_is_reported_loaded_and_moved_later(
    archived: Adapters,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Moving a file to the archive came after its records were committed, and the move's
    # error was taken for the file's: a file whose records were served was reported failed,
    # then read again and reported failed at every scan, and never counted as loaded.
    archive = tmp_path / "archive"
    archive.write_text("a file where the archive folder should be")
    reads: list[Path] = []
    read = drops._read

    def counting(path: Path, limit: int) -> Any:
        reads.append(path)
        return read(path, limit)

    monkeypatch.setattr(drops, "_read", counting)
    fmt = layout(archived)
    drop = write_drop(tmp_path, "PTAX.E.DAT", extract(fmt, [record(fmt, 1)]))
    drop.with_name(drop.name + ".done").touch()
    why = f"PTAX.E.DAT not moved to {archive / drop.name}: [Errno 17] File exists: '{archive}'"
    (report,) = (await archived.scan())[str(TAX)]
    assert (report.status, report.loaded) == ("loaded", 1)
    assert report.archive_error == why
    assert (await get(archived, "/assessments/LHR-GLB-000001"))[0] == 200
    assert why in caplog.text
    assert "cannot ingest" not in caplog.text
    (retry,) = (await archived.scan())[str(TAX)]  # only the move is tried again
    assert (retry.status, retry.archive_error) == ("archive_retried", why)
    assert reads == [drop]
    assert await ledger(archived) == [("PTAX.E.DAT", "loaded")]
    assert counted(archived, "files", outcome="loaded") == 1
    assert counted(archived, "files", outcome="failed") == 0
    assert counted(archived, "records", outcome="loaded") == 1
    assert counted(archived, "archive_failures") == 2
    archive.unlink()  # what the operator puts right
    (retry,) = (await archived.scan())[str(TAX)]
    assert (retry.status, retry.archive_error) == ("archive_retried", None)
    assert os.listdir(tmp_path / "drops") == []
    assert sorted(os.listdir(archive)) == ["PTAX.E.DAT", "PTAX.E.DAT.done"]
    assert (await archived.scan())[str(TAX)] == []
    assert reads == [drop]


async def test_a_restarted_adapter_archives_what_it_loaded_but_could_not_move(
    archived: Adapters, tmp_path: Path, db_url: str
) -> None:
    archive = tmp_path / "archive"
    archive.write_text("a file where the archive folder should be")
    fmt = layout(archived)
    drop = write_drop(tmp_path, "PTAX.E.DAT", extract(fmt, [record(fmt, 1)]))
    drop.with_name(drop.name + ".done").touch()
    (report,) = (await archived.scan())[str(TAX)]
    assert report.status == "loaded"
    assert report.archive_error is not None
    archive.unlink()
    # A restart forgets which files wait for the archive; the ledger still knows the bytes.
    again = await load_adapters(
        tmp_path / "tax.yaml", environ={"STATE": db_url, "READY": "marker"}, migrate=False
    )
    try:
        (report,) = (await again.scan())[str(TAX)]
        assert (report.status, report.archive_error) == ("duplicate", None)
        assert await ledger(again) == [("PTAX.E.DAT", "loaded")]
    finally:
        await again.close()
    assert os.listdir(tmp_path / "drops") == []


async def test_a_new_drop_over_a_file_the_archive_refused_is_loaded(
    archived: Adapters, tmp_path: Path
) -> None:
    (tmp_path / "archive").write_text("a file where the archive folder should be")
    fmt = layout(archived)
    for i in (1, 2):  # tonight's file of the same name, written while last night's waits
        drop = write_drop(tmp_path, "PTAX.E.DAT", extract(fmt, [record(fmt, i)]))
        os.utime(drop, (i, i))
        drop.with_name(drop.name + ".done").touch()
        (report,) = (await archived.scan())[str(TAX)]
        assert (report.status, report.loaded) == ("loaded", 1)
        assert report.archive_error is not None
    assert (await get(archived, "/assessments/LHR-GLB-000002"))[0] == 200
    assert await ledger(archived) == [("PTAX.E.DAT", "loaded"), ("PTAX.E.DAT", "loaded")]


async def test_a_marker_the_archive_cannot_take_is_left_and_reported(
    archived: Adapters, tmp_path: Path
) -> None:
    # The file moved, its marker did not: the loaded file was reported failed, and the marker
    # stayed in the drop directory without a word at any later scan.
    taken = tmp_path / "archive" / "PTAX.E.DAT.done"
    taken.mkdir(parents=True)  # a folder where the marker would go
    fmt = layout(archived)
    data = extract(fmt, [record(fmt, 1)])
    drop = write_drop(tmp_path, "PTAX.E.DAT", data)
    marker = drop.with_name(drop.name + ".done")
    marker.touch()
    (report,) = (await archived.scan())[str(TAX)]
    why = (
        f"PTAX.E.DAT.done not moved to {taken}: [Errno 21] Is a directory: '{marker}' -> '{taken}'"
    )
    assert (report.status, report.loaded) == ("loaded", 1)
    assert report.archive_error == why
    assert (tmp_path / "archive" / "PTAX.E.DAT").read_bytes() == data
    assert os.listdir(tmp_path / "drops") == [marker.name]  # for the operator
    assert (await archived.scan())[str(TAX)] == []
    assert await ledger(archived) == [("PTAX.E.DAT", "loaded")]
    assert counted(archived, "files", outcome="loaded") == 1
    assert counted(archived, "archive_failures") == 1


@pytest.fixture
async def archived_elsewhere(
    tmp_path: Path, db_url: str, elsewhere: Path
) -> AsyncIterator[Adapters]:
    """As ``archived``, the archive on another file system: moving a file is copying it."""
    async for adapters in _tax(tmp_path, db_url, "marker", archive=str(elsewhere)):
        yield adapters


async def test_a_full_archive_file_system_leaves_the_loaded_file_for_a_later_scan(
    archived_elsewhere: Adapters, tmp_path: Path, elsewhere: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsync = os.fsync

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)  # what the copy to the other file system meets
    fmt = layout(archived_elsewhere)
    drop = write_drop(tmp_path, "PTAX.E.DAT", extract(fmt, [record(fmt, 1)]))
    drop.with_name(drop.name + ".done").touch()
    (report,) = (await archived_elsewhere.scan())[str(TAX)]
    why = f"PTAX.E.DAT not moved to {elsewhere / drop.name}: [Errno 28] No space left on device"
    assert (report.status, report.loaded) == ("loaded", 1)
    assert report.archive_error == why
    assert os.listdir(elsewhere) == []  # no part of a copy left behind
    monkeypatch.setattr(os, "fsync", fsync)  # space freed
    (retry,) = (await archived_elsewhere.scan())[str(TAX)]
    assert (retry.status, retry.archive_error) == ("archive_retried", None)
    assert sorted(os.listdir(elsewhere)) == ["PTAX.E.DAT", "PTAX.E.DAT.done"]
    assert os.listdir(tmp_path / "drops") == []
    assert counted(archived_elsewhere, "archive_failures") == 1


async def test_a_long_name_already_in_the_archive_is_kept_under_a_shorter_one(
    archived: Adapters, tmp_path: Path
) -> None:
    # NAME.<sha prefix> adds 13 bytes to a name that may have 255: the next drop of a long
    # name could never be archived.
    fmt = layout(archived)
    name = "PTAX." + "L" * 236 + ".DAT"  # 245 bytes, and its marker 250
    nights = [extract(fmt, [record(fmt, i)]) for i in (1, 2)]
    for data in nights:
        drop = write_drop(tmp_path, name, data)
        drop.with_name(name + ".done").touch()
        assert [r.status for r in (await archived.scan())[str(TAX)]] == ["loaded"]
    assert os.listdir(tmp_path / "drops") == []
    second = f"{name[:200]}.{hashlib.sha256(nights[1]).hexdigest()[:12]}"
    kept = {name, name + ".done", second, second + ".done"}
    assert set(os.listdir(tmp_path / "archive")) == kept
    assert (tmp_path / "archive" / second).read_bytes() == nights[1]


async def test_a_long_file_name_still_gets_its_dead_letters(
    marked: Adapters, tmp_path: Path
) -> None:
    # NAME.<sha prefix>.rejects.jsonl adds 27 bytes to the name, past the 255 a name may have.
    fmt = layout(marked)
    name = "PTAX." + "L" * 230 + ".DAT"
    drop = write_drop(tmp_path, name, extract(fmt, [record(fmt, 1), record(fmt, 2, STATUS="Z")]))
    drop.with_name(name + ".done").touch()
    (report,) = (await marked.scan())[str(TAX)]
    assert (report.status, report.loaded, report.dead_letters) == ("loaded", 1, 1)
    (rejects,) = (tmp_path / "rejects").iterdir()
    assert rejects.name.startswith(name[:200] + ".")
    assert rejects.name.endswith(".rejects.jsonl")
    assert json.loads(rejects.read_text())["file"] == name


BIRTHS = """
adapter: 1
state: "${STATE}"
services:
  PK/PROV/LGCD/birth-registry/birth/v1:
    kind: files
    directory: births
    settle_seconds: 0
    dead_letter: rejects
    response_schema: SCHEMA
    record: {format: csv, encoding: ENCODING}
    key: /registration_number
    mapping:
      /registration_number: {from: REG_NO, transforms: [trim, upper], required: true}
      /union_council/name: {from: UC, required: true}
      /district: {value: Lahore}
      /province: {value: Punjab}
      /child/name/en: {from: CHILD, transforms: [title], required: true}
      /child/name/ur: {from: CHILD_UR}
      /child/gender: {from: SEX, transforms: [{map: {M: male, F: female}}], required: true}
      /date_of_birth: {from: DOB, transforms: [{date: DD/MM/YYYY}], required: true}
      /place_of_birth: {value: hospital}
      /father/name/en: {from: FATHER, required: true}
      /father/cnic: {from: FATHER_CNIC, transforms: [cnic], required: true}
      /mother/name/en: {from: MOTHER, required: true}
      /mother/cnic: {from: MOTHER_CNIC, transforms: [cnic], required: true}
      /registered_on:
        from: REG_DATE
        transforms: [{date: {format: DD-MON-YY, century: {pivot: 50}}}]
        required: true
    routes:
      GET /registrations/{number}: {}
""".replace("SCHEMA", str(SCHEMAS / "pk.nadra.birth-registration.json"))

SHEET = (
    "REG_NO,UC,CHILD,CHILD_UR,SEX,DOB,FATHER,FATHER_CNIC,MOTHER,MOTHER_CNIC,REG_DATE\n"
    "lhr-uc045-2024-00001,Shadman,ayesha bilal,عائشہ بلال,F,@DOB@,"
    "Bilal Qureshi,3520212345671,Sana Bilal,35202-7654321-2,20-MAR-24\n"
    "LHR-UC045-2024-00002,Shadman,hamza ali,حمزہ خان,M,31/02/2024,"
    "Ali Khan,35202-7654321-3,Hina Ali,3520211111112,21-MAR-24\n"
    "LHR-UC045-2024-00003,UC-45,zainab\n"
)


@pytest.mark.parametrize("encoding", ["utf-8-sig", "cp1256"])
async def test_csv_sheets_load_and_bad_rows_are_dead_letters(
    tmp_path: Path, db_url: str, encoding: str
) -> None:
    config = write(tmp_path / "births.yaml", BIRTHS.replace("ENCODING", encoding))
    adapters = await load_adapters(config, environ={"STATE": db_url}, migrate=False)
    try:
        path = tmp_path / "births" / "uc045.csv"
        path.parent.mkdir()
        # Urdu digits where the code page has them (cp1256, Windows Arabic, has none).
        dob = "۰۲/۰۳/۲۰۲۴" if encoding.startswith("utf") else "02/03/2024"
        path.write_bytes(SHEET.replace("@DOB@", dob).encode(encoding))
        await adapters.scan()
        (report,) = (await adapters.scan())[str(BIRTH)]
        assert (report.status, report.loaded, report.dead_letters) == ("loaded", 1, 2)
        status, doc = await get(adapters, "/registrations/LHR-UC045-2024-00001", BIRTH)
        assert status == 200
        assert doc["child"] == {
            "name": {"en": "Ayesha Bilal", "ur": "عائشہ بلال"},
            "gender": "female",
        }
        assert doc["date_of_birth"] == "2024-03-02"
        assert doc["father"] == {"name": {"en": "Bilal Qureshi"}, "cnic": "35202-1234567-1"}
        letters = [
            json.loads(x) for x in next((tmp_path / "rejects").iterdir()).read_text().splitlines()
        ]
        assert [(d["record"], d["field"], d["reason"]) for d in letters] == [
            (2, "/date_of_birth", "not a calendar date (DD/MM/YYYY)"),
            (3, None, "truncated record: 3 fields, the header has 11"),
        ]
    finally:
        await adapters.close()


async def test_a_sheet_in_the_wrong_encoding_or_without_the_columns_loads_nothing(
    tmp_path: Path, db_url: str
) -> None:
    config = write(tmp_path / "births.yaml", BIRTHS.replace("ENCODING", "utf-8"))
    adapters = await load_adapters(config, environ={"STATE": db_url}, migrate=False)
    try:
        (tmp_path / "births").mkdir()
        windows = SHEET.replace("@DOB@", "02/03/2024").encode("cp1256")
        (tmp_path / "births" / "a.csv").write_bytes(windows)
        first = next(i for i, b in enumerate(windows) if b >= 0x80)
        (tmp_path / "births" / "b.csv").write_text("REG_NO,UC\nX-1,UC-1\n")
        await adapters.scan()
        reports = sorted((await adapters.scan())[str(BIRTH)], key=lambda r: r.name)
        assert [(r.status, r.reason) for r in reports] == [
            ("rejected", f"byte {first} (line 2) is not valid utf-8"),
            (
                "rejected",
                "the header lacks the mapped columns "
                "['CHILD', 'CHILD_UR', 'DOB', 'FATHER', 'FATHER_CNIC', 'MOTHER', 'MOTHER_CNIC', "
                "'REG_DATE', 'SEX']",
            ),
        ]
    finally:
        await adapters.close()


async def test_the_background_watcher_loads_drops_while_serving(
    tax: Adapters, tmp_path: Path
) -> None:
    source = tax.file_sources[0]
    assert isinstance(source, FileSource)
    object.__setattr__(source.spec, "poll_seconds", 0.1)
    await tax.start()
    fmt = layout(tax)
    write_drop(tmp_path, "PTAX.F.DAT", extract(fmt, [record(fmt, 11)]))
    for _ in range(50):
        if (await get(tax, "/assessments/LHR-GLB-000011"))[0] == 200:
            break
        await asyncio.sleep(0.1)
    assert (await get(tax, "/assessments/LHR-GLB-000011"))[0] == 200


# --- what a dropper must not be able to do ------------------------------------------------------

SECRET = b"DB_PASSWORD=hunter2 -- a file only the adapter's account can read\n"


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "private" / "adapter.env"
    path.parent.mkdir()
    path.write_bytes(SECRET)
    path.chmod(0o600)
    return path


def archived_bytes(archive: Path) -> list[bytes]:
    return [p.read_bytes() for p in archive.iterdir()]


async def test_a_marker_that_is_a_link_marks_nothing_and_is_never_copied(
    tmp_path: Path, db_url: str, elsewhere: Path, secret: Path
) -> None:
    # The dropper owns the data file, so any modification time, so any file is "newer": a
    # linked marker made the adapter copy whatever it can read into the archive.
    async for adapters in _tax(tmp_path, db_url, "marker", archive=str(elsewhere)):
        fmt = layout(adapters)
        drop = write_drop(tmp_path, "PTAX.X.DAT", extract(fmt, [record(fmt, 3)]))
        os.utime(drop, (1, 1))
        drop.with_name(drop.name + ".done").symlink_to(secret)
        assert (await adapters.scan())[str(TAX)] == []  # not marked: left for a later scan
        assert SECRET not in archived_bytes(elsewhere)
        drop.with_name(drop.name + ".done").unlink()
        drop.with_name(drop.name + ".done").touch()  # a real marker
        assert [r.status for r in (await adapters.scan())[str(TAX)]] == ["loaded"]


@pytest.mark.parametrize("swapped", ["data", "marker"])
async def test_a_file_swapped_for_a_link_before_archiving_is_not_copied(
    tmp_path: Path,
    db_url: str,
    elsewhere: Path,
    secret: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    swapped: str,
) -> None:
    drop = tmp_path / "drops" / "PTAX.Y.DAT"
    marker = drop.with_name(drop.name + ".done")
    link = drop if swapped == "data" else marker
    parse = drops.parse_file

    def parse_then_swap(*args: Any) -> Any:
        link.unlink()  # what the dropper does while the adapter parses
        link.symlink_to(secret)
        return parse(*args)

    monkeypatch.setattr(drops, "parse_file", parse_then_swap)
    async for adapters in _tax(tmp_path, db_url, "marker", archive=str(elsewhere)):
        fmt = layout(adapters)
        write_drop(tmp_path, drop.name, extract(fmt, [record(fmt, 4)]))
        marker.touch()
        (report,) = (await adapters.scan())[str(TAX)]
        assert (report.status, report.loaded) == ("loaded", 1)  # what was read is loaded
        assert SECRET not in archived_bytes(elsewhere)
        assert link.is_symlink()  # left where it was, and reported
        assert f"left {link.name} in the drop directory: not a regular file" in caplog.text


async def test_a_file_moved_to_another_file_system_is_copied_off_the_event_loop(
    tmp_path: Path, db_url: str, elsewhere: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_the_loop: list[bool] = []
    replace = os.replace

    def spy(source: Any, target: Any) -> None:
        if Path(target).parent == elsewhere:
            on_the_loop.append(threading.current_thread() is threading.main_thread())
        replace(source, target)

    monkeypatch.setattr(os, "replace", spy)
    async for adapters in _tax(tmp_path, db_url, "marker", archive=str(elsewhere)):
        fmt = layout(adapters)
        drop = write_drop(tmp_path, "PTAX.Z.DAT", extract(fmt, [record(fmt, 5)]))
        drop.with_name(drop.name + ".done").touch()
        assert [r.status for r in (await adapters.scan())[str(TAX)]] == ["loaded"]
    assert on_the_loop  # the file and its marker, each copied and renamed into place
    assert not any(on_the_loop)


async def test_a_file_growing_while_read_is_read_no_further_than_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The size is checked when the file is opened; a dropper can extend it (sparse, so for
    # free) right after, and every byte read was kept.
    limit = 2**20
    path = tmp_path / "PTAX.G.DAT"
    path.write_bytes(b"x" * limit)
    fstat = os.fstat
    grown: list[int] = []

    def grow_once(fd: int) -> os.stat_result:
        st = fstat(fd)
        if not grown:
            grown.append(fd)
            os.truncate(path, 64 * 2**20)
        return st

    monkeypatch.setattr(os, "fstat", grow_once)
    tracemalloc.start()
    try:
        assert drops._read(path, limit) is None  # it changed: left for a later scan
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * limit


async def test_a_file_over_the_size_limit_is_rejected_and_remembered(
    tmp_path: Path, db_url: str
) -> None:
    config = write(
        tmp_path / "tax.yaml", FIXED.replace("pattern:", "max_file_bytes: 100\n    pattern:")
    )
    adapters = await load_adapters(
        config, environ={"STATE": db_url, "READY": "marker"}, migrate=False
    )
    try:
        fmt = layout(adapters)
        drop = write_drop(tmp_path, "PTAX.H.DAT", extract(fmt, [record(fmt, i) for i in (1, 2)]))
        drop.with_name(drop.name + ".done").touch()
        (report,) = (await adapters.scan())[str(TAX)]
        assert (report.status, report.reason) == ("rejected", "larger than 100 bytes")
        async with transaction(adapters.file_sources[0].state, write=False) as s:
            (entry,) = await store.files(s, str(TAX))
        assert (entry.status, entry.size) == ("rejected", 180)
    finally:
        await adapters.close()


@pytest.mark.parametrize("count", ["00000\u00b2", "\u00b9\u00b2    "])
async def test_a_trailer_count_in_other_digits_rejects_the_file_once(
    marked: Adapters, tmp_path: Path, count: str
) -> None:
    # Superscript digits (cp037 has them) pass str.isdigit() but not int(): the file failed
    # at every scan and was read again each time.
    fmt = layout(marked)
    data = bytearray(extract(fmt, [record(fmt, 1)]))
    data[-57:-51] = count.encode("cp037")
    drop = write_drop(tmp_path, "PTAX.T.DAT", bytes(data))
    drop.with_name(drop.name + ".done").touch()
    (report,) = (await marked.scan())[str(TAX)]
    assert (report.status, report.reason) == (
        "rejected",
        "trailer: the record count is not a number",
    )
    assert (await marked.scan())[str(TAX)] == []
    async with transaction(marked.file_sources[0].state, write=False) as s:
        assert [f.status for f in await store.files(s, str(TAX))] == ["rejected"]


# --- bad files cost what a few bad records cost -------------------------------------------------


async def births(tmp_path: Path, db_url: str, extra: str = "") -> Adapters:
    text = BIRTHS.replace("ENCODING", "utf-8").replace(
        "dead_letter: rejects", "dead_letter: rejects" + extra
    )
    return await load_adapters(
        write(tmp_path / "births.yaml", text), environ={"STATE": db_url}, migrate=False
    )


HEADER = "REG_NO,UC,CHILD,CHILD_UR,SEX,DOB,FATHER,FATHER_CNIC,MOTHER,MOTHER_CNIC,REG_DATE\n"


async def sheet(adapters: Adapters, tmp_path: Path, text: str) -> list[drops.FileReport]:
    """The reports of loading one CSV sheet (two scans: the file must be seen unchanged)."""
    path = tmp_path / "births" / "uc.csv"
    path.parent.mkdir()
    path.write_text(text)
    await adapters.scan()
    return (await adapters.scan())[str(BIRTH)]


def rejects(tmp_path: Path) -> list[dict[str, Any]]:
    (path,) = (tmp_path / "rejects").iterdir()
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_dead_letters_are_a_bounded_sample_and_a_count(tmp_path: Path, db_url: str) -> None:
    adapters = await births(tmp_path, db_url)
    try:
        (report,) = await sheet(adapters, tmp_path, HEADER + "x\n" * 5000)
        assert (report.status, report.loaded, report.dead_letters) == ("loaded", 0, 5000)
        letters = rejects(tmp_path)
        assert len(letters) == 1001  # the first 1,000, and how many more there are
        assert [d["record"] for d in letters[:3]] == [1, 2, 3]
        assert letters[-1]["record"] is None
        assert letters[-1]["reason"] == "4000 more bad records are not listed"
    finally:
        await adapters.close()


async def test_max_bad_records_stops_reading_at_the_first_one_too_many(
    tmp_path: Path, db_url: str
) -> None:
    adapters = await births(tmp_path, db_url, "\n    max_bad_records: 3")
    try:
        (report,) = await sheet(adapters, tmp_path, HEADER + "x\n" * 5000)
        reason = "more than the 3 bad records allowed"
        assert (report.status, report.dead_letters, report.reason) == ("rejected", 4, reason)
        letters = rejects(tmp_path)
        assert [d["record"] for d in letters] == [None, 1, 2, 3, 4]
        assert letters[0]["reason"] == reason
    finally:
        await adapters.close()


async def test_a_dead_letter_holds_a_bounded_part_of_its_record(
    tmp_path: Path, db_url: str
) -> None:
    adapters = await births(tmp_path, db_url)
    try:
        (report,) = await sheet(adapters, tmp_path, HEADER + "abc," * 50_000 + "\n")
        assert (report.status, report.dead_letters) == ("loaded", 1)
        (letter,) = rejects(tmp_path)
        assert letter["reason"] == "overlong record: 50001 fields, the header has 11"
        assert letter["raw_truncated"] is True
        assert 4000 < sum(len(f) + 1 for f in letter["raw"]) <= 4096  # a field and its comma
        assert letter["raw"][:2] == ["abc", "abc"]
    finally:
        await adapters.close()


CODES = """
adapter: 1
state: "${STATE}"
services:
  PK/LG/LMC/codes/code/v1:
    kind: files
    directory: codes
    dead_letter: rejects
    response_schema: code.json
    record:
      format: fixed-width
      record_length: 10
      separator: lf
      fields: [{name: ID, start: 1, length: 10}]
    key: /id
    mapping:
      /id: {from: ID, transforms: [trim], required: true}
    routes:
      GET /codes/{id}: {}
"""


async def test_a_fixed_width_file_of_empty_lines_costs_little_memory(
    tmp_path: Path, db_url: str
) -> None:
    # Every record of the file was split out, and every error kept, before the first was looked at.
    schema = {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]}
    (tmp_path / "code.json").write_text(json.dumps(schema))
    adapters = await load_adapters(
        write(tmp_path / "codes.yaml", CODES), environ={"STATE": db_url}, migrate=False
    )
    try:
        source = adapters.file_sources[0]
        assert isinstance(source, FileSource)
        path = tmp_path / "codes" / "CODES.DAT"
        path.parent.mkdir()
        path.write_bytes(b"0123456789\n" + b"\n" * 100_001)
        tracemalloc.start()
        try:
            report = await source.ingest(path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert report is not None
        assert (report.status, report.loaded, report.dead_letters) == ("loaded", 1, 100_000)
        assert peak < 16 * 2**20
    finally:
        await adapters.close()


async def test_the_ingest_command_reports_every_file_and_fails_when_one_did_not_load(
    tmp_path: Path, db_url: str
) -> None:
    """For cron: what the first look loaded is printed too (with ``ready: marker`` that is
    everything), and a file that failed or was rejected makes the exit status 1."""
    from click.testing import CliRunner

    from shahrah.cli import main

    config = write(tmp_path / "tax.yaml", FIXED)
    env = {"STATE": db_url, "READY": "marker"}
    (tmp_path / "drops").mkdir()

    def ingest() -> tuple[int, dict[str, Any]]:
        result = CliRunner().invoke(main, ["adapter", "ingest", str(config)], env=env)
        return result.exit_code, json.loads(result.stdout)

    async for adapters in _tax(tmp_path, db_url, "marker"):
        good = extract(layout(adapters), [record(layout(adapters), i) for i in range(3)])
    (tmp_path / "drops" / "A.DAT").write_bytes(good)
    (tmp_path / "drops" / "A.DAT.done").write_bytes(b"")
    status, reports = await asyncio.to_thread(ingest)
    assert status == 0
    assert [(r["name"], r["status"], r["loaded"]) for r in reports[str(TAX)]] == [
        ("A.DAT", "loaded", 3)
    ]
    (tmp_path / "drops" / "B.DAT").write_bytes(good[:-60])  # the trailer cut off
    (tmp_path / "drops" / "B.DAT.done").write_bytes(b"")
    status, reports = await asyncio.to_thread(ingest)
    assert status == 1
    # A.DAT is still there (no archive): a new process knows it by its bytes.
    assert sorted((r["name"], r["status"]) for r in reports[str(TAX)]) == [
        ("A.DAT", "duplicate"),
        ("B.DAT", "rejected"),
    ]
