"""Declarative mappings: from a legacy record to the service's JSON, field by field.

A mapping is a table ``output JSON Pointer → how to get the value``. Each
entry reads one or more source paths (or a constant), joins them, runs its
transforms, applies the default, checks ``required``, converts to the JSON
type asked (``as``) and writes the value at its pointer, creating the objects
on the way. ``each`` maps a repeated source (XML elements, JSON array items,
SQL rows) to a JSON array with a nested mapping.

What a *source path* means depends on the kind of backend, and is hidden
behind :class:`Node`: a JSON Pointer into a REST answer, a namespaced element
path into a SOAP answer, a column name of a SQL row or a field of a file
record. Empty strings count as absent: legacy systems pad with blanks, and an
empty string is almost never what a schema wants.
"""

from __future__ import annotations

import datetime as dt
import math
import sys
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from adapters.errors import MappingError, TransformError
from adapters.transforms import Transform, ascii_digits

__all__ = [
    "CompiledMapping",
    "FieldMap",
    "JsonNode",
    "Node",
    "RowsNode",
    "json_pointer",
    "pointer_tokens",
]

JsonType = Literal["string", "integer", "number", "boolean"]
_TRUE = {"true", "1", "y", "yes"}
_FALSE = {"false", "0", "n", "no"}
_MAX_DIGITS = sys.int_info.default_max_str_digits  # 4300: the longest int Python writes


