"""CNIC pseudonyms: stable per key, unlinkable across keys, the key kept out of sight."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import ShahrahError
from core.ids import Cnic
from core.pseudonym import Pseudonymizer

cnics = st.from_regex(r"[0-9]{13}", fullmatch=True).map(Cnic.parse)
KEY_A = Pseudonymizer(b"a" * 32)
KEY_B = Pseudonymizer(b"b" * 32)


@given(cnics, cnics)
def test_same_cnic_same_pseudonym_and_different_cnics_differ(x: Cnic, y: Cnic) -> None:
    assert KEY_A(x) == KEY_A(Cnic.parse(x.digits))
    assert (KEY_A(x) == KEY_A(y)) == (x == y)
    assert KEY_A(x).startswith("ps1:")
    assert x.digits not in KEY_A(x)


@given(cnics)
def test_another_key_gives_unrelated_pseudonyms(x: Cnic) -> None:
    assert KEY_A(x) != KEY_B(x)


def test_key_file_is_private_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "pseudonym.key"
    made = Pseudonymizer.generate(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    cnic = Cnic.parse("35202-1234567-1")
    assert Pseudonymizer.load(path)(cnic) == made(cnic)
    with pytest.raises(ShahrahError, match="refusing"):
        Pseudonymizer.generate(path)
    assert "key hidden" in repr(made)


def test_short_keys_are_refused() -> None:
    with pytest.raises(ShahrahError, match="32 bytes"):
        Pseudonymizer(b"short")
