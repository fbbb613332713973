"""SQL adapters against real SQLite, PostgreSQL and MariaDB databases in NADRA's legacy layout."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from adapters.base import BackendRequest
from adapters.config import Adapters, load_adapters
from adapters.errors import BackendFailure, MappingError
from adapters.legacy.synthetic import Person
from adapters.legacy.systems import config_path, write_district_codes
from adapters.sql import SqlSource
from core.ids import ClientId, ServiceId
from tests.adapters.conftest import PG_ENV, write
from tests.databases import for_this_worker

PERSON = ServiceId.parse("PK/FED/NADRA/civil-registry/person/v1")
CLIENT = ClientId.parse("PK/LG/LMC/property-tax")


def request(path: str, service: ServiceId = PERSON, method: str = "GET") -> BackendRequest:
    return BackendRequest(
        service=service, client=CLIENT, message_id="msg-1", method=method, path=path
    )


@pytest.fixture
async def nadra(legacy_sql: str, tmp_path: Path) -> AsyncIterator[Adapters]:
    write_district_codes(tmp_path / "districts.csv")
    env = {"NADRA_DB_URL": legacy_sql, "LEGACY_DIR": str(tmp_path)}
    adapters = await load_adapters(config_path("nadra"), environ=env)
    yield adapters
    await adapters.close()


async def test_person_is_mapped_from_the_legacy_layout(
    nadra: Adapters, people: list[Person]
) -> None:
    backend = nadra.backends[PERSON]
    for p in people[:6]:
        answer = await backend.call(request(f"/persons/{p.dashed_cnic}"))
        assert answer.status == 200, answer.body
        doc = json.loads(answer.body)
        assert doc["cnic"] == p.dashed_cnic
        assert doc["name"]["en"] == p.name  # upper-case legacy names in title case
        assert doc["gender"] == p.gender
        assert doc["date_of_birth"] == p.born.isoformat()  # both legacy date formats
        address = doc["permanent_address"]
        assert address["district"] == p.district.name  # through the code table
        assert address["province"] == p.district.province
        assert address["line1"] == p.address  # Urdu digits to ASCII, padding trimmed
        assert address["union_council"] == {"code": p.union_council, "name": p.union_council_name}
        assert doc["guardian"]["relation"] == p.guardian_relation


async def test_cnic_without_dashes_and_in_urdu_digits_finds_the_same_person(
    nadra: Adapters, people: list[Person]
) -> None:
    p = people[0]
    urdu = p.cnic.translate(str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹"))
    for form in (p.cnic, urdu):
        answer = await nadra.backends[PERSON].call(request(f"/persons/{form}"))
        assert json.loads(answer.body)["cnic"] == p.dashed_cnic


async def test_unknown_person_is_404_and_malformed_cnic_is_400(nadra: Adapters) -> None:
    backend = nadra.backends[PERSON]
    assert (await backend.call(request("/persons/99999-9999999-9"))).status == 404
    bad = await backend.call(request("/persons/1234' OR '1'='1"))
    assert bad.status == 400
    assert json.loads(bad.body)["detail"] == {"parameter": "cnic"}


async def test_writes_are_refused_by_the_database(nadra: Adapters) -> None:
    source = nadra.backends[PERSON].source
    assert isinstance(source, SqlSource)

    def attempt() -> None:
        with source.engine.connect() as conn:
            conn.execute(sa.text("DELETE FROM CITIZEN_MASTER"))
            conn.commit()

    with pytest.raises(sa.exc.DBAPIError):
        await asyncio.to_thread(attempt)


async def test_more_calls_than_connections_wait_for_the_pool(
    nadra: Adapters, people: list[Person]
) -> None:
    backend = nadra.backends[PERSON]
    answers = await asyncio.gather(
        *(backend.call(request(f"/persons/{p.cnic}")) for p in people[:12])
    )
    assert [a.status for a in answers] == [200] * 12


SLOW = {
    "sqlite": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 500000000) "
    "SELECT max(x) AS N FROM c",
    "postgresql": "SELECT pg_sleep(5) IS NULL AS N",
    "mysql": "SELECT SLEEP(5) AS N",
}


def one_column(
    tmp_path: Path,
    url: str,
    name: str,
    query: str,
    n_schema: str,
    settings: str = "",
    route: str = "",
) -> Path:
    """A configuration of service PK/FED/NADRA/civil-registry/NAME: GET /NAME maps column N."""
    document = {"type": "object", "properties": {"n": json.loads(n_schema)}}
    schema = write(tmp_path / "n.json", json.dumps(document))
    text = f"""
adapter: 1
services:
  PK/FED/NADRA/civil-registry/{name}:
    kind: sql
    url: "{url}"
    response_schema: {schema}
    {settings}
    routes:
      GET /{name}:
        {route}
        query: "{query}"
        mapping:
          /n: N
