"""Adapters: fixed-width ingest in records per second, and the adapter's overhead per call as a
ratio against calling the same backend directly, measured side by side.

    python -m bench.adapters [--records N] [--ops N] [--rounds R]

Ingest uses the Lahore property tax layout (EBCDIC cp037, packed and zoned decimals, a
trailer record): parsing, mapping and schema validation alone, then the whole ingest into
the adapter's SQLite ledger (one transaction per file). Overhead compares, for a SQL
backend (NADRA's legacy registry on SQLite) and a REST backend (an aiohttp API on
loopback), a call through the adapter (route, parameters, resilience, mapping, schema
validation, JSON) with the direct call a hand-written backend would make (the same query
or GET, and JSON out).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import sqlalchemy as sa
from aiohttp import web

from adapters.base import BackendRequest
from adapters.config import Adapters, load_adapters
from adapters.legacy.synthetic import make_people
from adapters.legacy.systems import (
    config_path,
    create_nadra_database,
    property_tax_extract,
    property_tax_layout,
    write_district_codes,
)
from adapters.records import RecordRules, parse_file
from bench._timing import compare, table
from core.ids import ClientId, ServiceId

PERSON = ServiceId.parse("PK/FED/NADRA/civil-registry/person/v1")
CLIENT = ClientId.parse("PK/LG/LMC/property-tax")
SCHEMA = Path(__file__).resolve().parent.parent / "schemas/records/pk.nadra.person.json"


def _extract(directory: Path, records: int) -> bytes:
    layout = property_tax_layout({"LEGACY_DIR": str(directory)})
    people = [p for p in make_people(records * 3, seed=1) if p.district.name == "Lahore"]
    while len(people) < records:
        people += people
    data, _ = property_tax_extract(people[:records], random.Random(1), layout, 2024)
    return data


def _median_rate(run: Callable[[], int], rounds: int) -> float:
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        n = run()
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates)


async def _ingest(directory: Path, data: bytes, rounds: int) -> tuple[float, float]:
    env = {"LEGACY_DIR": str(directory)}
    adapters = await load_adapters(config_path("lmc"), environ=env)
    try:
        source = adapters.file_sources[0]
        rules: RecordRules | None = source._rules
        assert rules is not None
        parse_rate = _median_rate(lambda: len(parse_file(rules, "x", data).loaded), rounds)
        drops = directory / "property-tax"
        drops.mkdir(exist_ok=True)
        rates = []
        for i in range(rounds):
            # A different trailing filler byte makes each round a new file to the ledger.
            path = drops / f"PTAX.R{i}.DAT"
            path.write_bytes(data)
            started = time.perf_counter()
            report = await source.ingest(path)
            assert report is not None
            assert report.status == "loaded"
            rates.append(report.loaded / (time.perf_counter() - started))
            data = data[:-1] + bytes([(data[-1] + 1) % 256])
        return parse_rate, statistics.median(rates)
    finally:
        await adapters.close()


def _sync(
    loop: asyncio.AbstractEventLoop, make: Callable[[], Awaitable[Any]]
) -> Callable[[], None]:
    def run() -> None:
        loop.run_until_complete(make())

    return run


async def _sql_cases(
    directory: Path,
) -> tuple[dict[str, Callable[[], Awaitable[Any]]], Adapters, Any]:
    url = f"sqlite:///{directory / 'nadra.db'}"
    people = make_people(500, seed=2)
    create_nadra_database(url, people)
    write_district_codes(directory / "districts.csv")
    adapters = await load_adapters(
        config_path("nadra"), environ={"NADRA_DB_URL": url, "LEGACY_DIR": str(directory)}
    )
    backend = adapters.backends[PERSON]
    engine = sa.create_engine(url, pool_size=4)
    pool = ThreadPoolExecutor(4)
    query = sa.text(
        "SELECT CNIC_NO, FIRST_NM, LAST_NM, NAME_URDU, FH_FLAG, FH_NAME, FH_NAME_URDU, GENDER_CD, "
        "DOB_TXT, ADDR_LINE, UC_CD, UC_NM, TEHSIL_NM, DISTRICT_CD, PROVINCE_CD FROM CITIZEN_MASTER "
        "WHERE CNIC_NO = :cnic AND REC_STATUS = 'A'"
    )
    cnics = [p.cnic for p in people]

    def direct_query(cnic: str) -> bytes:
        with engine.connect() as conn:
            row = conn.execute(query, {"cnic": cnic}).mappings().one()
        return json.dumps(dict(row), ensure_ascii=False).encode()

    async def direct() -> None:
        await asyncio.get_running_loop().run_in_executor(pool, direct_query, random.choice(cnics))

    async def adapter() -> None:
        answer = await backend.call(
            BackendRequest(PERSON, CLIENT, "m", "GET", f"/persons/{random.choice(cnics)}")
        )
        assert answer.status == 200

    return (
        {"SQL: through the adapter": adapter, "SQL: direct query": direct},
        adapters,
        (engine, pool),
    )


async def _rest_cases(
    directory: Path,
) -> tuple[dict[str, Callable[[], Awaitable[Any]]], Adapters, web.AppRunner, aiohttp.ClientSession]:
    doc = {
        "data": {
            "nic": "3520212345671",
            "fullName": "MUHAMMAD BILAL",
            "sex": "M",
            "birth": "12-04-1990",
            "father": "TARIQ QURESHI",
            "location": {"street": "12 Shadman", "dist": "Lahore", "prov": "Punjab"},
        }
    }

    async def citizen(_: web.Request) -> web.Response:
        return web.json_response(doc)

    app = web.Application()
    app.router.add_get("/citizens/{nic}", citizen)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    config = directory / "rest.yaml"
    config.write_text(
        f"""adapter: 1
