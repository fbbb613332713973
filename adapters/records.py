"""Turning one dropped file into mapped records and dead letters, with nothing half-done.

:func:`parse_file` is pure: bytes in, an :class:`Outcome` out. Each record is
decoded (CSV row or fixed-width layout), mapped, given its key and validated
against the service's schema; a record that fails any step becomes a
:class:`DeadLetter` with the reason, and the others load. Some failures
condemn the whole file, which then loads nothing: bytes that are not in the
declared encoding (CSV), a header without the mapped columns, a missing or
wrong trailer count (a truncated transfer), or more bad records than
``max_bad_records``.

A bad file costs about what a few bad records cost: the records are read one at a
time, reading stops at the first bad record past ``max_bad_records``, only the
first :data:`DEAD_LETTER_SAMPLE` dead letters are kept (the rest are counted)
and each holds at most :data:`MAX_RAW` characters of its record.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import io
import itertools
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from adapters.errors import MappingError
from adapters.layout import FieldError, Layout, RawRecord
from adapters.mapping import CompiledMapping, RowsNode, json_pointer
from adapters.schemas import ResponseCheck

__all__ = [
    "DEAD_LETTER_SAMPLE",
    "MAX_RAW",
    "CsvFormat",
    "DeadLetter",
    "FixedWidthFormat",
    "Outcome",
    "RecordRules",
    "parse_file",
]

MAX_KEY_LENGTH = 255
# Dead letters kept per file. Enough to show an operator every kind of fault in a file; a
# file of a million bad one-byte lines would otherwise take gigabytes to hold and to write.
DEAD_LETTER_SAMPLE = 1000
# Characters of a record a dead letter holds (a delimiter counting as one): a legacy record
# fits whole, a crafted row of a million fields does not. With the sample, about 4 MiB a file.
MAX_RAW = 4096


class CsvFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["csv"]
    encoding: str = "utf-8-sig"  # utf-8 with or without a byte order mark; cp1256 for old Urdu
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    quotechar: str = Field(default='"', min_length=1, max_length=1)


class FixedWidthFormat(Layout):
    format: Literal["fixed-width"]


@dataclass(frozen=True)
class DeadLetter:
    """A record (or, with ``record`` None, the whole file) that was not loaded, and why."""

    record: int | None
    reason: str
    field: str | None = None
    offset: int | None = None  # byte offset (fixed-width) or line number (CSV)
    # The record as found, cut to MAX_RAW characters: CSV fields, decoded fields or the bytes' hex.
    raw: Any = None
    # dataclasses.field: in this class body, ``field`` is the attribute above.
    raw_truncated: bool = dataclasses.field(default=False, init=False)

    def __post_init__(self) -> None:
        raw, cut = _bounded(self.raw)
        object.__setattr__(self, "raw", raw)  # frozen: the one place it is set
        object.__setattr__(self, "raw_truncated", cut)

    def to_json(self, file: str, sha256: str) -> dict[str, Any]:
        return {
            "file": file,
            "sha256": sha256,
            "record": self.record,
            "offset": self.offset,
            "field": self.field,
            "reason": self.reason,
            "raw": self.raw,
            "raw_truncated": self.raw_truncated,
        }


@dataclass
class Outcome:
    loaded: list[tuple[str, int, str]] = field(default_factory=list)  # key, number, JSON
    dead: list[DeadLetter] = field(default_factory=list)  # the first DEAD_LETTER_SAMPLE bad ones
    bad: int = 0  # bad records, listed in ``dead`` or not
    rejected: str | None = None  # why nothing of the file loads

    def add_bad(self, letter: DeadLetter) -> None:
        self.bad += 1
        if len(self.dead) < DEAD_LETTER_SAMPLE:
            self.dead.append(letter)


@dataclass(frozen=True)
class RecordRules:
    """How the records of one drop directory become the service's documents."""

    name: str  # the source, for record labels
    fmt: CsvFormat | FixedWidthFormat
    mapping: CompiledMapping
    key: tuple[str, ...]  # pointer tokens of the key in the mapped document
    validator: ResponseCheck
    max_bad_records: int | None = None


