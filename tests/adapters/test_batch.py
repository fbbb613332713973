"""``shahrah adapter batch`` against a real r1-speaking server on loopback."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from click.testing import CliRunner

from adapters.batch import BatchSpec, run_batch
from core.errors import BadRequestError
from core.ids import ClientId, ServiceId
from shahrah.cli import main

Serve = Callable[[web.Application], Awaitable[str]]
SERVICE = ServiceId.parse("PK/FED/NADRA/civil-registry/person/v1")
KNOWN = {"3520212345671": "Bilal Qureshi", "3520276543212": "Sana Bilal"}


class Gateway:
    """The r1 interface of a local gateway, reduced to what the batch command meets."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []
        self.in_flight = 0
        self.most = 0
        self.fail_next = 0  # answer this many requests with 500 first
        self.stop_at = 0  # set `reached` once this many requests arrived
        self.photo = ""  # sent with every found person, to make answers long
        self.reached = asyncio.Event()

    def app(self) -> web.Application:
        async def person(request: web.Request) -> web.Response:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            try:
                await asyncio.sleep(0.01)
                self.seen.append({"cnic": request.match_info["cnic"], **request.headers})
                if self.stop_at and len(self.seen) >= self.stop_at:
                    self.reached.set()
                if self.fail_next:
                    self.fail_next -= 1
                    return self.error(500, "Server.ServerProxy.ServiceFailed", "backend down")
                if request.headers.get("X-Road-Client") != "PK/LG/LMC/property-tax":
                    return self.error(400, "Client.InvalidClientIdentifier", "who are you")
                cnic = request.match_info["cnic"].replace("-", "")
                if request.headers.get("Shahrah-Data-Subject") != "PK" + cnic:
                    return self.error(400, "Client.BadRequest", "subject does not match")
                if cnic not in KNOWN:
                    return web.json_response(
                        {"type": "Client.NotFound", "message": "no record"}, status=404
                    )
                person = {"cnic": request.match_info["cnic"], "name": KNOWN[cnic]}
                if self.photo:
                    person["photo"] = self.photo
                return web.json_response(person, headers={"X-Road-Id": "id-" + cnic})
            finally:
                self.in_flight -= 1

        app = web.Application()
        app.router.add_get("/r1/PK/FED/NADRA/civil-registry/person/v1/persons/{cnic}", person)
        return app

    @staticmethod
    def error(status: int, kind: str, message: str) -> web.Response:
        body = {"type": kind, "message": message, "detail": None}
        return web.json_response(body, status=status, headers={"X-Road-Error": kind})


def rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text("utf-8"))))


def write_input(path: Path, cnics: list[str]) -> Path:
    path.write_text("cnic,branch\n" + "".join(f"{c},B{i}\n" for i, c in enumerate(cnics)), "utf-8")
    return path


def spec(base: str, concurrency: int = 3, max_response: int = 2**20) -> BatchSpec:
    return BatchSpec(
        gateway=base,
        client=ClientId.parse("PK/LG/LMC/property-tax"),
        service=SERVICE,
        path="/persons/{cnic}",
        subject_column="cnic",
        purpose="property-tax-assessment",
        consent="c-2026-000123",
        concurrency=concurrency,
        max_response=max_response,
    )


INPUT = ["35202-1234567-1", "3520276543212", "35202-0000000-1", "not-a-cnic"] + [
    f"35202{i:07d}3" for i in range(12)
]


async def test_every_row_gets_a_result_with_errors_included(serve: Serve, tmp_path: Path) -> None:
    gateway = Gateway()
    base = await serve(gateway.app())
    out = tmp_path / "results.csv"
    summary = await run_batch(spec(base), write_input(tmp_path / "in.csv", INPUT), out)
    assert (summary.total, summary.sent, summary.already) == (16, 16, 0)
    results = rows(out)
    assert [r["row"] for r in results] == [str(i) for i in range(1, 17)]  # input order
    assert [r["branch"] for r in results] == [f"B{i}" for i in range(16)]
    first = results[0]
    assert (first["status"], first["error_type"], first["message_id"]) == (
        "200",
        "",
        "id-3520212345671",
    )
    assert json.loads(first["response"]) == {"cnic": "35202-1234567-1", "name": "Bilal Qureshi"}
    assert (results[2]["status"], results[2]["error_type"]) == ("404", "Client.NotFound")
    assert results[3]["error_type"] == "InvalidInput"  # refused before sending
    assert "CNIC" in results[3]["error_message"]
    assert len(gateway.seen) == 15
    assert gateway.seen[0]["Shahrah-Purpose"] == "property-tax-assessment"
    assert gateway.seen[0]["Shahrah-Consent"] == "c-2026-000123"
    assert gateway.most <= 3