"""
    return write(tmp_path / f"{name}.yaml", text)


async def test_statement_timeout_is_enforced_by_the_database(
    legacy_sql: str, tmp_path: Path
) -> None:
    dialect = sa.engine.make_url(legacy_sql).get_backend_name()
    settings = "statement_timeout: 0.3\n    resilience: {timeout: 10, retries: 0}"
    config = one_column(tmp_path, legacy_sql, "slow", SLOW[dialect], "{}", settings)
    adapters = await load_adapters(config)
    service = ServiceId.parse("PK/FED/NADRA/civil-registry/slow")
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(BackendFailure) as failed:
            await adapters.backends[service].call(request("/slow", service))
        assert loop.time() - started < 4
        assert "statement timeout" in failed.value.message
        assert failed.value.detail["service"] == str(service)
        assert failed.value.detail["message_id"] == "msg-1"
    finally:
        await adapters.close()


async def test_parameters_are_bound_never_spliced(
    legacy_sql: str, tmp_path: Path, people: list[Person]
) -> None:
    schema = write(
        tmp_path / "s.json", '{"type": "object", "properties": {"count": {"type": "integer"}}}'
    )
    config = write(
        tmp_path / "names.yaml",
        f"""
        adapter: 1
        services:
          PK/FED/NADRA/civil-registry/names:
            kind: sql
            url: "{legacy_sql}"
            response_schema: {schema}
            routes:
              GET /count/{{name}}:
                query: SELECT COUNT(*) AS C FROM CITIZEN_MASTER WHERE FIRST_NM = :name
                mapping:
                  /count: {{from: C, as: integer, required: true}}
        """,  # noqa: S608 (a configuration file, whose query binds :name)
    )
    service = ServiceId.parse("PK/FED/NADRA/civil-registry/names")
    adapters = await load_adapters(config)
    try:
        backend = adapters.backends[service]
        injected = await backend.call(request("/count/x' OR '1'='1", service))
        assert json.loads(injected.body) == {"count": 0}
        real = await backend.call(request(f"/count/{people[0].first.upper()}", service))
        assert json.loads(real.body)["count"] >= 1
    finally:
        await adapters.close()


NOT_FINITE = {
    "sqlite": "SELECT 9e999 AS N",  # SQLite reads an overflowing literal as infinity
    "postgresql": "SELECT CAST('NaN' AS double precision) AS N",
}


async def test_a_float_that_is_not_finite_is_a_mapping_error(
    legacy_sql: str, tmp_path: Path
) -> None:
    # Passed through, it became NaN or Infinity in the answer, which is not JSON.
    dialect = sa.engine.make_url(legacy_sql).get_backend_name()
    if dialect not in NOT_FINITE:
        pytest.skip(f"{dialect} has no NaN or infinity")
    config = one_column(tmp_path, legacy_sql, "odd", NOT_FINITE[dialect], '{"type": "number"}')
    adapters = await load_adapters(config)
    service = ServiceId.parse("PK/FED/NADRA/civil-registry/odd")
    try:
        with pytest.raises(MappingError, match="not a finite number") as failed:
            await adapters.backends[service].call(request("/odd", service))
        assert failed.value.field == "/n"
    finally:
        await adapters.close()


ENDLESS_CTE = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x AS N FROM c"
ENDLESS = {
    "sqlite": ENDLESS_CTE,
    "postgresql": ENDLESS_CTE,
    "mysql": "SELECT seq AS N FROM seq_1_to_100000000",  # MariaDB's sequence engine
}


async def test_a_result_over_max_rows_is_never_read_whole(legacy_sql: str, tmp_path: Path) -> None:
    # psycopg and PyMySQL read every row of a result before the first is fetched: a query that
    # matched millions held them all in memory, then failed anyway for having too many.
    dialect = sa.engine.make_url(legacy_sql).get_backend_name()
    settings = "statement_timeout: 3\n    resilience: {timeout: 10, retries: 0}"
    route = "rows: many\n        max_rows: 10"
    config = one_column(tmp_path, legacy_sql, "all", ENDLESS[dialect], "{}", settings, route)
    adapters = await load_adapters(config)
    service = ServiceId.parse("PK/FED/NADRA/civil-registry/all")
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(BackendFailure, match="more than 10 rows"):
            await adapters.backends[service].call(request("/all", service))
        assert loop.time() - started < 2
    finally:
        await adapters.close()


NO_JSON_FORM = {
    "postgresql": "SELECT CAST('1 day 2 hours' AS interval) AS N",
    "mysql": "SELECT CAST('26:00:00' AS TIME) AS N",  # PyMySQL reads TIME as a timedelta
}


async def test_a_value_json_cannot_hold_is_a_mapping_error(legacy_sql: str, tmp_path: Path) -> None:
    # Passed through to an untyped property, it made json.dumps fail after validation: an
    # unexpected error, not the ServiceFailed a backend's failure is.
    dialect = sa.engine.make_url(legacy_sql).get_backend_name()
    if dialect not in NO_JSON_FORM:
        pytest.skip(f"{dialect} has no interval type")
    config = one_column(tmp_path, legacy_sql, "span", NO_JSON_FORM[dialect], "{}")
    adapters = await load_adapters(config)
    service = ServiceId.parse("PK/FED/NADRA/civil-registry/span")
    try:
        with pytest.raises(MappingError, match="no JSON form") as failed:
            await adapters.backends[service].call(request("/span", service))
        assert failed.value.field == "/n"
    finally:
        await adapters.close()


async def test_text_sqlite_cannot_decode_fails_at_once_and_is_never_quoted(tmp_path: Path) -> None:
    # Python's sqlite3 raises OperationalError, quoting the text, for a stored text that is not
    # UTF-8 (a cp1252 name). It was taken for a connection failure: retried, though every read
    # fails alike, each attempt one more step toward opening the circuit for other records.
    name = "35202-1234567-1 M\xe9hreen".encode("cp1252")
    database = tmp_path / "legacy.db"
    with sqlite3.connect(database) as conn:
        conn.execute("CREATE TABLE CITIZEN (CNIC TEXT, NAME TEXT)")
        conn.execute("INSERT INTO CITIZEN VALUES ('1', CAST(? AS TEXT))", (name,))
    conn.close()
    settings = "resilience: {timeout: 10, retries: 2, backoff: 0}"
    config = one_column(
        tmp_path, f"sqlite:///{database}", "latin", "SELECT NAME AS N FROM CITIZEN", "{}", settings
    )
    adapters = await load_adapters(config)
    service = ServiceId.parse("PK/FED/NADRA/civil-registry/latin")
    try:
        with pytest.raises(BackendFailure) as failed:
            await adapters.backends[service].call(request("/latin", service))
    finally:
        await adapters.close()
    error = failed.value
    assert error.xroad_type == "Server.ServerProxy.ServiceFailed"
    assert error.message == "the database holds text that is not UTF-8 where the query reads"
    assert error.detail["attempts"] == 1
    assert error.detail["error"] == "OperationalError"
    shown = json.dumps(error.to_json(), ensure_ascii=False) + error.message
    assert "35202" not in shown
    assert "hreen" not in shown


TCP = {  # libpq parameter: the socket option it sets on the client's end of the connection
    "keepalives": (socket.SOL_SOCKET, socket.SO_KEEPALIVE),
    "keepalives_idle": (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
    "keepalives_interval": (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
    "keepalives_count": (socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
    "tcp_user_timeout": (socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
}


@pytest.mark.skipif(not os.environ.get(PG_ENV), reason=f"{PG_ENV} is not set")
@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # statement_timeout 4 s, connect_timeout 6 s: probes after 4 s of silence, 3 within 6 s
        ("", {"keepalives_idle": 4, "keepalives_interval": 2, "tcp_user_timeout": 10_000}),
        # what the operator wrote in the URL stays
        (
            "?keepalives_idle=77&tcp_user_timeout=12345",
            {"keepalives_idle": 77, "keepalives_interval": 2, "tcp_user_timeout": 12_345},
        ),
    ],
)
async def test_postgresql_connections_notice_a_dead_network(
    tmp_path: Path, query: str, expected: dict[str, int]
) -> None:
    # psycopg waits for an answer without a timeout of its own: a server that a broken network
    # cut off mid-query held the worker thread until the system's TCP gave up (hours).
    url = for_this_worker(os.environ[PG_ENV]) + query
    settings = "statement_timeout: 4\n    connect_timeout: 6"
    config = one_column(tmp_path, url, "alive", "SELECT 1 AS N", "{}", settings)
    adapters = await load_adapters(config)
    source = adapters.backends[ServiceId.parse("PK/FED/NADRA/civil-registry/alive")].source
    assert isinstance(source, SqlSource)

    def connection_settings() -> tuple[dict[str, str], dict[str, int]]:
        with source.engine.connect() as conn:
            psycopg: Any = conn.connection.dbapi_connection
            libpq = psycopg.info.get_parameters()
            # The server's SHOW tcp_user_timeout is its own end's setting: the kernel's
            # options on this end are what count.
            end = socket.fromfd(psycopg.fileno(), socket.AF_INET, socket.SOCK_STREAM)
            try:
                return libpq, {name: end.getsockopt(*option) for name, option in TCP.items()}
            finally:
                end.close()

    try:
        libpq, kernel = await asyncio.to_thread(connection_settings)
    finally:
        await adapters.close()
    want = {"keepalives": 1, "keepalives_count": 3, **expected}
    assert {name: libpq.get(name) for name in TCP} == {k: str(v) for k, v in want.items()}
    assert kernel == want
