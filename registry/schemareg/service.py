"""The schema registry's rules, each action meant to run inside one transaction.

Callers (the HTTP API, the CLI, ``shahrah registry init``) open the
transaction with :func:`core.db.transaction` and call one action; a refused
action raises before anything is flushed that would outlive the rollback,
so a refused registration changes nothing.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Literal, cast

from sqlalchemy.ext.asyncio import AsyncSession

from core.canonical import canonical_digest
from registry.schemareg import models as m
from registry.schemareg import store
from registry.schemareg.compat import LEVELS, Level, Policy, Verdict, check
from registry.schemareg.documents import (
    Bundle,
    Reference,
    check_schema,
    compact_json,
    draft_of,
    fingerprint,
    parse_schema_text,
)
from registry.schemareg.errors import (
    IncompatibleSchemaError,
    InvalidCompatibilityLevelError,
    InvalidSchemaError,
    InvalidVersionError,
    ReferenceExistsError,
    SchemaNotFoundError,
    SubjectConfigNotFoundError,
    SubjectNotFoundError,
    SubjectNotSoftDeletedError,
    SubjectSoftDeletedError,
    UnprocessableRequestError,
    VersionNotFoundError,
    VersionNotSoftDeletedError,
    VersionSoftDeletedError,
)
from registry.schemareg.payloads import ConfigRequest, SchemaRequest

__all__ = [
    "DEFAULT_LEVEL",
    "DEFAULT_POLICY",
    "ConfigView",
    "Registered",
    "VersionInfo",
    "bundle_of",
    "check_compatibility",
    "delete_config",
    "delete_subject",
    "delete_version",
    "get_config",
    "get_schema",
    "get_version",
    "list_subjects",
    "list_versions",
    "lookup",
    "parse_version",
    "prepare",
    "referenced_by",
    "register",
    "require_version",
    "schema_versions",
    "set_config",
]

DEFAULT_LEVEL: Level = "BACKWARD"
DEFAULT_POLICY: Policy = "STRICT"
MAX_VERSION = 2**31 - 1
MAX_REFERENCES = 64  # documents in one bundle, transitively
_SUBJECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")

VersionSpec = int | Literal["latest"]


@dataclass(frozen=True)
class VersionInfo:
    """One subject version as the API shows it."""

    subject: str
    version: int
    id: int
    schema: str
    references: list[Reference]

    def to_json(self) -> dict[str, object]:
        body: dict[str, object] = {
            "subject": self.subject,
            "version": self.version,
            "id": self.id,
            "schemaType": "JSON",
            "schema": self.schema,
        }
        if self.references:
            body["references"] = [r.model_dump() for r in self.references]
        return body


@dataclass(frozen=True)
class Registered:
    id: int
    version: int
    created: bool  # False when the schema was already the subject's, as Confluent answers


@dataclass(frozen=True)
class ConfigView:
    compatibility: Level
    policy: Policy


def check_subject(subject: str) -> str:
    if not _SUBJECT.match(subject):
        raise UnprocessableRequestError(
            f"Invalid subject {subject!r}: use letters, digits, '.', '_' and '-' "
            "(at most 255, starting with a letter or digit), e.g. pk.nadra.person"
        )
    return subject


def parse_version(text: str) -> VersionSpec:
    """A version in a path: ``latest``, ``-1`` (also latest) or 1 .. 2^31-1; else 42202."""
    if text == "latest" or text == "-1":
        return "latest"
    if not re.fullmatch(r"[0-9]{1,10}", text) or not 1 <= int(text) <= MAX_VERSION:
        raise InvalidVersionError(text)
    return int(text)


# --- bundles --------------------------------------------------------------------------------


async def _documents(
    s: AsyncSession, references: list[Reference], found: dict[str, object], depth: int = 0
) -> None:
    """Load every referenced document into ``found`` (name → schema), transitively."""
    for ref in references:
        if len(found) >= MAX_REFERENCES or depth > 16:
            raise InvalidSchemaError(
                f"Invalid schema: more than {MAX_REFERENCES} references, or nested too deeply"
            )
        row = await store.version(s, ref.subject, ref.version)
        if row is None or row.deleted:
            raise InvalidSchemaError(
                f"Invalid schema: reference {ref.name!r} names subject '{ref.subject}' "
                f"version {ref.version}, which is not registered",
                detail={"reference": ref.model_dump()},
            )
        schema_row = await store.schema(s, row.schema_id)
        assert schema_row is not None
        document = parse_schema_text(schema_row.schema_text)
        if ref.name in found and canonical_digest(found[ref.name]) != canonical_digest(document):
            raise InvalidSchemaError(
                f"Invalid schema: reference name {ref.name!r} names two different schemas"
            )
        if ref.name not in found:
            found[ref.name] = document
            await _documents(s, store.references_of(schema_row), found, depth + 1)


async def prepare(s: AsyncSession, request: SchemaRequest) -> Bundle:
    """Parse, resolve and check a submitted schema; 42201 names what is wrong."""
    root = parse_schema_text(request.schema_)
    names = [r.name for r in request.references]
    if len(names) != len(set(names)):
        raise InvalidSchemaError("Invalid schema: two references share a name")
    documents: dict[str, object] = {}
    await _documents(s, request.references, documents)
    bundle = Bundle(root, draft_of(root), documents)
    # Meta-schema validation of a 512 KiB document takes about half a second: off the loop.
    await asyncio.to_thread(check_schema, bundle)
    return bundle


async def bundle_of(s: AsyncSession, row: m.Schema) -> Bundle:
    """The stored schema ``row`` with its references resolved."""
    root = parse_schema_text(row.schema_text)
    documents: dict[str, object] = {}
    await _documents(s, store.references_of(row), documents)
    return Bundle(root, draft_of(root), documents)


def _identity(bundle: Bundle, references: list[Reference]) -> str:
    return canonical_digest(
        {"schema": bundle.root, "references": [r.model_dump() for r in references]}
    )


# --- config ---------------------------------------------------------------------------------


def _level(value: str) -> Level:
    upper = value.upper()
    if upper not in LEVELS:
        raise InvalidCompatibilityLevelError(
            "Invalid compatibility level. Valid values are none, backward, forward, full, "
            "backward_transitive, forward_transitive, and full_transitive"
        )
    return upper


def _policy(value: str) -> Policy:
    upper = value.upper()
    if upper not in m.POLICIES:
        raise InvalidCompatibilityLevelError(
            "Invalid compatibility policy. Valid values are strict and lenient"
        )
    return cast(Policy, upper)


async def get_config(
    s: AsyncSession, subject: str | None = None, *, default_to_global: bool = True
) -> ConfigView:
    """The level and policy in force for ``subject`` (or the global ones)."""
    glob = await store.config(s, m.GLOBAL)
    level = (glob.compatibility if glob else None) or DEFAULT_LEVEL
    policy = (glob.policy if glob else None) or DEFAULT_POLICY
    if subject is not None:
        own = await store.config(s, subject)
        if own is None and not default_to_global:
            raise SubjectConfigNotFoundError(subject)
        if own is not None:
            level = own.compatibility or level
            policy = own.policy or policy
    return ConfigView(cast(Level, level), cast(Policy, policy))


async def set_config(s: AsyncSession, subject: str | None, body: ConfigRequest) -> ConfigView:
    """Set the level and/or policy of ``subject`` (or globally); returns what now applies."""
    if body.compatibility is None and body.compatibilityPolicy is None:
        raise UnprocessableRequestError("Unprocessable body: give compatibility")
    key = m.GLOBAL if subject is None else check_subject(subject)
    level = _level(body.compatibility) if body.compatibility is not None else None
    policy = _policy(body.compatibilityPolicy) if body.compatibilityPolicy is not None else None
    row = await store.config(s, key)
    if row is None:
        row = m.CompatibilityConfig(subject=key)
        s.add(row)
    if level is not None:
        row.compatibility = level
    if policy is not None:
        row.policy = policy
    await s.flush()
    return await get_config(s, subject)


async def delete_config(s: AsyncSession, subject: str | None) -> ConfigView:
    """Drop ``subject``'s own config (or reset the global one); returns what it was."""
    key = m.GLOBAL if subject is None else subject
    before = await get_config(s, subject)
    row = await store.config(s, key)
    if row is None and subject is not None:
        raise SubjectConfigNotFoundError(subject)
    if row is not None:
        await s.delete(row)
        await s.flush()
    return before