async def test_an_answer_too_long_to_keep_is_an_error_row_never_cut_short(
    serve: Serve, tmp_path: Path
) -> None:
    gateway = Gateway()
    gateway.photo = "x" * 3000  # over the limit only with the photo; a 404 stays under
    base = await serve(gateway.app())
    source = write_input(tmp_path / "in.csv", INPUT[:3])
    out = tmp_path / "results.csv"
    summary = await run_batch(spec(base, max_response=2000), source, out)
    assert summary.errors == 3
    results = rows(out)
    for long in results[:2]:
        assert (long["status"], long["error_type"], long["response"]) == (
            "200",
            "ResponseTooLarge",
            "",
        )
        assert "over 2000 bytes" in long["error_message"]
    assert results[2]["error_type"] == "Client.NotFound"
    # Run again with room: only the rows too long are sent again, and kept whole.
    summary = await run_batch(spec(base, max_response=4000), source, out, retry_errors=True)
    assert (summary.already, summary.sent, summary.errors) == (1, 2, 0)
    again = rows(out)
    assert [json.loads(r["response"])["photo"] for r in again[:2]] == [gateway.photo] * 2
    assert again[2]["error_type"] == "Client.NotFound"


async def test_an_interrupted_run_resumes_without_sending_answered_rows_again(
    serve: Serve, tmp_path: Path
) -> None:
    gateway = Gateway()
    base = await serve(gateway.app())
    source = write_input(tmp_path / "in.csv", INPUT)
    out = tmp_path / "results.csv"
    gateway.stop_at = 5
    task = asyncio.create_task(run_batch(spec(base, concurrency=1), source, out))
    await gateway.reached.wait()
    task.cancel()  # Ctrl-C halfway
    with pytest.raises(asyncio.CancelledError):
        await task
    with out.open("a", encoding="utf-8") as f:
        f.write("99,torn")  # a row the interruption cut in half
    answered = [r for r in rows(out) if r["row"] != "99"]
    assert 5 <= len(answered) < 16
    await asyncio.sleep(0.05)  # let the request cut off by the interruption finish on the server
    sent_before = len(gateway.seen)
    summary = await run_batch(spec(base), source, out)
    assert summary.already == len(answered)
    assert summary.sent == 16 - len(answered)
    again = {s["cnic"] for s in gateway.seen[sent_before:]}
    assert again.isdisjoint(r["cnic"] for r in answered)  # nothing answered is sent twice
    assert [r["row"] for r in rows(out)] == [str(i) for i in range(1, 17)]


async def test_retry_errors_sends_again_only_rows_without_a_usable_answer(
    serve: Serve, tmp_path: Path
) -> None:
    gateway = Gateway()
    gateway.fail_next = 2
    base = await serve(gateway.app())
    source = write_input(tmp_path / "in.csv", INPUT[:3])
    out = tmp_path / "results.csv"
    await run_batch(spec(base, concurrency=1), source, out)
    assert [r["status"] for r in rows(out)] == ["500", "500", "404"]
    again = await run_batch(spec(base), source, out)
    assert again.sent == 0
    retried = await run_batch(spec(base), source, out, retry_errors=True)
    assert (retried.already, retried.sent) == (1, 2)
    assert [r["status"] for r in rows(out)] == ["200", "200", "404"]


async def test_results_of_another_input_are_not_mixed_in(serve: Serve, tmp_path: Path) -> None:
    base = await serve(Gateway().app())
    out = tmp_path / "results.csv"
    out.write_text("row,name,status,error_type,error_message,message_id,response\n")
    with pytest.raises(BadRequestError, match="results of another input"):
        await run_batch(spec(base), write_input(tmp_path / "in.csv", INPUT[:2]), out)
    (tmp_path / "other.csv").write_text("id\n1\n")
    with pytest.raises(BadRequestError, match=r"no column \['cnic'\]"):
        await run_batch(spec(base), tmp_path / "other.csv", tmp_path / "r2.csv")


