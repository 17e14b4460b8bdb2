"""Prometheus metrics, one registry per application (so several apps can live in one test process)."""

from __future__ import annotations

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

log = structlog.get_logger("sms_gateway.latency")

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.webhooks = Counter(
            "smsgw_webhooks", "Provider webhooks received, by route and outcome", ["route", "outcome"], registry=r
        )
        self.turns = Counter("smsgw_turns", "Conversation turns run, by outcome", ["outcome"], registry=r)
        self.sends = Counter(
            "smsgw_sends", "Messages handed to the provider, by outcome and kind", ["outcome", "kind"], registry=r
        )
        self.errors = Counter("smsgw_errors", "Errors, by kind", ["kind"], registry=r)
        self.commands = Counter("smsgw_commands", "Engine commands seen, by command", ["command"], registry=r)
        self.statuses = Counter(
            "smsgw_delivery_statuses", "Delivery status callbacks, by status", ["status"], registry=r
        )
        self.mms_fallbacks = Counter(
            "smsgw_mms_fallbacks",
            "Media sent as SMS instead of MMS (by the gateway or the provider), by provider",
            ["provider"],
            registry=r,
        )
        self.engine_latency = Histogram(
            "smsgw_engine_latency_seconds", "Engine turn latency", ["engine"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.provider_latency = Histogram(
            "smsgw_provider_latency_seconds",
            "Provider send latency",
            ["provider"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.turn_latency = Histogram(
            "smsgw_turn_latency_seconds",
            "Inbound message received to turn finished",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.inbound_in_flight = Gauge("smsgw_inbound_in_flight", "Inbound messages being processed", registry=r)
        self.sessions_expired = Counter("smsgw_sessions_expired", "Sessions ended by inactivity", registry=r)
        self.jobs = Counter("smsgw_jobs", "Job attempts, by kind and outcome", ["kind", "outcome"], registry=r)
        self.dead_letters = Counter("smsgw_dead_letters", "Jobs dead-lettered, by kind", ["kind"], registry=r)
        self.rest = Counter(
            "smsgw_rest_requests",
            "Session-control REST API requests, by route and status",
            ["route", "status"],
            registry=r,
        )


def warn_if_slow(call: str, elapsed: float, threshold_ms: int, session_id: str | None) -> None:
    """IBM's LATENCY_REPORTING_THRESHOLD: a warning for an engine or provider call slower than the threshold."""
    if threshold_ms > 0 and elapsed * 1000 > threshold_ms:
        log.warning(
            "latency_threshold_exceeded",
            call=call,
            latency_ms=round(elapsed * 1000),
            threshold_ms=threshold_ms,
            session_id=session_id,
        )
