"""``shahrah adapter batch``: a CSV of requests through the local gateway, a CSV of answers back.

For systems that cannot call HTTP: each input row becomes one r1 request
(``{METHOD} {gateway}/r1/{service}{path}``, the path filled from the row's
columns), with ``X-Road-Client`` and, when given, the consent headers
``Shahrah-Data-Subject`` (``PK`` and the 13 CNIC digits, from a column),
``Shahrah-Purpose`` and ``Shahrah-Consent``. At most ``concurrency``
requests are in flight.

The results file has one row per input row, errors included: the input's
columns, then ``status`` (the HTTP status, empty when no answer came),
``error_type`` (the X-Road error type, ``Transport``, ``InvalidInput`` or
``ResponseTooLarge``: an answer over ``max_response`` bytes is not kept cut short),
``error_message``, ``message_id`` and ``response`` (the answer's body). Each
answer is appended and flushed as it arrives, so an interrupted run resumes
where it stopped: rows already in the results are not sent again (with
``retry_errors``, rows that got no answer, a 5xx or an answer too large to keep
are). When every row is
answered, the file is rewritten in input order.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import aiohttp

from adapters.routes import fill_path, placeholders
from core.errors import BadRequestError
from core.files import write_atomic
from core.ids import ClientId, Cnic, ServiceId
from core.web import read_up_to

__all__ = ["RESULT_COLUMNS", "BatchSpec", "BatchSummary", "run_batch"]

RESULT_COLUMNS = ("status", "error_type", "error_message", "message_id", "response")
ROW = "row"
MAX_RESPONSE = 1 * 2**20  # default bytes kept per answer
TOO_LARGE = "ResponseTooLarge"
_SYNC_EVERY = 100  # rows between fsyncs of the results file
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # what aiohttp refuses in a header value


@dataclass(frozen=True)
class BatchSpec:
    gateway: str  # the local gateway's base URL, e.g. http://127.0.0.1:8443
    client: ClientId  # sent as X-Road-Client: the calling subsystem
    service: ServiceId
    path: str  # below the service, with {column} placeholders, e.g. /persons/{cnic}
    method: str = "GET"
    subject_column: str | None = None  # column holding the data subject's CNIC
    purpose: str | None = None
    consent: str | None = None  # one consent reference for every row
    consent_column: str | None = None  # or a column holding each row's consent reference
    concurrency: int = 8
    timeout: float = 30.0  # seconds per request
    max_response: int = MAX_RESPONSE  # bytes; a longer answer is an error row, not cut short


@dataclass(frozen=True)
class BatchSummary:
    total: int
    already: int  # answered by an earlier run
    sent: int
    errors: int  # rows of this run whose answer is an error


class BatchError(BadRequestError):
    """The input, the results file or the options cannot be used together."""


def _columns(path: Path) -> list[str]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        header = next(csv.reader(f), None)
    if not header:
        raise BatchError(f"{path} has no header line")
    if ROW in header or set(RESULT_COLUMNS) & set(header):
        raise BatchError(
            f"{path} uses a column name the results need: {ROW}, {', '.join(RESULT_COLUMNS)}"
        )
    return header


def _rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f, strict=True)
        for number, row in enumerate(reader, start=1):
            yield number, {k: v or "" for k, v in row.items() if isinstance(k, str)}


def _answered(output: Path, header: list[str], retry_errors: bool) -> dict[int, list[str]]:
    """Rows already in the results file (a torn last line is dropped)."""
    if not output.exists():
        return {}
    text = output.read_text("utf-8")
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # the run stopped halfway through a row
    try:
        table = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error as e:
        raise BatchError(f"{output} is not a results file ({e}); move it aside") from e
    if not table:
        return {}
    if table[0] != header:
        raise BatchError(f"{output} holds results of another input (its columns differ)")
    rows: dict[int, list[str]] = {}
    status_at = header.index("status")
    kind_at = header.index("error_type")
    for row in table[1:]:
        if len(row) != len(header) or not row[0].isdigit():
            raise BatchError(f"{output} has a malformed row; move it aside to start again")
        status = row[status_at]
        if retry_errors and (not status or int(status) >= 500 or row[kind_at] == TOO_LARGE):
            continue
        rows[int(row[0])] = row
    return rows


def _write_all(
    output: Path, header: list[str], rows: Iterator[list[str]] | list[list[str]]
) -> None:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_atomic(output, buffer.getvalue().encode("utf-8"))


def _one_line(text: str) -> str:
    """Every result row is one physical line, so a torn last row is easy to find and drop."""
    return text.replace("\r", " ").replace("\n", " ")


def _body_text(body: bytes) -> str:
    try:
        return json.dumps(json.loads(body), ensure_ascii=False, separators=(",", ":"))
    except ValueError:
        return _one_line(body.decode("utf-8", "replace"))


def _error_fields(status: int, body: bytes) -> tuple[str, str]:
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("type"), str):
        return _one_line(data["type"]), _one_line(str(data.get("message", "")))
    return f"HTTP {status}", _one_line(body[:200].decode("utf-8", "replace"))


class _Runner:
    def __init__(self, spec: BatchSpec, session: aiohttp.ClientSession) -> None:
        self.spec = spec
        self.session = session
        self.base = f"{spec.gateway.rstrip('/')}/r1/{spec.service.to_path()}"

    async def one(self, row: dict[str, str]) -> list[str]:
        """``[status, error_type, error_message, message_id, response]`` for one row."""
        spec = self.spec
        headers = {"X-Road-Client": str(spec.client)}
        try:
            if spec.subject_column is not None:
                headers["Shahrah-Data-Subject"] = Cnic.parse(row[spec.subject_column]).to_user_id()
            if spec.purpose:
                headers["Shahrah-Purpose"] = spec.purpose
            consent = row[spec.consent_column] if spec.consent_column else spec.consent
            if consent:
                headers["Shahrah-Consent"] = consent
            if any(_CONTROL.search(v) for v in headers.values()):
                raise BadRequestError(
                    "a header value holds a line break or another control character"
                )
            url = self.base + fill_path(spec.path, row)
        except BadRequestError as e:
            return ["", "InvalidInput", e.message, "", ""]
        try:
            async with self.session.request(
                spec.method,
                url,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=spec.timeout),
            ) as r:
                body = await read_up_to(r.content, spec.max_response + 1)
                message_id = r.headers.get("X-Road-Id", "")
                if len(body) > spec.max_response:
                    message = f"the answer is over {spec.max_response} bytes; raise the limit"
                    return [str(r.status), TOO_LARGE, message, message_id, ""]
                if r.status >= 400 or "X-Road-Error" in r.headers:
                    kind, message = _error_fields(r.status, body)
                    return [str(r.status), kind, message, message_id, ""]
                return [str(r.status), "", "", message_id, _body_text(body)]
        except (aiohttp.ClientError, TimeoutError) as e:
            return ["", "Transport", f"no answer from the gateway: {type(e).__name__}", "", ""]


async def _pending(
    rows: Iterator[tuple[int, dict[str, str]]], done: dict[int, list[str]]
) -> AsyncIterator[tuple[int, dict[str, str]]]:
    for number, row in rows:
        if number not in done:
            yield number, row


async def run_batch(
    spec: BatchSpec,
    input_path: Path,
    output: Path,
    *,
    retry_errors: bool = False,
    progress: Callable[[int], None] = lambda n: None,
    on_start: Callable[[int], None] = lambda pending: None,
) -> BatchSummary:
    """Send every row of ``input_path`` not yet answered in ``output``; see the module docstring."""
    columns, header, done, total = await asyncio.to_thread(
        _prepare, spec, input_path, output, retry_errors
    )
    on_start(total - len(done))
    already = len(done)
    sent = errors = 0
    queue: asyncio.Queue[tuple[int, dict[str, str]] | None] = asyncio.Queue(spec.concurrency * 2)
    out = await asyncio.to_thread(_open_results, output, header)
    with out:
        writer = csv.writer(out, lineterminator="\n")

        def record(number: int, row: dict[str, str], result: list[str]) -> None:
            nonlocal sent, errors
            line = [str(number), *(row.get(c, "") for c in columns), *result]
            writer.writerow(line)
            out.flush()
            done[number] = line
            sent += 1
            errors += bool(result[1])
            if sent % _SYNC_EVERY == 0:
                os.fsync(out.fileno())
            progress(1)

        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=spec.concurrency)
        ) as session:
            runner = _Runner(spec, session)

            async def worker() -> None:
                while (item := await queue.get()) is not None:
                    number, row = item
                    record(number, row, await runner.one(row))

            async def feed() -> None:
                async for item in _pending(_rows(input_path), done):
                    await queue.put(item)
                for _ in range(spec.concurrency):
                    await queue.put(None)

            # Fed beside the workers, not before them: if they all fail, a feeder waiting
            # for room in the queue would wait for ever; gather raises the first failure.
            tasks = [asyncio.create_task(worker()) for _ in range(spec.concurrency)]
            tasks.append(asyncio.create_task(feed()))
            try:
                await asyncio.gather(*tasks)
            finally:
                for task in tasks:
                    task.cancel()
                out.flush()
                os.fsync(out.fileno())
    if len(done) == total:
        ordered = sorted(done.values(), key=lambda r: int(r[0]))
        await asyncio.to_thread(_write_all, output, header, ordered)
    return BatchSummary(total=total, already=already, sent=sent, errors=errors)


def _prepare(
    spec: BatchSpec, input_path: Path, output: Path, retry_errors: bool
) -> tuple[list[str], list[str], dict[int, list[str]], int]:
    """Check the options against the input; read what an earlier run answered."""
    columns = _columns(input_path)
    needed = placeholders(spec.path) | {
        c for c in (spec.subject_column, spec.consent_column) if c is not None
    }
    missing = needed - set(columns)
    if missing:
        raise BatchError(f"the input has no column {sorted(missing)}")
    if not 1 <= spec.concurrency <= 256:
        raise BatchError("concurrency must be between 1 and 256")
    header = [ROW, *columns, *RESULT_COLUMNS]
    done = _answered(output, header, retry_errors)
    total = sum(1 for _ in _rows(input_path))
    if output.exists() and len(done) != _count_rows(output):
        # Drop a torn last row (and, with retry_errors, the rows to send again).
        _write_all(output, header, sorted(done.values(), key=lambda r: int(r[0])))
    return columns, header, done, total


def _open_results(output: Path, header: list[str]) -> TextIO:
    new_file = not output.exists()
    out = output.open("a", encoding="utf-8", newline="")
    if new_file:
        csv.writer(out, lineterminator="\n").writerow(header)
        out.flush()
    return out


def _count_rows(output: Path) -> int:
    with output.open(encoding="utf-8", newline="") as f:
        return max(0, sum(1 for _ in csv.reader(f)) - 1)
