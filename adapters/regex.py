"""Regular expressions from adapter configurations, matched in linear time (RE2).

A parameter's ``pattern`` meets whatever a client sends, and a ``replace`` pattern
whatever a legacy system holds. Python's backtracking engine can take exponential time
on an innocent-looking pattern such as ``([a-z]+ ?)+$``; RE2 never backtracks, so a
match costs time linear in the text whatever the pattern, and the constructs that would
need backtracking (lookaround, backreferences) are refused when the configuration loads.

RE2's ``\\d``, ``\\w`` and ``\\s`` are ASCII-only (Python's match any script's digits and
letters); a configuration normalises Urdu digits with the ``digits`` transform first.
"""

from __future__ import annotations

import re
from typing import Any

import re2

__all__ = ["Regex", "Replacement"]

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # a refused pattern becomes a configuration error, not stderr noise

# One piece of a replacement template: \g<ref>, \digits, \ and any other character, or text.
_TEMPLATE_PIECE = re.compile(r"\\g<([^>]*)>|\\([0-9]{1,2})|\\(.?)|[^\\]+", re.S)


class Regex:
    """A compiled RE2 pattern; ValueError at construction says why one is refused."""

    def __init__(self, pattern: str) -> None:
        try:
            self.compiled: Any = re2.compile(pattern, options=_OPTIONS)
        except re2.error as e:
            reason = e.args[0].decode("utf-8", "replace") if e.args else "refused"
            raise ValueError(f"not an RE2 regular expression: {reason}") from None
        self.pattern = pattern

    def fullmatch(self, text: str) -> bool:
        return self.compiled.fullmatch(text) is not None


class Replacement:
    """Every match of ``pattern`` replaced by ``template``, in which ``\\1`` to ``\\99``,
    ``\\g<n>`` and ``\\g<name>`` stand for a group and ``\\\\`` for a backslash; any other
    escape, and a group the pattern lacks, is refused at construction (ValueError)."""

    def __init__(self, pattern: str, template: str) -> None:
        self.regex = Regex(pattern)
        self._pieces = _parse_template(template, self.regex.compiled)

    def __call__(self, text: str) -> str:
        return str(self.regex.compiled.sub(self._expand, text))

    def _expand(self, match: Any) -> str:
        return "".join(p if isinstance(p, str) else (match.group(p) or "") for p in self._pieces)


def _parse_template(template: str, compiled: Any) -> list[str | int]:
    pieces: list[str | int] = []
    for m in _TEMPLATE_PIECE.finditer(template):
        ref, number, escaped = m.group(1), m.group(2), m.group(3)
        if ref is not None:
            group = _group(ref, compiled)
        elif number is not None:
            group = _group(number, compiled)
        elif escaped is not None:
            if escaped != "\\":
                raise ValueError(f"bad escape \\{escaped} (write \\\\ for a backslash)")
            pieces.append("\\")
            continue
        else:
            pieces.append(m.group(0))
            continue
        pieces.append(group)
    return pieces


def _group(ref: str, compiled: Any) -> int:
    if ref.isascii() and ref.isdigit():
        group = int(ref)
        if group > compiled.groups:
            raise ValueError(f"invalid group reference {group}: the pattern has {compiled.groups}")
        return group
    if ref not in compiled.groupindex:
        raise ValueError(f"unknown group name {ref!r}")
    return int(compiled.groupindex[ref])
