"""Turning one dropped file into mapped records and dead letters, with nothing half-done.

:func:`parse_file` is pure: bytes in, an :class:`Outcome` out. Each record is
decoded (CSV row or fixed-width layout), mapped, given its key and validated
against the service's schema; a record that fails any step becomes a
:class:`DeadLetter` with the reason, and the others load. Some failures
condemn the whole file, which then loads nothing: bytes that are not in the
declared encoding (CSV), a header without the mapped columns, a missing or
wrong trailer count (a truncated transfer), or more bad records than
``max_bad_records``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from adapters.errors import MappingError
from adapters.layout import FieldError, Layout, RawRecord
from adapters.mapping import CompiledMapping, RowsNode, json_pointer
from adapters.schemas import ResponseCheck

__all__ = ["CsvFormat", "DeadLetter", "FixedWidthFormat", "Outcome", "RecordRules", "parse_file"]

MAX_KEY_LENGTH = 255


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
    raw: Any = None  # the record as found: a list of CSV fields or the bytes' hex

    def to_json(self, file: str, sha256: str) -> dict[str, Any]:
        return {
            "file": file,
            "sha256": sha256,
            "record": self.record,
            "offset": self.offset,
            "field": self.field,
            "reason": self.reason,
            "raw": self.raw,
        }


@dataclass
class Outcome:
    loaded: list[tuple[str, int, str]] = field(default_factory=list)  # key, number, JSON
    dead: list[DeadLetter] = field(default_factory=list)
    rejected: str | None = None  # why nothing of the file loads


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


def _fixed_rows(
    fmt: FixedWidthFormat, data: bytes, outcome: Outcome
) -> Iterator[tuple[int, int, dict[str, Any] | DeadLetter]] | None:
    items = list(fmt.records(data))
    items = items[fmt.header_records :]
    if fmt.trailer is not None:
        last = items[-1] if items else None
        if not isinstance(last, RawRecord) or not fmt.is_trailer(last.data):
            outcome.rejected = "the file ends without its trailer record (truncated?)"
            return None
        try:
            expected = fmt.trailer_count(last.data)
        except FieldError as e:
            outcome.rejected = f"trailer: {e.reason}"
            return None
        items = items[:-1]
        if expected != len(items):
            outcome.rejected = f"the trailer counts {expected} records, the file has {len(items)}"
            return None

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
        if isinstance(row, DeadLetter):
            outcome.dead.append(row)
            continue
        raw: Any = row if isinstance(fmt, CsvFormat) else {k: _plain(v) for k, v in row.items()}
        try:
            document = rules.mapping.apply(RowsNode([row]), f"{file} record {number}")
        except MappingError as e:
            outcome.dead.append(DeadLetter(number, e.reason, field=e.field, offset=offset, raw=raw))
            continue
        problem = rules.validator.problem(document)
        if problem is not None:
            outcome.dead.append(
                DeadLetter(
                    number,
                    f"the service's schema refuses it: {problem[1]}",
                    field=problem[0],
                    offset=offset,
                    raw=raw,
                )
            )
            continue
        key = _key(document, rules.key)
        if key is None or not key or len(key) > MAX_KEY_LENGTH:
            outcome.dead.append(
                DeadLetter(
                    number,
                    "the record has no usable key",
                    field=json_pointer(rules.key),
                    offset=offset,
                    raw=raw,
                )
            )
            continue
        if key in seen:
            outcome.dead.append(
                DeadLetter(
                    number,
                    f"the key is used by record {seen[key]} of the same file",
                    field=json_pointer(rules.key),
                    offset=offset,
                    raw=raw,
                )
            )
            continue
        seen[key] = number
        body = json.dumps(document, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
        outcome.loaded.append((key, number, body))
    if rules.max_bad_records is not None and len(outcome.dead) > rules.max_bad_records:
        outcome.rejected = (
            f"{len(outcome.dead)} bad records, more than the {rules.max_bad_records} allowed"
        )
    if outcome.rejected:
        outcome.loaded.clear()
    return outcome


def _plain(value: Any) -> Any:
    return str(value) if value is not None and not isinstance(value, str) else value
