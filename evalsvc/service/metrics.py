"""`/metrics` for Prometheus: what the store says now, read at every scrape (docs/metrics.md).

A custom collector, not counters kept in memory: every scrape runs a few read-only queries
(``store.queries``) on a read-only connection, so the numbers are the store's own, a restart
loses nothing, and several `evalsvc serve` processes (or none firing) report the same thing.
When the store cannot be read the scrape still answers, with ``evalsvc_store_up 0``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, get_args

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from evalsvc.alerts import Kind
from evalsvc.store import queries

log = logging.getLogger(__name__)
DEFAULT_PORT = 9108
DEFAULT_HOST = "127.0.0.1"
SERIES = ("variant", "suite", "metric", "kind", "fingerprint", "suite_version")
RUN = ("variant", "suite", "fingerprint", "suite_version")
# name -> (help, labels): every metric the collector exports (docs/metrics.md and docs/grafana/evalsvc.json use these)
METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "evalsvc_store_up": ("1 when this scrape could read the store, else 0", ()),
    "evalsvc_scrape_duration_seconds": ("Time the store's queries took in this scrape", ()),
    "evalsvc_series_value": ("The newest value of a series (the latest succeeded run of variant x suite)", SERIES),
    "evalsvc_series_ci_low": ("Lower end of the newest value's 95% interval", SERIES),
    "evalsvc_series_ci_high": ("Upper end of the newest value's 95% interval", SERIES),
    "evalsvc_series_n": ("How many cases the newest value rests on", SERIES),
    "evalsvc_series_run_timestamp_seconds": ("When the run behind the newest value was made (Unix time)", SERIES),
    "evalsvc_alerts_open": ("Open alerts by kind", ("kind",)),
    "evalsvc_firings": ("Recorded firings by schedule and status (running, done, error)", ("schedule", "status")),
    "evalsvc_firing_last_duration_seconds": ("How long the newest finished firing of a schedule took",
                                             ("schedule", "status")),
    "evalsvc_firing_last_finished_timestamp_seconds": ("When the newest finished firing of a schedule ended (Unix time)",
                                                       ("schedule", "status")),
    "evalsvc_run_cases": ("Cases in the newest run (any status) of variant x suite", (*RUN, "status")),
    "evalsvc_run_errored_cases": ("Errored answers (case x sample) in the newest run of variant x suite", (*RUN, "status")),
}


def _seconds(t: datetime | None) -> float | None:
    if t is None:
        return None
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()


class StoreCollector(Collector):
    """Reads the store at scrape time; yields one gauge family per name in METRICS."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _family(self, name: str) -> GaugeMetricFamily:
        doc, labels = METRICS[name]
        return GaugeMetricFamily(name, doc, labels=list(labels))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        started = time.perf_counter()
        try:
            families = self._read()
            up = 1.0
        except Exception:  # a scrape must answer even when the store is down: evalsvc_store_up says so
            log.exception("metrics: reading the store failed")
            families, up = [], 0.0
        yield from families
        store_up = self._family("evalsvc_store_up")
        store_up.add_metric([], up)
        took = self._family("evalsvc_scrape_duration_seconds")
        took.add_metric([], time.perf_counter() - started)
        yield store_up
        yield took

    def _read(self) -> list[GaugeMetricFamily]:
        with Session(self.engine) as s:
            points = queries.latest_points(s)
            open_alerts = queries.open_alert_counts(s)
            counts = queries.firing_counts(s)
            last = queries.last_finished_firings(s)
            newest = queries.newest_attempts(s)
        fam = {name: self._family(name) for name in METRICS if name not in ("evalsvc_store_up", "evalsvc_scrape_duration_seconds")}
        for p in points:
            labels = [p.variant_name, p.suite_name, p.metric, p.kind, p.variant_fingerprint, p.suite_version]
            for name, value in (("evalsvc_series_value", p.value), ("evalsvc_series_ci_low", p.ci_low),
                                ("evalsvc_series_ci_high", p.ci_high), ("evalsvc_series_n", p.n),
                                ("evalsvc_series_run_timestamp_seconds", _seconds(p.run_ts))):
                if value is not None:
                    fam[name].add_metric(labels, float(value))
        for kind in sorted(set(get_args(Kind)) | set(open_alerts)):  # every kind, 0 when none is open
            fam["evalsvc_alerts_open"].add_metric([kind], float(open_alerts.get(kind, 0)))
        for row in counts:
            fam["evalsvc_firings"].add_metric([row.schedule, row.status], float(row.count))
        for row in last:
            start, end = _seconds(row.started_at), _seconds(row.finished_at)
            if start is not None and end is not None:
                fam["evalsvc_firing_last_duration_seconds"].add_metric([row.schedule, row.status], max(0.0, end - start))
                fam["evalsvc_firing_last_finished_timestamp_seconds"].add_metric([row.schedule, row.status], end)
        for r in newest:
            labels = [r.variant_name, r.suite_name, r.variant_fingerprint, r.suite_version, r.status]
            fam["evalsvc_run_cases"].add_metric(labels, float(r.n_cases))
            fam["evalsvc_run_errored_cases"].add_metric(labels, float(r.n_errored))
        return list(fam.values())


def registry_for(engine: Engine) -> CollectorRegistry:
    """A registry of the store collector alone (no process or platform metrics: what is exported is documented)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(engine))
    return registry


def serve_metrics(engine: Engine, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> Any:
    """Serve ``/metrics`` on host:port in a daemon thread; returns the HTTP server (``server_port``, ``shutdown()``)."""
    server, _thread = start_http_server(port, addr=host, registry=registry_for(engine))
    return server
