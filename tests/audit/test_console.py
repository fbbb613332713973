"""The regulator console over HTTP (tests.web.PageClient against the real audit server):
sign-in and its refusals, search by CNIC, entries verified or FAILED, export, alarms, Urdu."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select, update

from audit.console import pages
from audit.console.accounts import MAX_FAILURES, RegulatorAccounts
from audit.models import AuditAlarm, AuditEntry, AuditLog
from audit.verify import verify_export
from core.db import transaction
from core.ids import ClientId
from tests.audit.conftest import REGULATOR, Federation
from tests.audit.events import CITIZEN, GATEWAY, PSEUDONYMS
from tests.audit.test_console_accounts import FAST_HASH, PASSWORD
from tests.audit.test_export import N, witnessed  # noqa: F401 (fixture)
from tests.registry.test_globalconf import anchor_for
from tests.web import MAX_PAGE, PageClient

LOG = str(GATEWAY)
# Events 0, 3, ..., 18 are the citizen's (tests.audit.test_export.witnessed).
CITIZENS_EVENTS = list(range(0, N, 3))


@pytest.fixture
async def fed(witnessed: Federation) -> Federation:  # noqa: F811
    accounts = RegulatorAccounts(witnessed.db, hasher=FAST_HASH)
    await accounts.add("amina", REGULATOR, PASSWORD)
    await accounts.add("stranger", ClientId("PK", "FED", "NADRA", "civil-registry"), PASSWORD)
    return witnessed


def visitor(fed: Federation, lang: str | None = None) -> PageClient:
    return PageClient(fed.http, fed.audit_url, lang=lang)


async def signed_in(fed: Federation, lang: str | None = None) -> PageClient:
    client = visitor(fed, lang)
    page = await client.submit("/console/login", username="amina", password=PASSWORD)
    assert page.status == 200, page.visible
    assert page.url.endswith("/console/")
    return client


async def search(client: PageClient, **fields: str) -> str:
    page = await client.submit("/console/", **fields)
    assert page.status == 200, page.visible
    assert len(page.text.encode()) < MAX_PAGE
    return page.text


def entry_links(html: str) -> list[tuple[str, int]]:
    return [
        (log.replace("%2F", "/"), int(index))
        for log, index in re.findall(r'/console/entry\?log=([^&"]+)&amp;index=(\d+)', html)
    ]


@given(
    st.dictionaries(
        st.sampled_from(["member", "service", "cnic", "outcome", "since", "until", "other"]),
        st.text(max_size=40),
    )
)
def test_any_search_form_gives_filters_or_names_its_bad_fields(form: dict[str, str]) -> None:
    filters, errors = pages.parse_filters(form)
    assert (filters is None) == bool(errors)
    assert errors <= {"member", "service", "cnic", "outcome", "since", "until"}


def test_search_form_times_are_utc_and_their_order_is_checked() -> None:
    filters, errors = pages.parse_filters({"since": "2026-11-28T09:00", "cnic": str(CITIZEN)})
    assert filters is not None
    assert filters.since is not None
    assert filters.since.isoformat() == "2026-11-28T09:00:00+00:00"
    assert filters.cnic == CITIZEN
    _, errors = pages.parse_filters({"since": "2026-11-28T09:00", "until": "2026-11-28T08:00"})
    assert errors == {"until"}
    _, errors = pages.parse_filters({"member": "PK/FED", "outcome": "maybe"})
    assert errors == {"member", "outcome"}


async def test_every_page_needs_a_signed_in_regulator(fed: Federation) -> None:
    client = visitor(fed)
    for path in ("/console/", "/console/alarms", f"/console/entry?log={LOG}&index=0"):
        page = await client.get(path)
        assert "/console/login?next=" in page.redirects[0], path
        assert "Regulator sign-in" in page.visible
        assert "35202" not in page.text
    export = await client.post(
        "/console/export", {"csrf": (await client.get("/console/login")).csrf}
    )
    assert "/console/login" in export.url
    assert "shahrah-audit-export" not in export.text


async def test_a_wrong_password_is_refused_and_repeated_failures_lock_out(
    fed: Federation,
) -> None:
    client = visitor(fed)
    page = await client.submit("/console/login", username="amina", password="not the password")
    assert page.status == 401
    assert "Wrong username or password, or the account is locked" in page.visible
    assert "shahrah-regulator" not in page.text  # no session cookie leaks into the page
    nobody = await client.submit("/console/login", username="nobody", password=PASSWORD)
    assert nobody.status == 401
    for _ in range(MAX_FAILURES - 1):
        await client.submit("/console/login", username="amina", password="not the password")
    locked = await client.submit("/console/login", username="amina", password=PASSWORD)
    assert locked.status == 429
    assert "locked" in locked.visible
    assert (await client.get("/console/")).redirects  # still not signed in


async def test_an_organisation_outside_the_regulators_group_cannot_sign_in(
    fed: Federation,
) -> None:
    page = await visitor(fed).submit("/console/login", username="stranger", password=PASSWORD)
    assert page.status == 403
    assert "no longer a regulator" in page.visible


async def test_a_disabled_account_is_signed_out_at_its_next_page(fed: Federation) -> None:
    client = await signed_in(fed)
    await RegulatorAccounts(fed.db, hasher=FAST_HASH).disable("amina")
    page = await client.get("/console/alarms")
    assert page.status == 401
    assert "closed" in page.visible
    assert (await client.get("/console/alarms")).redirects[0].count("/console/login")


async def test_forms_without_or_with_a_forged_csrf_token_are_refused(fed: Federation) -> None:
    client = visitor(fed)
    await client.get("/console/login")
    for form in ({}, {"csrf": "forged"}):
        page = await client.post(
            "/console/login", {**form, "username": "amina", "password": PASSWORD}
        )
        assert page.status == 403
        assert (await client.get("/console/")).redirects  # not signed in
    cross = await client.post(
        "/console/login",
        {
            "csrf": (await client.get("/console/login")).csrf,
            "username": "amina",
            "password": PASSWORD,
        },
        origin="https://evil.example",
    )
    assert cross.status == 403
    signed = await signed_in(fed)
    refused = await signed.post("/console/", {"csrf": "forged", "outcome": "denied"})
    assert refused.status == 403
    # The search was not changed: every entry is still listed, not only the denied one.
    assert len(entry_links((await signed.get("/console/")).text)) == N


async def test_script_in_a_search_field_is_escaped_and_refused(fed: Federation) -> None:
    client = await signed_in(fed)
    attack = "<script>alert(1)</script>"
    page = await client.submit("/console/", member=attack, service=attack)
    assert page.status == 400
    assert "<script>" not in page.text
    assert "&lt;script&gt;" in page.text
    assert "Not a member id" in page.visible
    assert "script-src" not in page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]


async def test_search_by_cnic_finds_exactly_the_citizens_entries(fed: Federation) -> None:
    client = await signed_in(fed)
    html = await search(client, cnic=str(CITIZEN))
    assert sorted(i for _, i in entry_links(html)) == CITIZENS_EVENTS
    assert {log for log, _ in entry_links(html)} == {LOG}
    assert PSEUDONYMS(CITIZEN) not in html  # the table shows no pseudonyms
    denied = await search(client, outcome="denied")
    assert [i for _, i in entry_links(denied)] == [9]
    bad = await client.submit("/console/", cnic="12345")
    assert bad.status == 400
    assert "Not a CNIC" in bad.visible


async def test_results_are_paginated_with_a_cursor(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages, "PAGE_SIZE", 8)
    client = await signed_in(fed)
    html = await search(client, member="PK/FED/NADRA")
    seen: list[int] = []
    while True:
        found = [i for _, i in entry_links(html)]
        assert len(found) == min(8, N - len(seen))
        seen += found
        more = re.search(r'href="(/console/\?cursor=[^"#]+)', html)
        if more is None:
            break
        html = (await client.get(more.group(1).replace("&amp;", "&"))).text
    assert seen == sorted(range(N), reverse=True)  # newest first, each once
    forged = await client.get("/console/?cursor=bm90LWEtY3Vyc29y")
    assert forged.status == 400
    # Longer than any cursor issued: refused as the query's fault, not failed as a 500.
    assert (await client.get("/console/?cursor=" + "A" * 300)).status == 400


async def test_an_entry_is_verified_in_a_witnessed_checkpoint(fed: Federation) -> None:
    client = await signed_in(fed)
    page = await client.get(f"/console/entry?log={LOG}&index=5")
    assert page.status == 200
    # Checkpoints every 4 entries: entry 5 is first covered by the one at size 8.
    assert f"Verified in checkpoint 8 of log {LOG}, witnessed at" in page.visible
    assert "msg-5" in page.visible
    assert len(page.text.encode()) < MAX_PAGE
    missing = await client.get(f"/console/entry?log={LOG}&index={N}")
    assert missing.status == 404
    bad = await client.get(f"/console/entry?log={LOG}&index=-1")
    assert bad.status == 400


async def test_a_tampered_entry_shows_failed(fed: Federation) -> None:
    client = await signed_in(fed)
    async with transaction(fed.db) as s:
        log_id = await s.scalar(select(AuditLog.id).where(AuditLog.kind == "mirror"))
        row = await s.get(AuditEntry, (log_id, 6))
        assert row is not None
        await s.execute(
            update(AuditEntry)
            .where(AuditEntry.log_id == log_id, AuditEntry.idx == 6)
            .values(entry=bytes(row.entry).replace(b"msg-6", b"msg-X"))
        )
        await s.execute(
            update(AuditEntry)
            .where(AuditEntry.log_id == log_id, AuditEntry.idx == 7)
            .values(leaf_hash=b"\0" * 32)
        )
    changed = await client.get(f"/console/entry?log={LOG}&index=6")
    assert "FAILED: the entry's content does not hash to its stored leaf hash" in changed.visible
    # Entry 6's stored leaf hash is a node of entry 7's proof... and 7's own hash was replaced.
    sibling = await client.get(f"/console/entry?log={LOG}&index=7")
    assert "FAILED" in sibling.visible
    untouched = await client.get(f"/console/entry?log={LOG}&index=2")
    assert "Verified in checkpoint 4" in untouched.visible


async def test_a_log_renamed_as_another_shows_failed(fed: Federation) -> None:
    # A mirror whose log carries another gateway's origin (one member's gateways share keys,
    # so its checkpoints would still verify) is not believed.
    client = await signed_in(fed)
    async with transaction(fed.db) as s:
        await s.execute(
            update(AuditLog).where(AuditLog.kind == "mirror").values(origin="shahrah/PK/x/y/gw9")
        )
    page = await client.get(f"/console/entry?log={LOG}&index=2")
    assert f"FAILED: the log {LOG} carries the origin shahrah/PK/x/y/gw9" in page.visible


async def test_an_entry_in_no_witnessed_checkpoint_says_so(fed: Federation) -> None:
    client = await signed_in(fed)
    async with transaction(fed.db) as s:
        from audit.models import AuditCheckpoint

        log_id = await s.scalar(select(AuditLog.id).where(AuditLog.kind == "mirror"))
        await s.execute(
            update(AuditCheckpoint)
            .where(AuditCheckpoint.log_id == log_id, AuditCheckpoint.size > 20)
            .values(cosigned=None, cosigned_at=None)
        )
    page = await client.get(f"/console/entry?log={LOG}&index=20")
    assert "Not yet in a witnessed checkpoint" in page.visible


async def test_the_export_of_a_search_verifies_offline(fed: Federation, tmp_path: Path) -> None:
    client = await signed_in(fed)
    await search(client, cnic=str(CITIZEN))
    results = await client.get("/console/")
    assert 'action="/console/export"' in results.text
    download = await client.post("/console/export", {"csrf": results.csrf})
    assert download.status == 200
    assert "attachment" in download.headers["Content-Disposition"]
    path = tmp_path / "export.jsonl"
    path.write_text(download.text)
    report = verify_export(path, anchor=anchor_for())
    assert report.ok, report.problems
    assert report.entries == len(CITIZENS_EVENTS)
    assert str(CITIZEN) not in download.text
    refused = await client.post("/console/export", {"csrf": "forged"})
    assert refused.status == 403


async def test_alarms_are_listed_with_their_evidence(fed: Federation) -> None:
    async with transaction(fed.db) as s:
        s.add(
            AuditAlarm(
                log_name=LOG,
                reason="fork",
                message="checkpoint at size 8 contradicts the witnessed log (fork)",
                evidence="shahrah/PK/FED/NADRA/gw1\n8\n<script>x</script>\n",
            )
        )
    client = await signed_in(fed)
    page = await client.get("/console/alarms")
    assert page.status == 200
    assert "fork" in page.visible
    assert "contradicts the witnessed log" in page.visible
    assert "&lt;script&gt;x&lt;/script&gt;" in page.text


async def test_alarms_are_paged_newest_first_and_every_one_is_reachable(
    fed: Federation,
) -> None:
    """A log that misbehaves for long leaves more alarms than a page holds: the regulator
    walks back through all of them, each once, and a page address that is not one is a
    400."""
    total = 2 * pages.ALARMS_PER_PAGE + 3
    async with transaction(fed.db) as s:
        s.add_all(
            AuditAlarm(log_name=LOG, reason="fork", message=f"alarm number {n}.", evidence="x")
            for n in range(total)
        )
    client = await signed_in(fed)
    seen: list[int] = []
    page = await client.get("/console/alarms")
    assert "Back to the newest alarms" not in page.visible
    while True:
        assert page.status == 200
        assert len(page.text.encode()) < MAX_PAGE
        numbers = [int(n) for n in re.findall(r"alarm number (\d+)\.", page.visible)]
        assert len(numbers) <= pages.ALARMS_PER_PAGE
        seen += numbers
        older = re.search(r'href="(/console/alarms\?before=\d+)"', page.text)
        if older is None:
            break
        page = await client.get(older.group(1))
        assert "Back to the newest alarms" in page.visible
    assert seen == list(reversed(range(total)))  # newest first, none twice, none missed

    for bad in ("", "-1", "x", "１２", "1" * 19):
        refused = await client.get(f"/console/alarms?before={quote(bad)}")
        assert refused.status == 400, bad
        assert "That page of alarms does not exist" in refused.visible
    past_the_end = await client.get("/console/alarms?before=1")
    assert past_the_end.status == 200
    assert "alarm number" not in past_the_end.visible
    assert "No alarms" not in past_the_end.visible  # there are, on the newer pages


async def test_urdu_pages_are_right_to_left(fed: Federation) -> None:
    login = await visitor(fed, "ur").get("/console/login")
    assert login.dir == "rtl"
    assert "صارف نام" in login.visible
    client = await signed_in(fed, "ur")
    for path in ("/console/", "/console/alarms", f"/console/entry?log={LOG}&index=1"):
        page = await client.get(path)
        assert page.dir == "rtl", path
        assert len(page.text.encode()) < MAX_PAGE
    entry = await client.get(f"/console/entry?log={LOG}&index=1")
    assert "تصدیق شدہ" in entry.visible
    english = await client.get("/console/lang/en?next=/console/alarms")
    assert english.dir == "ltr"


async def test_an_entry_address_in_other_digits_is_a_400_not_a_500(fed: Federation) -> None:
    """str.isdigit() holds for superscripts and other scripts' digits, which int() then
    refuses or reads: an index is ASCII decimal digits, or the address is bad."""
    client = await signed_in(fed)
    for index in ("\u00b2", "\u2460", "\u0663", "\uff13", "1\u00b2", "+3", " 3"):
        page = await client.get(f"/console/entry?log={LOG}&index={quote(index)}")
        assert page.status == 400, index
    assert (await client.get(f"/console/entry?log={LOG}&index=3")).status == 200