services:
  {PERSON}:
    kind: rest
    url: "{base}"
    response_schema: {SCHEMA}
    routes:
      GET /persons/{{cnic}}:
        params: {{cnic: {{transforms: [cnic_digits]}}}}
        path: /citizens/{{cnic}}
        mapping:
          /cnic: {{from: /data/nic, transforms: [cnic], required: true}}
          /name/en: {{from: /data/fullName, transforms: [collapse, title], required: true}}
          /gender:
            from: /data/sex
            transforms: [{{map: {{M: male, F: female}}}}]
            required: true
          /date_of_birth: {{from: /data/birth, transforms: [{{date: DD-MM-YYYY}}], required: true}}
          /guardian/relation: {{value: father}}
          /guardian/name/en: {{from: /data/father, transforms: [title], required: true}}
          /permanent_address/line1: {{from: /data/location/street, required: true}}
          /permanent_address/district: {{from: /data/location/dist, required: true}}
          /permanent_address/province: {{from: /data/location/prov, required: true}}
""",
        encoding="utf-8",
    )
    adapters = await load_adapters(config)
    backend = adapters.backends[PERSON]
    session = aiohttp.ClientSession()

    async def direct() -> None:
        async with session.get(f"{base}/citizens/3520212345671") as r:
            json.dumps(await r.json()).encode()

    async def adapter() -> None:
        answer = await backend.call(
            BackendRequest(PERSON, CLIENT, "m", "GET", "/persons/35202-1234567-1")
        )
        assert answer.status == 200

    return (
        {"REST: through the adapter": adapter, "REST: direct GET": direct},
        adapters,
        runner,
        session,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000, help="records per ingested file")
    parser.add_argument("--ops", type=int, default=300, help="calls per round")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    loop = asyncio.new_event_loop()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        data = _extract(directory, args.records)
        parse_rate, ingest_rate = loop.run_until_complete(_ingest(directory, data, args.rounds))
        print(
            f"Fixed-width ingest, {args.records} records of 200 bytes "
            f"(cp037, packed, zoned), {os.cpu_count()} CPUs"
        )
        print(f"{'parse + map + validate':<44}{parse_rate:>12,.0f} records/s")
        print(f"{'whole ingest into SQLite (one transaction)':<44}{ingest_rate:>12,.0f} records/s")
        print()
        sql, sql_adapters, (engine, pool) = loop.run_until_complete(_sql_cases(directory))
        rest, rest_adapters, runner, session = loop.run_until_complete(_rest_cases(directory))
        try:
            results = compare(
                {k: _sync(loop, v) for k, v in sql.items()}, ops=args.ops, rounds=args.rounds
            )
            print(
                table(
                    "Adapter overhead per call: SQL (SQLite, legacy layout)",
                    results,
                    "SQL: direct query",
                )
            )
            print()
            results = compare(
                {k: _sync(loop, v) for k, v in rest.items()}, ops=args.ops, rounds=args.rounds
            )
            print(
                table(
                    "Adapter overhead per call: REST (aiohttp on loopback)",
                    results,
                    "REST: direct GET",
                )
            )
        finally:
            loop.run_until_complete(session.close())
            loop.run_until_complete(runner.cleanup())
            loop.run_until_complete(sql_adapters.close())
            loop.run_until_complete(rest_adapters.close())
            pool.shutdown()
            engine.dispose()
    loop.close()


if __name__ == "__main__":
    main()