def _key(document: Mapping[str, Any], tokens: tuple[str, ...]) -> str | None:
    here: Any = document
    for t in tokens:
        if not isinstance(here, dict) or t not in here:
            return None
        here = here[t]
    if isinstance(here, dict | list) or here is None:
        return None
    return str(here)


def _csv_rows(
    fmt: CsvFormat, data: bytes, outcome: Outcome, needed: set[str]
) -> Iterator[tuple[int, int, dict[str, str] | DeadLetter]] | None:
    try:
        text = data.decode(fmt.encoding)
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        outcome.rejected = f"byte {e.start} (line {line}) is not valid {fmt.encoding}"
        return None
    reader = csv.reader(
        io.StringIO(text, newline=""), delimiter=fmt.delimiter, quotechar=fmt.quotechar, strict=True
    )
    try:
        header = next(reader, None)
    except csv.Error as e:
        outcome.rejected = f"the header line is not valid CSV: {e}"
        return None
    if not header:
        outcome.rejected = "the file has no header line"
        return None
    names = [h.strip() for h in header]
    if len(set(names)) != len(names):
        outcome.rejected = "the header names a column twice"
        return None
    missing = needed - set(names)
    if missing:
        outcome.rejected = f"the header lacks the mapped columns {sorted(missing)}"
        return None

    def rows() -> Iterator[tuple[int, int, dict[str, str] | DeadLetter]]:
        number = 0
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                number += 1
                yield (
                    number,
                    reader.line_num,
                    DeadLetter(number, f"not valid CSV: {e}", offset=reader.line_num),
                )
                continue
            if not row or row == [""]:
                continue
            number += 1
            if len(row) != len(names):
                what = "truncated" if len(row) < len(names) else "overlong"
                yield (
                    number,
                    reader.line_num,
                    DeadLetter(
                        number,
                        f"{what} record: {len(row)} fields, the header has {len(names)}",
                        offset=reader.line_num,
                        raw=row,
                    ),
                )
                continue
            yield number, reader.line_num, dict(zip(names, row, strict=True))

    return rows()


def _check_trailer(fmt: FixedWidthFormat, data: bytes) -> int | str:
    """The number of detail records the trailer vouches for, or why it condemns the file.

    A first pass that keeps nothing but the last record, so a file of a million bad lines is
    never held as a million errors, and a truncated file is refused before any record is mapped.
    """
    records = itertools.islice(fmt.records(data), fmt.header_records, None)
    tail = collections.deque(enumerate(records, start=1), maxlen=1)
    count, last = tail[0] if tail else (0, None)
    if not isinstance(last, RawRecord) or not fmt.is_trailer(last.data):
        return "the file ends without its trailer record (truncated?)"
    try:
        expected = fmt.trailer_count(last.data)
    except FieldError as e:
        return f"trailer: {e.reason}"
    if expected != count - 1:
        return f"the trailer counts {expected} records, the file has {count - 1}"
    return expected


def _fixed_rows(
    fmt: FixedWidthFormat, data: bytes, outcome: Outcome
) -> Iterator[tuple[int, int, dict[str, Any] | DeadLetter]] | None:
    items = itertools.islice(fmt.records(data), fmt.header_records, None)
    if fmt.trailer is not None:
        checked = _check_trailer(fmt, data)
        if isinstance(checked, str):
            outcome.rejected = checked
            return None
        items = itertools.islice(items, checked)  # all but the trailer

    def rows() -> Iterator[tuple[int, int, dict[str, Any] | DeadLetter]]:
        for i, item in enumerate(items, start=1):
            if isinstance(item, FieldError):
                yield i, -1, DeadLetter(i, item.reason)
                continue
            try:
                yield i, item.offset, fmt.decode(item.data)
            except FieldError as e:
                yield (
                    i,
                    item.offset,
                    DeadLetter(i, e.reason, field=e.field, offset=item.offset, raw=item.data.hex()),
                )

    return rows()


