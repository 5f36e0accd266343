"""The `breakers`, `counters` and `consumers` of a status report (ARCHITECTURE §4; shapes in configdoc/reports.py).

Built at report time from what the proxy already keeps, so the hot path does no extra work: the
counters are read from this process's Prometheus metric objects (their label children), the breakers from
`runtime.states` and the transition history the runtime records (`runtime.transitions`).

Under `--workers N` (PROMETHEUS_MULTIPROC_DIR set) each worker is its own node: a metric object's
`collect()` reads only this process's values (its own mmap file), never the merged view the
supervisor's /-/metrics shows, so each worker reports its own counts. The children are read directly
rather than through `collect()`, which costs about 0.45 ms per endpoint (seconds at 10,000 endpoints).

The consumers are counted per report epoch instead (Metrics.take_consumers): a top-100 list changes
between reports, so cumulative counts could not be turned into deltas. `bound_consumers` keeps the
top 100 per endpoint and sums the rest as `other`.
"""

from __future__ import annotations

from typing import Any

from configdoc.reports import (
    BUCKET_COUNT,
    CERTIFICATE_NAME,
    MAX_CERTIFICATE_NAMES,
    MAX_CERTIFICATES,
    MAX_CONSUMERS_PER_ENDPOINT,
    RATE_LIMITED,
    STATUS_CLASSES,
    is_endpoint_key,
    valid_dns_name,
)

from .breaker import State
from .metrics import OTHER_CONSUMER, Metrics
from .runtime import Runtime
from .tls import CertificateSet


def _empty_counters() -> dict[str, Any]:
    return {
        "requests": dict.fromkeys(STATUS_CLASSES, 0),
        "errors": {},
        "retries": 0,
        "breaker_trips": 0,
        "duration": {"buckets": [0] * BUCKET_COUNT, "sum": 0.0},
        "upstream_duration": {"buckets": [0] * BUCKET_COUNT, "sum": 0.0},
    }


def _children(metric: Any) -> list[tuple[tuple[str, ...], Any]]:
    """(label values, child) of a labelled prometheus_client metric, read straight from the children it
    keeps (prometheus_client is pinned): `collect()` would build a Sample per series and bucket, about
    0.45 ms per endpoint — seconds on the event loop at 10,000 endpoints with traffic (bench/large_config.py).
    Under `--workers N` a child's values are this process's own (its mmap file), as collect() reads them."""
    with metric._lock:
        return list(metric._metrics.items())


def build_counters(metrics: Metrics) -> dict[str, dict[str, Any]]:
    """Cumulative counters since boot per endpoint key, for endpoints with traffic (any non-zero count).
    Requests not matched to an endpoint (e.g. no_route, label "") are not reported."""
    counters: dict[str, dict[str, Any]] = {}

    def entry(endpoint: str) -> dict[str, Any] | None:
        found = counters.get(endpoint)
        if found is None and is_endpoint_key(endpoint):
            found = counters[endpoint] = _empty_counters()
        return found

    for (endpoint, _method, status_class), child in _children(metrics.requests):
        value = int(child._value.get())
        if value and status_class in STATUS_CLASSES and (found := entry(endpoint)) is not None:
            found["requests"][status_class] += value
    for (endpoint, error), child in _children(metrics.errors):
        value = int(child._value.get())
        if value and (found := entry(endpoint)) is not None:
            found["errors"][error] = found["errors"].get(error, 0) + value
    for (endpoint,), child in _children(metrics.retries):
        value = int(child._value.get())
        if value and (found := entry(endpoint)) is not None:
            found["retries"] += value
    for (endpoint, _old, new), child in _children(metrics.circuit_transitions):
        value = int(child._value.get())
        if value and new == State.OPEN.value and (found := entry(endpoint)) is not None:
            found["breaker_trips"] += value
    for field, metric in (("duration", metrics.request_duration), ("upstream_duration", metrics.upstream_duration)):
        for (endpoint,), child in _children(metric):
            buckets = [int(bucket.get()) for bucket in child._buckets]  # per bucket, +Inf last (not cumulative)
            if len(buckets) == BUCKET_COUNT and any(buckets) and (found := entry(endpoint)) is not None:
                found[field] = {"buckets": buckets, "sum": max(0.0, float(child._sum.get()))}
    return counters


