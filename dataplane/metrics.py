"""The data plane's Prometheus metrics (ARCHITECTURE §9). Labels never include raw paths: only
endpoint keys, methods, status classes, error codes and target URLs from the config."""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from configdoc.reports import LATENCY_BUCKETS as BUCKETS

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        # Under `--workers N` the workers write their values to files the supervisor merges.
        self.multiprocess = "PROMETHEUS_MULTIPROC_DIR" in os.environ
        self._config_sha256 = ""
        # Label children cached per label values (prometheus_client's `.labels()` costs a lock and a
        # tuple build on every call); these series are never removed, so the cache never goes stale.
        self._request_children: dict[tuple[str, str, int], Any] = {}
        self._duration_children: dict[str, Any] = {}
        self._upstream_children: dict[str, Any] = {}
        r = self.registry
        self.requests = Counter(
            "gateway_requests", "Client requests answered", ["endpoint", "method", "status_class"], registry=r
        )
        self.request_duration = Histogram(
            "gateway_request_duration_seconds", "Time to the response head", ["endpoint"], buckets=BUCKETS, registry=r
        )
        self.upstream_duration = Histogram(
            "gateway_upstream_duration_seconds", "Upstream time per try", ["endpoint"], buckets=BUCKETS, registry=r
        )
        self.retries = Counter("gateway_upstream_retries", "Retries sent upstream", ["endpoint"], registry=r)
        self.errors = Counter("gateway_errors", "Gateway-made error answers", ["endpoint", "error"], registry=r)
        self.circuit_state = Gauge("gateway_circuit_state", "0 closed, 1 open, 2 half-open", ["endpoint"], registry=r)
        self.circuit_transitions = Counter(
            "gateway_circuit_transitions", "Breaker state changes", ["endpoint", "from", "to"], registry=r
        )
        self.target_health = Gauge("gateway_target_health", "1 routable", ["endpoint", "target"], registry=r)
        self.target_ejected = Gauge("gateway_target_ejected", "1 ejected", ["endpoint", "target"], registry=r)
        self.config_revision = Gauge("gateway_config_revision", "Applied revision (0 for a seed)", registry=r)
        self.config_info = Gauge("gateway_config_info", "Applied config", ["config_sha256"], registry=r)
        self.config_age = Gauge("gateway_config_age_seconds", "Seconds since the config was applied", registry=r)
        self.control_plane_connected = Gauge(
            "gateway_control_plane_connected", "1 while the last sync succeeded", registry=r
        )

    def set_config(self, config_sha256: str) -> None:
        """`gateway_config_info{config_sha256}` is 1 for the applied config only."""
        previous, self._config_sha256 = self._config_sha256, config_sha256
        if previous and previous != config_sha256:
            if self.multiprocess:
                self.config_info.labels(previous).set(0)  # multiprocess mode cannot remove a series
            else:
                self.config_info.remove(previous)
        self.config_info.labels(config_sha256).set(1)

    def observe(self, endpoint: str, method: str, status: int, error: str | None) -> None:
        key = (endpoint, method, status // 100)
        child = self._request_children.get(key)
        if child is None:
            child = self.requests.labels(endpoint, method if method in KNOWN_METHODS else "other", f"{status // 100}xx")
            self._request_children[key] = child
        child.inc()
        if error:
            self.errors.labels(endpoint, error).inc()

    def observe_request(self, endpoint: str, method: str, status: int, error: str | None, seconds: float) -> None:
        """One answered client request: its count by status class, its error code, its time to the head."""
        self.observe(endpoint, method, status, error)
        child = self._duration_children.get(endpoint)
        if child is None:
            child = self._duration_children[endpoint] = self.request_duration.labels(endpoint)
        child.observe(seconds)

    def observe_upstream(self, endpoint: str, seconds: float) -> None:
        child = self._upstream_children.get(endpoint)
        if child is None:
            child = self._upstream_children[endpoint] = self.upstream_duration.labels(endpoint)
        child.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