class FieldMap(BaseModel):
    """One output field as written in the configuration (its shape only; see ``compile``)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    source: str | list[str] | None = Field(default=None, alias="from")
    value: str | int | float | bool | None = None
    join: str = " "
    transforms: list[Any] = Field(default_factory=list)
    default: Any = None
    required: bool = False
    type: JsonType | None = Field(default=None, alias="as")
    each: str | None = None
    mapping: dict[str, FieldMap] | None = None  # with each: every item becomes an object
    item: FieldMap | None = None  # with each: every item becomes one value

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        # `"/name": NAME_COLUMN` is short for `"/name": {from: NAME_COLUMN}`.
        return {"from": data} if isinstance(data, str | list) else data

    @model_validator(mode="after")
    def _one_source(self) -> FieldMap:
        given = [k for k in ("from", "value", "each") if self._get(k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'from', 'value' or 'each'")
        if (self.each is None) != (self.mapping is None and self.item is None):
            raise ValueError("'each' goes with 'mapping' (objects) or 'item' (values)")
        if self.mapping is not None and self.item is not None:
            raise ValueError("give 'mapping' or 'item', not both")
        if self.item is not None and self.item.each is not None:
            raise ValueError("an 'item' is one value; nest 'each' inside a 'mapping'")
        if self.each is not None and (self.transforms or self.type or self.default is not None):
            raise ValueError("'each' takes only 'mapping' or 'item', and 'required'")
        if isinstance(self.source, list) and not self.source:
            raise ValueError("'from' needs at least one path")
        return self

    def _get(self, key: str) -> Any:
        return {"from": self.source, "value": self.value, "each": self.each}[key]


# --- pointers ------------------------------------------------------------------------------


def pointer_tokens(pointer: str) -> tuple[str, ...]:
    """RFC 6901 reference tokens of ``pointer``; ValueError if it is not a pointer."""
    if pointer == "":
        return ()
    if not pointer.startswith("/"):
        raise ValueError(f"{pointer!r} is not a JSON Pointer (it must start with '/')")
    tokens = pointer[1:].split("/")
    for t in tokens:
        if "~" in t.replace("~0", "").replace("~1", ""):
            raise ValueError(f"{pointer!r} has a '~' not followed by 0 or 1")
    return tuple(t.replace("~1", "/").replace("~0", "~") for t in tokens)


def json_pointer(tokens: Sequence[str]) -> str:
    return "".join("/" + t.replace("~", "~0").replace("/", "~1") for t in tokens)


def _set(doc: dict[str, Any], tokens: tuple[str, ...], value: Any) -> None:
    here = doc
    for t in tokens[:-1]:
        nxt = here.setdefault(t, {})
        if not isinstance(nxt, dict):
            raise ValueError(f"{json_pointer(tokens)} is inside a value that is not an object")
        here = nxt
    here[tokens[-1]] = value


# --- sources ---------------------------------------------------------------------------------


class Node(Protocol):
    """A record seen through the paths of its kind of backend."""

    def get(self, path: str) -> Any:
        """The value at ``path``, or None when there is none; ValueError on a wrong shape."""
        ...

    def each(self, path: str) -> Sequence[Node]:
        """The repeated items at ``path`` (empty when there are none)."""
        ...


@dataclass(frozen=True)
class JsonNode:
    """A JSON value addressed by JSON Pointers (REST answers, stored file records)."""

    doc: Any

    def _resolve(self, pointer: str) -> Any:
        here = self.doc
        for t in pointer_tokens(pointer):
            if isinstance(here, dict):
                if t not in here:
                    return None
                here = here[t]
            elif isinstance(here, list):
                if not t.isdigit() or int(t) >= len(here):
                    return None
                here = here[int(t)]
            else:
                return None
        return here

    def get(self, path: str) -> Any:
        value = self._resolve(path)
        if isinstance(value, dict | list):
            raise ValueError(f"{path} is an {type(value).__name__}, not a single value")
        return value

    def each(self, path: str) -> Sequence[Node]:
        value = self._resolve(path)
        if value is None:
            return []
        if not isinstance(value, list):
            raise ValueError(f"{path} is not an array")
        return [JsonNode(v) for v in value]


@dataclass(frozen=True)
class RowsNode:
    """Rows of named columns (a SQL result, a file record).

    A single value is read from the first row: a query that joins a parcel to
    its owners repeats the parcel's columns on every row. ``each('*')`` gives
    every row, for the repeated part. With ``fold`` the rows' keys are
    case-folded and so are the paths asked for: databases fold unquoted names
    differently (PostgreSQL to lower case, Oracle to upper case).
    """

    rows: Sequence[Mapping[str, Any]]
    fold: bool = False

    def get(self, path: str) -> Any:
        if not self.rows:
            return None
        row = self.rows[0]
        key = path.casefold() if self.fold else path
        if key not in row:
            raise ValueError(f"the result has no column {path!r}")
        return row[key]

    def each(self, path: str) -> Sequence[Node]:
        if path != "*":
            raise ValueError("rows are repeated with each: '*'")
        return [RowsNode([r], self.fold) for r in self.rows]


# --- compiled mappings -------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """Legacy types to JSON: dates and times as ISO 8601, decimals as numbers, UUIDs as text."""
    if isinstance(value, Decimal):
        return _number(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise TransformError("not a finite number", value)  # JSON has no NaN or infinity
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        raise TransformError("a binary value needs a transform or a text column")
    # A driver's other types (an interval, a JSON or array column) would pass the schema
    # where it names no type, then fail to be written as JSON at all.
    if not isinstance(value, str | int | float):
        raise TransformError(
            f"a {type(value).__name__} value has no JSON form; cast the column to text", value
        )
    return value


def _number(value: Any) -> int | float:
    try:
        d = value if isinstance(value, Decimal) else Decimal(ascii_digits(str(value)).strip())
    except InvalidOperation:
        raise TransformError("not a number", value) from None
    if not d.is_finite():
        raise TransformError("not a finite number", value)
    # "1e1000000" would become an integer of a million digits, minutes of CPU; an integer
    # longer than Python turns into text could never be answered anyway.
    if d and d.adjusted() >= _MAX_DIGITS:
        raise TransformError("number out of range", value)
    if d == d.to_integral_value():
        return int(d)
    f = float(d)
    if not math.isfinite(f):
        raise TransformError("number out of range", value)
    return f


def _convert(value: Any, to: JsonType) -> Any:
    if to == "string":
        plain = _plain(value)
        return plain if isinstance(plain, str) else str(value)
    if to == "number":
        if isinstance(value, bool):
            raise TransformError("a boolean is not a number", value)
        return _number(value)
    if to == "integer":
        n = None if isinstance(value, bool) else _number(value)
        if not isinstance(n, int):
            raise TransformError("not an integer", value)
        return n
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise TransformError("not a yes/no value (true/false, 1/0, Y/N, yes/no)", value)


@dataclass(frozen=True)
class CompiledField:
    pointer: str
    target: tuple[str, ...]
    sources: tuple[str, ...] = ()
    constant: Any = None
    join: str = " "
    transforms: tuple[Transform, ...] = ()
    default: Any = None
    required: bool = False
    type: JsonType | None = None
    each: str | None = None
    children: CompiledMapping | None = None
    item: CompiledField | None = None

    @property
    def guaranteed(self) -> bool:
        """Whether every successful mapping writes this field."""
        return self.required or self.default is not None or self.constant is not None

    def value(self, node: Node) -> Any:
        if self.constant is not None:
            return self.constant
        parts = [node.get(s) for s in self.sources]
        if len(parts) == 1:
            value = parts[0]
        else:
            texts = [str(_plain(p)).strip() for p in parts if p is not None]
            value = self.join.join(t for t in texts if t)
        for fn in self.transforms:
            value = fn(value)
        if isinstance(value, str) and not value.strip():
            value = None
        return value


@dataclass(frozen=True)
class CompiledMapping:
    """A checked mapping, ready to apply to many records."""

    fields: tuple[CompiledField, ...] = field(default_factory=tuple)

    def sources(self) -> set[str]:
        """Every source path the mapping reads (nested ``each`` mappings included)."""
        out: set[str] = set()
        for f in self.fields:
            out.update(f.sources)
            if f.children is not None:
                out.update(f.children.sources())
            if f.item is not None:
                out.update(f.item.sources)
        return out

    def apply(self, node: Node, record: str) -> dict[str, Any]:
        """Map one record; a failure raises MappingError naming ``record`` and the field."""
        out: dict[str, Any] = {}
        for f in self.fields:
            try:
                value = self._field(f, node, record)
            except MappingError:
                raise
            except TransformError as e:
                raise MappingError(record, f.pointer, e.reason, value=e.value) from e
            except ValueError as e:
                raise MappingError(record, f.pointer, str(e)) from e
            if value is not None:
                _set(out, f.target, value)
        return out

    @staticmethod
    def _field(f: CompiledField, node: Node, record: str) -> Any:
        if f.each is not None:
            items = node.each(f.each)
            if not items and f.required:
                raise TransformError("required, but the source has no items")
            if f.item is not None:
                values = [CompiledMapping._field(f.item, item, record) for item in items]
                return [v for v in values if v is not None]
            assert f.children is not None
            return [
                f.children.apply(item, f"{record} {f.pointer}[{i}]") for i, item in enumerate(items)
            ]
        value = f.value(node)
        if value is None:
            value = f.default
        if value is None:
            if f.required:
                raise TransformError("required, but the source has no value")
            return None
        return _convert(value, f.type) if f.type else _plain(value)


class ConfigFail(Protocol):
    """Raises the configuration error for a spot below the mapping (see adapters.config)."""

    def __call__(self, where: Sequence[str | int], message: str, /) -> Exception: ...


def compile_mapping(
    spec: Mapping[str, FieldMap],
    *,
    tables: Mapping[str, Mapping[str, Any]],
    check_path: Any,
    fail: ConfigFail,
) -> CompiledMapping:
    """Check and compile a configured mapping.

    ``check_path(path, repeated)`` raises ValueError when a source path is not
    valid for the backend's kind; ``fail(where, message)`` builds the error
    for the entry at ``where`` (relative to the mapping), naming its line.
    """
    from adapters.transforms import compile_transform

    fields: list[CompiledField] = []
    for pointer, entry in spec.items():
        try:
            target = pointer_tokens(pointer)
        except ValueError as e:
            raise fail([pointer], str(e)) from None
        if not target:
            raise fail([pointer], "the output root cannot be a field; map to /name pointers")
        clash = next((f.pointer for f in fields if _overlaps(f.target, target)), None)
        if clash is not None:
            raise fail([pointer], f"overlaps with {clash}: one value cannot hold both")
        if entry.each is not None:
            try:
                check_path(entry.each, True)
            except ValueError as e:
                raise fail([pointer, "each"], str(e)) from None
            part = "mapping" if entry.mapping is not None else "item"

            def child_fail(
                where: Sequence[str | int], message: str, p: str = pointer, part: str = part
            ) -> Exception:
                return fail([p, part, *where], message)

            if entry.mapping is not None:
                children = compile_mapping(
                    entry.mapping, tables=tables, check_path=check_path, fail=child_fail
                )
                fields.append(
                    CompiledField(
                        pointer, target, each=entry.each, children=children, required=entry.required
                    )
                )
            else:
                assert entry.item is not None
                (single,) = compile_mapping(
                    {"/item": entry.item},
                    tables=tables,
                    check_path=check_path,
                    fail=lambda where, message: child_fail(where[1:], message),
                ).fields
                fields.append(
                    CompiledField(
                        pointer, target, each=entry.each, item=single, required=entry.required
                    )
                )
            continue
        sources: tuple[str, ...] = ()
        if entry.source is not None:
            sources = (entry.source,) if isinstance(entry.source, str) else tuple(entry.source)
            for i, s in enumerate(sources):
                try:
                    check_path(s, False)
                except ValueError as e:
                    where: list[str | int] = [pointer, "from"]
                    if not isinstance(entry.source, str):
                        where.append(i)
                    raise fail(where, str(e)) from None
        transforms: list[Transform] = []
        for i, t in enumerate(entry.transforms):
            try:
                transforms.append(compile_transform(t, tables))
            except ValueError as e:
                raise fail([pointer, "transforms", i], str(e)) from None
        fields.append(
            CompiledField(
                pointer,
                target,
                sources=sources,
                constant=entry.value,
                join=entry.join,
                transforms=tuple(transforms),
                default=entry.default,
                required=entry.required,
                type=entry.type,
            )
        )
    return CompiledMapping(tuple(fields))


def _overlaps(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    n = min(len(a), len(b))
    return a[:n] == b[:n]
