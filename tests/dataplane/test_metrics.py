"""The data plane's request metrics are added up per event-loop turn (dataplane/metrics.py `flush`): what
a scrape shows must be exactly what observing every request one by one in prometheus_client shows."""

from __future__ import annotations

import asyncio
import math
import random

from prometheus_client.parser import text_string_to_metric_families

from dataplane.metrics import KNOWN_METHODS, Metrics

ENDPOINTS = ["users:v1", "orders:v2", ""]  # "" is how an unrouted request is labelled
METHODS = ["GET", "POST", "PURGE"]
ERRORS = [None, None, "upstream_timeout", "no_route"]


def observations(seed: int, count: int) -> list[tuple[str, str, int, str | None, float, float]]:
    rng = random.Random(seed)
    # Durations on and around the bucket bounds too, where "the first bound >= the value" matters.
    edges = [0.001, 0.0025, 0.005, 0.01, 0.25, 1.0, 60.0, 61.0, 0.0]
    return [
        (
            rng.choice(ENDPOINTS),
            rng.choice(METHODS),
            rng.choice([200, 204, 302, 404, 502, 503]),
            rng.choice(ERRORS),
            rng.choice(edges) if rng.random() < 0.3 else rng.random() * 3,
            rng.random() * 0.5,
        )
        for _ in range(count)
    ]


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape by name and labels, without the `_created` timestamps."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def same_scrape(got: bytes, expected: bytes) -> bool:
    """Equal samples; sums of seconds may differ in the last bits (added up in another order)."""
    a, b = samples(got), samples(expected)
    return a.keys() == b.keys() and all(math.isclose(a[key], b[key], rel_tol=1e-9) for key in a)


def one_by_one(seen: list[tuple[str, str, int, str | None, float, float]]) -> bytes:
    """The reference: each request straight into prometheus_client, as it was done before batching."""
    metrics = Metrics()
    for endpoint, method, status, error, seconds, upstream in seen:
        label = method if method in KNOWN_METHODS else "other"
        metrics.requests.labels(endpoint, label, f"{status // 100}xx").inc()
        if error:
            metrics.errors.labels(endpoint, error).inc()
        metrics.request_duration.labels(endpoint).observe(seconds)
        metrics.upstream_duration.labels(endpoint).observe(upstream)
    return metrics.render()


def test_requests_added_up_per_loop_turn_scrape_exactly_as_observed_one_by_one() -> None:
    seen = observations(seed=3, count=2_000)
    metrics = Metrics()

    async def serve() -> None:
        # Several turns of the loop, each ending a burst of requests, as under load.
        for first in range(0, len(seen), 250):
            for endpoint, method, status, error, seconds, upstream in seen[first : first + 250]:
                metrics.observe_upstream(endpoint, upstream)
                metrics.observe_request(endpoint, method, status, error, seconds)
            await asyncio.sleep(0)

    asyncio.run(serve())
    got, expected = metrics.render(), one_by_one(seen)
    assert len(samples(expected)) > 100  # every endpoint, method label, class, error and bucket seen
    assert same_scrape(got, expected)


def test_a_scrape_in_the_same_turn_as_the_requests_already_counts_them() -> None:
    metrics = Metrics()

    async def serve_and_scrape() -> bytes:
        metrics.observe_request("users:v1", "GET", 200, None, 0.003)
        return metrics.render()  # no await in between: the flush has not run yet on its own

    text = asyncio.run(serve_and_scrape()).decode()
    assert 'gateway_requests_total{endpoint="users:v1",method="GET",status_class="2xx"} 1.0' in text
    assert 'gateway_request_duration_seconds_bucket{endpoint="users:v1",le="0.005"} 1.0' in text
