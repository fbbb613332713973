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

from registry.globalconf import SchemaRef

__all__ = ["FieldChecker"]


class FieldChecker(Protocol):
    async def check(self, ref: SchemaRef, pointers: Sequence[str], *, where: str) -> None:
        """Raise UnprocessableError naming the first pointer (at ``where``) that does not name
        a property of schema ``ref``, or ServiceFailedError if the schema cannot be had."""
        ...