def build_breakers(runtime: Runtime) -> dict[str, dict[str, Any]]:
    """Per endpoint whose breaker is not closed, is forced, or changed state this boot: its effective
    state (an override wins, §6), the override, the last reset generation acted on, and the last 20
    transitions with wall-clock time, oldest first."""
    breakers: dict[str, dict[str, Any]] = {}
    for key, state in runtime.states.items():
        breaker = state.breaker
        forced = breaker.forced()
        current = forced if forced is not None else breaker.state
        transitions = list(runtime.transitions.get(key, ()))
        if current is State.CLOSED and forced is None and not transitions:
            continue
        breakers[key] = {
            "state": current.value,
            "forced": forced.value if forced is not None else None,
            "reset_generation": int(getattr(breaker, "reset_generation", breaker._reset_generation)),
            "transitions": transitions,
        }
    return breakers


def build_certificates(certificates: CertificateSet) -> list[dict[str, Any]]:
    """The TLS listener's certificates as the report carries them (§13): name, DNS names, notAfter. A
    file name or DNS name the report format does not allow is left out (never the whole report refused
    for it), and the lists are cut at the format's bounds."""
    out: list[dict[str, Any]] = []
    for certificate in certificates.certificates:
        if len(out) >= MAX_CERTIFICATES:
            break
        if CERTIFICATE_NAME.fullmatch(certificate.label) is None:
            continue
        names = [name for name in certificate.names if valid_dns_name(name)][:MAX_CERTIFICATE_NAMES]
        out.append({"name": certificate.label, "names": names, "not_after": max(0.0, certificate.not_after)})
    return out


ConsumerCounts = dict[tuple[str, str], list[int]]


def merge_consumer_counts(into: ConsumerCounts, more: ConsumerCounts) -> ConsumerCounts:
    """Add `more` (e.g. the counts of a report that did not reach the control plane) into `into`."""
    for key, counts in more.items():
        found = into.get(key)
        if found is None:
            into[key] = list(counts)
        else:
            for index, count in enumerate(counts):
                found[index] += count
    return into


def bound_consumers(counts: ConsumerCounts, limit: int = MAX_CONSUMERS_PER_ENDPOINT) -> ConsumerCounts:
    """Per endpoint the `limit` consumers with the most requests (ties by username, so the cut is
    stable); the others' counts summed into (endpoint, OTHER_CONSUMER). Endpoint keys that are not
    `name:version` (nothing routed) are dropped."""
    by_endpoint: dict[str, list[tuple[str, list[int]]]] = {}
    for (endpoint, consumer), row in counts.items():
        by_endpoint.setdefault(endpoint, []).append((consumer, row))
    bounded: ConsumerCounts = {}
    for endpoint, rows in by_endpoint.items():
        if not is_endpoint_key(endpoint):
            continue
        named = [(consumer, row) for consumer, row in rows if consumer != OTHER_CONSUMER and any(row)]
        other = [0, 0, 0, 0, 0]
        for consumer, row in rows:
            if consumer == OTHER_CONSUMER:
                other = [a + b for a, b in zip(other, row, strict=True)]
        named.sort(key=lambda item: (-(item[1][0] + item[1][1] + item[1][2] + item[1][3]), item[0]))
        for consumer, row in named[:limit]:
            bounded[(endpoint, consumer)] = list(row)
        for _consumer, row in named[limit:]:
            other = [a + b for a, b in zip(other, row, strict=True)]
        if any(other):
            bounded[(endpoint, OTHER_CONSUMER)] = other
    return bounded


def consumers_field(bounded: ConsumerCounts, epoch: int, *, rate_limited: bool = True) -> dict[str, Any]:
    """A report's `consumers` (configdoc/reports.py) from counts bounded by `bound_consumers`; without
    the `rate_limited` counts when `rate_limited` is False (a control plane older than them)."""
    endpoints: dict[str, dict[str, Any]] = {}
    for (endpoint, consumer), row in sorted(bounded.items()):
        entry = endpoints.get(endpoint)
        if entry is None:
            entry = endpoints[endpoint] = {"top": {}, "other": dict.fromkeys(STATUS_CLASSES, 0)}
        counts: dict[str, int] = dict(zip(STATUS_CLASSES, row[:4], strict=True))
        if rate_limited and len(row) > 4 and row[4]:
            # Only when there were some: a control plane older than the field still takes every
            # report of a node whose consumers were never rate limited.
            counts[RATE_LIMITED] = row[4]
        if consumer == OTHER_CONSUMER:
            entry["other"] = counts
        else:
            entry["top"][consumer] = counts
    return {"epoch": epoch, "endpoints": endpoints}
