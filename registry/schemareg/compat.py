"""Compatibility of a new schema with earlier versions: seven levels, two policies.

Levels are Confluent's: ``BACKWARD`` (readers on the new schema read data
written with the previous one), ``FORWARD`` (readers on the previous schema
read data written with the new one), ``FULL`` (both), their ``_TRANSITIVE``
forms (against every earlier version, not only the latest) and ``NONE``.

Policies decide how *open content models* are judged:

``STRICT`` (Confluent's default) takes a schema literally: an object without
``additionalProperties: false`` accepts any extra property with any value, so
giving such a property a type is a narrowing and is refused.

``LENIENT`` follows the robustness principle: readers ignore properties they
do not know. Adding an optional property (or a required one with a default)
is fine even to an open model, removing one is fine even from a closed
model, and closing a model is fine; adding a *required* property without a
default is refused under both, since earlier writers never sent it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from registry.schemareg import nodes
from registry.schemareg.diff import Context, Difference, compare
from registry.schemareg.documents import Bundle, check_comparable, compact_json

__all__ = [
    "COMPATIBLE",
    "LENIENT_COMPATIBLE",
    "LEVELS",
    "MAX_REPORTED",
    "Finding",
    "Level",
    "Policy",
    "Verdict",
    "check",
    "describe",
    "differences",
    "incompatibilities",
]

Level = Literal[
    "NONE",
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
]
Policy = Literal["STRICT", "LENIENT"]
LEVELS: tuple[Level, ...] = (
    "NONE",
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
)

#: Changes that keep every instance of the original valid under the update (STRICT).
COMPATIBLE: frozenset[str] = frozenset(
    {
        "ID_CHANGED", "DESCRIPTION_CHANGED", "TITLE_CHANGED", "DEFAULT_CHANGED",
        "SCHEMA_REMOVED", "TYPE_EXTENDED",
        "MAX_LENGTH_INCREASED", "MAX_LENGTH_REMOVED", "MIN_LENGTH_DECREASED",
        "MIN_LENGTH_REMOVED", "PATTERN_REMOVED", "FORMAT_REMOVED",
        "MAXIMUM_INCREASED", "MAXIMUM_REMOVED", "MINIMUM_DECREASED", "MINIMUM_REMOVED",
        "EXCLUSIVE_MAXIMUM_INCREASED", "EXCLUSIVE_MAXIMUM_REMOVED",
        "EXCLUSIVE_MINIMUM_DECREASED", "EXCLUSIVE_MINIMUM_REMOVED",
        "MULTIPLE_OF_REDUCED", "MULTIPLE_OF_REMOVED",
        "REQUIRED_ATTRIBUTE_WITH_DEFAULT_ADDED", "REQUIRED_ATTRIBUTE_REMOVED",
        "DEPENDENCY_ARRAY_NARROWED", "DEPENDENCY_ARRAY_REMOVED", "DEPENDENCY_SCHEMA_REMOVED",
        "MAX_PROPERTIES_INCREASED", "MAX_PROPERTIES_REMOVED",
        "MIN_PROPERTIES_DECREASED", "MIN_PROPERTIES_REMOVED",
        "ADDITIONAL_PROPERTIES_ADDED", "ADDITIONAL_PROPERTIES_EXTENDED",
        "UNEVALUATED_PROPERTIES_ADDED", "UNEVALUATED_PROPERTIES_EXTENDED",
        "PROPERTY_WITH_EMPTY_SCHEMA_ADDED_TO_OPEN_CONTENT_MODEL",
        "REQUIRED_PROPERTY_WITH_DEFAULT_ADDED_TO_UNOPEN_CONTENT_MODEL",
        "OPTIONAL_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL",
        "PROPERTY_WITH_FALSE_REMOVED_FROM_CLOSED_CONTENT_MODEL",
        "PROPERTY_REMOVED_FROM_OPEN_CONTENT_MODEL",
        "PROPERTY_ADDED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL",
        "PROPERTY_REMOVED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL",
        "MAX_ITEMS_INCREASED", "MAX_ITEMS_REMOVED", "MIN_ITEMS_DECREASED", "MIN_ITEMS_REMOVED",
        "MAX_CONTAINS_INCREASED", "MAX_CONTAINS_REMOVED",
        "MIN_CONTAINS_DECREASED", "MIN_CONTAINS_REMOVED",
        "UNIQUE_ITEMS_REMOVED", "ADDITIONAL_ITEMS_ADDED", "ADDITIONAL_ITEMS_EXTENDED",
        "UNEVALUATED_ITEMS_ADDED", "UNEVALUATED_ITEMS_EXTENDED",
        "ITEM_WITH_EMPTY_SCHEMA_ADDED_TO_OPEN_CONTENT_MODEL",
        "ITEM_ADDED_TO_CLOSED_CONTENT_MODEL",
        "ITEM_WITH_FALSE_REMOVED_FROM_CLOSED_CONTENT_MODEL",
        "ITEM_REMOVED_FROM_OPEN_CONTENT_MODEL",
        "ITEM_ADDED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL",
        "ITEM_REMOVED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL",
        "ENUM_ARRAY_EXTENDED",
        "COMBINED_TYPE_EXTENDED", "PRODUCT_TYPE_NARROWED", "SUM_TYPE_EXTENDED",
        "NOT_TYPE_NARROWED",
    }
)  # fmt: skip

#: LENIENT also accepts what only a reader that ignores unknown properties survives.
LENIENT_COMPATIBLE: frozenset[str] = COMPATIBLE | {
    "OPTIONAL_PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL",
    "REQUIRED_PROPERTY_WITH_DEFAULT_ADDED_TO_OPEN_CONTENT_MODEL",
    "PROPERTY_ADDED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL",
    "PROPERTY_REMOVED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL",
    "PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL",
    "ADDITIONAL_PROPERTIES_REMOVED",
    "ADDITIONAL_PROPERTIES_NARROWED",
    "UNEVALUATED_PROPERTIES_REMOVED",
    "UNEVALUATED_PROPERTIES_NARROWED",
}

_MESSAGES: dict[str, tuple[str, ...]] = {
    "The keyword at path '{path}' in the {a} schema is not present in the {b} schema": (
        "MAXIMUM_ADDED", "MINIMUM_ADDED", "EXCLUSIVE_MAXIMUM_ADDED", "EXCLUSIVE_MINIMUM_ADDED",
        "MULTIPLE_OF_ADDED", "MAX_LENGTH_ADDED", "MIN_LENGTH_ADDED", "PATTERN_ADDED",
        "FORMAT_ADDED",
        "REQUIRED_ATTRIBUTE_ADDED", "MAX_PROPERTIES_ADDED", "MIN_PROPERTIES_ADDED",
        "DEPENDENCY_ARRAY_ADDED", "DEPENDENCY_SCHEMA_ADDED", "MAX_ITEMS_ADDED", "MIN_ITEMS_ADDED",
        "MAX_CONTAINS_ADDED", "MIN_CONTAINS_ADDED", "UNIQUE_ITEMS_ADDED",
        "ADDITIONAL_ITEMS_REMOVED", "ADDITIONAL_PROPERTIES_REMOVED",
        "UNEVALUATED_PROPERTIES_REMOVED", "UNEVALUATED_ITEMS_REMOVED", "SCHEMA_ADDED",
    ),
    "The value at path '{path}' in the {a} schema is more than its value in the {b} schema": (
        "MIN_LENGTH_INCREASED", "MINIMUM_INCREASED", "EXCLUSIVE_MINIMUM_INCREASED",
        "MIN_PROPERTIES_INCREASED", "MULTIPLE_OF_EXPANDED", "MIN_ITEMS_INCREASED",
        "MIN_CONTAINS_INCREASED",
    ),
    "The value at path '{path}' in the {a} schema is less than its value in the {b} schema": (
        "MAX_LENGTH_DECREASED", "MAXIMUM_DECREASED", "MAX_ITEMS_DECREASED",
        "MAX_CONTAINS_DECREASED", "EXCLUSIVE_MAXIMUM_DECREASED", "MAX_PROPERTIES_DECREASED",
    ),
    "The value at path '{path}' is different between the {a} and {b} schema": (
        "PATTERN_CHANGED", "FORMAT_CHANGED", "MULTIPLE_OF_CHANGED", "DEPENDENCY_ARRAY_CHANGED",
    ),
    "An array or combined type at path '{path}' has fewer elements in the {a} schema than "
    "the {b} schema": (
        "ADDITIONAL_ITEMS_NARROWED", "ENUM_ARRAY_NARROWED", "SUM_TYPE_NARROWED",
        "ADDITIONAL_PROPERTIES_NARROWED", "UNEVALUATED_PROPERTIES_NARROWED",
        "UNEVALUATED_ITEMS_NARROWED",
    ),
    "An array or combined type at path '{path}' has more elements in the {a} schema than "
    "the {b} schema": (
        "DEPENDENCY_ARRAY_EXTENDED", "PRODUCT_TYPE_EXTENDED", "SUM_TYPE_EXTENDED",
        "NOT_TYPE_EXTENDED",
    ),
    "A type at path '{path}' is different between the {a} schema and the {b} schema": (
        "TYPE_CHANGED", "TYPE_NARROWED", "COMBINED_TYPE_CHANGED",
        "COMBINED_TYPE_SUBSCHEMAS_CHANGED", "ENUM_ARRAY_CHANGED",
    ),
    "The {a} schema has an open content model and has a property or item at path '{path}' "
    "which is missing in the {b} schema": (
        "REQUIRED_PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL",
        "REQUIRED_PROPERTY_WITH_DEFAULT_ADDED_TO_OPEN_CONTENT_MODEL",
        "OPTIONAL_PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL", "ITEM_ADDED_TO_OPEN_CONTENT_MODEL",
    ),
    "The {a} schema has an unopen content model and has a required property at path "
    "'{path}' which is missing in the {b} schema": (
        "REQUIRED_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL",
    ),
    "The {a} schema has a closed content model and is missing a property or item present "
    "at path '{path}' in the {b} schema": (
        "PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL", "ITEM_REMOVED_FROM_CLOSED_CONTENT_MODEL",
    ),
    "A property or item is missing in the {a} schema but present at path '{path}' in the "
    "{b} schema and is not covered by its partially open content model": (
        "PROPERTY_REMOVED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL",
        "ITEM_REMOVED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL",
    ),
    "The {a} schema has a property or item at path '{path}' which is missing in the {b} "
    "schema and is not covered by its partially open content model": (
        "PROPERTY_ADDED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL",
        "ITEM_ADDED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL",
    ),
}  # fmt: skip
_TEMPLATE = {kind: text for text, kinds in _MESSAGES.items() for kind in kinds}


#: Differences listed per comparison: plenty to fix a schema by, while the full list can grow
#: exponentially with the schema (a definition met along 2^n paths, see :mod:`diff`).
MAX_REPORTED = 100


def _compared(original: Bundle, update: Bundle, policy: Policy) -> Context:
    ctx = Context.root(
        LENIENT_COMPATIBLE if policy == "LENIENT" else COMPATIBLE, lenient=policy == "LENIENT"
    )
    compare(ctx, nodes.load(original), nodes.load(update))
    return ctx


def differences(original: Bundle, update: Bundle, policy: Policy = "STRICT") -> list[Difference]:
    """The changes from ``original`` (the writer's schema) to ``update`` (the reader's), the
    first :data:`MAX_REPORTED` of them."""
    return _compared(original, update, policy).listed(MAX_REPORTED)


def incompatibilities(
    original: Bundle, update: Bundle, policy: Policy = "STRICT"
) -> list[Difference]:
    """The changes that make data written with ``original`` unreadable with ``update`` (the
    first :data:`MAX_REPORTED`; empty exactly when there are none)."""
    return _compared(original, update, policy).listed(MAX_REPORTED, incompatible_only=True)


def describe(difference: Difference, *, backward: bool) -> str:
    """Confluent's wording: ``{errorType:"...", description:"..."}``.

    In a backward check the reader is the *new* schema; in a forward check the
    roles swap, and so do the words.
    """
    a, b = ("new", "old") if backward else ("old", "new")
    text = _TEMPLATE.get(difference.type, "").format(path=difference.pointer, a=a, b=b)
    return f'{{errorType:"{difference.type}", description:"{text}"}}'


@dataclass(frozen=True)
class Finding:
    """One incompatibility with an earlier version, for people and for programs."""

    version: int
    direction: Literal["backward", "forward"]
    difference: Difference

    def to_json(self) -> dict[str, object]:
        return {
            "version": self.version,
            "direction": self.direction,
            "type": self.difference.type,
            "pointer": self.difference.pointer,
            "message": describe(self.difference, backward=self.direction == "backward"),
        }


@dataclass(frozen=True)
class Verdict:
    """The answer of a check: compatible or not, the findings, and Confluent's messages."""

    level: Level
    findings: tuple[Finding, ...]
    messages: tuple[str, ...]

    @property
    def compatible(self) -> bool:
        return not self.findings


