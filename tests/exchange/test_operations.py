"""Metaservices, metrics and health: what operators and local systems ask a gateway."""

from __future__ import annotations

import pytest
from defusedxml import ElementTree
from openapi_spec_validator import validate

from tests.exchange.harness import LMC_TAX, PLRA_LAND, Federation, provider_signs_error_type

META = "/r1/PK/FED/NADRA/civil-registry"
XROAD_NS = "http://x-road.eu/xsd/xroad.xsd"
ID_NS = "http://x-road.eu/xsd/identifiers"


async def test_list_clients_names_every_member_and_subsystem(fed: Federation) -> None:
    resp = await fed.http.get(
        fed.nodes["lmc"].local_url + "/listClients", headers={"Accept": "application/json"}
    )
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    members = (await resp.json())["member"]
    ids = {
        (m["id"]["object_type"], m["id"]["member_code"], m["id"].get("subsystem_code"))
        for m in members
    }
    assert ("MEMBER", "NADRA", None) in ids
    assert ("SUBSYSTEM", "LMC", "property-tax") in ids
    assert {m["name"] for m in members} >= {"NADRA", "Lahore Metropolitan Corporation"}
    named = {m["id"].get("subsystem_code"): m.get("subsystem_name") for m in members}
    assert named["property-tax"] == "Property tax office"
    assert named["civil-registry"] is None  # registered without a name: none is invented


@pytest.mark.parametrize("accept", [None, "*/*", "text/xml", "application/xml"])
async def test_list_clients_answers_xml_unless_json_is_asked_for(
    fed: Federation, accept: str | None
) -> None:
    """PR-META: the `clientList` element, in X-Road's namespaces, is the default answer."""
    url = fed.nodes["lmc"].local_url + "/listClients"
    headers = {"Accept": accept} if accept else {"Accept": ""}
    resp = await fed.http.get(url, headers=headers)
    assert resp.headers["Content-Type"] == "text/xml; charset=utf-8"
    root = ElementTree.fromstring(await resp.read())
    assert root.tag == f"{{{XROAD_NS}}}clientList"
    as_json = await (
        await fed.http.get(url, headers={"Accept": "text/html, application/json;q=0.9"})
    ).json()
    from_xml = []
    for member in root.findall(f"{{{XROAD_NS}}}member"):
        ident = member.find(f"{{{XROAD_NS}}}id")
        assert ident is not None
        parts = {child.tag.split("}")[1]: child.text for child in ident}
        texts = {child.tag.split("}")[1]: child.text for child in member if child is not ident}
        from_xml.append((ident.get(f"{{{ID_NS}}}objectType"), parts, texts))
    assert from_xml == [
        (
            m["id"]["object_type"],
            {
                tag: m["id"][key]
                for key, tag in [
                    ("xroad_instance", "xRoadInstance"),
                    ("member_class", "memberClass"),
                    ("member_code", "memberCode"),
                    ("subsystem_code", "subsystemCode"),
                ]
                if key in m["id"]
            },
            {"name": m["name"]}
            | ({"subsystemName": m["subsystem_name"]} if "subsystem_name" in m else {}),
        )
        for m in as_json["member"]
    ]
    assert ("SUBSYSTEM", "property-tax", "Property tax office") in {
        (o, p.get("subsystemCode"), t.get("subsystemName")) for o, p, t in from_xml
    }
    other = await fed.http.get(url + "?xRoadInstance=EE")
    assert ElementTree.fromstring(await other.read()).findall(f"{{{XROAD_NS}}}member") == []


async def test_list_and_allowed_methods_come_from_the_provider(fed: Federation) -> None:
    listed = await (await fed.call("plra", "GET", META + "/listMethods", client=PLRA_LAND)).json()
    codes = {s["service_code"]: s for s in listed["service"]}
    assert set(codes) == {"echo", "person", "records"}
    assert codes["person"]["service_version"] == "v1"
    assert {"method": "GET", "path": "/persons/*"} in codes["person"]["endpoint_list"]
    allowed = await (
        await fed.call("plra", "GET", META + "/allowedMethods", client=PLRA_LAND)
    ).json()
    assert [(s["service_code"], s["endpoint_list"]) for s in allowed["service"]] == [
        ("echo", [{"method": "GET", "path": "/public/**"}])
    ]
    mine = await (await fed.call("lmc", "GET", META + "/allowedMethods", client=LMC_TAX)).json()
    assert {s["service_code"] for s in mine["service"]} == {"echo", "person", "records"}


async def test_a_head_on_a_metaservice_is_answered_without_a_body(fed: Federation) -> None:
    """What is signed is what HTTP sends: no body for a HEAD, so the consumer sees no
    tampering."""
    for path in ("/listMethods", "/allowedMethods"):
        resp = await fed.call("lmc", "HEAD", META + path)
        assert resp.status == 200, resp.headers.get("X-Road-Error")
        assert await resp.read() == b""


