"""JSON Schema documents shipped with Shahrah, and a loader for them.

``records/`` holds the canonical citizen records (``pk.nadra.person``,
``pk.plra.land-parcel``, ...), one file per schema registry subject, named
``<subject>.json``. ``pk.common`` holds the shared building blocks (CNIC,
names, administrative units) that the others reference by the name
``pk.common.json``. docs/schemas.md describes each record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

__all__ = ["COMMON", "COMMON_REFERENCE", "Record", "records"]

COMMON = "pk.common"
#: The reference name the records use for pk.common (``{"$ref": "pk.common.json#/$defs/cnic"}``).
COMMON_REFERENCE = "pk.common.json"


@dataclass(frozen=True)
class Record:
    """A canonical record schema: its subject, the document, and whether it uses pk.common."""

    subject: str
    schema: dict[str, Any]
    text: str

    @property
    def uses_common(self) -> bool:
        return f'"{COMMON_REFERENCE}#' in self.text


def records() -> list[Record]:
    """Every canonical record, pk.common first (the others reference it), then by subject."""
    folder = resources.files(__name__).joinpath("records")
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".json"):
            text = entry.read_text(encoding="utf-8")
            found.append(Record(entry.name.removesuffix(".json"), json.loads(text), text))
    return sorted(found, key=lambda r: (r.subject != COMMON, r.subject))