def parse_file(rules: RecordRules, file: str, data: bytes) -> Outcome:
    """Map every record of ``data``; see the module docstring for what rejects a whole file."""
    outcome = Outcome()
    fmt = rules.fmt
    rows = (
        _csv_rows(fmt, data, outcome, rules.mapping.sources())
        if isinstance(fmt, CsvFormat)
        else _fixed_rows(fmt, data, outcome)
    )
    if rows is None:
        return outcome
    seen: dict[str, int] = {}
    for number, offset, row in rows:
        made = (
            row if isinstance(row, DeadLetter) else _record(rules, file, number, offset, row, seen)
        )
        if not isinstance(made, DeadLetter):
            outcome.loaded.append(made)
            continue
        outcome.add_bad(made)
        if rules.max_bad_records is not None and outcome.bad > rules.max_bad_records:
            # The file is condemned: reading on would only cost time and memory.
            outcome.rejected = f"more than the {rules.max_bad_records} bad records allowed"
            break
    if outcome.rejected:
        outcome.loaded.clear()
    return outcome


def _record(
    rules: RecordRules,
    file: str,
    number: int,
    offset: int,
    row: dict[str, Any],
    seen: dict[str, int],
) -> tuple[str, int, str] | DeadLetter:
    """One decoded record mapped, checked and keyed, or the dead letter saying why it is not."""
    raw: Any = row if isinstance(rules.fmt, CsvFormat) else {k: _plain(v) for k, v in row.items()}
    try:
        document = rules.mapping.apply(RowsNode([row]), f"{file} record {number}")
    except MappingError as e:
        return DeadLetter(number, e.reason, field=e.field, offset=offset, raw=raw)
    problem = rules.validator.problem(document)
    if problem is not None:
        reason = f"the service's schema refuses it: {problem[1]}"
        return DeadLetter(number, reason, field=problem[0], offset=offset, raw=raw)
    key = _key(document, rules.key)
    if key is None or not key or len(key) > MAX_KEY_LENGTH:
        reason = "the record has no usable key"
        return DeadLetter(number, reason, field=json_pointer(rules.key), offset=offset, raw=raw)
    if key in seen:
        reason = f"the key is used by record {seen[key]} of the same file"
        return DeadLetter(number, reason, field=json_pointer(rules.key), offset=offset, raw=raw)
    seen[key] = number
    body = json.dumps(document, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return key, number, body


def _plain(value: Any) -> Any:
    return str(value) if value is not None and not isinstance(value, str) else value


def _bounded(raw: Any) -> tuple[Any, bool]:
    """``raw`` cut to MAX_RAW characters, and whether anything was cut."""
    if isinstance(raw, str):
        return raw[:MAX_RAW], len(raw) > MAX_RAW
    if isinstance(raw, list):
        fields, cut = _fit(("", v) for v in raw)
        return [v for _, v in fields], cut
    if isinstance(raw, dict):
        pairs, cut = _fit(raw.items())
        return dict(pairs), cut
    return raw, False


def _fit(
    parts: Iterable[tuple[str, str | None]],
) -> tuple[list[tuple[str, str | None]], bool]:
    """The leading (name, text) parts that fit in MAX_RAW characters, the last one cut to fit.

    A part counts one character more than its name and text, so that a row of a million
    empty fields is cut too. The flag says whether anything was cut or left out.
    """
    kept: list[tuple[str, str | None]] = []
    room = MAX_RAW
    for name, text in parts:
        cost = len(name) + len(text or "") + 1
        if cost > room:
            if text and room > len(name) + 1:
                kept.append((name, text[: room - len(name) - 1]))
            return kept, True
        kept.append((name, text))
        room -= cost
    return kept, False
