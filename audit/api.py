"""The read API of audit logs, shaped like RFC 6962 section 4, for regulators only.

Per log (``/logs/{log id}/...``):

* ``ct/v1/get-sth``: the newest signed checkpoint as a tree head;
* ``ct/v1/get-sth-consistency?first=&second=``;
* ``ct/v1/get-proof-by-hash?hash=&tree_size=``;
* ``ct/v1/get-entries?start=&end=`` (inclusive, at most 1000 per call);
* ``checkpoint``: the newest checkpoint as a C2SP signed note (cosigned if witnessed).

Hashes are standard base64 as in RFC 6962; entries are returned as
``leaf_input`` (base64 of the exact entry bytes, canonical JSON). A gateway
mounts this on its own aiohttp application with :func:`register_read_api`,
under a prefix, with the authenticator of its choice (normally
audit.regulators.RegulatorAuthenticator); the audit server mounts the same
API over its mirrored logs.
"""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from audit import store
from audit.note import Checkpoint, Note, b64decode_hash, b64encode_hash
from audit.regulators import SECURITY_SCHEME
from core.db import Sessions, transaction
from core.errors import BadRequestError, NotFoundError
from core.web import Api, error_middleware, security_headers_middleware

__all__ = ["MAX_ENTRIES", "ReadState", "read_api", "register_read_api"]

MAX_ENTRIES = 1000  # per get-entries call, as CT logs cap theirs

_DECIMAL = re.compile(r"0|[1-9][0-9]{0,18}")


def _decimal(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, str) or not _DECIMAL.fullmatch(value):
        raise ValueError("must be a decimal number without sign or leading zeros")
    return int(value)


Count = Annotated[int, BeforeValidator(_decimal), Field(ge=0, lt=2**63)]


