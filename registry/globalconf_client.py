"""The gateway's side of the global configuration: fetch, verify, keep the last good one.

A :class:`GlobalConfClient` starts from an anchor, fetches the configuration
on a schedule (conditional GET with the last ETag), verifies every document
against the anchor and refuses expired, unverifiable and rolled-back ones
while keeping the last good configuration. Callers ask :meth:`current`,
which fails closed with ``Server.ClientProxy.OutdatedGlobalConf`` once that
configuration has expired. The last good document is also written to disk,
so a restarted gateway does not depend on the registry being up, and is
verified again when read back.

Given a :class:`FetchIdentity` (a gateway's member key), every fetch is signed
so the registry can record which configuration each gateway holds
(:mod:`registry.fetch_reports`); without one the fetch is anonymous.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp
from yarl import URL

from core.db import utcnow
from core.errors import OutdatedGlobalConfError
from core.files import write_atomic
from core.ids import ClientId
from core.keys import PrivateKey
from core.web import describe_failure, read_up_to
from registry.fetch_reports import AUDIENCE, GATEWAY_PARAM
from registry.globalconf import (
    Anchor,
    GlobalConf,
    GlobalConfRejectedError,
    GlobalConfView,
    verify_globalconf,
)
from registry.memberauth import sign_request

__all__ = ["FetchIdentity", "GlobalConfClient"]

log = logging.getLogger(__name__)

MAX_DOCUMENT = 32 * 2**20  # bytes; a configuration larger than this is refused unread
FETCH_TIMEOUT = 10.0  # seconds


@dataclass(frozen=True)
class FetchIdentity:
    """Who signs the fetches: a member's key, and the gateway's code if it is a gateway."""

    key: PrivateKey
    member: ClientId
    gateway: str | None = None


class GlobalConfClient:
    def __init__(
        self,
        anchor: Anchor,
        *,
        cache_file: Path | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
        timeout: float = FETCH_TIMEOUT,
        identity: FetchIdentity | None = None,
    ) -> None:
        self.anchor = anchor
        self.identity = identity
        self.cache_file = cache_file
        self.clock = clock
        self.timeout = timeout
        self._view: GlobalConfView | None = None
        # The newest configuration seen when none could be held (an expired cache at start):
        # nothing older is accepted after it.
        self._floor: GlobalConf | None = None
        self._etag: str | None = None
        self.last_success: dt.datetime | None = None
        self.last_error: str | None = None
        if cache_file is not None and cache_file.exists():
            self._load_cache(cache_file)

    def _load_cache(self, path: Path) -> None:
        try:
            signed = path.read_text("ascii")
            self.accept(signed)
        except (OSError, UnicodeDecodeError) as e:
            log.warning("ignoring cached global configuration %s: %s", path, e)
        except GlobalConfRejectedError as e:
            log.warning("ignoring cached global configuration %s: %s", path, e)
            # Too old to act on, but still the newest serial this gateway has seen: a
            # registry (or an attacker in its place) may not roll it back after a restart.
            with contextlib.suppress(GlobalConfRejectedError):
                self._floor = verify_globalconf(signed, self.anchor, now=self.clock(), timely=False)

    # --- state ----------------------------------------------------------------------------------

    @property
    def view(self) -> GlobalConfView | None:
        """The last accepted configuration, expired or not."""
        return self._view

    def current(self) -> GlobalConfView:
        """The configuration to act on; fails closed if there is none or it has expired."""
        view = self._view
        if view is None:
            raise OutdatedGlobalConfError(
                "no verified global configuration yet"
                + (f": {self.last_error}" if self.last_error else "")
            )
        if view.expired(self.clock()):
            raise OutdatedGlobalConfError(
                f"global configuration serial {view.serial} expired at "
                f"{view.conf.expires_at.isoformat()}; last fetch error: {self.last_error or 'none'}"
            )
        return view

    def age(self) -> float | None:
        """Seconds since the held configuration was issued (None before the first)."""
        if self._view is None:
            return None
        return (self.clock() - self._view.conf.issued_at).total_seconds()

    def use_key(self, key: PrivateKey) -> None:
        """Sign fetches with ``key`` from now on (a gateway's key rotation)."""
        if self.identity is not None:
            self.identity = replace(self.identity, key=key)

    @property
    def refresh_interval(self) -> float:
        return float(self._view.conf.refresh_interval) if self._view else 60.0

    # --- updating -------------------------------------------------------------------------------

    def accept(self, signed: str) -> bool:
        """Verify ``signed`` and hold it if good. Returns whether the configuration changed."""
        previous = self._view.conf if self._view else self._floor
        conf = verify_globalconf(signed, self.anchor, now=self.clock(), previous=previous)
        changed = previous is None or conf.serial != previous.serial
        if changed:
            self._view = GlobalConfView(conf, signed)
            if self.cache_file is not None:
                try:
                    write_atomic(self.cache_file, signed.encode("ascii"))
                except OSError as e:
                    # The verified configuration is held and used; only a restart without
                    # the registry reachable would miss the copy on disk.
                    log.error("cannot cache the global configuration in %s: %s", self.cache_file, e)
        return changed

    async def refresh(self, session: aiohttp.ClientSession) -> bool:
        """Fetch once. Returns whether a new configuration was accepted. Never raises: a
        failure of any kind is logged and kept in ``last_error``, so the loops that call it
        keep trying (a dead loop would leave the gateway to expire its configuration)."""
        headers = {"If-None-Match": self._etag} if self._etag and self._view else {}
        target = self._target(headers)
        try:
            async with session.get(
                target,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                allow_redirects=False,
            ) as resp:
                if resp.status == 304:
                    self.last_success = self.clock()
                    self.last_error = None
                    return False
                if resp.status != 200:
                    raise GlobalConfRejectedError(f"registry answered HTTP {resp.status}")
                if (resp.content_length or 0) > MAX_DOCUMENT:
                    raise GlobalConfRejectedError("global configuration is too large")
                body = await read_up_to(resp.content, MAX_DOCUMENT + 1)
                if len(body) > MAX_DOCUMENT:
                    raise GlobalConfRejectedError("global configuration is too large")
                etag = resp.headers.get("ETag")
            changed = self.accept(body.decode("ascii", errors="replace"))
        except GlobalConfRejectedError as e:
            self.last_error = e.message
            log.error("refused global configuration from %s: %s", self.anchor.url, e.message)
            return False
        except (aiohttp.ClientError, TimeoutError) as e:
            # In words: this reaches the log and /healthz, where an operator reads it.
            self.last_error = f"cannot fetch {self.anchor.url}: {describe_failure(e, self.timeout)}"
            log.warning("%s", self.last_error)
            return False
        except Exception as e:
            self.last_error = f"refreshing failed: {type(e).__name__}"
            log.exception("refreshing the global configuration from %s failed", self.anchor.url)
            return False
        self._etag = etag
        self.last_success = self.clock()
        self.last_error = None
        return changed

    def _target(self, headers: dict[str, str]) -> URL:
        """The URL to fetch, signing the request into ``headers`` when there is an identity."""
        target = URL(self.anchor.url)
        who = self.identity
        if who is None:
            return target
        if who.gateway:
            target = target.update_query({GATEWAY_PARAM: who.gateway})
        headers["Authorization"] = sign_request(
            who.key,
            who.member,
            audience=AUDIENCE,
            method="GET",
            path=target.raw_path_qs,
            now=self.clock(),
        )
        return target

    def next_wait(self, failures: int) -> float:
        """Seconds until the next fetch: the refresh interval, or sooner after failures
        (1, 2, 4 ... seconds), so a gateway started before the registry does not sit idle
        for a whole interval."""
        if failures == 0:
            return self.refresh_interval
        return min(self.refresh_interval, float(2 ** min(failures - 1, 10)))

    async def run(self, session: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        """Refresh until ``stop`` is set: every interval, sooner while fetches fail."""
        failures = 0
        while not stop.is_set():
            await self.refresh(session)
            failures = failures + 1 if self.last_error else 0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.next_wait(failures))