async def test_metaservice_answers_name_their_character_encoding(fed: Federation) -> None:
    """PR-REST 4.3: a message a security server makes itself states its media type and its
    character encoding, as listClients and every error already do."""
    for path in ("/listMethods", "/allowedMethods", "/getOpenAPI?serviceCode=echo"):
        resp = await fed.call("lmc", "GET", META + path)
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/json; charset=utf-8", path
        # The gateway's own message: nothing for a cache to keep, no sniffing.
        assert resp.headers["Cache-Control"] == "no-store", path
        assert resp.headers["X-Content-Type-Options"] == "nosniff", path


async def test_get_openapi_describes_a_service(fed: Federation) -> None:
    resp = await fed.call("lmc", "GET", META + "/getOpenAPI?serviceCode=person")
    doc = await resp.json()
    assert doc["openapi"] == "3.1.0"
    validate(doc)  # a valid document: every templated segment is a declared parameter
    (person,) = doc["paths"]["/v1/persons/{segment1}"]["parameters"]
    assert (person["in"], person["required"]) == ("path", True)
    echo = await (await fed.call("lmc", "GET", META + "/getOpenAPI?serviceCode=echo")).json()
    validate(echo)
    assert {"/public", "/public/{rest}"} <= set(echo["paths"])  # "**" matches nothing too
    missing = await fed.call("lmc", "GET", META + "/getOpenAPI")
    assert missing.headers["X-Road-Error"] == "Client.BadRequest"
    # X-Road reads the parameter's name in any case, and the last one given.
    other = await fed.call("lmc", "GET", META + "/getOpenAPI?servicecode=echo&SERVICECODE=person")
    assert "/v1/persons/{segment1}" in (await other.json())["paths"]


async def test_metrics_count_outcomes_and_report_configuration_age(fed: Federation) -> None:
    await fed.call("lmc", "GET", META + "/echo/a")
    await fed.call("lmc", "GET", META + "/nothing")
    text = await (await fed.http.get(fed.nodes["lmc"].local_url + "/metrics")).text()
    delivered = 'outcome="delivered",role="consumer",service="PK/FED/NADRA/civil-registry/echo"'
    assert f"shahrah_exchange_requests_total{{{delivered}}} 1.0" in text
    assert 'outcome="Server.ServerProxy.UnknownService"' in text
    assert "shahrah_globalconf_age_seconds" in text
    assert "shahrah_exchange_duration_seconds_bucket" in text
    provider = await (await fed.http.get(fed.nodes["nadra"].local_url + "/metrics")).text()
    assert 'role="provider"' in provider


async def test_no_caller_or_peer_can_add_metric_series_without_end(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A metaservice on a subsystem nobody registered is refused, not labelled by its name.
    for n in range(3):
        resp = await fed.call("lmc", "GET", f"/r1/PK/FED/NADRA/made-up-{n}/listMethods")
        assert resp.headers["X-Road-Error"] == "Server.ServerProxy.UnknownService"
    # A provider's refusal of a type this release does not know is passed on as signed,
    # and counted as "other".
    provider_signs_error_type(monkeypatch, "Server.ServerProxy.FromTheFuture")
    resp = await fed.call("lmc", "GET", META + "/echo/a")
    assert resp.headers["X-Road-Error"] == "Server.ServerProxy.FromTheFuture"
    text = await (await fed.http.get(fed.nodes["lmc"].local_url + "/metrics")).text()
    assert "made-up" not in text
    assert "FromTheFuture" not in text
    assert 'outcome="other",role="consumer",service="PK/FED/NADRA/civil-registry/echo"' in text


async def test_health_and_readiness(fed: Federation) -> None:
    health = await (await fed.http.get(fed.nodes["lmc"].local_url + "/healthz")).json()
    assert health["ready"] is True
    assert health["globalconf_serial"] >= 1
    assert (await fed.http.get(fed.nodes["lmc"].local_url + "/readyz")).status == 200
    openapi = await (await fed.http.get(fed.nodes["lmc"].local_url + "/openapi.json")).json()
    assert "/listClients" in openapi["paths"]


async def test_every_consent_refusal_is_counted_as_a_consent_denial(fed: Federation) -> None:
    """The counter agrees with the ConsentDenied outcomes, whatever the refusal's reason: an
    operator alerting on consent denials must not miss requests that carried no consent."""
    person = "/r1/PK/FED/NADRA/civil-registry/person/v1/persons/35202-1234567-1"
    refused = await fed.call("lmc", "GET", person)
    assert refused.headers["X-Road-Error"] == "Server.ServerProxy.ConsentDenied"
    text = await (await fed.http.get(fed.nodes["nadra"].local_url + "/metrics")).text()
    service = 'service="PK/FED/NADRA/civil-registry/person/v1"'
    assert f"shahrah_consent_denials_total{{{service}}} 1.0" in text
