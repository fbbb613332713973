"""Regulator console accounts (audit.console.accounts) and ``shahrah audit regulator``."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from click.testing import CliRunner, Result
from sqlalchemy import select

from audit.console.accounts import (
    LOCKOUT,
    MAX_FAILURES,
    Regulator,
    RegulatorAccounts,
)
from audit.models import AuditRegulator
from core.db import Sessions, transaction
from core.errors import BadRequestError, ConflictError, NotFoundError, UnauthorizedError
from core.ids import ClientId
from core.passwords import wrong_credentials
from shahrah.cli import main
from tests.audit.conftest import REGULATOR, Federation
from tests.passwords import count_checked
from tests.registry.test_globalconf import anchor_for

FAST_HASH = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
PASSWORD = "correct horse battery"


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 11, 28, 9, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


async def test_sign_in_with_the_right_password_only(db: Sessions) -> None:
    accounts = RegulatorAccounts(db, hasher=FAST_HASH)
    await accounts.add("amina", REGULATOR, PASSWORD)
    assert await accounts.sign_in("amina", PASSWORD) == Regulator("amina", REGULATOR)
    for username, password in (("amina", PASSWORD + "x"), ("nobody", PASSWORD), ("A!", "")):
        with pytest.raises(
            UnauthorizedError, match="wrong username or password, or the account is locked"
        ):
            await accounts.sign_in(username, password)
    async with transaction(db, write=False) as s:
        stored = await s.scalar(select(AuditRegulator.password_hash))
    assert stored is not None
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored


async def test_rules_for_new_accounts(db: Sessions) -> None:
    accounts = RegulatorAccounts(db, hasher=FAST_HASH)
    with pytest.raises(BadRequestError, match="at least 12"):
        await accounts.add("amina", REGULATOR, "short")
    for bad in ("A", "Amina", "-x", "a b", "x" * 65):
        with pytest.raises(BadRequestError, match="username"):
            await accounts.add(bad, REGULATOR, PASSWORD)
    await accounts.add("amina", REGULATOR, PASSWORD)
    with pytest.raises(ConflictError):
        await accounts.add("amina", REGULATOR, PASSWORD)


async def test_repeated_failures_lock_the_account_even_for_the_right_password(
    db: Sessions,
) -> None:
    """And the locked account answers exactly as an unknown username does, so neither the
    lock nor the right password shows."""
    clock = Clock()
    accounts = RegulatorAccounts(db, hasher=FAST_HASH, clock=clock)
    await accounts.add("amina", REGULATOR, PASSWORD)
    refusals: dict[str, list[str]] = {"amina": [], "nobody": []}
    for username, seen in refusals.items():
        for password in [*["wrong password!"] * MAX_FAILURES, PASSWORD]:
            with pytest.raises(UnauthorizedError) as refused:
                await accounts.sign_in(username, password)
            assert refused.value.status == 401
            seen.append(str(refused.value))
    assert refusals["amina"] == refusals["nobody"]
    assert set(refusals["amina"]) == {str(wrong_credentials("username"))}
    clock.now += LOCKOUT + dt.timedelta(seconds=1)
    assert (await accounts.sign_in("amina", PASSWORD)).username == "amina"


async def test_a_burst_of_guesses_gets_no_more_than_five_passwords_checked(
    db: Sessions,
) -> None:
    accounts = RegulatorAccounts(db, hasher=FAST_HASH)
    await accounts.add("amina", REGULATOR, PASSWORD)
    checked = count_checked(accounts)
    results = await asyncio.gather(
        *(accounts.sign_in("amina", f"guess number {n}") for n in range(40)),
        return_exceptions=True,
    )
    assert all(isinstance(r, UnauthorizedError) for r in results)
    assert len(checked) <= MAX_FAILURES
    with pytest.raises(UnauthorizedError) as right:
        await accounts.sign_in("amina", PASSWORD)
    assert str(right.value) == str(wrong_credentials("username"))
    assert len(checked) <= MAX_FAILURES


async def test_a_disabled_account_can_neither_sign_in_nor_stay(db: Sessions) -> None:
    accounts = RegulatorAccounts(db, hasher=FAST_HASH)
    await accounts.add("amina", REGULATOR, PASSWORD)
    assert (await accounts.active("amina")).organisation == REGULATOR
    await accounts.disable("amina")
    with pytest.raises(UnauthorizedError):
        await accounts.sign_in("amina", PASSWORD)
    with pytest.raises(UnauthorizedError, match="closed"):
        await accounts.active("amina")
    with pytest.raises(NotFoundError):
        await accounts.disable("nobody")
    [view] = await accounts.list()
    assert view.disabled_at is not None


# --- the CLI ------------------------------------------------------------------------------------


def run(*args: str, ok: bool = True, stdin: str | None = None) -> Result:
    result = CliRunner().invoke(main, list(args), input=stdin, catch_exceptions=False, env={})
    if ok:
        assert result.exit_code == 0, result.output + result.stderr
    return result


async def _cli(*args: str, **kw: object) -> Result:
    return await asyncio.to_thread(run, *args, **kw)  # type: ignore[arg-type]


def test_every_regulator_command_explains_itself() -> None:
    for name in ("add", "disable", "list"):
        result = run("audit", "regulator", name, "--help")
        assert "--data-dir" in result.output
    assert "global group audit-regulators" in " ".join(
        run("audit", "regulator", "--help").output.split()
    ).replace("- ", "-")


async def test_add_list_disable_from_the_command_line(
    tmp_path: Path, db_url: str, db: Sessions
) -> None:
    base = ("--data-dir", str(tmp_path), "--db", db_url)
    added = await _cli(
        "audit", "regulator", "add", "amina", "--organisation", str(REGULATOR),
        "--password-stdin", *base, stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert PASSWORD not in added.output + added.stderr
    assert "cannot check" in added.stderr  # no configuration cached in this folder
    assert await RegulatorAccounts(db, hasher=FAST_HASH).sign_in("amina", PASSWORD)
    listed = json.loads((await _cli("audit", "regulator", "list", *base)).stdout)
    assert [(a["username"], a["organisation"], a["disabled_at"]) for a in listed] == [
        ("amina", str(REGULATOR), None)
    ]
    await _cli("audit", "regulator", "disable", "amina", *base)
    listed = json.loads((await _cli("audit", "regulator", "list", *base)).stdout)
    assert listed[0]["disabled_at"] is not None
    again = await _cli(
        "audit", "regulator", "add", "amina", "--organisation", str(REGULATOR),
        "--password-stdin", *base, stdin=PASSWORD + "\n", ok=False,
    )  # fmt: skip
    assert again.exit_code == 1
    assert "exists already" in again.stderr


async def test_add_refuses_bad_input_and_asks_for_no_password_without_a_terminal(
    tmp_path: Path, db_url: str
) -> None:
    base = ("--data-dir", str(tmp_path), "--db", db_url)
    no_tty = await _cli(
        "audit", "regulator", "add", "amina", "--organisation", str(REGULATOR), *base, ok=False
    )
    assert no_tty.exit_code == 2
    assert "--password-stdin" in no_tty.stderr
    bad = await _cli(
        "audit", "regulator", "add", "Amina!", "--organisation", str(REGULATOR), *base, ok=False
    )
    assert bad.exit_code == 2
    assert "username" in bad.stderr
    short = await _cli(
        "audit", "regulator", "add", "amina", "--organisation", str(REGULATOR),
        "--password-stdin", *base, stdin="short\n", ok=False,
    )  # fmt: skip
    assert short.exit_code == 1
    assert "at least 12" in short.stderr


async def test_add_refuses_an_organisation_that_is_not_a_regulator(
    tmp_path: Path, db_url: str, federation: Federation
) -> None:
    (tmp_path / "anchor.json").write_text(
        anchor_for().model_copy(update={"url": federation.registry_url + "/globalconf"}).dumps()
    )
    (tmp_path / "globalconf.jws").write_text(federation.audit_conf.current().signed)
    base = ("--data-dir", str(tmp_path), "--db", db_url)
    stranger = ClientId("PK", "FED", "NADRA", "civil-registry")
    refused = await _cli(
        "audit", "regulator", "add", "amina", "--organisation", str(stranger),
        "--password-stdin", *base, stdin=PASSWORD + "\n", ok=False,
    )  # fmt: skip
    assert refused.exit_code == 1
    assert "audit-regulators" in refused.stderr
    await _cli(
        "audit", "regulator", "add", "amina", "--organisation", str(REGULATOR),
        "--password-stdin", *base, stdin=PASSWORD + "\n",
    )  # fmt: skip