# --- reading --------------------------------------------------------------------------------


async def list_subjects(s: AsyncSession, *, deleted: bool = False) -> list[str]:
    return await store.subjects(s, deleted=deleted)


async def list_versions(s: AsyncSession, subject: str, *, deleted: bool = False) -> list[int]:
    rows = await store.versions(s, subject, deleted=deleted)
    if not rows:
        raise SubjectNotFoundError(subject)
    return [r.version for r in rows]


async def _row(
    s: AsyncSession, subject: str, spec: VersionSpec, *, deleted: bool = False
) -> m.SubjectVersion:
    rows = await store.versions(s, subject, deleted=deleted)
    if not rows:
        raise SubjectNotFoundError(subject)
    if spec == "latest":
        return rows[-1]
    for row in rows:
        if row.version == spec:
            return row
    raise VersionNotFoundError(spec)


async def _info(s: AsyncSession, row: m.SubjectVersion) -> VersionInfo:
    schema_row = await store.schema(s, row.schema_id)
    assert schema_row is not None
    return VersionInfo(
        row.subject, row.version, row.schema_id, schema_row.schema_text,
        store.references_of(schema_row),
    )  # fmt: skip


async def get_version(
    s: AsyncSession, subject: str, spec: VersionSpec, *, deleted: bool = False
) -> VersionInfo:
    return await _info(s, await _row(s, subject, spec, deleted=deleted))


