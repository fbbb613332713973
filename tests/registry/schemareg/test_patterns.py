"""Regular expressions from registered schemas: matched as the validators match them, and in
bounded time whatever a member registers."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from registry.schemareg.compat import incompatibilities
from registry.schemareg.documents import DRAFT7, Bundle, regex_search
from registry.schemareg.validation import defines_pointer

#: Exponential for a backtracking engine such as Python's re on "aaa…a!".
CATASTROPHIC = "^(a+)+$"
CRAFTED = "a" * 64 + "!"


def finishes(work: Callable[[], Any], within: float = 30.0) -> Any:
    """Run ``work`` on a thread; fail if it is still running after ``within`` seconds (a
    hang guard: ``re`` would take about 2^64 steps here, a linear engine microseconds).
    What ``work`` raises is raised here."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(work())
        except Exception as e:  # handed to the caller below
            outcome.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(within)
    assert not thread.is_alive(), f"did not finish within {within} s"
    if isinstance(outcome[0], Exception):
        raise outcome[0]
    return outcome[0]


def test_a_catastrophic_pattern_property_cannot_stall_a_consent_pointer_check() -> None:
    bundle = Bundle({"type": "object", "patternProperties": {CATASTROPHIC: {}}}, DRAFT7)
    assert finishes(lambda: defines_pointer(bundle, "/" + CRAFTED)) is False
    assert defines_pointer(bundle, "/aaaa")


def test_a_catastrophic_pattern_property_cannot_stall_the_compatibility_checker() -> None:
    closed = {"type": "object", "patternProperties": {CATASTROPHIC: {"type": "number"}},
              "additionalProperties": False}  # fmt: skip
    old = Bundle(closed, DRAFT7)
    new = Bundle({**closed, "properties": {CRAFTED: {"type": "string"}}}, DRAFT7)
    # The pattern does not cover it, so no old record can hold it: safe to add.
    assert finishes(lambda: incompatibilities(old, new, "STRICT")) == []
    # Covered: an old record may hold a number there, which the new string rule refuses.
    covered = Bundle({**closed, "properties": {"aaaa": {"type": "string"}}}, DRAFT7)
    assert incompatibilities(old, covered, "STRICT")


def test_a_pattern_the_validators_cannot_compile_matches_nothing() -> None:
    assert not regex_search("(", "(")
    assert regex_search("a{2}", "baab")  # an unanchored search, as JSON Schema's "pattern"


# Patterns both engines read alike: literals, classes, anchors, alternation, quantifiers.
_ATOMS = st.sampled_from(["a", "b", "ab", ".", "[ab]", "[^a]", "\\d", "x"])
_PIECES = st.tuples(_ATOMS, st.sampled_from(["", "*", "+", "?", "{2}"])).map("".join)
_PATTERNS = st.builds(
    lambda start, pieces, other, end: "".join(
        ["^" if start else "", *pieces, *("|" + o for o in other), "$" if end else ""]
    ),
    st.booleans(),
    st.lists(_PIECES, min_size=1, max_size=4),
    st.lists(_PIECES, max_size=1),
    st.booleans(),
)


@given(_PATTERNS, st.text(alphabet="abx1!", max_size=12))
def test_the_matcher_agrees_with_python_re_where_their_dialects_agree(
    pattern: str, text: str
) -> None:
    assert regex_search(pattern, text) == (re.search(pattern, text) is not None)
