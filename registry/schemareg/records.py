"""Registering the canonical citizen records shipped in ``schemas/records/``."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

import schemas
from registry.schemareg import service
from registry.schemareg.documents import Reference
from registry.schemareg.payloads import SchemaRequest


async def register_records(s: AsyncSession) -> dict[str, service.Registered]:
    """Register every canonical record under its subject (pk.common first); a record the
    registry already holds keeps its id and version."""
    done: dict[str, service.Registered] = {}
    for record in schemas.records():
        references = []
        if record.uses_common:
            common = done[schemas.COMMON]
            references.append(
                Reference(
                    name=schemas.COMMON_REFERENCE, subject=schemas.COMMON, version=common.version
                )
            )
        request = SchemaRequest.model_validate(
            {"schema": record.text, "schemaType": "JSON", "references": references}
        )
        done[record.subject] = await service.register(s, record.subject, request)
    return done
