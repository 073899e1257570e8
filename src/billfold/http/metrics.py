"""The HTTP edge's Prometheus metrics, on a registry of the app's own.

Domains that count things of their own register them on the same registry when they are
wired (`billfold.metering.deps`), so `/metrics` shows everything in one scrape.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram


class Metrics:
    """The service's counters, on a registry of its own (one per app instance)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "billfold_http_requests",
            "HTTP requests answered, by route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "billfold_http_request_duration_seconds",
            "Time to answer a request, by route template",
            ["route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
        )
        self.problems = Counter(
            "billfold_problems",
            "Problem responses sent, by stable code",
            ["code", "status"],
            registry=self.registry,
        )
        # Label lookups cost more than the increments; keep the children at hand.
        self._request_children: dict[tuple[str, str, str], Any] = {}
        self._latency_children: dict[str, Any] = {}
        self.failures = Counter(
            "billfold_unhandled_errors",
            "Requests that failed with an unexpected error (HTTP 500)",
            ["route"],
            registry=self.registry,
        )

    def observe(self, method: str, route: str, status: int, duration_s: float) -> None:
        key = (method, route, str(status))
        counter = self._request_children.get(key)
        if counter is None:
            counter = self._request_children[key] = self.requests.labels(*key)
        counter.inc()
        histogram = self._latency_children.get(route)
        if histogram is None:
            histogram = self._latency_children[route] = self.latency.labels(route)
        histogram.observe(duration_s)