async def test_the_command_line_shows_progress_and_a_summary(serve: Serve, tmp_path: Path) -> None:
    base = await serve(Gateway().app())
    source = write_input(tmp_path / "in.csv", INPUT[:4])
    out = tmp_path / "results.csv"
    args = [
        "adapter", "batch", "--gateway", base, "--client", "PK/LG/LMC/property-tax",
        "--service", str(SERVICE), "--path", "/persons/{cnic}", "--input", str(source),
        "--output", str(out), "--subject-column", "cnic", "--purpose", "verification",
    ]  # fmt: skip

    def invoke() -> Any:
        return CliRunner().invoke(main, args, catch_exceptions=False)

    result = await asyncio.to_thread(invoke)
    assert result.exit_code == 0, result.output
    assert "4 rows: 0 answered before, 4 sent now, 2 of them errors" in result.stderr
    assert len(rows(out)) == 4


async def test_a_column_cannot_climb_out_of_the_service_path(serve: Serve, tmp_path: Path) -> None:
    # The HTTP client removes "." and ".." segments: /persons/.. would be a request for the
    # service itself, and its answer would be filed as this row's.
    paths: list[str] = []

    async def anything(request: web.Request) -> web.Response:
        paths.append(request.raw_path)
        return web.json_response({"seen": request.raw_path})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", anything)
    base = await serve(app)
    source = tmp_path / "in.csv"
    source.write_text("ref\nP-1\n..\n.\n", "utf-8")
    out = tmp_path / "results.csv"
    plain = BatchSpec(
        gateway=base,
        client=ClientId.parse("PK/LG/LMC/property-tax"),
        service=SERVICE,
        path="/persons/{ref}",
    )
    await run_batch(plain, source, out)
    assert paths == ["/r1/PK/FED/NADRA/civil-registry/person/v1/persons/P-1"]
    results = rows(out)
    assert [(r["ref"], r["error_type"]) for r in results] == [
        ("P-1", ""),
        ("..", "InvalidInput"),
        (".", "InvalidInput"),
    ]
    assert "'.' or '..'" in results[1]["error_message"]


def echo_app(seen: list[dict[str, str]]) -> web.Application:
    async def anything(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response({"seen": request.raw_path})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", anything)
    return app


async def test_a_header_value_with_a_line_break_is_refused_for_its_row_alone(
    serve: Serve, tmp_path: Path
) -> None:
    # aiohttp refused the header with a ValueError that killed the worker: the whole run
    # stopped with a traceback, and answers in flight in the other workers were dropped.
    seen: list[dict[str, str]] = []
    base = await serve(echo_app(seen))
    source = tmp_path / "in.csv"
    source.write_text('ref,consent\nP-1,c-1\nP-2,"c-2\r\nX-Injected: 1"\nP-3,c-3\n', "utf-8")
    out = tmp_path / "results.csv"
    plain = BatchSpec(
        gateway=base,
        client=ClientId.parse("PK/LG/LMC/property-tax"),
        service=SERVICE,
        path="/persons/{ref}",
        consent_column="consent",
    )
    summary = await asyncio.wait_for(run_batch(plain, source, out), 10)
    assert (summary.sent, summary.errors) == (3, 1)
    results = rows(out)
    assert [(r["ref"], r["error_type"]) for r in results] == [
        ("P-1", ""),
        ("P-2", "InvalidInput"),
        ("P-3", ""),
    ]
    assert "line break" in results[1]["error_message"]
    assert sorted(h["Shahrah-Consent"] for h in seen) == ["c-1", "c-3"]
    assert not any("X-Injected" in h for h in seen)


async def test_a_failing_worker_ends_the_run_instead_of_hanging_it(
    serve: Serve, tmp_path: Path
) -> None:
    # With every worker dead, the loop feeding the queue waited for room for ever.
    base = await serve(echo_app([]))
    source = tmp_path / "in.csv"
    source.write_text("ref\n" + "".join(f"P-{i}\n" for i in range(8)), "utf-8")
    plain = BatchSpec(
        gateway=base,
        client=ClientId.parse("PK/LG/LMC/property-tax"),
        service=SERVICE,
        path="/persons/{ref}",
        concurrency=1,
    )

    def broken(n: int) -> None:
        raise RuntimeError("the progress bar's terminal went away")

    with pytest.raises(RuntimeError, match="terminal went away"):
        await asyncio.wait_for(run_batch(plain, source, tmp_path / "out.csv", progress=broken), 10)
    assert len(rows(tmp_path / "out.csv")) == 1  # the answer it had is kept
