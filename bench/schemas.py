"""Schema registry hot paths: validating a typical person record with the cached validator
against jsonschema's pure-Python validator on the same record and schema, and checking the
compatibility of a 200-property schema.

    python -m bench.schemas [--ops N] [--rounds R]
"""

from __future__ import annotations

import argparse
import os

import schemas
from bench._timing import compare, table
from registry.schemareg.compat import check
from registry.schemareg.documents import DRAFT202012, Bundle, draft_of
from registry.schemareg.validation import compile_bundle, reference_validator


def person_bundle() -> tuple[Bundle, dict[str, object]]:
    found = {r.subject: r.schema for r in schemas.records()}
    person = found["pk.nadra.person"]
    bundle = Bundle(person, draft_of(person), {schemas.COMMON_REFERENCE: found[schemas.COMMON]})
    return bundle, person["examples"][0]


def wide_schema(properties: int, *, extra: bool = False) -> Bundle:
    """A closed object with ``properties`` typed properties (strings, bounded numbers, enums,
    nested objects), as large government records are."""
    kinds = [
        {"type": "string", "maxLength": 100},
        {"type": "integer", "minimum": 0},
        {"type": "string", "enum": ["a", "b", "c"]},
        {"type": "object", "properties": {"x": {"type": "string"}}, "additionalProperties": False},
        {"type": "array", "items": {"type": "string"}},
    ]
    props = {f"field_{i:03d}": kinds[i % len(kinds)] for i in range(properties)}
    if extra:
        props["added_optional"] = {"type": "string"}
    schema = {
        "$schema": DRAFT202012,
        "type": "object",
        "properties": props,
        "required": list(props)[:50],
        "additionalProperties": False,
    }
    return Bundle(schema, DRAFT202012)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=int, default=2000, help="validations per round")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    bundle, record = person_bundle()
    fast = compile_bundle(1, bundle)
    slow = reference_validator(bundle)
    fast.validate(record)
    slow.validate(record)
    results = compare(
        {
            "cached validator (jsonschema-rs)": lambda: fast.validate(record),
            "jsonschema pure-Python validator": lambda: slow.validate(record),
        },
        ops=args.ops,
        rounds=args.rounds,
    )
    print(
        table(
            f"Validating a pk.nadra.person record, {os.cpu_count()} CPUs",
            results,
            baseline="jsonschema pure-Python validator",
        )
    )
    base = next(r for r in results if r.name.startswith("jsonschema"))
    mine = next(r for r in results if r.name.startswith("cached"))
    print(f"speed-up: {base.per_op / mine.per_op:.1f}x (target: at least 20x)")
    print()

    old, new = wide_schema(200), wide_schema(200, extra=True)
    verdicts = compare(
        {
            "BACKWARD check, 200 properties": lambda: check(new, [(1, old)], "BACKWARD"),
            "FULL check, 200 properties": lambda: check(new, [(1, old)], "FULL"),
        },
        ops=max(1, args.ops // 100),
        rounds=args.rounds,
    )
    print(table("Compatibility of a 200-property schema", verdicts, baseline=verdicts[0].name))


if __name__ == "__main__":
    main()
