"""Watching sign-in from the inside: which passwords reach a real account's hash."""

from __future__ import annotations

from typing import Any


def count_checked(accounts: Any) -> list[str]:
    """Make ``accounts`` (citizen or regulator accounts) record every password checked
    against a real account's hash, not the decoy an unknown or locked account costs."""
    checked: list[str] = []
    verify = accounts._verify

    def counting(stored: str, password: str) -> bool:
        if stored != accounts._decoy:
            checked.append(password)
        return bool(verify(stored, password))

    accounts._verify = counting
    return checked
