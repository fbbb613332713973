"""r1 errors in the media type the caller asks for (PR-REST 4.6): JSON unless ``Accept``
prefers XML, the same fields either way, whichever part of a gateway refused."""

from __future__ import annotations

import json

import aiohttp
import pytest
from defusedxml import ElementTree
from hypothesis import given
from hypothesis import strategies as st
from openapi_spec_validator import validate

from exchange.r1 import ERROR_TYPES, error_media_type, error_xml
from exchange.server import ops
from tests.exchange.harness import LMC_TAX, PLRA_LAND, Federation
from tests.exchange.test_refusals import ECHO_PATH

JSON, APP_XML, TEXT_XML = ERROR_TYPES


@pytest.mark.parametrize(
    ("accept", "media"),
    [
        ("", JSON),
        ("*/*", JSON),
        ("application/json", JSON),
        ("application/xml", APP_XML),
        ("APPLICATION/XML", APP_XML),
        ("text/xml; charset=utf-8", TEXT_XML),
        ("text/*", TEXT_XML),
        ("application/*", JSON),
        ("application/json, application/xml;q=0.5", JSON),
        ("application/json;q=0.2, application/xml", APP_XML),
        ("application/xml, application/json", JSON),  # a tie
        ("application/xml;q=0, */*", JSON),
        ("text/html", JSON),  # nothing offered is acceptable: the default
        ("not a media type", JSON),
        (";;", JSON),
    ],
)
def test_the_error_type_follows_accept_preferences(accept: str, media: str) -> None:
    assert error_media_type(accept) == media


@given(st.text(max_size=200))
def test_any_accept_header_chooses_an_offered_type(accept: str) -> None:
    assert error_media_type(accept) in ERROR_TYPES


@given(st.text(), st.text(), st.one_of(st.text(), st.none(), st.dictionaries(st.text(), st.text())))
def test_xml_errors_carry_every_field_any_text_can_hold(
    kind: str, message: str, detail: str | dict[str, str] | None
) -> None:
    root = ElementTree.fromstring(error_xml({"type": kind, "message": message, "detail": detail}))
    assert root.tag == "error"
    assert [child.tag for child in root] == ["type", "message", "detail"]
    got = {child.tag: child.text or "" for child in root}
    # Code points XML cannot carry become U+FFFD; everything else arrives as sent (XML
    # parsers read a carriage return as a line feed).
    assert len(got["type"]) == len(kind.replace("\r\n", "\n"))
    if all(c in "\t\n" or "\x20" <= c <= "\ud7ff" or "\ue000" <= c <= "\ufffd" for c in kind):
        assert got["type"] == kind
    expected = detail if isinstance(detail, str) else "" if detail is None else json.dumps(detail)
    if expected.isprintable():
        assert got["detail"] == expected


async def _xml(resp: aiohttp.ClientResponse, media: str) -> dict[str, str]:
    assert resp.content_type == media
    assert resp.charset == "utf-8"
    root = ElementTree.fromstring(await resp.read())
    body = {child.tag: child.text or "" for child in root}
    assert root.tag == "error"
    assert set(body) == {"type", "message", "detail"}
    assert resp.headers["X-Road-Error"] == body["type"]
    return body


async def test_every_refusal_is_written_as_the_caller_accepts(fed: Federation) -> None:
    lmc = fed.nodes["lmc"].local_url
    cases = [
        # Refused by the consumer gateway: no such client on it.
        ("plra", ECHO_PATH + "/public/a", LMC_TAX, 400, "Client.InvalidClientIdentifier"),
        # Refused by the provider gateway, which signed its refusal.
        ("plra", ECHO_PATH + "/private/1", PLRA_LAND, 500, "Server.ServerProxy.AccessDenied"),
    ]
    for node, path, client, status, kind in cases:
        as_json = await fed.call(node, "GET", path, client=client)
        assert as_json.content_type == JSON
        expected = await as_json.json()
        for media, accept in ((APP_XML, "application/xml"), (TEXT_XML, "text/*, */*;q=0.1")):
            resp = await fed.call(node, "GET", path, client=client, headers={"Accept": accept})
            assert resp.status == status
            body = await _xml(resp, media)
            assert (body["type"], body["message"]) == (kind, expected["message"])
            assert body["detail"]  # an error id to find the log line by
    # Refused before any r1 handler, by the listener's error middleware.
    resp = await fed.http.get(lmc + "/nothing/here", headers={"Accept": "application/xml"})
    assert resp.status == 404
    assert (await _xml(resp, APP_XML))["type"] == "Client.NotFound"
    assert fed.backend.seen == []


def test_the_local_api_documents_both_error_forms() -> None:
    doc = ops.document()
    validate(doc)
    assert set(doc["components"]["responses"]["Error"]["content"]) == set(ERROR_TYPES)
    assert doc["components"]["schemas"]["Error"]["xml"] == {"name": "error"}
