"""Prometheus metrics of one server, in a registry of its own (no process-global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "webhook_admission_requests", "Admission reviews answered, by endpoint, operation, kind and verdict.",
            ["endpoint", "operation", "kind", "verdict"], registry=self.registry)
        self.latency = Histogram(
            "webhook_admission_duration_seconds", "Time to answer an admission review, by endpoint.",
            ["endpoint"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.bad_requests = Counter(
            "webhook_bad_requests", "Requests refused with a 4xx before evaluation, by reason.",
            ["reason"], registry=self.registry)
        self.policy_errors = Counter(
            "webhook_policy_evaluation_errors", "Policy faults (runtime errors, wrong types), by policy.",
            ["policy"], registry=self.registry)
        self.reloads = Counter(
            "webhook_policy_reloads", "Policy set loads, by result (loaded or rejected).",
            ["result"], registry=self.registry)
        self.policies_loaded = Gauge(
            "webhook_policies_loaded", "Policies in the serving set.", registry=self.registry)
        self.policy_set_healthy = Gauge(
            "webhook_policy_set_healthy", "1 when the last load of the policy directory succeeded.",
            registry=self.registry)

        self.certificate_reloads = Counter(
            "webhook_tls_certificate_reloads", "Serving certificate reloads after its files changed, by result.",
            ["result"], registry=self.registry)
        self.certificate_expiry = Gauge(
            "webhook_tls_certificate_expiry_timestamp_seconds", "When the served certificate expires (Unix time).",
            registry=self.registry)
        self.events_dropped = Counter(
            "webhook_events_dropped", "Events this process could not spool, by reason (full, error).",
            ["reason"], registry=self.registry)
        # The delivery metrics (enqueued, delivered, retried, dead-lettered, backlog, delivery latency) are
        # read from the outbox at scrape time: see webhook.events.telemetry.

    def add_collector(self, collector: Collector) -> None:
        self.registry.register(collector)

    def render(self) -> bytes:
        return generate_latest(self.registry)
