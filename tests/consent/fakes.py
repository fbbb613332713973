"""Stand-ins for the consent service's two outside dependencies, with the same interfaces.

``SchemaFields`` answers from schema documents held in memory (the real one
reads the schema registry); ``MemoryLog`` numbers entries like the consent
log does. :mod:`tests.consent.test_fakes` checks they honour their protocols.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import ServiceFailedError, UnprocessableError
from registry.globalconf import SchemaRef


class SchemaFields:
    def __init__(self, schemas: Mapping[tuple[str, int], dict[str, Any]]) -> None:
        self.schemas = dict(schemas)

    async def check(self, ref: SchemaRef, pointers: Sequence[str], *, where: str) -> None:
        schema = self.schemas.get((ref.subject, ref.version))
        if schema is None:
            raise ServiceFailedError(f"schema {ref.subject} v{ref.version} is not available")
        for i, pointer in enumerate(pointers):
            node: Any = schema
            for token in pointer[1:].split("/"):
                token = token.replace("~1", "/").replace("~0", "~")
                props = node.get("properties", {}) if isinstance(node, dict) else {}
                if token not in props:
                    raise UnprocessableError(
                        f"{pointer} is not a field of {ref.subject} v{ref.version}",
                        detail={"field": f"{where}.{i}"},
                    )
                node = props[token]


class MemoryLog:
    def __init__(self) -> None:
        self.entries: list[bytes] = []

    async def append(self, s: AsyncSession, entry: bytes) -> int:
        self.entries.append(entry)
        return len(self.entries) - 1