async def require_version(s: AsyncSession, subject: str, number: int) -> None:
    """40401 / 40402 unless ``subject`` version ``number`` is registered and not deleted."""
    row = await store.version(s, subject, number)
    if row is not None and not row.deleted:
        return
    if not await store.versions(s, subject, deleted=False):
        raise SubjectNotFoundError(subject)
    raise VersionNotFoundError(number)


async def get_schema(s: AsyncSession, schema_id: int) -> m.Schema:
    row = await store.schema(s, schema_id)
    if row is None:
        raise SchemaNotFoundError(f"Schema {schema_id} not found", detail={"id": schema_id})
    return row


async def schema_versions(s: AsyncSession, schema_id: int) -> list[tuple[str, int]]:
    await get_schema(s, schema_id)
    return [(r.subject, r.version) for r in await store.uses_of(s, schema_id) if not r.deleted]


async def referenced_by(s: AsyncSession, subject: str, spec: VersionSpec) -> list[int]:
    row = await _row(s, subject, spec)
    return await store.referrers(s, subject, row.version, deleted=False)


# --- writing --------------------------------------------------------------------------------


async def _previous(
    s: AsyncSession, subject: str, *, latest_only: bool = False
) -> list[tuple[int, Bundle]]:
    """The subject's live versions as bundles, oldest first (only the latest if asked)."""
    rows = await store.versions(s, subject, deleted=False)
    found = []
    for row in rows[-1:] if latest_only else rows:
        schema_row = await store.schema(s, row.schema_id)
        assert schema_row is not None
        found.append((row.version, await bundle_of(s, schema_row)))
    return found


async def _check(
    new: Bundle, previous: list[tuple[int, Bundle]], level: Level, policy: Policy
) -> Verdict:
    """:func:`compat.check` on a worker thread: bounded (``diff.MAX_STEPS``), it may still
    take a second, which the event loop of every other request must not wait for."""
    return await asyncio.to_thread(check, new, previous, level, policy)


async def register(s: AsyncSession, subject: str, request: SchemaRequest) -> Registered:
    """Register ``request`` under ``subject`` (42201 invalid, 409 incompatible).

    A schema the subject already has (same canonical document and references)
    returns its id and version without adding one, as Confluent does.
    """
    check_subject(subject)
    bundle = await prepare(s, request)
    identity = _identity(bundle, request.references)
    existing = await store.schema_by_identity(s, identity)
    live = await store.versions(s, subject, deleted=False)
    if existing is not None:
        for row in live:
            if row.schema_id == existing.id:
                return Registered(existing.id, row.version, created=False)
    config = await get_config(s, subject)
    previous = await _previous(
        s, subject, latest_only=not config.compatibility.endswith("_TRANSITIVE")
    )
    verdict = await _check(bundle, previous, config.compatibility, config.policy)
    if not verdict.compatible:
        raise IncompatibleSchemaError(
            "Schema being registered is incompatible with an earlier schema for subject "
            f'"{subject}", details: [{", ".join(verdict.messages)}]',
            detail=[f.to_json() for f in verdict.findings],
        )
    if existing is None:
        existing = await store.add_schema(
            s,
            fingerprint=fingerprint(bundle.root),
            identity=identity,
            text=compact_json(bundle.root),
            references=request.references,
        )
    number = await store.highest_version(s, subject) + 1
    s.add(m.SubjectVersion(subject=subject, version=number, schema_id=existing.id))
    await s.flush()
    return Registered(existing.id, number, created=True)


