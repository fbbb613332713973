"""Prometheus metrics of the adapters, on a registry the caller chooses.

Nothing is registered globally: a gateway that loads adapters in-process
passes its own ``CollectorRegistry`` (or takes :attr:`AdapterMetrics.registry`
and serves it next to its own), and ``shahrah adapter serve`` exposes it on
``/metrics``. Label values are service ids, route patterns and file sources,
never a parameter or a citizen's data, so the series stay few.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["AdapterMetrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class AdapterMetrics:
    """Every metric the adapters write (names all start with ``shahrah_adapter_``)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.calls = Counter(
            "shahrah_adapter_calls",
            "Calls answered by adapters, by outcome: ok, not_found, bad_request, failed, rejected.",
            ["service", "route", "outcome"],
            registry=r,
        )
        self.latency = Histogram(
            "shahrah_adapter_call_seconds",
            "Time to answer a call, retries and mapping included.",
            ["service", "kind"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            "shahrah_adapter_retries",
            "Attempts repeated after a retryable backend failure.",
            ["service"],
            registry=r,
        )
        self.mapping_errors = Counter(
            "shahrah_adapter_mapping_errors",
            "Records that could not be mapped or did not match the service's schema.",
            ["service", "route"],
            registry=r,
        )
        self.circuit_state = Gauge(
            "shahrah_adapter_circuit_state",
            "Circuit breaker of each backend: 0 closed, 1 half-open, 2 open.",
            ["service"],
            registry=r,
        )
        self.circuit_opened = Counter(
            "shahrah_adapter_circuit_opened",
            "Times a backend's circuit breaker opened.",
            ["service"],
            registry=r,
        )
        self.files = Counter(
            "shahrah_adapter_files",
            "Dropped files handled, by outcome: loaded, rejected, duplicate, failed.",
            ["source", "outcome"],
            registry=r,
        )
        self.archive_failures = Counter(
            "shahrah_adapter_archive_failures",
            "Moves of handled files, or their markers, to the archive that the system refused.",
            ["source"],
            registry=r,
        )
        self.records = Counter(
            "shahrah_adapter_records",
            "File records handled, by outcome: loaded, dead_letter.",
            ["source", "outcome"],
            registry=r,
        )
        self.last_scan = Gauge(
            "shahrah_adapter_last_ingest_timestamp_seconds",
            "Unix time of the last completed scan of each drop directory.",
            ["source"],
            registry=r,
        )
