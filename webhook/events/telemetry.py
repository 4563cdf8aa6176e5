"""Prometheus metrics of event delivery, read from the outbox at scrape time.

The deliverer may be a process of its own and the server may have several workers: counting in the outbox
(in the same transactions as the rows they count) gives every worker's `/metrics` the same totals, and
they survive restarts.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 1800.0, 3600.0)
_COUNTERS = {  # counter-name prefix in the outbox -> (metric, help)
    "enqueued": ("webhook_events_enqueued", "Event deliveries written to the outbox, by subscriber."),
    "delivered": ("webhook_events_delivered", "Events delivered (2xx), by subscriber."),
    "retried": ("webhook_events_retried", "Delivery attempts that will be retried, by subscriber."),
    "dead": ("webhook_events_dead_lettered", "Events moved to the dead-letter store, by subscriber."),
    "disabled": ("webhook_subscribers_disabled", "Subscribers disabled after answering 410 Gone."),
    "evicted": ("webhook_dead_letters_evicted", "Dead letters deleted early to keep the outbox under its byte cap."),
}


def latency_bucket(seconds: float) -> str:
    """The counter suffix of the histogram bucket a delivery latency falls in (`+Inf` past the last)."""
    for bound in LATENCY_BUCKETS:
        if seconds <= bound:
            return str(bound)
    return "+Inf"


class OutboxCollector:
    """A prometheus_client collector over the outbox's counters table and backlog."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def describe(self) -> Iterable[Metric]:
        return list(self._families({}, backlog=0, stored={}))

    def collect(self) -> Iterable[Metric]:
        counters: dict[str, int] = {}
        stored: dict[int, int] = {}
        backlog = 0
        if self.path.exists():
            try:
                connection = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=2.0)
                try:
                    counters = dict(connection.execute("SELECT name, value FROM counters").fetchall())
                    backlog = connection.execute(
                        "SELECT count(*) FROM deliveries WHERE state IN ('pending', 'inflight')").fetchone()[0]
                    stored = dict(connection.execute("SELECT undelivered, total FROM stored_bytes").fetchall())
                finally:
                    connection.close()
            except sqlite3.Error:
                pass  # a scrape must not fail because the outbox is busy or not yet created
        return list(self._families(counters, backlog=backlog, stored=stored))

    @staticmethod
    def _families(counters: dict[str, int], *, backlog: int, stored: dict[int, int]) -> Iterator[Metric]:
        split = [name.split("/") for name in counters]
        for prefix, (metric, description) in _COUNTERS.items():
            family = CounterMetricFamily(metric, description, labels=["subscriber"])
            for parts in split:
                if len(parts) == 2 and parts[0] == prefix:
                    family.add_metric([parts[1]], counters["/".join(parts)])
            yield family
        gauge = GaugeMetricFamily("webhook_outbox_backlog", "Deliveries pending or in flight.")
        gauge.add_metric([], backlog)
        yield gauge
        stored_bytes = GaugeMetricFamily("webhook_outbox_bytes", "Bytes of the events the outbox keeps "
                                         "(capped together), undelivered and dead letters.", labels=["state"])
        stored_bytes.add_metric(["undelivered"], stored.get(1, 0))
        stored_bytes.add_metric(["dead"], stored.get(0, 0))
        yield stored_bytes
        histogram = HistogramMetricFamily("webhook_event_delivery_seconds",
                                          "From the decision to the subscriber's 2xx, by subscriber.",
                                          labels=["subscriber"])
        for name in sorted({parts[1] for parts in split if len(parts) == 2 and parts[0] == "latency_ms"}):
            cumulative, buckets = 0, []
            for bound in (*map(str, LATENCY_BUCKETS), "+Inf"):
                cumulative += counters.get(f"latency/{name}/{bound}", 0)
                buckets.append((bound, float(cumulative)))
            histogram.add_metric([name], buckets, counters[f"latency_ms/{name}"] / 1000.0)
        yield histogram