def check(
    new: Bundle,
    previous: Sequence[tuple[int, Bundle]],
    level: Level,
    policy: Policy = "STRICT",
) -> Verdict:
    """Check ``new`` against ``previous`` ((version, bundle), oldest first) under ``level``.

    Non-transitive levels look at the latest earlier version only; transitive
    ones at every earlier version. Messages follow Confluent's verbose output:
    each incompatibility, then the old version, the old schema and the level.
    """
    if level == "NONE" or not previous:
        return Verdict(level, (), ())
    against = previous if level.endswith("_TRANSITIVE") else previous[-1:]
    base = level.removesuffix("_TRANSITIVE")
    findings: list[Finding] = []
    messages: list[str] = []
    for version, old in reversed(against):
        # A version registered before the registry refused what the checker cannot compare
        # is refused here (the new schema was checked when it was prepared).
        check_comparable(old)
        found: list[Finding] = []
        if base in ("BACKWARD", "FULL"):
            found += [Finding(version, "backward", d) for d in incompatibilities(old, new, policy)]
        if base in ("FORWARD", "FULL"):
            found += [Finding(version, "forward", d) for d in incompatibilities(new, old, policy)]
        if found:
            findings += found
            messages += [describe(f.difference, backward=f.direction == "backward") for f in found]
            messages += [
                f"{{oldSchemaVersion: {version}}}",
                f"{{oldSchema: '{compact_json(old.root)}'}}",
                f"{{compatibility: '{level}'}}",
            ]
    return Verdict(level, tuple(findings), tuple(messages))
