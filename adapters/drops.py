"""File drops: CSV and fixed-width files ingested from a directory, served by key.

A legacy system drops files into ``directory``; the adapter loads each one
once and serves the loaded records by key. The conventions that make this
safe while files are still arriving:

- **Never a half-written file.** With ``ready: marker`` a file is complete
  when ``NAME.done`` exists beside it and is not older than it (the writer
  creates the marker after closing the file). With ``ready: stable`` (the
  default) a file is complete when its size and modification time have not
  changed for ``settle_seconds`` across two scans. Names starting with ``.``
  or ending ``.part``/``.tmp`` are never read, so a writer that renames into
  place is always safe. A file that changes while it is read is put back for
  the next scan.
- **Never twice.** The ledger (``adapter_files``) knows each file by the
  SHA-256 of its content; the same bytes dropped again, under any name, are
  skipped.
- **All or nothing per file.** The ledger entry and the file's records are
  written in one transaction. Bad records go to ``dead_letter/NAME.<sha
  prefix>.rejects.jsonl`` with the reason, written before the transaction
  commits; see :mod:`adapters.records` for what rejects a whole file.
- Loaded files may be moved to ``archive`` (with their marker); a name already
  there gets ``.<sha prefix>`` added, so an earlier drop of that name is kept.
  The move comes after the commit: a move the system refuses leaves the file
  loaded, reported with ``archive_error``, and only the move is tried again.
- **Whoever drops files gets nothing else.** Only regular files are read, marked
  or archived, each through a descriptor opened without following a link, and
  never more than ``max_file_bytes`` of one: a link to a file only the adapter
  can read, or to ``/dev/zero``, is neither loaded nor copied into the archive.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fnmatch
import hashlib
import json
import logging
import os
import stat as stat_module
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from adapters import store
from adapters.base import BackendRequest
from adapters.errors import BackendFailure
from adapters.mapping import CompiledMapping, FieldMap, JsonNode, Node, pointer_tokens
from adapters.models import IngestedFile
from adapters.records import CsvFormat, FixedWidthFormat, Outcome, RecordRules, parse_file
from adapters.routes import CompiledRoute
from adapters.schemas import ResponseCheck
from adapters.spec import BuildContext, RouteSpec, ServiceSpec
from core.db import Sessions, transaction
from core.files import write_atomic

__all__ = ["FileReport", "FileRoute", "FileSource", "FilesService"]

log = logging.getLogger(__name__)

_NEVER_READ = (".part", ".tmp")
# Bytes of a dropped file's name kept in the names of its dead letters, and of its archived
# copy when the name is taken: a name may have 255, and a suffix must still fit.
_MAX_NAME_PART = 200
_BLOCK = 2**20  # bytes read or copied at a time


class _LeftInPlaceError(Exception):
    """A file not moved to the archive; the message says why."""


class _ArchiveError(Exception):
    """A move to the archive the system refused (no space, no folder, no permission)."""

    def __init__(self, source: Path, target: Path, error: OSError) -> None:
        # The system's reason and the paths it names: never anything read from the file.
        super().__init__(f"{source.name} not moved to {target}: {error}")
        self.source = source


class FileRoute(RouteSpec):
    key: str | None = None  # the parameter that holds the key; default: the path's only one


class FilesService(ServiceSpec):
    kind: Literal["files"]
    directory: str  # where files are dropped
    pattern: str = "*"  # shell pattern of the file names to load
    ready: Literal["stable", "marker"] = "stable"
    marker_suffix: str = Field(default=".done", min_length=1)
    settle_seconds: float = Field(default=2.0, ge=0, le=3600)  # unchanged this long = complete
    poll_seconds: float = Field(default=5.0, gt=0, le=86400)  # between scans
    dead_letter: str  # directory for the rejects files
    archive: str | None = None  # move loaded files here
    max_file_bytes: int = Field(default=256 * 2**20, gt=0)  # bytes; larger files are rejected
    max_bad_records: int | None = Field(default=None, ge=0)  # more bad records reject the file
    record: Annotated[CsvFormat | FixedWidthFormat, Field(discriminator="format")]
    key: str  # JSON Pointer, in the mapped document, of the key records are served by
    mapping: dict[str, FieldMap]
    routes: dict[str, FileRoute]


@dataclass(frozen=True)
class FileReport:
    """What one scan did with one file."""

    name: str
    # failed: tried again later. archive_retried: handled at an earlier scan; only its move to
    # the archive was tried again (it went through if archive_error is None).
    status: Literal["loaded", "rejected", "duplicate", "failed", "archive_retried"]
    loaded: int = 0
    dead_letters: int = 0
    reason: str | None = None
    archive_error: str | None = None  # the file, or its marker, the archive did not take, and why


class FileSource:
    """Ingests a drop directory and answers routes from what it loaded."""

    kind = "files"

    def __init__(self, spec: FilesService, ctx: BuildContext) -> None:
        if ctx.state is None:
            raise ctx.fail(["kind"], "file sources need a database: set 'state' at the top level")
        self.spec = spec
        self.name = str(ctx.service)
        self.state: Sessions = ctx.state
        self.metrics = ctx.metrics
        self.directory = ctx.path(spec.directory)
        self.dead_letter = ctx.path(spec.dead_letter)
        self.archive = ctx.path(spec.archive) if spec.archive else None
        self._rules: RecordRules | None = None
        self._keys: dict[str, str] = {}
        self._by_key = dict(spec.routes)
        # name -> (size, mtime_ns, first seen with that stat) for the stability rule
        self._seen: dict[str, tuple[int, int, float]] = {}
        # name -> (size, mtime_ns) already handled, so a kept file is not read at every scan
        self._done: dict[str, tuple[int, int]] = {}
        # name -> ((size, mtime_ns), sha256) handled, but that the archive refused: moved later
        self._unarchived: dict[str, tuple[tuple[int, int], str]] = {}
        self._lock = asyncio.Lock()

    def check_path(self, path: str, repeated: bool) -> None:
        if repeated:
            raise ValueError("a file record has no repeated part")
        fmt = self.spec.record
        if isinstance(fmt, FixedWidthFormat) and path not in {f.name for f in fmt.fields}:
            raise ValueError(f"the layout has no field {path!r}")

    def bind(self, mapping: CompiledMapping, validator: ResponseCheck, ctx: BuildContext) -> None:
        """Complete the source with its checked mapping and the service's schema."""
        try:
            key = pointer_tokens(self.spec.key)
        except ValueError as e:
            raise ctx.fail(["key"], str(e)) from None
        if not any(f.target == key and f.required for f in mapping.fields):
            raise ctx.fail(["key"], "the mapping must write this pointer with required: true")
        self._rules = RecordRules(
            self.name, self.spec.record, mapping, key, validator, self.spec.max_bad_records
        )

    def plan(self, route: CompiledRoute, key: str) -> None:
        spec = self._by_key[key]
        names = [p.name for p in route.params]
        param = spec.key or (route.pattern.names[0] if len(route.pattern.names) == 1 else None)
        if param is None or param not in names:
            raise ValueError(f"route {key!r} must say which parameter is the key (key: NAME)")
        self._keys[route.label] = param

    async def fetch(
        self, route: CompiledRoute, params: dict[str, str | None], request: BackendRequest
    ) -> Node | None:
        key = params.get(self._keys[route.label])
        if key is None:
            return None
        try:
            async with transaction(self.state, write=False) as s:
                document = await store.get_record(s, self.name, key)
        except Exception as e:
            raise BackendFailure(
                f"cannot read the loaded records: {type(e).__name__}",
                detail={"backend": "files"},
                retryable=True,
            ) from e
        return None if document is None else JsonNode(json.loads(document))

    # --- ingestion --------------------------------------------------------------------------

    def _candidates(self) -> list[os.DirEntry[str]]:
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            entries = []
        present = {e.name for e in entries}
        for memory in (self._seen, self._done, self._unarchived):  # forget files that went away
            for name in memory.keys() - present:
                del memory[name]
        out = []
        for e in entries:
            name = e.name
            if name.startswith(".") or name.endswith(_NEVER_READ):
                continue
            if self.spec.ready == "marker" and name.endswith(self.spec.marker_suffix):
                continue
            if not fnmatch.fnmatchcase(name, self.spec.pattern) or not e.is_file(
                follow_symlinks=False
            ):
                continue
            out.append(e)
        return sorted(out, key=lambda e: (e.stat().st_mtime_ns, e.name))

    def _ready(self, entry: os.DirEntry[str], now: float) -> bool:
        st = entry.stat(follow_symlinks=False)
        stat = (st.st_size, st.st_mtime_ns)
        if self._done.get(entry.name) == stat:
            return False
        if self.spec.ready == "marker":
            try:
                marker = (self.directory / (entry.name + self.spec.marker_suffix)).stat(
                    follow_symlinks=False
                )
            except FileNotFoundError:
                return False
            # Only a regular file marks: a link would date the drop by whatever it points at,
            # and is never followed, here or when the marker is archived.
            if not stat_module.S_ISREG(marker.st_mode):
                return False
            # A marker older than the file is an earlier drop's, left beside a file of the same
            # name that is being written again.
            return marker.st_mtime_ns >= st.st_mtime_ns
        seen = self._seen.get(entry.name)
        if seen is None or seen[:2] != stat:
            self._seen[entry.name] = (*stat, now)
            return False
        settled = now - seen[2] >= self.spec.settle_seconds
        quiet = time.time() - st.st_mtime_ns / 1e9 >= self.spec.settle_seconds
        return settled and quiet

    async def scan(self) -> list[FileReport]:
        """One pass over the directory: load every complete file not loaded before."""
        async with self._lock:
            reports = []
            now = time.monotonic()
            for entry in self._candidates():
                try:
                    report = await self._archive_again(entry)
                    if report is None and self._ready(entry, now):
                        report = await self.ingest(Path(entry.path))
                except Exception as e:
                    # One file must not hold up the ones after it. Only the error's kind is
                    # told: a database error's text would quote the records.
                    why = type(e).__name__ + (f": {e.strerror}" if isinstance(e, OSError) else "")
                    log.error(
                        "cannot ingest %s (%s); trying again at the next scan", entry.name, why
                    )
                    self.metrics.files.labels(self.name, "failed").inc()
                    report = FileReport(entry.name, "failed", reason=why)
                if report is not None:
                    reports.append(report)
            self.metrics.last_scan.labels(self.name).set(time.time())
            return reports

    async def _archive_again(self, entry: os.DirEntry[str]) -> FileReport | None:
        """Move a file handled at an earlier scan that the archive refused: never read it again.

        None if no such file has this name, or it changed since it was read: a new drop.
        """
        unarchived = self._unarchived.pop(entry.name, None)
        if unarchived is None:
            return None
        stat, digest = unarchived
        st = entry.stat(follow_symlinks=False)
        if (st.st_size, st.st_mtime_ns) != stat:
            return None
        archive_error = await self._finish(Path(entry.path), digest, stat)
        return FileReport(entry.name, "archive_retried", archive_error=archive_error)

    async def run(self) -> None:
        """Scan every ``poll_seconds`` until cancelled; a failed scan is logged and retried."""
        while True:
            try:
                await self.scan()
            except Exception:
                log.exception(
                    "scan of %s failed; trying again in %s s",
                    self.directory,
                    self.spec.poll_seconds,
                )
            await asyncio.sleep(self.spec.poll_seconds)

    async def ingest(self, path: Path) -> FileReport | None:
        """Load one file now, without the readiness rule: the caller vouches it is complete.

        None if the file changed while it was read or is not a regular file (it is left for a
        later scan).
        """
        assert self._rules is not None, "bind() the schema first"
        read = await asyncio.to_thread(_read, path, self.spec.max_file_bytes)
        if read is None:
            self._seen.pop(path.name, None)  # changed: wait for it to settle again
            return None
        data, digest, stat = read
        async with transaction(self.state, write=False) as s:
            known = await store.file_known(s, self.name, digest)
        if known:
            self.metrics.files.labels(self.name, "duplicate").inc()
            log.info("skipped %s: the same content was loaded before", path.name)
            archive_error = await self._finish(path, digest, stat)
            return FileReport(path.name, "duplicate", archive_error=archive_error)
        if data is None:
            outcome = Outcome(rejected=f"larger than {self.spec.max_file_bytes} bytes")
        else:
            outcome = await asyncio.to_thread(parse_file, self._rules, path.name, data)
        if outcome.bad or outcome.rejected:
            await asyncio.to_thread(self._write_dead_letters, path.name, digest, outcome)
        status: Literal["loaded", "rejected"] = "rejected" if outcome.rejected else "loaded"
        entry = IngestedFile(
            source=self.name,
            name=path.name,
            sha256=digest,
            size=stat[0],
            status=status,
            reason=outcome.rejected,
            records_loaded=len(outcome.loaded),
            records_rejected=outcome.bad,
        )
        async with transaction(self.state) as s:
            file_id = await store.record_file(s, entry)
            await store.upsert_records(s, self.name, file_id, outcome.loaded)
        # Counted and told before archiving: whatever becomes of the move, the file is loaded.
        self.metrics.files.labels(self.name, status).inc()
        self.metrics.records.labels(self.name, "loaded").inc(len(outcome.loaded))
        self.metrics.records.labels(self.name, "dead_letter").inc(outcome.bad)
        log.info(
            "%s %s: %d records loaded, %d dead letters%s",
            status,
            path.name,
            len(outcome.loaded),
            outcome.bad,
            f" ({outcome.rejected})" if outcome.rejected else "",
        )
        archive_error = await self._finish(path, digest, stat)
        return FileReport(
            path.name, status, len(outcome.loaded), outcome.bad, outcome.rejected, archive_error
        )

    def _write_dead_letters(self, name: str, digest: str, outcome: Outcome) -> None:
        """Write the file's rejects: why it was rejected whole, the sample, how many more."""
        lines = [json.dumps(d.to_json(name, digest), ensure_ascii=False) for d in outcome.dead]
        if outcome.rejected:
            whole = {"file": name, "sha256": digest, "record": None, "reason": outcome.rejected}
            lines.insert(0, json.dumps(whole, ensure_ascii=False))
        if outcome.bad > len(outcome.dead):
            more = f"{outcome.bad - len(outcome.dead)} more bad records are not listed"
            rest = {"file": name, "sha256": digest, "record": None, "reason": more}
            lines.append(json.dumps(rest, ensure_ascii=False))
        target = self.dead_letter / f"{_short(name)}.{digest[:12]}.rejects.jsonl"
        write_atomic(target, ("\n".join(lines) + "\n").encode("utf-8"), mode=0o600)

    async def _finish(self, path: Path, digest: str, stat: tuple[int, int]) -> str | None:
        """Archive the handled file, or remember it so that it is not read at every scan.

        What the archive refused, if it refused: the file is handled all the same.
        """
        self._seen.pop(path.name, None)
        if self.archive is None:
            self._done[path.name] = stat
            return None
        try:
            # Across file systems archiving is a copy: never on the event loop.
            if not await asyncio.to_thread(self._archive, path, digest, stat):
                self._done[path.name] = stat
        except _ArchiveError as e:
            self.metrics.archive_failures.labels(self.name).inc()
            log.error("cannot archive %s: %s", path.name, e)
            # The file is moved at the next scan, as it was read. A marker left behind once its
            # file moved is the operator's: moved later, it could be a new drop's of that name.
            if e.source == path:
                self._unarchived[path.name] = (stat, digest)
            return str(e)
        return None

    def _archive(self, path: Path, digest: str, stat: tuple[int, int]) -> bool:
        """Move the file read as ``stat``, then its marker, to the archive; False if kept here.

        _ArchiveError if the system refuses a move.
        """
        assert self.archive is not None
        target = self.archive / path.name
        try:
            self.archive.mkdir(parents=True, exist_ok=True)
            if target.exists():  # an earlier drop of the same name: keep both
                target = self.archive / f"{_short(path.name)}.{digest[:12]}"
            _move(path, target, self.spec.max_file_bytes, expected=stat)
        except _LeftInPlaceError as e:
            log.warning("left %s in the drop directory: %s", path.name, e)
            return False
        except OSError as e:
            raise _ArchiveError(path, target, e) from e
        log.info("moved %s to %s", path.name, target)
        if self.spec.ready == "marker":
            marker = path.with_name(path.name + self.spec.marker_suffix)
            moved = target.with_name(target.name + self.spec.marker_suffix)
            try:
                _move(marker, moved, self.spec.max_file_bytes)
            except FileNotFoundError:
                pass
            except _LeftInPlaceError as e:
                log.warning("left %s in the drop directory: %s", marker.name, e)
            except OSError as e:
                raise _ArchiveError(marker, moved, e) from e
        return True

    async def close(self) -> None:
        return None


