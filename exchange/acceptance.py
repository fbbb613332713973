"""When every gateway still serving accepts what the configuration has started to list.

A gateway moving to a renewed TLS certificate (exchange.renewal) or to a new
member signing key (exchange.rotation) must not use it before its peers accept
it: each checks it against the global configuration it holds, and one issued
before the registry listed it refuses it. A peer serves only while its
configuration is valid, so once the first configuration this gateway saw
listing the new one has expired, every peer still serving holds one issued
after it, which lists it too (unless the federation's validity period was
shortened meanwhile: one issued before may outlive it; docs/gateway.md says to
wait). On top of that the wait allows twice the clock skew gateways accept
(this clock may run that much fast, a peer's that much slow), and starts again
after a configuration this gateway skipped (a serial missed between two
fetches), which may not have listed it and may still be valid at a peer.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from registry.globalconf import CLOCK_SKEW, GlobalConfView

__all__ = ["Acceptance"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Listed:
    name: str
    serial: int  # of the newest configuration seen listing it, none skipped since
    until: dt.datetime  # expiry of the first of them, plus twice the clock skew


class Acceptance:
    """Tracks one pending credential (named by its pin or key id) across configurations."""

    def __init__(self, what: str, clock: Callable[[], dt.datetime]) -> None:
        self.what = what  # for the log: "the renewed TLS certificate"
        self.clock = clock
        self._listed: _Listed | None = None

    def forget(self) -> None:
        """Stop waiting: what was pending is not listed any more, or is gone."""
        if self._listed is not None:
            log.warning(
                "no longer waiting to use %s %s: it is not registered any more, or its files "
                "are gone",
                self.what,
                self._listed.name,
            )
        self._listed = None

    def accepted(self, name: str, view: GlobalConfView) -> bool:
        """Whether every gateway still serving accepts ``name``, which ``view`` lists."""
        listed = self._listed
        if listed is None or listed.name != name or view.serial > listed.serial + 1:
            listed = _Listed(name, view.serial, view.conf.expires_at + 2 * CLOCK_SKEW)
            log.info(
                "%s %s is registered; using it from %s, when every gateway still serving "
                "holds a configuration that lists it",
                self.what,
                name,
                listed.until.isoformat(),
            )
        self._listed = replace(listed, serial=max(listed.serial, view.serial))
        return self.clock() >= listed.until

    def done(self) -> None:
        """The pending credential is in use now."""
        self._listed = None
