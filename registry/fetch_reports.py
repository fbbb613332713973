"""Gateways' reports of the global configuration they fetched.

A gateway holding a member key signs its ``GET /globalconf`` with
:func:`registry.memberauth.sign_request` (audience :data:`AUDIENCE`) and names
itself in the query (``?gateway=gw1``), which the signature covers. The
registry checks the assertion against the configuration it last published
and records (member, gateway, serial served, time), which the operator
console shows as each gateway's configuration age.

The configuration itself is public, so an unsigned fetch is still served,
and so is one whose assertion fails: a gateway whose new key is not yet
published must still be able to fetch the configuration that will carry it.
Only verified reports are recorded.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from core import jws
from core.db import Sessions, transaction, utcnow
from core.errors import OutdatedGlobalConfError, ShahrahError
from core.ids import ClientId, validate_part
from core.keys import KeySet
from registry import models as m
from registry.globalconf import GLOBALCONF_TYP, GlobalConf, GlobalConfView
from registry.memberauth import MemberRequestVerifier, nonce_ledger
from registry.publisher import Published

__all__ = ["AUDIENCE", "GATEWAY_PARAM", "FetchReport", "FetchReports", "reports"]

log = logging.getLogger(__name__)

AUDIENCE = "registry"  # the audience gateways sign their configuration fetches for
GATEWAY_PARAM = "gateway"  # query parameter naming the fetching gateway (signed with the path)


@dataclass(frozen=True)
class FetchReport:
    member: str
    gateway: str
    serial: int
    fetched_at: dt.datetime


class FetchReports:
    """Verifies signed configuration fetches and records them.

    Assertions are checked against the newest published configuration, parsed
    once per serial; nonces are remembered as :class:`MemberRequestVerifier` does.
    """

    def __init__(
        self,
        sessions: Sessions,
        operator_keys: KeySet,
        *,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.sessions = sessions
        self.operator_keys = operator_keys
        self.clock = clock
        self._view: GlobalConfView | None = None
        self._nonces = nonce_ledger(sessions)
        self._verifier = MemberRequestVerifier(AUDIENCE, self._current, self._nonces, clock=clock)

    def _current(self) -> GlobalConfView:
        if self._view is None:
            raise OutdatedGlobalConfError("no global configuration has been published yet")
        return self._view

    def _load(self, latest: Published) -> None:
        if self._view is not None and self._view.serial == latest.serial:
            return
        # The registry's own document, but verified all the same: it came from the database.
        verified = jws.verify(latest.signed, self.operator_keys, typ=GLOBALCONF_TYP)
        try:
            conf = GlobalConf.model_validate_json(verified.payload)
        except ValidationError as e:
            raise OutdatedGlobalConfError("the published configuration does not parse") from e
        self._view = GlobalConfView(conf, latest.signed)

    async def observe(self, request: web.Request, latest: Published) -> FetchReport | None:
        """Record the fetch if it carries a valid member assertion; never refuses it."""
        header = request.headers.get("Authorization")
        if header is None:
            return None
        try:
            self._load(latest)
            client = await self._verifier.verify(
                header, method=request.method, path=request.path_qs, body=b""
            )
            gateway = self._gateway(request, client)
        except ShahrahError as e:
            # Served anyway (see the module docstring); the reason helps the member's admin.
            log.info("unrecorded configuration fetch from %s: %s", request.remote, e.message)
            return None
        except SQLAlchemyError:
            # The nonce could not be kept, so the report is not taken; the fetch is served.
            log.warning(
                "could not check the configuration fetch of %s", request.remote, exc_info=True
            )
            return None
        report = FetchReport(str(client.member), gateway, latest.serial, self.clock())
        try:
            await self._record(report)
        except SQLAlchemyError:
            # A report is bookkeeping: the gateway still gets its configuration.
            log.warning("could not record the configuration fetch of %s", client, exc_info=True)
            return None
        return report

    def _gateway(self, request: web.Request, client: ClientId) -> str:
        """The gateway code the member named, if it is one of the member's gateways."""
        code = request.query.get(GATEWAY_PARAM, "")
        if not code:
            return ""
        validate_part(code, "gateway code")
        view = self._current()
        if client.member.gateway(code) not in view.gateways:
            raise ShahrahError(f"{client.member} has no gateway {code!r}")
        return code

    async def close(self) -> None:
        await self._nonces.close()

    async def _record(self, report: FetchReport) -> None:
        values = {
            "member": report.member,
            "gateway": report.gateway,
            "serial": report.serial,
            "fetched_at": report.fetched_at,
        }
        async with transaction(self.sessions) as s:
            dialect = (await s.connection()).dialect.name
            insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
            stmt = insert(m.GatewayFetch).values(**values)
            await s.execute(
                stmt.on_conflict_do_update(
                    index_elements=["member", "gateway"],
                    set_={"serial": stmt.excluded.serial, "fetched_at": stmt.excluded.fetched_at},
                )
            )


async def reports(sessions: Sessions) -> list[FetchReport]:
    """Every gateway's last report, by member and gateway."""
    async with transaction(sessions, write=False) as s:
        rows = await s.scalars(
            select(m.GatewayFetch).order_by(m.GatewayFetch.member, m.GatewayFetch.gateway)
        )
        return [FetchReport(r.member, r.gateway, r.serial, r.fetched_at) for r in rows]
