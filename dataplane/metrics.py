"""The data plane's Prometheus metrics (ARCHITECTURE §9). Labels never include raw paths: only
endpoint keys, methods, status classes, error codes and target URLs from the config."""

from __future__ import annotations

import asyncio
import math
import os
import time
from bisect import bisect_left
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from configdoc.reports import LATENCY_BUCKETS as BUCKETS
from configdoc.reports import MAX_CONSUMER_PAIRS, RATE_LIMITED

# The `other` consumer in `Metrics.consumers`: no username is empty (configdoc.consumers.USERNAME_RE).
OTHER_CONSUMER: Final = ""

if TYPE_CHECKING:
    from .tls import CertificateSet

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _remove(metric: Gauge, *labels: str) -> None:
    try:
        metric.remove(*labels)
    except KeyError:
        pass  # never set: nothing to remove


# Under `--workers` (Prometheus multiprocess mode) a gauge is shown per live worker pid: "liveall",
# so a dead worker's gauges leave `/-/metrics` once the supervisor marks it dead (its counters stay).
LIVE: Final = "liveall"


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
        self._decision_children: dict[tuple[str, str, str], Any] = {}
        self._pending_requests: dict[tuple[str, str, int], int] = {}
        self._pending_errors: dict[tuple[str, str], int] = {}
        self._pending_decisions: dict[tuple[str, str, str], int] = {}
        # endpoint -> [count per bucket (the histograms' upper bounds, +Inf last), sum of seconds]
        self._pending_durations: dict[str, list[Any]] = {}
        self._pending_upstream: dict[str, list[Any]] = {}
        self._bounds = [*BUCKETS, math.inf]
        # Traffic by consumer since the last status report (report.py bounds it to the top 100 per
        # endpoint): (endpoint, username) -> answers by status class [2xx, 3xx, 4xx, 5xx]. Not a
        # Prometheus label (unbounded cardinality); at most MAX_CONSUMER_PAIRS pairs, beyond that a new
        # pair counts as (endpoint, OTHER_CONSUMER).
        self.consumers: dict[tuple[str, str], list[int]] = {}
        self._flush_armed = False
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
        # §13: gRPC calls (protocol: grpc endpoints, and gateway errors answered to gRPC clients) by the
        # grpc-status the client got; their HTTP status is 200 whatever happened.
        self.grpc_responses = Counter(
            "gateway_grpc_responses", "gRPC calls answered, by grpc-status", ["endpoint", "grpc_status"], registry=r
        )
        # One per access plugin's decision (ARCHITECTURE §11), in `enforce` and `report` mode alike:
        # `allow` (passed), `deny` (refused: the client got the plugin's error), `would_deny` (report
        # mode: it would have been refused, and went through).
        self.policy_decisions = Counter(
            "gateway_policy_decisions",
            "Access plugins' decisions",
            ["endpoint", "plugin", "decision"],
            registry=r,
        )
        # rate_limit's `policy: redis` (ratelimit.py): requests its Redis could not count (an error, a
        # timeout, or the backend known down and not yet retried), counted locally or refused with 503.
        self.rate_limit_backend_errors = Counter(
            "gateway_rate_limit_backend_errors",
            "Rate-limit counts Redis could not make (counted locally or refused instead)",
            registry=r,
        )
        # Tracing (§13, tracing.py): spans that never reached the collector, by why: `queue_full` (more
        # recorded requests waiting than DATAPLANE_TRACE_QUEUE), `export_failed` (the collector did not take
        # the batch in time: down, slow, refusing).
        self.trace_spans_dropped = Counter(
            "gateway_trace_spans_dropped",
            "Trace spans dropped before reaching the collector",
            ["reason"],
            registry=r,
        )
        self.circuit_state = Gauge(
            "gateway_circuit_state", "0 closed, 1 open, 2 half-open", ["endpoint"], registry=r, multiprocess_mode=LIVE
        )
        self.circuit_transitions = Counter(
            "gateway_circuit_transitions", "Breaker state changes", ["endpoint", "from", "to"], registry=r
        )
        self.target_health = Gauge(
            "gateway_target_health", "1 routable", ["endpoint", "target"], registry=r, multiprocess_mode=LIVE
        )
        self.target_ejected = Gauge(
            "gateway_target_ejected", "1 ejected", ["endpoint", "target"], registry=r, multiprocess_mode=LIVE
        )
        self.config_revision = Gauge(
            "gateway_config_revision", "Applied revision (0 for a seed)", registry=r, multiprocess_mode=LIVE
        )
        self.config_info = Gauge(
            "gateway_config_info", "Applied config", ["config_sha256"], registry=r, multiprocess_mode=LIVE
        )
        self.config_age = Gauge(
            "gateway_config_age_seconds", "Seconds since the config was applied", registry=r, multiprocess_mode=LIVE
        )
        # TLS termination (§13): seconds until each loaded certificate's notAfter (negative once expired),
        # by the certificate file's name without `.pem`. One series per name across `--workers` (the
        # soonest, which is what an alert wants), moved by the clock (`refresh_certificates`).
        self.certificate_expiry = Gauge(
            "gateway_tls_certificate_expiry_seconds",
            "Seconds until the TLS certificate expires (negative: expired)",
            ["name"],
            registry=r,
            multiprocess_mode="livemin",
        )
        self._certificates: dict[str, float] = {}  # name -> notAfter, unix seconds
        # WebSocket tunnels (§13): open now, and the bytes relayed each way (`to_upstream`: from the
        # client; `to_client`: from the upstream), counted while a tunnel lives (count_tunnel_bytes).
        self.tunnels_active = Gauge(
            "gateway_tunnels_active", "Open WebSocket tunnels", ["endpoint"], registry=r, multiprocess_mode="livesum"
        )
        self.tunnel_bytes = Counter(
            "gateway_tunnel_bytes", "Bytes relayed through tunnels", ["endpoint", "direction"], registry=r
        )
        # endpoint -> the open tunnels (objects with to_upstream, to_client and reported_* counts)
        self.open_tunnels: dict[Any, str] = {}
        self.control_plane_connected = Gauge(
            "gateway_control_plane_connected", "1 while the last sync succeeded", registry=r, multiprocess_mode=LIVE
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

    def set_certificates(self, certificates: CertificateSet) -> None:
        """The TLS listener's current certificates (a tls.CertificateSet): a series per certificate; those
        of a removed file go (multiprocess mode cannot remove one: it stays until the worker restarts)."""
        fresh = {certificate.label: certificate.not_after for certificate in certificates.certificates}
        if not self.multiprocess:
            for name in set(self._certificates) - set(fresh):
                _remove(self.certificate_expiry, name)
        self._certificates = fresh
        self.refresh_certificates()

    def refresh_certificates(self) -> None:
        now = time.time()
        for name, not_after in self._certificates.items():
            self.certificate_expiry.labels(name).set(not_after - now)

    def retire(self, retired: Iterable[tuple[str, bool, tuple[str, ...]]]) -> None:
        """Remove the state gauges' series of endpoints (`gone`) and targets a new config no longer has,
        so a scrape shows no circuit or target that does not exist. Multiprocess mode (`--workers`)
        cannot remove a series from a worker's file: there they stay until the worker restarts."""
        if self.multiprocess:
            return
        for key, gone, urls in retired:
            if gone:
                _remove(self.circuit_state, key)
            for url in urls:
                _remove(self.target_health, key, url)
                _remove(self.target_ejected, key, url)

    # --- per request: added up here, handed to prometheus_client once per turn of the event loop -------

    def trace_spans_dropped_count(self, reason: str, count: int) -> None:
        """Spans that never reached the collector (tracing.py); called from the exporter's thread too
        (prometheus_client's counters take a lock)."""
        self.trace_spans_dropped.labels(reason).inc(count)

    def observe_request(self, endpoint: str, method: str, status: int, error: str | None, seconds: float) -> None:
        """One answered client request: its count by status class, its error code, its time to the head."""
        key = (endpoint, method, status // 100)
        requests = self._pending_requests
        requests[key] = requests.get(key, 0) + 1
        if error:
            errors = self._pending_errors
            errors[(endpoint, error)] = errors.get((endpoint, error), 0) + 1
        self._add(self._pending_durations, endpoint, seconds)

    def observe_grpc(self, endpoint: str, code: int) -> None:
        """One gRPC call answered with grpc-status `code` (rare next to requests: counted at once)."""
        self.grpc_responses.labels(endpoint, str(code)).inc()

    def observe_consumer(self, endpoint: str, consumer: str, status: int, error: str | None = None) -> None:
        """One answered request an authentication plugin named `consumer` for (only called then, so an
        endpoint without authentication pays nothing). Counts are [2xx, 3xx, 4xx, 5xx, rate_limited]:
        a 429 `rate_limited` is in 4xx and in the last count too (the report's `rate_limited`)."""
        index = status // 100 - 2
        if not 0 <= index <= 3:
            return  # 1xx (an upgrade): not in the report's status classes
        consumers = self.consumers
        counts = consumers.get((endpoint, consumer))
        if counts is None:
            key = (endpoint, consumer) if len(consumers) < MAX_CONSUMER_PAIRS else (endpoint, OTHER_CONSUMER)
            counts = consumers.get(key)
            if counts is None:
                counts = consumers[key] = [0, 0, 0, 0, 0]
        counts[index] += 1
        if error == RATE_LIMITED:
            counts[4] += 1

    def take_consumers(self) -> dict[tuple[str, str], list[int]]:
        """The traffic by consumer counted since the last call, and a fresh count from now on (a report
        epoch). Call from the event loop's thread."""
        taken, self.consumers = self.consumers, {}
        return taken

    @property
    def decisions(self) -> dict[tuple[str, str, str], int]:
        """Where the access plugins' decisions are counted as they are made (Exchange.decide, through
        Exchange.use_chain): (endpoint, plugin, decision) -> count since the last flush, which always
        follows within the loop turn (every request ends in `observe_request`, which arms it). The one
        dict lives as long as this object, so an exchange may hold it across flushes."""
        return self._pending_decisions

    def observe_upstream(self, endpoint: str, seconds: float) -> None:
        self._add(self._pending_upstream, endpoint, seconds)

    def _add(self, pending: dict[str, list[Any]], endpoint: str, seconds: float) -> None:
        entry = pending.get(endpoint)
        if entry is None:
            entry = pending[endpoint] = [[0] * len(self._bounds), 0.0]
        # The bucket prometheus_client's `observe` would pick: the first upper bound >= seconds.
        entry[0][bisect_left(self._bounds, seconds)] += 1
        entry[1] += seconds
        self._arm()

    def _arm(self) -> None:
        if not self._flush_armed:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()  # no event loop (a script, a test): at once
                return
            self._flush_armed = True
            loop.call_soon(self.flush)

    def flush(self) -> None:
        """Hand what was observed since the last flush to prometheus_client: one `inc` per series and
        bucket touched instead of ~5 locked increments per request (a few % of the proxy's CPU at
        thousands of requests/s; bench/README.md). Runs at the end of the loop turn the requests ended
        in, and before anything reads the metrics (`render`, the status report). Call it from the event
        loop's thread only."""
        self._flush_armed = False
        requests, self._pending_requests = self._pending_requests, {}
        errors, self._pending_errors = self._pending_errors, {}
        durations, self._pending_durations = self._pending_durations, {}
        upstream, self._pending_upstream = self._pending_upstream, {}
        decisions = dict(self._pending_decisions)  # emptied in place: exchanges hold this very dict
        self._pending_decisions.clear()
        for (endpoint, method, status_class), count in requests.items():
            key = (endpoint, method, status_class)
            child = self._request_children.get(key)
            if child is None:
                label = method if method in KNOWN_METHODS else "other"
                child = self._request_children[key] = self.requests.labels(endpoint, label, f"{status_class}xx")
            child.inc(count)
        for (endpoint, error), count in errors.items():
            self.errors.labels(endpoint, error).inc(count)
        for (endpoint, plugin, decision), count in decisions.items():
            decision_child = self._decision_children.get((endpoint, plugin, decision))
            if decision_child is None:
                decision_child = self._decision_children[(endpoint, plugin, decision)] = self.policy_decisions.labels(
                    endpoint, plugin, decision
                )
            decision_child.inc(count)
        for pending, metric, children in (
            (durations, self.request_duration, self._duration_children),
            (upstream, self.upstream_duration, self._upstream_children),
        ):
            for endpoint, (counts, total) in pending.items():
                child = children.get(endpoint)
                if child is None:
                    child = children[endpoint] = metric.labels(endpoint)
                # A histogram child's buckets and sum (prometheus_client is pinned): what `observe` adds to.
                for index, count in enumerate(counts):
                    if count:
                        child._buckets[index].inc(count)
                child._sum.inc(total)

    def tunnel_opened(self, tunnel: Any, endpoint: str) -> None:
        self.open_tunnels[tunnel] = endpoint
        self.tunnels_active.labels(endpoint).inc()

    def tunnel_closed(self, tunnel: Any) -> None:
        endpoint = self.open_tunnels.pop(tunnel, None)
        if endpoint is not None:
            self._count_bytes(tunnel, endpoint)
            self.tunnels_active.labels(endpoint).dec()

    def count_tunnel_bytes(self) -> None:
        """Add what the open tunnels relayed since the last count to `gateway_tunnel_bytes_total` (before
        a scrape, and in a worker with its gauges): a long-lived tunnel's traffic shows while it lives,
        without a counter increment per chunk relayed."""
        for tunnel, endpoint in self.open_tunnels.items():
            self._count_bytes(tunnel, endpoint)

    def _count_bytes(self, tunnel: Any, endpoint: str) -> None:
        up = tunnel.to_upstream - tunnel.reported_to_upstream
        down = tunnel.to_client - tunnel.reported_to_client
        if up:
            self.tunnel_bytes.labels(endpoint, "to_upstream").inc(up)
            tunnel.reported_to_upstream = tunnel.to_upstream
        if down:
            self.tunnel_bytes.labels(endpoint, "to_client").inc(down)
            tunnel.reported_to_client = tunnel.to_client

    def render(self) -> bytes:
        self.flush()
        self.count_tunnel_bytes()
        return generate_latest(self.registry)
