"""Prometheus metrics of one gateway (its own registry, so several gateways can share a process)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from audit.writer import WriterStatus

__all__ = ["GatewayMetrics"]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class GatewayMetrics:
    def __init__(
        self,
        globalconf_age: Callable[[], float | None],
        globalconf_serial: Callable[[], int | None],
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "shahrah_exchange_requests",
            "Exchanges handled, by role, service and outcome (delivered or the X-Road error type).",
            ["role", "service", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "shahrah_exchange_duration_seconds",
            "Time to answer an exchange, by role and service.",
            ["role", "service"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.consent_denials = Counter(
            "shahrah_consent_denials",
            "Exchanges refused for want of consent, by service.",
            ["service"],
            registry=self.registry,
        )
        age = Gauge(
            "shahrah_globalconf_age_seconds",
            "Seconds since the held global configuration was issued (NaN before the first).",
            registry=self.registry,
        )
        age.set_function(lambda: _nan(globalconf_age()))
        serial = Gauge(
            "shahrah_globalconf_serial",
            "Serial of the held global configuration.",
            registry=self.registry,
        )
        serial.set_function(lambda: _nan(globalconf_serial()))
        self._tls_expiry = Gauge(
            "shahrah_gateway_tls_certificate_expiry_timestamp_seconds",
            "When the TLS certificate this gateway presents to other gateways expires (Unix "
            "time; NaN if unreadable). Renew well before: shahrah gateway renew-tls.",
            registry=self.registry,
        )
        self._tls_expiry.set(float("nan"))

    def follow_audit(self, status: Callable[[], WriterStatus]) -> None:
        """Report how much of this gateway's audit log the witness has cosigned, read from
        ``status`` at each scrape. A gap that keeps growing while ``witness_failing`` is 1
        is a witness that refuses the log (a gateway restored from a backup forks it, and
        ``shahrah gateway repair-audit`` mends it) or cannot be reached: the exchanges go
        on, their records kept here but not mirrored where regulators search."""
        size = Gauge(
            "shahrah_gateway_audit_log_size",
            "Entries in this gateway's audit log.",
            registry=self.registry,
        )
        size.set_function(lambda: float(status().size))
        witnessed = Gauge(
            "shahrah_gateway_audit_witnessed_size",
            "Entries covered by the newest checkpoint the witness has cosigned.",
            registry=self.registry,
        )
        witnessed.set_function(lambda: float(status().witnessed_size))
        failing = Gauge(
            "shahrah_gateway_audit_witness_failing",
            "1 while the last attempt to have a checkpoint cosigned failed (the log says why).",
            registry=self.registry,
        )
        failing.set_function(lambda: float(status().witness_error is not None))

    def follow_certificate(self, expires: Callable[[], dt.datetime | None]) -> None:
        """Report the expiry ``expires`` gives, read at each scrape (it changes on renewal)."""
        self._tls_expiry.set_function(lambda: _nan(_timestamp(expires())))

    def follow_credentials(
        self, tls_registered: Callable[[], bool | None], key_valid: Callable[[], bool | None]
    ) -> None:
        """Report whether peers accept what this gateway presents and signs, as the held
        configuration says (read at each scrape; NaN before the first): 0 is every exchange
        refused, which the log says at each refresh too."""
        registered = Gauge(
            "shahrah_gateway_tls_certificate_registered",
            "1 if the TLS certificate this gateway presents is registered for it in the held "
            "configuration, 0 if peers refuse it.",
            registry=self.registry,
        )
        registered.set_function(lambda: _nan(tls_registered()))
        valid = Gauge(
            "shahrah_gateway_signing_key_valid",
            "1 if the member key this gateway signs with is valid in the held configuration, "
            "0 if what it signs is refused (revoked, expired or not registered).",
            registry=self.registry,
        )
        valid.set_function(lambda: _nan(key_valid()))


def _timestamp(value: dt.datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def _nan(value: float | int | None) -> float:
    return float("nan") if value is None else float(value)