class _Query(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConsistencyQuery(_Query):
    first: Count
    second: Count


class ProofByHashQuery(_Query):
    hash: str = Field(max_length=100, description="base64 leaf hash")
    tree_size: Count


class EntriesQuery(_Query):
    start: Count
    end: Count


class TreeHead(BaseModel):
    tree_size: int
    timestamp: int = Field(description="milliseconds since the epoch when it was signed")
    sha256_root_hash: str
    checkpoint: str = Field(description="the C2SP signed note, cosigned if witnessed")
    witnessed: bool


class ConsistencyProof(BaseModel):
    consistency: list[str]


class ProofByHash(BaseModel):
    leaf_index: int
    audit_path: list[str]


class LeafEntry(BaseModel):
    index: int
    leaf_input: str = Field(description="base64 of the entry bytes (canonical JSON)")


class Entries(BaseModel):
    entries: list[LeafEntry]


class LogSummary(BaseModel):
    log_id: str
    origin: str
    tree_size: int
    sha256_root_hash: str


@dataclass(frozen=True)
class ReadState:
    sessions: Sessions
    kind: str  # which logs this API shows: local logs on a gateway, mirrors on the audit server


STATE = web.AppKey("audit_read_state", ReadState)
REG = "regulator"
LOG = "/logs/{log:.+}"

read_api = Api(
    title="Shahrah audit log",
    version="1",
    description="RFC 6962-shaped read access to audit logs; regulators only.",
    security_schemes={REG: SECURITY_SCHEME},
)


@asynccontextmanager
async def _log(request: web.Request) -> AsyncIterator[tuple[AsyncSession, store.LogHead]]:
    """A read transaction and the log the URL names (404 if there is none)."""
    state = request.config_dict[STATE]
    async with transaction(state.sessions, write=False) as s:
        yield s, await store.get_log(s, request.match_info["log"], state.kind)


@read_api.route(
    "GET",
    "/logs",
    summary="The logs this server holds",
    response=list[LogSummary],
    auth=REG,
    tags=("audit",),
)
async def list_logs(request: web.Request, principal: object) -> list[LogSummary]:
    state = request.config_dict[STATE]
    async with transaction(state.sessions, write=False) as s:
        heads = await store.logs(s, state.kind)
    return [
        LogSummary(
            log_id=h.name,
            origin=h.origin,
            tree_size=h.size,
            sha256_root_hash=b64encode_hash(h.root),
        )
        for h in heads
    ]


@read_api.route(
    "GET",
    f"{LOG}/ct/v1/get-sth",
    summary="The newest signed tree head",
    response=TreeHead,
    auth=REG,
    errors=(404,),
    tags=("audit",),
)
async def get_sth(request: web.Request, principal: object) -> TreeHead:
    async with _log(request) as (s, head):
        row = await store.latest_checkpoint(s, head)
    if row is None:
        raise NotFoundError(f"audit log {head.name!r} has no signed checkpoint yet")
    return TreeHead(
        tree_size=row.size,
        timestamp=int(row.created_at.timestamp() * 1000),
        sha256_root_hash=b64encode_hash(row.root),
        checkpoint=row.cosigned or row.note,
        witnessed=row.cosigned is not None,
    )


@read_api.route(
    "GET",
    f"{LOG}/ct/v1/get-sth-consistency",
    summary="Consistency proof between two tree sizes",
    query=ConsistencyQuery,
    response=ConsistencyProof,
    auth=REG,
    errors=(404,),
    tags=("audit",),
)
async def get_sth_consistency(
    request: web.Request, principal: object, query: ConsistencyQuery
) -> ConsistencyProof:
    async with _log(request) as (s, head):
        proof = await store.consistency_proof(s, head, query.first, query.second)
    return ConsistencyProof(consistency=[b64encode_hash(h) for h in proof])


@read_api.route(
    "GET",
    f"{LOG}/ct/v1/get-proof-by-hash",
    summary="Inclusion proof of a leaf hash in a tree size",
    query=ProofByHashQuery,
    response=ProofByHash,
    auth=REG,
    errors=(404,),
    tags=("audit",),
)
async def get_proof_by_hash(
    request: web.Request, principal: object, query: ProofByHashQuery
) -> ProofByHash:
    leaf = b64decode_hash(query.hash, "hash")
    async with _log(request) as (s, head):
        if not 1 <= query.tree_size <= head.size:
            raise BadRequestError(
                f"tree_size {query.tree_size} is outside the log, which has {head.size} entries",
                detail={"field": "tree_size"},
            )
        index = await store.leaf_index(s, head, leaf)
        if index is None or index >= query.tree_size:
            raise NotFoundError(f"no entry with that hash in the first {query.tree_size} entries")
        proof = await store.inclusion_proof(s, head, index, query.tree_size)
    return ProofByHash(leaf_index=index, audit_path=[b64encode_hash(h) for h in proof])


@read_api.route(
    "GET",
    f"{LOG}/ct/v1/get-entries",
    summary=f"Entries start..end inclusive (at most {MAX_ENTRIES})",
    query=EntriesQuery,
    response=Entries,
    auth=REG,
    errors=(404,),
    tags=("audit",),
)
async def get_entries(request: web.Request, principal: object, query: EntriesQuery) -> Entries:
    async with _log(request) as (s, head):
        if query.start >= head.size:
            raise BadRequestError(
                f"start {query.start} is beyond the log, which has {head.size} entries",
                detail={"field": "start"},
            )
        if query.end < query.start:
            raise BadRequestError("end must not be before start", detail={"field": "end"})
        end = min(query.end + 1, head.size, query.start + MAX_ENTRIES)
        rows = await store.entries(s, head, query.start, end)
    return Entries(
        entries=[LeafEntry(index=i, leaf_input=base64.b64encode(e).decode()) for i, e in rows]
    )


@read_api.route(
    "GET",
    f"{LOG}/checkpoint",
    summary="The newest checkpoint as a C2SP signed note",
    response={"type": "string"},
    content_type="text/plain",
    auth=REG,
    errors=(404,),
    tags=("audit",),
)
async def get_checkpoint(request: web.Request, principal: object) -> web.Response:
    async with _log(request) as (s, head):
        row = await store.latest_checkpoint(s, head)
    if row is None:
        raise NotFoundError(f"audit log {head.name!r} has no signed checkpoint yet")
    note = row.cosigned or row.note
    Checkpoint.parse(Note.parse(note).text)  # only ever serve what parses
    return web.Response(text=note, content_type="text/plain", charset="utf-8")


def register_read_api(
    app: web.Application,
    sessions: Sessions,
    authenticate: Callable[[web.Request], Awaitable[Any]],
    *,
    prefix: str = "/audit",
    kind: str = store.LOCAL,
) -> web.Application:
    """Mount the read API on ``app`` under ``prefix`` (its OpenAPI at ``prefix/openapi.json``).

    ``authenticate`` is the credential check (a core.web.Api authenticator);
    ``kind`` is ``store.LOCAL`` on a gateway. Errors are rendered as JSON with
    management-API statuses (400, 401, 403, 404) whatever the host app does.
    """
    sub = web.Application(middlewares=[security_headers_middleware, error_middleware()])
    sub[STATE] = ReadState(sessions, kind)
    read_api.register(sub, {REG: authenticate})
    app.add_subapp(prefix, sub)
    return sub
