"""The `breakers` and `counters` of a status report (ARCHITECTURE §4; shapes in configdoc/reports.py).

Built at report time from what the proxy already keeps, so the hot path does no extra work: the
counters are read from this process's Prometheus metric objects (`collect()`), the breakers from
`runtime.states` and the transition history the runtime records (`runtime.transitions`).

Under `--workers N` (PROMETHEUS_MULTIPROC_DIR set) each worker is its own node: a metric object's
`collect()` reads only this process's values (its own mmap file), never the merged view the
supervisor's /-/metrics shows, so each worker reports its own counts.
"""

from __future__ import annotations

from typing import Any

from configdoc.reports import BUCKET_COUNT, STATUS_CLASSES, cumulative_to_buckets, is_endpoint_key

from .breaker import State
from .metrics import Metrics
from .runtime import Runtime


def _empty_counters() -> dict[str, Any]:
    return {
        "requests": dict.fromkeys(STATUS_CLASSES, 0),
        "errors": {},
        "retries": 0,
        "breaker_trips": 0,
        "duration": {"buckets": [0] * BUCKET_COUNT, "sum": 0.0},
        "upstream_duration": {"buckets": [0] * BUCKET_COUNT, "sum": 0.0},
    }


def _samples(metric: Any) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for family in metric.collect() for s in family.samples]


def _histograms(metric: Any) -> dict[str, dict[str, Any]]:
    """Per endpoint: {"buckets": per-bucket counts, "sum": seconds} from a labelled Histogram."""
    cumulative: dict[str, list[tuple[float, float]]] = {}
    sums: dict[str, float] = {}
    for name, labels, value in _samples(metric):
        endpoint = labels.get("endpoint", "")
        if name.endswith("_bucket"):
            cumulative.setdefault(endpoint, []).append((float(labels["le"]), value))
        elif name.endswith("_sum"):
            sums[endpoint] = value
    result = {}
    for endpoint, points in cumulative.items():
        counts = [value for _, value in sorted(points)]
        if len(counts) == BUCKET_COUNT:
            result[endpoint] = {"buckets": cumulative_to_buckets(counts), "sum": max(0.0, sums.get(endpoint, 0.0))}
    return result


def build_counters(metrics: Metrics) -> dict[str, dict[str, Any]]:
    """Cumulative counters since boot per endpoint key, for endpoints with traffic (any non-zero count).
    Requests not matched to an endpoint (e.g. no_route, label "") are not reported."""
    counters: dict[str, dict[str, Any]] = {}

    def entry(endpoint: str) -> dict[str, Any] | None:
        if not is_endpoint_key(endpoint):
            return None
        return counters.setdefault(endpoint, _empty_counters())

    for name, labels, value in _samples(metrics.requests):
        if name.endswith("_total") and labels.get("status_class") in STATUS_CLASSES and value:
            found = entry(labels.get("endpoint", ""))
            if found is not None:
                found["requests"][labels["status_class"]] += int(value)
    for name, labels, value in _samples(metrics.errors):
        if name.endswith("_total") and value:
            found = entry(labels.get("endpoint", ""))
            if found is not None:
                found["errors"][labels["error"]] = found["errors"].get(labels["error"], 0) + int(value)
    for name, labels, value in _samples(metrics.retries):
        if name.endswith("_total") and value:
            found = entry(labels.get("endpoint", ""))
            if found is not None:
                found["retries"] += int(value)
    for name, labels, value in _samples(metrics.circuit_transitions):
        if name.endswith("_total") and labels.get("to") == State.OPEN.value and value:
            found = entry(labels.get("endpoint", ""))
            if found is not None:
                found["breaker_trips"] += int(value)
    for field, metric in (("duration", metrics.request_duration), ("upstream_duration", metrics.upstream_duration)):
        for endpoint, histogram in _histograms(metric).items():
            if any(histogram["buckets"]):
                found = entry(endpoint)
                if found is not None:
                    found[field] = histogram
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