async def lookup(s: AsyncSession, subject: str, request: SchemaRequest) -> VersionInfo:
    """The subject's version that is exactly this schema (40401 / 40403 otherwise)."""
    live = await store.versions(s, subject, deleted=False)
    if not live:
        raise SubjectNotFoundError(subject)
    bundle = await prepare(s, request)
    existing = await store.schema_by_identity(s, _identity(bundle, request.references))
    for row in live:
        if existing is not None and row.schema_id == existing.id:
            return await _info(s, row)
    raise SchemaNotFoundError("Schema not found", detail={"subject": subject})


async def check_compatibility(
    s: AsyncSession, subject: str, spec: VersionSpec | None, request: SchemaRequest
) -> Verdict:
    """Would ``request`` be accepted? Against one version (``spec``) or as the subject's
    level demands (``spec`` None)."""
    bundle = await prepare(s, request)
    config = await get_config(s, subject)
    if spec is None:
        previous = await _previous(
            s, subject, latest_only=not config.compatibility.endswith("_TRANSITIVE")
        )
        return await _check(bundle, previous, config.compatibility, config.policy)
    row = await _row(s, subject, spec)
    schema_row = await store.schema(s, row.schema_id)
    assert schema_row is not None
    level = config.compatibility.removesuffix("_TRANSITIVE")
    chosen = [(row.version, await bundle_of(s, schema_row))]
    return await _check(bundle, chosen, cast(Level, level), config.policy)


# Confluent stops counting a referrer once it is soft-deleted. Here it still counts: its id is
# still served (GET /schemas/ids/{id}) and gateways cache validators by id for good. Were the
# version it names deleted, that number could go to another schema, and re-registering the
# referrer would find its old id (identity is the document and the names of its references,
# not what they name) with a new meaning.
_SOFT_DELETED_REFERRERS = "soft-deleted ones included: delete those permanently first"


async def delete_subject(s: AsyncSession, subject: str, *, permanent: bool) -> list[int]:
    """Soft-delete every version (or, with ``permanent``, remove soft-deleted ones)."""
    rows = await store.versions(s, subject, deleted=True)
    if not rows:
        raise SubjectNotFoundError(subject)
    live = [r for r in rows if not r.deleted]
    if not permanent and not live:
        raise SubjectSoftDeletedError(subject)
    if permanent and live:
        raise SubjectNotSoftDeletedError(subject)
    users = await store.referrers(s, subject, None, deleted=True)
    if users:
        raise ReferenceExistsError(
            f"One or more references exist to the subject '{subject}' (schemas {users}, "
            f"{_SOFT_DELETED_REFERRERS})"
        )
    services = await store.service_users(s, subject, None)
    if services:
        raise ReferenceExistsError(
            f"Registered services validate against the subject '{subject}' (services "
            f"{services}); point them at another schema first"
        )
    numbers = [r.version for r in rows]
    for row in rows:
        if permanent:
            await s.delete(row)
        else:
            row.deleted = True
    await s.flush()
    if permanent:
        for schema_id in {r.schema_id for r in rows}:
            await store.delete_schema_if_unused(s, schema_id)
        config = await store.config(s, subject)
        if config is not None:
            await s.delete(config)
    return numbers


async def delete_version(
    s: AsyncSession, subject: str, spec: VersionSpec, *, permanent: bool
) -> int:
    """Soft-delete one version (or, with ``permanent``, remove a soft-deleted one)."""
    rows = await store.versions(s, subject, deleted=True)
    if not rows:
        raise SubjectNotFoundError(subject)
    if spec == "latest":
        live = [r for r in rows if not r.deleted]
        row = (live or rows)[-1]
    else:
        found = [r for r in rows if r.version == spec]
        if not found:
            raise VersionNotFoundError(spec)
        row = found[0]
    if not permanent and row.deleted:
        raise VersionSoftDeletedError(subject, row.version)
    if permanent and not row.deleted:
        raise VersionNotSoftDeletedError(subject, row.version)
    users = await store.referrers(s, subject, row.version, deleted=True)
    if users:
        raise ReferenceExistsError(
            f"One or more references exist to the schema {{subject={subject}, "
            f"version={row.version}}} (schemas {users}, {_SOFT_DELETED_REFERRERS})"
        )
    services = await store.service_users(s, subject, row.version)
    if services:
        # Deleted, its number could be given again to another schema, and the gateways
        # would validate these services' bodies against that one.
        raise ReferenceExistsError(
            f"Registered services validate against the schema {{subject={subject}, "
            f"version={row.version}}} (services {services}); point them at another first"
        )
    if permanent:
        await s.delete(row)
        await s.flush()
        await store.delete_schema_if_unused(s, row.schema_id)
    else:
        row.deleted = True
        await s.flush()
    return row.version
