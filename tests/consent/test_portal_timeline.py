"""The portal's "who accessed my data": read from the real audit server's mirror, signed as the
consent service; mine or my ward's, never anyone else's."""

from __future__ import annotations

import html
import re
from typing import Any

import aiohttp
import pytest

from audit.events import AuditEvent
from audit.note import log_origin
from audit.server import AuditServerConfig
from audit.server import build_app as audit_app
from audit.witness_client import WITNESS_SERVICE, WitnessClient
from audit.writer import AuditWriter
from consent.portal import pages
from core.db import Sessions, transaction
from core.ids import ClientId, Cnic
from core.keys import KeySet, PrivateKey
from registry import publisher
from registry import service as ops
from registry.globalconf import Jwks
from registry.globalconf_client import GlobalConfClient
from registry.payloads import CentralServiceSet
from tests.audit.events import GATEWAY, event
from tests.consent.conftest import CITIZEN, CONSENT_KEY, PSEUDONYMS, STRANGER, WARD, Harness
from tests.consent.test_portal import LMC_TAX_NAME, signed_in, ward_link
from tests.registry.federation import NADRA_KEY, OPERATOR
from tests.registry.test_globalconf import anchor_for

WITNESS_KEY = PrivateKey.generate()


def about(n: int, cnic: Cnic, *, denied: bool = False) -> AuditEvent:
    return event(n, denied=denied).model_copy(update={"subject": PSEUDONYMS(cnic)})


async def _central(db: Sessions, name: str, url: str, key: PrivateKey) -> None:
    async with transaction(db) as s:
        await ops.set_central_service(
            s,
            name,
            CentralServiceSet(url=url, keys=Jwks.model_validate(KeySet([key.public()]).to_jwks())),
        )


@pytest.fixture
async def witnessed(
    harness: Harness, db: Sessions, db_url: str, serve: Any, http: aiohttp.ClientSession
) -> Harness:
    """The regulator's audit server beside the consent service, holding four witnessed
    exchanges of NADRA's gateway: two about the citizen (one refused), one about their ward,
    one about a stranger."""
    audit_conf = GlobalConfClient(anchor_for())
    audit_url = await serve(
        audit_app(AuditServerConfig(db_url, WITNESS_KEY, PSEUDONYMS), audit_conf)
    )
    await _central(db, "consent", harness.base, CONSENT_KEY)
    await _central(db, WITNESS_SERVICE, audit_url, WITNESS_KEY)
    signed = (await publisher.publish(db, OPERATOR, force=True)).signed
    for conf in (harness.conf, audit_conf):
        conf.accept(signed)
    records = [
        about(1, CITIZEN),
        about(2, STRANGER),
        about(3, CITIZEN, denied=True),
        about(4, WARD),
    ]
    async with AuditWriter(
        db,
        str(GATEWAY),
        NADRA_KEY,
        origin=log_origin(str(GATEWAY)),
        checkpoint_every=len(records),
        witness=WitnessClient(
            harness.conf.current, http, key=NADRA_KEY, client=ClientId("PK", "FED", "NADRA")
        ),
    ) as writer:
        for r in records:
            await writer.append(r)
    return harness


async def test_my_timeline_shows_who_got_what_and_what_was_refused(witnessed: Harness) -> None:
    client = await signed_in(witnessed)
    page = await client.get("/portal/timeline")
    assert page.status == 200, page.visible
    items = page.visible.split("Who accessed my data")[-1]
    refused, delivered = items.split(LMC_TAX_NAME)[1:]
    purpose = witnessed.conf.current().purposes["identity-verification"].name
    assert "Refused: no valid consent" in refused
    assert "Fields released nothing" in refused
    assert "Delivered" in delivered
    assert "Fields released name and address" in delivered
    assert f"Purpose {purpose}" in delivered
    assert "Record National Database and Registration Authority" in delivered
    assert "\u20662026-11-28 09:00 UTC\u2069 (verified by the witness)" in delivered
    assert items.count(LMC_TAX_NAME) == 2  # neither the stranger's nor the ward's


async def test_a_guardian_reads_the_ward_timeline_and_only_it(witnessed: Harness) -> None:
    await witnessed.add_ward(CITIZEN, WARD)
    client = await signed_in(witnessed)
    page = await client.get(ward_link(await client.get("/portal/timeline")))
    assert page.status == 200
    assert page.visible.split("Who accessed my data")[-1].count(LMC_TAX_NAME) == 1
    assert (await client.get(f"/portal/timeline?for={STRANGER}")).status == 404


async def test_older_entries_follow_the_cursor_the_page_links(
    witnessed: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages, "TIMELINE_PAGE", 1)
    client = await signed_in(witnessed)
    first = await client.get("/portal/timeline")
    link = re.search(r'href="(/portal/timeline\?[^"]*cursor=[^"]+)"', first.text)
    assert link is not None, first.text
    older = await client.get(html.unescape(link.group(1)))
    assert older.status == 200, older.visible
    assert "Refused: no valid consent" in first.visible  # newest first
    assert "Delivered" in older.visible
    assert "Refused" not in older.visible


@pytest.mark.parametrize("cursor", ["bogus", "W1sxXV0", "x" * 500])
async def test_an_edited_page_address_is_the_citizens_mistake_not_an_outage(
    witnessed: Harness, cursor: str
) -> None:
    client = await signed_in(witnessed)
    page = await client.get(f"/portal/timeline?cursor={cursor}")
    assert page.status == 400, page.visible
    assert "names no page of your timeline" in page.visible
