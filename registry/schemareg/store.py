"""Queries over the schema registry's tables (bound parameters only, one session each)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from registry.schemareg import models as m
from registry.schemareg.documents import Reference


async def versions(s: AsyncSession, subject: str, *, deleted: bool) -> list[m.SubjectVersion]:
    """The subject's versions, oldest first; soft-deleted ones only when ``deleted``."""
    query = select(m.SubjectVersion).where(m.SubjectVersion.subject == subject)
    if not deleted:
        query = query.where(m.SubjectVersion.deleted.is_(False))
    return list(await s.scalars(query.order_by(m.SubjectVersion.version)))


async def version(s: AsyncSession, subject: str, number: int) -> m.SubjectVersion | None:
    return await s.scalar(
        select(m.SubjectVersion).where(
            m.SubjectVersion.subject == subject, m.SubjectVersion.version == number
        )
    )


async def highest_version(s: AsyncSession, subject: str) -> int:
    """The highest version number ever given in ``subject`` (soft-deleted ones included)."""
    found = await s.scalar(
        select(func.max(m.SubjectVersion.version)).where(m.SubjectVersion.subject == subject)
    )
    return int(found or 0)


async def subjects(s: AsyncSession, *, deleted: bool) -> list[str]:
    query = select(m.SubjectVersion.subject).distinct()
    if not deleted:
        query = query.where(m.SubjectVersion.deleted.is_(False))
    return sorted(await s.scalars(query))


async def schema(s: AsyncSession, schema_id: int) -> m.Schema | None:
    return await s.get(m.Schema, schema_id)


async def schema_by_identity(s: AsyncSession, identity: str) -> m.Schema | None:
    return await s.scalar(select(m.Schema).where(m.Schema.identity == identity))


async def uses_of(s: AsyncSession, schema_id: int) -> list[m.SubjectVersion]:
    """Every (subject, version) that is schema ``schema_id``, soft-deleted ones too."""
    return list(
        await s.scalars(
            select(m.SubjectVersion)
            .where(m.SubjectVersion.schema_id == schema_id)
            .order_by(m.SubjectVersion.subject, m.SubjectVersion.version)
        )
    )


async def referrers(
    s: AsyncSession, subject: str, number: int | None, *, deleted: bool
) -> list[int]:
    """Ids of schemas that name ``subject`` (at ``number``, or any version) as a reference and
    are some subject's version; soft-deleted versions count only when ``deleted``."""
    query = (
        select(m.SchemaReference.schema_id)
        .join(m.SubjectVersion, m.SubjectVersion.schema_id == m.SchemaReference.schema_id)
        .where(m.SchemaReference.subject == subject)
    )
    if not deleted:
        query = query.where(m.SubjectVersion.deleted.is_(False))
    if number is not None:
        query = query.where(m.SchemaReference.version == number)
    return sorted(set(await s.scalars(query)))


async def service_users(s: AsyncSession, subject: str, number: int | None) -> list[str]:
    """Registered services whose request or response schema is ``subject`` (at ``number``,
    or any version), as ``code/version``: gateways fetch those versions on every exchange."""
    from registry.models import Service  # the registry proper, which builds on this package

    found: set[str] = set()
    for kind in ("request", "response"):
        subject_column = getattr(Service, f"{kind}_schema_subject")
        version_column = getattr(Service, f"{kind}_schema_version")
        query = select(Service.code, Service.version).where(subject_column == subject)
        if number is not None:
            query = query.where(version_column == number)
        found.update(
            f"{code}/{version}" if version else code for code, version in await s.execute(query)
        )
    return sorted(found)


def references_of(row: m.Schema) -> list[Reference]:
    return [Reference.model_validate(r) for r in json.loads(row.references)]


async def add_schema(
    s: AsyncSession,
    *,
    fingerprint: str,
    identity: str,
    text: str,
    references: Sequence[Reference],
) -> m.Schema:
    row = m.Schema(
        fingerprint=fingerprint,
        identity=identity,
        schema_type="JSON",
        schema_text=text,
        references=json.dumps([r.model_dump() for r in references], separators=(",", ":")),
    )
    s.add(row)
    await s.flush()
    for ref in references:
        s.add(
            m.SchemaReference(
                schema_id=row.id, name=ref.name, subject=ref.subject, version=ref.version
            )
        )
    await s.flush()
    return row


async def delete_schema_if_unused(s: AsyncSession, schema_id: int) -> None:
    """Drop a schema no version uses any more (after a permanent delete)."""
    if not await uses_of(s, schema_id):
        row = await s.get(m.Schema, schema_id)
        if row is not None:
            await s.delete(row)
            await s.flush()


async def config(s: AsyncSession, subject: str) -> m.CompatibilityConfig | None:
    return await s.get(m.CompatibilityConfig, subject)
