"""Configured regular expressions run on RE2: linear time, and Python's meaning where both agree."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from adapters.regex import Regex, Replacement

# Patterns that make Python's backtracking engine take exponential time on a near miss.
CATASTROPHIC = ["(a+)+$", "([a-z]+ ?)+$", "(a|aa)+$", "(.*a){12}"]


@pytest.mark.parametrize("pattern", CATASTROPHIC)
def test_a_pathological_pattern_answers_at_once(pattern: str) -> None:
    started = time.perf_counter()
    assert not Regex(pattern).fullmatch("a" * 20_000 + "!")
    assert Replacement(pattern, "x")("a" * 20_000 + "!").endswith("!")
    # Python's re takes longer than a human lifetime on these; RE2 a few milliseconds.
    assert time.perf_counter() - started < 2


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [("a(?=b)", "invalid perl operator"), ("(a)\\1", "invalid escape"), ("[", "missing ]")],
)
def test_what_needs_backtracking_is_refused_by_name(pattern: str, reason: str) -> None:
    with pytest.raises(ValueError, match=f"not an RE2 regular expression: {re.escape(reason)}"):
        Regex(pattern)


# Patterns from a small grammar both engines read alike (ASCII classes, no lookaround).
_ATOM = st.sampled_from(["a", "b", "[ab]", "[0-9]", ".", "(a|b)", "(?P<n>a)", "-", "ب"])
_PATTERN = st.lists(
    st.tuples(_ATOM, st.sampled_from(["", "*", "+", "?", "{2}", "{1,3}", "*?"])),
    min_size=1,
    max_size=5,
).map(lambda parts: "".join(a + q for a, q in parts))
_TEXT = st.text(st.sampled_from("ab0-ب\n"), max_size=12)


@given(_PATTERN, _TEXT)
def test_fullmatch_agrees_with_python(pattern: str, text: str) -> None:
    assume(pattern.count("(?P<n>") <= 1)
    assert Regex(pattern).fullmatch(text) == (re.fullmatch(pattern, text) is not None)


@given(_PATTERN, _TEXT, st.sampled_from(["", "x", "\\g<0>", "[\\g<0>]", "\\\\", "ب\\g<0>ب"]))
def test_replacement_agrees_with_python(pattern: str, text: str, template: str) -> None:
    # One known difference: where a lazy quantifier prefers the empty match, Python tries
    # again at the same place for a non-empty one and RE2 moves on (docs/adapters.md).
    assume(pattern.count("(?P<n>") <= 1 and "*?" not in pattern)
    assert Replacement(pattern, template)(text) == re.sub(pattern, template, text)


@given(_TEXT)
def test_groups_by_number_and_name(text: str) -> None:
    pattern = "(?P<first>[ab]+)-([0-9]*)"
    template = "\\2/\\g<first>/\\g<2>"
    assert Replacement(pattern, template)(text) == re.sub(pattern, template, text)


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("\\3", "invalid group reference 3: the pattern has 2"),
        ("\\g<9>", "invalid group reference 9"),
        ("\\g<missing>", "unknown group name 'missing'"),
        ("\\q", "bad escape \\q"),
        ("end\\", "bad escape \\ "),
    ],
)
def test_a_template_is_checked_before_any_use(template: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message.strip())):
        Replacement("(?P<first>a)(b)", template)
