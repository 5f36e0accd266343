"""Uptime and latency percentiles (pure functions over probe outcomes and histogram buckets)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from .models import LATENCY_BUCKETS_MS


def bucket_index(latency_ms: float) -> int:
    """The histogram bucket of one latency: the first bound it does not exceed (the last one: above all)."""
    for index, bound in enumerate(LATENCY_BUCKETS_MS):
        if latency_ms <= bound:
            return index
    return len(LATENCY_BUCKETS_MS)


def empty_buckets() -> list[int]:
    return [0] * (len(LATENCY_BUCKETS_MS) + 1)


def merge_buckets(histograms: Iterable[Sequence[int]]) -> list[int]:
    merged = empty_buckets()
    for histogram in histograms:
        for index, count in enumerate(histogram[: len(merged)]):
            merged[index] += count
    return merged


def uptime(checks: int, failures: int) -> float | None:
    """Share of successful probes, 0..1; None without probes."""
    return None if checks == 0 else (checks - failures) / checks


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..1) of exact values, as for the last 100 results."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def bucket_percentile(buckets: Sequence[int], q: float) -> float | None:
    """Percentile from a merged histogram: the upper bound of the bucket holding the nearest-rank
    sample (like Prometheus' histogram_quantile, without interpolation). The open top bucket answers
    with the last bound, meaning "at least this". None without samples."""
    total = sum(buckets)
    if total == 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for index, count in enumerate(buckets):
        seen += count
        if seen >= rank:
            return LATENCY_BUCKETS_MS[min(index, len(LATENCY_BUCKETS_MS) - 1)]
    return LATENCY_BUCKETS_MS[-1]
