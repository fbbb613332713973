"""The demo's legacy systems, served through their packaged adapter configurations."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import click
import pytest
from aiohttp import web
from click.testing import CliRunner

from adapters.base import BackendRequest
from adapters.config import load_adapters
from adapters.legacy import LegacyDemo, build, config_path, land_records_app
from adapters.legacy.land_records import PATH
from core.ids import ClientId
from shahrah.cli import main

Serve = Callable[[web.Application], Awaitable[str]]
CLIENT = ClientId.parse("PK/LG/LMC/property-tax")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> LegacyDemo:
    return build(tmp_path_factory.mktemp("legacy"), people=80, seed=3)


async def fetch(name: str, path: str, env: dict[str, str]) -> dict[str, Any]:
    adapters = await load_adapters(config_path(name), environ=env)
    try:
        for source in adapters.file_sources:  # the drops are complete: load them now
            for drop in sorted(source.directory.iterdir()):
                await source.ingest(drop)
        ((service, backend),) = adapters.backends.items()
        answer = await backend.call(
            BackendRequest(service=service, client=CLIENT, message_id="m", method="GET", path=path)
        )
        assert answer.status == 200, answer.body
        result: dict[str, Any] = json.loads(answer.body)
        return result
    finally:
        await adapters.close()


async def test_one_citizen_across_four_legacy_shapes(demo: LegacyDemo, serve: Serve) -> None:
    base = await serve(land_records_app(demo.land_records))
    env = demo.variables | {"PLRA_SOAP_URL": base + PATH}
    parcel = await fetch("plra", f"/parcels/{demo.parcel_ids[0]}", env)
    owner = parcel["owners"][0]["cnic"]
    person = await fetch("nadra", f"/persons/{owner}", env)
    assert person["cnic"] == owner
    assert person["name"]["en"] == parcel["owners"][0]["name"]["en"]
    assert person["name"].get("ur") in (None, parcel["owners"][0]["name"]["ur"])
    tax = await fetch("lmc", f"/assessments/{demo.property_ids[0]}", env)
    assert tax["property_id"] == demo.property_ids[0]
    assert tax["fiscal_year"] == "2024-25"
    birth = await fetch("births", f"/registrations/{demo.birth_numbers[0]}", env)
    assert birth["registration_number"] == demo.birth_numbers[0]
    assert (demo.directory / "property-tax-rejects").exists() is False  # every record was good


def run(*args: str, env: dict[str, str] | None = None) -> click.testing.Result:
    return CliRunner().invoke(main, list(args), env=env or {}, catch_exceptions=False)


def test_every_adapter_command_explains_itself() -> None:
    group = main.commands["adapter"]
    assert isinstance(group, click.Group)
    for name in group.commands:
        result = run("adapter", name, "--help")
        assert result.exit_code == 0
        assert len(result.output.split("\n\n")[1].strip()) > 20, name


async def test_check_and_call_from_the_command_line(demo: LegacyDemo) -> None:
    env = {k: v for k, v in demo.variables.items() if k != "PLRA_SOAP_URL"}
    checked = await asyncio.to_thread(run, "adapter", "check", str(config_path("nadra")), env=env)
    assert checked.exit_code == 0, checked.output
    assert json.loads(checked.stdout) == {
        "PK/FED/NADRA/civil-registry/person/v1": ["GET /persons/{cnic}"]
    }
    person = demo.people[0]
    called = await asyncio.to_thread(
        run, "adapter", "call", str(config_path("nadra")),
        "PK/FED/NADRA/civil-registry/person/v1", "GET", f"/persons/{person.cnic}", env=env,
    )  # fmt: skip
    assert called.exit_code == 0, called.output
    assert json.loads(called.stdout)["cnic"] == person.dashed_cnic
    broken = await asyncio.to_thread(run, "adapter", "check", str(config_path("nadra")))
    assert broken.exit_code == 1
    assert "variable ${LEGACY_DIR} is not set" in broken.stderr


async def test_ingest_once_from_the_command_line(tmp_path: Path) -> None:
    legacy = await asyncio.to_thread(build, tmp_path, people=20, seed=5)
    result = await asyncio.to_thread(
        run, "adapter", "ingest", str(config_path("births")), env=legacy.variables
    )
    assert result.exit_code == 0, result.output
    reports = json.loads(result.stdout)["PK/LG/LMC/civil-registration/birth/v1"]
    assert sorted(r["name"] for r in reports) == ["uc045-2024.csv", "uc112-2024.csv"]
    assert {r["status"] for r in reports} == {"loaded"}
