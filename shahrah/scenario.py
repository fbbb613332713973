"""``shahrah demo --scenario``: a story told through the running federation, step by step.

Each step is done the way its actor would do it (a local system on its
gateway's r1 interface, a citizen on the consent service's API, the regulator
on the audit server) and checked; the command succeeds only if every step holds.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yarl import URL

from audit.export import write_export
from audit.mirror import Filters
from audit.note import witness_name
from audit.verify import verify_export
from core.db import create_engine, sessions, utcnow
from core.errors import ShahrahError
from core.ids import ClientId, Cnic, ServiceId
from core.keys import PrivateKey
from core.pseudonym import Pseudonymizer
from registry.globalconf import Anchor
from shahrah.demo import Live, citizen_action, request_consent
from shahrah.federation import ASSESSMENT, CONSENTED_FIELDS, LAND_OFFICE, PARCEL, PERSON, TAX_OFFICE

__all__ = ["Step", "run_scenario"]

INGEST_WAIT = 15.0  # seconds the scenario waits for drop files to be ingested after start


@dataclass(frozen=True)
class Step:
    name: str
    ok: bool
    detail: str


class _Failed(Exception):
    pass


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise _Failed(message)


async def _r1(
    live: Live,
    gateway: str,
    client: ClientId,
    sid: ServiceId,
    path: str,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    url = f"{live.federation['gateways'][gateway]['local']}/r1/{sid.to_path()}{path}"
    async with live.http.get(
        URL(url, encoded=True), headers={"X-Road-Client": str(client), **(headers or {})}
    ) as r:
        text = await r.text()
        body = json.loads(text) if r.content_type == "application/json" else text
        return r.status, dict(r.headers), body


async def run_scenario(live: Live) -> list[Step]:
    """Run every step (each even if an earlier one failed) and return how each went."""
    citizen = live.citizen(0)
    cnic = Cnic(citizen["cnic"])
    state: dict[str, Any] = {}
    steps: list[Step] = []

    async def step(name: str, action: Callable[[], Awaitable[str]]) -> None:
        try:
            steps.append(Step(name, True, await action()))
        except Exception as e:
            # Whatever broke (a dropped connection, an answer of an unexpected shape), the
            # step is reported as failed by name and the story goes on: that is the contract.
            ours = isinstance(e, _Failed | ShahrahError)
            steps.append(Step(name, False, str(e) if ours else f"{type(e).__name__}: {e}"))

    def consent_headers() -> dict[str, str]:
        return {
            "Shahrah-Data-Subject": cnic.to_user_id(),
            "Shahrah-Purpose": "property-tax-assessment",
            "Shahrah-Consent": state["consent"],
        }

    async def consent_given() -> str:
        state["consent"] = await request_consent(live, cnic, days=1)
        answer = await citizen_action(live, 0, state["consent"], "approve")
        _require(answer.get("status") == "ACTIVE", f"consent is {answer.get('status')}, not ACTIVE")
        return f"{citizen['name']} approved consent {state['consent']} for the property-tax office"

    async def identity_with_consent() -> str:
        status, _, body = await _r1(
            live, "lmc", TAX_OFFICE, PERSON, f"/persons/{cnic}", consent_headers()
        )
        _require(status == 200, f"NADRA answered {status}: {body}")
        released = sorted(body)
        wanted = sorted(p.strip("/") for p in CONSENTED_FIELDS)
        _require(released == wanted, f"released {released}, but the consent allows only {wanted}")
        return f"LMC received only {', '.join(released)} of {citizen['name']}'s record"

    async def revoke_then_denied() -> str:
        await citizen_action(live, 0, state["consent"], "revoke")
        started = time.monotonic()
        while True:
            status, headers, body = await _r1(
                live, "lmc", TAX_OFFICE, PERSON, f"/persons/{cnic}", consent_headers()
            )
            if status != 200:
                break
            _require(
                time.monotonic() - started < 1.0, "NADRA still answered one second after the revoke"
            )
            await asyncio.sleep(0.05)
        kind = headers.get("X-Road-Error")
        _require(
            kind == "Server.ServerProxy.ConsentDenied",
            f"expected ConsentDenied, got {kind}: {body}",
        )
        elapsed = 1000 * (time.monotonic() - started)
        return f"the next call was refused ({kind}) {elapsed:.0f} ms after the revoke"

    async def unknown_client() -> str:
        stranger = TAX_OFFICE.member.subsystem("not-registered")
        status, headers, body = await _r1(live, "lmc", stranger, PERSON, f"/persons/{cnic}")
        kind = headers.get("X-Road-Error")
        _require(
            status == 400 and kind == "Client.InvalidClientIdentifier",
            f"got {status} {kind}: {body}",
        )
        return f"{stranger} was refused with {kind}"

    async def parcel_over_soap() -> str:
        parcel = live.federation["samples"]["parcel_id"]
        status, _, body = await _r1(live, "lmc", TAX_OFFICE, PARCEL, f"/parcels/{parcel}")
        _require(status == 200, f"PLRA answered {status}: {body}")
        _require(bool(body.get("owners")), "the parcel came back without owners")
        owners = len(body["owners"])
        mauza = body["mauza"]["name"]
        return f"parcel {parcel} (mauza {mauza}, {owners} owner(s)) from the SOAP service"

    async def assessment_from_fixed_width() -> str:
        prop = live.federation["samples"]["property_id"]
        # An assessment is about its owner: the call names the owner, and is recorded so.
        owner = Cnic(live.federation["samples"]["property_owner"])
        about = {"Shahrah-Data-Subject": owner.to_user_id()}
        # Right after start the night's extract may still be settling in the drop folder
        # (the ingester reads a file only once it has stopped changing): wait for it, briefly.
        deadline = time.monotonic() + INGEST_WAIT
        while True:
            status, _, body = await _r1(
                live, "plra", LAND_OFFICE, ASSESSMENT, f"/assessments/{prop}", about
            )
            if status != 404 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        _require(status == 200, f"LMC answered {status}: {body}")
        _require(
            body.get("property_id") == prop, f"asked for {prop}, got {body.get('property_id')}"
        )
        due, year = body["tax_due"], body["fiscal_year"]
        return f"assessment of {prop} for {year}, owner {owner}: due {due} ({body['status']})"

    async def export_and_verify() -> str:
        for running in live.gateways.values():
            await running.audit.checkpoint()
            await running.audit.sync_witness()
        path = await _export(live)
        # As a regulator would: trusting only the keys the federation's anchor vouches for.
        anchor = Anchor.load(live.data_dir / "registry" / "anchor.json")
        report = await asyncio.to_thread(verify_export, path, anchor=anchor)
        _require(report.ok, "the verifier found problems: " + "; ".join(report.problems[:5]))
        _require(report.entries > 0, "the export holds no entries")
        return (
            f"{path.name}: {report.entries} entries in {report.logs} logs verified offline "
            "against the federation's anchor"
        )

    await step("The citizen approves the corporation's consent request", consent_given)
    await step(
        "LMC fetches the citizen's identity from NADRA and gets only the consented fields",
        identity_with_consent,
    )
    await step("The citizen revokes; the next call is refused within a second", revoke_then_denied)
    await step("An unknown client is refused", unknown_client)
    await step("LMC fetches a land parcel from PLRA's SOAP service", parcel_over_soap)
    await step(
        "PLRA fetches a tax assessment from LMC's fixed-width extracts", assessment_from_fixed_width
    )
    await step(
        "The regulator exports the audit trail and the offline verifier accepts it",
        export_and_verify,
    )
    return steps


async def _export(live: Live) -> Path:
    """The regulator's export of every witnessed audit entry, written on the audit server's host."""
    audit_dir = live.data_dir / "audit"
    folder = live.data_dir / "exports"
    # It holds personal data, as the audit CLI's exports do: the folder 0700, the file 0600.
    await asyncio.to_thread(folder.mkdir, mode=0o700, exist_ok=True)
    path = folder / f"audit-{utcnow().strftime('%Y%m%dT%H%M%S%f')}.jsonl"
    anchor = Anchor.load(audit_dir / "anchor.json")
    cached = audit_dir / "globalconf.jws"
    engine = create_engine(live.audit_db_url, pool_size=1)
    try:
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
            await write_export(
                sessions(engine),
                out,
                filters=Filters(),
                pseudonymize=Pseudonymizer.load(audit_dir / "pseudonym.key"),
                witness_key=PrivateKey.load(audit_dir / "witness-key.pem", None),
                witness_name=witness_name(anchor.instance),
                globalconf=cached.read_text("ascii") if cached.exists() else None,
            )
    finally:
        await engine.dispose()
    return path