def _short(name: str) -> str:
    """The start of ``name``, so that a suffix and a temporary file's still fit in a name."""
    return os.fsencode(name)[:_MAX_NAME_PART].decode("utf-8", "ignore")


def _open_regular(path: Path) -> tuple[int, os.stat_result] | None:
    """A descriptor of ``path`` and its status, or None if it is not a regular file.

    The name is opened without following a link (a dropper's link to a file only the adapter
    can read) and without blocking (a pipe); what was opened is then checked, so a name
    swapped after it was listed cannot pass.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return None
        raise
    st = os.fstat(fd)
    if not stat_module.S_ISREG(st.st_mode):
        os.close(fd)
        return None
    return fd, st


def _read_at_most(fd: int, size: int) -> bytes:
    """Up to ``size`` bytes from ``fd``: whatever the file grows to, no more is read."""
    chunks: list[bytes] = []
    while size > 0 and (block := os.read(fd, min(size, _BLOCK))):
        chunks.append(block)
        size -= len(block)
    return b"".join(chunks)


def _unchanged(fd: int, before: os.stat_result) -> bool:
    after = os.fstat(fd)
    return (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def _read(path: Path, limit: int) -> tuple[bytes | None, str, tuple[int, int]] | None:
    """The file's bytes (None if more than ``limit``), SHA-256 and (size, mtime).

    At most ``limit + 1`` bytes are read, so a file over the limit is known by the digest of
    those. None if it changed while read, or is no longer a regular file: a name listed as a
    file may have been replaced by a link since, and a link is never followed.
    """
    opened = _open_regular(path)
    if opened is None:
        return None
    fd, before = opened
    try:
        data = _read_at_most(fd, limit + 1)
        if not _unchanged(fd, before):
            return None
    finally:
        os.close(fd)
    digest = hashlib.sha256(data).hexdigest()
    return (data if len(data) <= limit else None), digest, (before.st_size, before.st_mtime_ns)


def _move(source: Path, target: Path, limit: int, expected: tuple[int, int] | None = None) -> None:
    """Move the regular file ``source``: a rename, or across file systems a bounded copy.

    _LeftInPlaceError if ``source`` is not a regular file, not the ``expected`` (size, mtime)
    any more, or too large to copy (more than ``limit`` bytes).
    """
    opened = _open_regular(source)
    if opened is None:
        raise _LeftInPlaceError("not a regular file")
    fd, st = opened
    try:
        if expected is not None and (st.st_size, st.st_mtime_ns) != expected:
            raise _LeftInPlaceError(
                "it changed after it was read; it is read again at the next scan"
            )
        try:
            os.replace(source, target)  # a rename moves a link itself, never what it points at
            return
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
        _copy(fd, st, target, limit)
    finally:
        os.close(fd)
    # Delete only the file copied: a drop renamed into place meanwhile waits for the next scan.
    with contextlib.suppress(FileNotFoundError):
        now = os.stat(source, follow_symlinks=False)
        if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
            os.unlink(source)


def _copy(fd: int, st: os.stat_result, target: Path, limit: int) -> None:
    """Copy the open file ``fd`` (status ``st``) to ``target`` under a hidden name, then rename.

    Copied from the descriptor that was checked, never reopened by name.
    """
    if st.st_size > limit:
        raise _LeftInPlaceError(f"larger than {limit} bytes, too large to copy to the archive")
    part = target.with_name(f".{target.name}.part")
    # Permissions without execute or set-id bits: the copy belongs to the adapter, not the dropper.
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
    out = os.open(part, flags, stat_module.S_IMODE(st.st_mode) & 0o666)
    try:
        with os.fdopen(out, "wb") as f:
            copied = 0
            while copied <= limit and (block := os.read(fd, _BLOCK)):
                f.write(block)
                copied += len(block)
            if copied != st.st_size or not _unchanged(fd, st):
                raise _LeftInPlaceError("it changed while it was copied")
            f.flush()
            os.fsync(f.fileno())
        os.utime(part, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.replace(part, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(part)
        raise
