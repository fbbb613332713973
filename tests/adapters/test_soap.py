"""SOAP adapters against real SOAP servers on loopback: both versions, faults and hostile XML."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from adapters.base import BackendRequest
from adapters.config import Adapters, load_adapters
from adapters.errors import BackendFailure
from adapters.legacy import build, config_path, land_records_app
from adapters.legacy.land_records import NS, PATH
from adapters.soap import SOAP11, SOAP12
from adapters.xmlsafe import XmlError, parse_xml
from core.ids import ClientId, ServiceId
from tests.adapters.conftest import SCHEMAS, write

PARCEL = ServiceId.parse("PK/PROV/PLRA/land-records/parcel/v1")
CLIENT = ClientId.parse("PK/LG/LMC/property-tax")
Serve = Callable[[web.Application], Awaitable[str]]


def request(path: str) -> BackendRequest:
    return BackendRequest(
        service=PARCEL, client=CLIENT, message_id="msg-7", method="GET", path=path
    )


@pytest.fixture(scope="module")
def land(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return build(tmp_path_factory.mktemp("legacy"), people=40, seed=11)


async def plra(url: str, version: str = "1.1", tmp: Path | None = None) -> Adapters:
    config = config_path("plra")
    if version != "1.1":
        assert tmp is not None
        text = config.read_text().replace('version: "1.1"', f'version: "{version}"')
        text = text.replace("../../../schemas/records/", f"{SCHEMAS}/")
        config = write(tmp / "plra.yaml", text)
    return await load_adapters(config, environ={"PLRA_SOAP_URL": url})


@pytest.mark.parametrize("version", ["1.1", "1.2"])
async def test_parcel_is_mapped_from_the_soap_answer(
    land: Any, serve: Serve, tmp_path: Path, version: str
) -> None:
    base = await serve(land_records_app(land.land_records))
    adapters = await plra(base + PATH, version, tmp_path)
    parcels = {p["id"]: p for p in json.loads(land.land_records.read_text())}
    try:
        for parcel_id in land.parcel_ids[:4]:
            answer = await adapters.backends[PARCEL].call(request(f"/parcels/{parcel_id.lower()}"))
            assert answer.status == 200, answer.body
            doc = json.loads(answer.body)
            want = parcels[parcel_id]
            assert doc["mauza"]["district"] == want["district"]  # an attribute
            assert doc["mauza"]["hadbast"] == want["mauza_code"]  # an attribute of a child
            assert doc["khasra_numbers"] == want["khasras"]  # repeated elements
            assert [o["cnic"] for o in doc["owners"]] == [
                f"{o['cnic'][:5]}-{o['cnic'][5:12]}-{o['cnic'][12]}" for o in want["owners"]
            ]
            assert [o["name"]["ur"] for o in doc["owners"]] == [
                o["name_ur"] for o in want["owners"]
            ]
            assert [
                f"{o['share']['numerator']}/{o['share']['denominator']}" for o in doc["owners"]
            ] == [o["share"] for o in want["owners"]]
            assert doc["area"] == {"kanal": want["kanal"], "marla": want["marla"]}
            assert [m["number"] for m in doc["mutations"]] == [
                m["number"] for m in want["mutations"]
            ]
        missing = await adapters.backends[PARCEL].call(request("/parcels/PB-LAH-0001-99999"))
        assert missing.status == 404  # the ParcelNotFound fault
    finally:
        await adapters.close()


def soap_server(
    answer: Callable[[bytes], tuple[int, str, str]], seen: list[bytes]
) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append(body)
        status, ctype, text = answer(body)
        return web.Response(status=status, text=text, content_type=ctype)

    app = web.Application()
    app.router.add_post(PATH, handle)
    return app


def envelope(body: str, ns: str = SOAP11) -> str:
    return f'<s:Envelope xmlns:s="{ns}" xmlns:lr="{NS}"><s:Body>{body}</s:Body></s:Envelope>'


FAULT_11 = envelope(
    "<s:Fault><faultcode>s:{code}</faultcode><faultstring>{reason}</faultstring>"
    "<detail><lr:{detail}/></detail></s:Fault>"
)


@pytest.mark.parametrize(
    ("code", "retried"),
    [("Server", True), ("Client", False), ("Client.Authentication", False)],
)
async def test_faults_become_precise_errors_and_only_server_faults_are_retried(
    serve: Serve, code: str, retried: bool
) -> None:
    seen: list[bytes] = []
    text = FAULT_11.format(code=code, reason="registry offline", detail="Maintenance")
    base = await serve(soap_server(lambda _: (500, "text/xml", text), seen))
    adapters = await plra(base + PATH)
    try:
        with pytest.raises(BackendFailure) as e:
            await adapters.backends[PARCEL].call(request("/parcels/PB-LAH-0001-00001"))
    finally:
        await adapters.close()
    assert len(seen) == (3 if retried else 1)  # retries: 2
    assert e.value.xroad_type == "Server.ServerProxy.ServiceFailed"
    assert e.value.message == f"SOAP fault {code}: registry offline"
    assert e.value.detail["fault_code"] == code
    assert e.value.detail["fault_detail"] == ["Maintenance"]
    assert e.value.detail["message_id"] == "msg-7"


async def test_soap_12_fault_subcodes_are_reported(serve: Serve, tmp_path: Path) -> None:
    fault = envelope(
        "<s:Fault><s:Code><s:Value>s:Sender</s:Value><s:Subcode><s:Value>lr:QuotaExceeded</s:Value>"
        "</s:Subcode></s:Code><s:Reason><s:Text xml:lang='en'>too many calls</s:Text></s:Reason>"
        "</s:Fault>",
        SOAP12,
    )
    base = await serve(soap_server(lambda _: (400, "application/soap+xml", fault), []))
    adapters = await plra(base + PATH, "1.2", tmp_path)
    try:
        with pytest.raises(BackendFailure) as e:
            await adapters.backends[PARCEL].call(request("/parcels/PB-LAH-0001-00001"))
    finally:
        await adapters.close()
    assert e.value.message == "SOAP fault Sender/QuotaExceeded: too many calls"
    assert e.value.detail["fault_subcodes"] == ["QuotaExceeded"]


async def test_parameters_are_escaped_into_the_envelope(serve: Serve, tmp_path: Path) -> None:
    seen: list[bytes] = []
    empty = envelope("<lr:GetParcelResponse/>")
    base = await serve(soap_server(lambda _: (200, "text/xml", empty), seen))
    text = (
        config_path("plra")
        .read_text()
        .replace('pattern: "PB-[A-Z]{3}-[0-9]{4}-[0-9]{5}"', "pattern: '.+'")
    )
    text = text.replace("transforms: [trim, upper], ", "")
    text = text.replace("../../../schemas/records/", f"{SCHEMAS}/")
    adapters = await load_adapters(
        write(tmp_path / "p.yaml", text), environ={"PLRA_SOAP_URL": base + PATH}
    )
    hostile = "x</lr:ParcelId><lr:Admin>1</lr:Admin><lr:ParcelId>&amp;\"'"
    try:
        answer = await adapters.backends[PARCEL].call(
            request("/parcels/" + hostile.replace("/", "%2F"))
        )
    finally:
        await adapters.close()
    assert answer.status == 404  # no Parcel element in the answer
    sent = parse_xml(seen[0])
    call = sent.find(f"{{{SOAP11}}}Body/{{{NS}}}GetParcel")
    assert call is not None
    assert [child.tag for child in call] == [f"{{{NS}}}ParcelId"]
    assert call.findtext(f"{{{NS}}}ParcelId") == hostile


BOMB = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
    + envelope("<lr:GetParcelResponse><lr:Parcel id='&lol3;'/></lr:GetParcelResponse>")
)
XXE = '<?xml version="1.0"?><!DOCTYPE e [<!ENTITY secret SYSTEM "file:///etc/passwd">]>' + envelope(
    "<lr:GetParcelResponse><lr:Parcel id='x'><lr:Mauza>&secret;</lr:Mauza></lr:Parcel>"
    "</lr:GetParcelResponse>"
)


@pytest.mark.parametrize("hostile", [BOMB, XXE])
async def test_entity_bombs_and_external_entities_are_refused(serve: Serve, hostile: str) -> None:
    base = await serve(soap_server(lambda _: (200, "text/xml", hostile), []))
    adapters = await plra(base + PATH)
    try:
        with pytest.raises(BackendFailure) as e:
            await adapters.backends[PARCEL].call(request("/parcels/PB-LAH-0001-00001"))
    finally:
        await adapters.close()
    assert (
        e.value.message == "the SOAP answer is refused: the document has a DTD, which SOAP forbids"
    )
    assert "root:" not in json.dumps(e.value.detail)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (BOMB.encode(), "has a DTD"),
        (XXE.encode(), "has a DTD"),
        (b"<a><b></a>", "not well-formed XML at line 1"),
        (b'<?xml version="1.0" encoding="x-bogus"?><a/>', "an encoding that is not known"),
        (b'<?xml version="1.0" encoding="gbk"?><a/>', "a multi-byte encoding"),
    ],
)
def test_the_parser_refuses_what_soap_forbids(data: bytes, reason: str) -> None:
    with pytest.raises(XmlError, match=reason):
        parse_xml(data)


async def test_the_land_records_server_refuses_hostile_requests_too(
    land: Any, serve: Serve, http: Any
) -> None:
    base = await serve(land_records_app(land.land_records))
    async with http.post(base + PATH, data=XXE.encode(), headers={"Content-Type": "text/xml"}) as r:
        text = await r.text()
    assert r.status == 500
    assert "has a DTD" in text
    assert "root:" not in text


async def test_an_answer_in_the_other_soap_version_is_named(serve: Serve) -> None:
    answer = envelope("<lr:GetParcelResponse/>", SOAP12)
    base = await serve(soap_server(lambda _: (200, "application/soap+xml", answer), []))
    adapters = await plra(base + PATH)
    try:
        with pytest.raises(
            BackendFailure, match=r"SOAP version mismatch: the service answered SOAP 1\.2"
        ):
            await adapters.backends[PARCEL].call(request("/parcels/PB-LAH-0001-00001"))
    finally:
        await adapters.close()


async def test_an_answer_in_an_unknown_encoding_is_a_backend_failure(serve: Serve) -> None:
    # expat raised LookupError, which escaped the adapter as an unexpected error.
    answer = '<?xml version="1.0" encoding="x-bogus"?>' + envelope("<lr:GetParcelResponse/>")
    base = await serve(soap_server(lambda _: (200, "text/xml", answer), []))
    adapters = await plra(base + PATH)
    try:
        with pytest.raises(BackendFailure, match="refused: the document declares an encoding"):
            await adapters.backends[PARCEL].call(request("/parcels/PB-LAH-0001-00001"))
    finally:
        await adapters.close()


async def test_an_answer_in_a_multi_byte_encoding_is_a_backend_failure(serve: Serve) -> None:
    # expat raised a bare ValueError for GBK, Shift-JIS or Big5, which escaped the adapter as
    # an unexpected error (logged with a traceback, answered as an internal error).
    answer = '<?xml version="1.0" encoding="gbk"?>' + envelope("<lr:GetParcelResponse/>")
    base = await serve(soap_server(lambda _: (200, "text/xml", answer), []))
    adapters = await plra(base + PATH)
    try:
        with pytest.raises(BackendFailure, match="refused: the document declares a multi-byte"):
            await adapters.backends[PARCEL].call(request("/parcels/PB-LAH-0001-00001"))
    finally:
        await adapters.close()


FORGED = (
    "registry offline&#13;&#10;2026-01-01 00:00:00 INFO adapter call ok: service=forged"
    "\u2028line\u2029paragraph\x85next\x9b31m \u202eevil\u2066isolated\u2069\x7f&#9;&#9;end "
    "\u0628\u0646\u062f\u200c\u06c1\u06d2"  # Urdu with a zero-width non-joiner, which stays
)
ONE_LINE = (
    "registry offline 2026-01-01 00:00:00 INFO adapter call ok: service=forged"
    " line paragraph next 31m  evil isolated end \u0628\u0646\u062f\u200c\u06c1\u06d2"
)


@pytest.mark.parametrize("version", ["1.1", "1.2"])
async def test_a_fault_reason_is_passed_on_as_one_line_of_text(
    serve: Serve, tmp_path: Path, caplog: pytest.LogCaptureFixture, version: str
) -> None:
    # The reason went into the error and the log line as the backend wrote it: a CR/LF forged
    # a log line of its own, and bidi controls reordered what an operator read.
    if version == "1.1":
        fault = FAULT_11.format(code="Client", reason=FORGED, detail="Refused")
        ctype, code = "text/xml", "Client"
    else:
        fault = envelope(
            "<s:Fault><s:Code><s:Value>s:Sender</s:Value><s:Subcode>"
            "<s:Value>lr:Quota&#10;Exceeded</s:Value></s:Subcode></s:Code>"
            f"<s:Reason><s:Text xml:lang='en'>{FORGED}</s:Text></s:Reason></s:Fault>",
            SOAP12,
        )
        ctype, code = "application/soap+xml", "Sender/Quota Exceeded"
    base = await serve(soap_server(lambda _: (500, ctype, fault), []))
    adapters = await plra(base + PATH, version, tmp_path)
    try:
        with pytest.raises(BackendFailure) as e:
            await adapters.backends[PARCEL].call(request("/parcels/PB-LAH-0001-00001"))
    finally:
        await adapters.close()
    assert e.value.message == f"SOAP fault {code}: {ONE_LINE}"
    assert e.value.detail["fault_reason"] == ONE_LINE
    assert json.loads(json.dumps(e.value.to_json()))["detail"]["fault_reason"] == ONE_LINE
    [line] = [r.getMessage() for r in caplog.records if r.name == "adapters.adapter"]
    assert line.endswith(f"message_id=msg-7: SOAP fault {code}: {ONE_LINE}")


def padded(app: web.Application, padding: str) -> web.Application:
    """``app`` with ``padding`` written into the Body of each of its answers, after the rest."""

    @web.middleware
    async def pad(request: web.Request, handler: Any) -> web.StreamResponse:
        answer = await handler(request)
        assert isinstance(answer, web.Response)
        assert answer.text is not None
        return web.Response(
            status=answer.status,
            text=answer.text.replace("</soap:Body>", padding + "</soap:Body>"),
            content_type=answer.content_type,
            charset="utf-8",
        )

    app.middlewares.append(pad)
    return app


async def patient(url: str, tmp: Path) -> Adapters:
    """The PLRA adapter with time enough to parse a large answer on a loaded machine."""
    text = config_path("plra").read_text()
    text = text.replace("{timeout: 5, attempt_timeout: 2, retries: 2}", "{timeout: 60, retries: 0}")
    text = text.replace("../../../schemas/records/", f"{SCHEMAS}/")
    return await load_adapters(write(tmp / "patient.yaml", text), environ={"PLRA_SOAP_URL": url})


async def test_a_large_answer_is_parsed_while_the_event_loop_keeps_serving(
    land: Any, serve: Serve, tmp_path: Path
) -> None:
    # An answer of a few MiB (within max_response_bytes) took a second or more to parse on the
    # event loop, and every other call of the gateway waited that long.
    depth = 8 * 2**20 // len("<a></a>")
    deep = "<lr:Padding>" + "<a>" * depth + "</a>" * depth + "</lr:Padding>"
    small = await serve(land_records_app(land.land_records))
    large = await serve(padded(land_records_app(land.land_records), deep))
    expected, adapters = await plra(small + PATH), await patient(large + PATH, tmp_path)
    parcel = request(f"/parcels/{land.parcel_ids[0]}")
    loop = asyncio.get_running_loop()
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(loop.time())
            await asyncio.sleep(0.005)

    running = asyncio.create_task(ticker())
    try:
        want = await expected.backends[PARCEL].call(parcel)
        started = loop.time()
        answer = await adapters.backends[PARCEL].call(parcel)
        took = loop.time() - started
        await asyncio.sleep(0.02)  # a tick after the call: a loop blocked to its end shows too
    finally:
        running.cancel()
        await adapters.close()
        await expected.close()
    assert answer.status == 200, answer.body
    assert json.loads(answer.body) == json.loads(want.body)
    # Parsed on the loop, the ticker ticked twice during the call and its longest pause was
    # nearly the whole call. Parsed in a thread, the loop shares the interpreter with it and
    # ticks every few milliseconds, but not always: Python's collector pauses every thread
    # while it walks the growing tree, here up to 0.2 s, twice that on a loaded machine. So
    # the bounds are relative to the call, which slows down with the machine as they do.
    during = [t for t in ticks if started <= t <= started + took]
    longest = max(b - a for a, b in itertools.pairwise(ticks))
    assert len(during) >= 20, (len(during), took)
    assert longest < took / 3, (longest, took)


LARGE = "<!--" + "x" * 100_000 + "-->"  # beyond the size parsed on the event loop
MISMATCHED = envelope("<lr:GetParcelResponse>" + LARGE + "<lr:Parcel></lr:GetParcelResponse>")


@pytest.mark.parametrize(
    ("answer", "message", "tries"),
    [
        (BOMB + LARGE, "the SOAP answer is refused: the document has a DTD, which SOAP forbids", 1),
        (
            MISMATCHED,
            "the SOAP answer is refused: not well-formed XML at line 1 column "
            f"{MISMATCHED.index('</lr:GetParcelResponse>') + 2}",  # expat points past the '</'
            1,
        ),
        (envelope(LARGE, SOAP12), "SOAP version mismatch: the service answered SOAP 1.2", 1),
        (
            envelope(
                "<s:Fault><faultcode>s:Server</faultcode><faultstring>registry offline"
                f"</faultstring><detail>{LARGE}</detail></s:Fault>"
            ),
            "SOAP fault Server: registry offline",
            3,
        ),
    ],
)
async def test_a_large_answer_fails_as_a_small_one_does(
    serve: Serve, answer: str, message: str, tries: int
) -> None:
    seen: list[bytes] = []
    base = await serve(soap_server(lambda _: (500, "text/xml", answer), seen))
    adapters = await plra(base + PATH)
    try:
        with pytest.raises(BackendFailure) as e:
            await adapters.backends[PARCEL].call(request("/parcels/PB-LAH-0001-00001"))
    finally:
        await adapters.close()
    assert e.value.message == message
    assert len(seen) == tries  # a Server fault is still retryable
