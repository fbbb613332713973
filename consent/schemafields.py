"""Checking released fields against the service's registered response schema.

A consent may only release fields that exist: each JSON Pointer must name a
property of the response schema registered for the service (subject and
version from the global configuration). The check sits behind
:class:`FieldChecker` so the consent service does not care where schemas
come from.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from core.errors import UnprocessableError
from registry.globalconf import SchemaRef
from registry.schemareg.validation import ValidatorCache

__all__ = ["FieldChecker", "RegistryFields"]


class FieldChecker(Protocol):
    async def check(self, ref: SchemaRef, pointers: Sequence[str], *, where: str) -> None:
        """Raise UnprocessableError naming the first pointer (at ``where``) that does not name
        a property of schema ``ref``, or ServiceFailedError if the schema cannot be had."""
        ...


class RegistryFields:
    """Checks pointers with the schema registry's compiled schemas (cached by global id).

    A schema that cannot be had raises ``SchemaUnavailableError`` (503): no
    consent is recorded with fields nobody could check.
    """

    def __init__(self, cache: ValidatorCache) -> None:
        self.cache = cache

    async def check(self, ref: SchemaRef, pointers: Sequence[str], *, where: str) -> None:
        compiled = await self.cache.get(ref)
        for i, pointer in enumerate(pointers):
            if not compiled.defines(pointer):
                raise UnprocessableError(
                    f"{pointer} is not a field of {ref.subject} version {ref.version}",
                    detail={"field": f"{where}.{i}", "pointer": pointer},
                )
