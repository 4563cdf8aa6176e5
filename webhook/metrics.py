"""Prometheus metrics of one server, in a registry of its own (no process-global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

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

        self.events_enqueued = Counter(
            "webhook_events_enqueued", "Event deliveries written to the outbox, by subscriber.",
            ["subscriber"], registry=self.registry)
        self.events_delivered = Counter(
            "webhook_events_delivered", "Events delivered (2xx), by subscriber.", ["subscriber"],
            registry=self.registry)
        self.events_retried = Counter(
            "webhook_events_retried", "Delivery attempts that will be retried, by subscriber.", ["subscriber"],
            registry=self.registry)
        self.events_dead_lettered = Counter(
            "webhook_events_dead_lettered", "Events moved to the dead-letter store, by subscriber.",
            ["subscriber"], registry=self.registry)
        self.events_dropped = Counter(
            "webhook_events_dropped", "Events not written to the outbox, by reason (full, error).",
            ["reason"], registry=self.registry)
        self.subscribers_disabled = Counter(
            "webhook_subscribers_disabled", "Subscribers disabled after answering 410 Gone.", ["subscriber"],
            registry=self.registry)
        self.outbox_backlog = Gauge(
            "webhook_outbox_backlog", "Deliveries pending or in flight.", registry=self.registry)
        self.delivery_latency = Histogram(
            "webhook_event_delivery_seconds", "From the decision to the subscriber's 2xx, by subscriber.",
            ["subscriber"], buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 30, 60, 300, 1800, 3600), registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
