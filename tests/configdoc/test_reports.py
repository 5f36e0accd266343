"""The report shapes' validators and the histogram helpers of configdoc/reports.py."""

from __future__ import annotations

import bisect
import copy
from typing import Any

import pytest

from configdoc.reports import (
    BUCKET_COUNT,
    LATENCY_BUCKETS,
    histogram_percentile,
    merge_histograms,
    validate_breakers,
    validate_counters,
)


def histogram_of(observations: list[float]) -> list[int]:
    buckets = [0] * BUCKET_COUNT
    for value in observations:
        buckets[bisect.bisect_left(LATENCY_BUCKETS, value)] += 1  # first bound >= value, like Prometheus' le
    return buckets


def counters() -> dict[str, Any]:
    return {
        "users:v1": {
            "requests": {"2xx": 5, "3xx": 0, "4xx": 1, "5xx": 2},
            "errors": {"upstream_timeout": 1, "circuit_open": 1},
            "retries": 1,
            "breaker_trips": 1,
            "duration": {"buckets": histogram_of([0.002, 0.02] * 4), "sum": 0.088},
            "upstream_duration": {"buckets": histogram_of([0.002] * 6), "sum": 0.012},
        }
    }


def breakers() -> dict[str, Any]:
    return {
        "users:v1": {
            "state": "half_open",
            "forced": None,
            "reset_generation": 2,
            "transitions": [
                {"from": "closed", "to": "open", "at": 1700000000.5},
                {"from": "open", "to": "half_open", "at": 1700000060},
            ],
        }
    }


def test_well_formed_counters_and_breakers_have_no_problems() -> None:
    assert validate_counters(counters()) == {}
    assert validate_breakers(breakers()) == {}
    assert validate_counters({}) == {} == validate_breakers({})


def broken(make: Any, path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    data = make()
    target = data
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (broken(counters, ("users:v1", "requests", "2xx"), -1), 'counters["users:v1"].requests.2xx'),
        (broken(counters, ("users:v1", "requests", "2xx"), 1.5), 'counters["users:v1"].requests.2xx'),
        (broken(counters, ("users:v1", "requests", "2xx"), True), 'counters["users:v1"].requests.2xx'),
        (broken(counters, ("users:v1", "requests", "5xx"), KeyError), 'counters["users:v1"].requests.5xx'),
        (broken(counters, ("users:v1", "requests", "1xx"), 3), 'counters["users:v1"].requests.1xx'),
        (broken(counters, ("users:v1", "requests"), 10), 'counters["users:v1"].requests'),
        (broken(counters, ("users:v1", "errors", "Bad Code"), 1), 'counters["users:v1"].errors.Bad Code'),
        (
            broken(counters, ("users:v1", "errors", "upstream_timeout"), "1"),
            'counters["users:v1"].errors.upstream_timeout',
        ),
        (broken(counters, ("users:v1", "retries"), None), 'counters["users:v1"].retries'),
        (broken(counters, ("users:v1", "breaker_trips"), KeyError), 'counters["users:v1"].breaker_trips'),
        (broken(counters, ("users:v1", "duration", "buckets"), [1] * 15), 'counters["users:v1"].duration.buckets'),
        (
            broken(counters, ("users:v1", "upstream_duration", "sum"), -0.1),
            'counters["users:v1"].upstream_duration.sum',
        ),
        (broken(counters, ("users:v1", "surprise"), 1), 'counters["users:v1"].surprise'),
        ({"no key": counters()["users:v1"]}, 'counters["no key"]'),
        ({"users:v1": []}, 'counters["users:v1"]'),
    ],
)
def test_each_malformed_counter_is_named_by_its_path(data: Any, field: str) -> None:
    assert field in validate_counters(data)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (broken(breakers, ("users:v1", "state"), "ajar"), 'breakers["users:v1"].state'),
        (broken(breakers, ("users:v1", "forced"), "half_open"), 'breakers["users:v1"].forced'),
        (broken(breakers, ("users:v1", "reset_generation"), -1), 'breakers["users:v1"].reset_generation'),
        (broken(breakers, ("users:v1", "transitions"), [{}] * 21), 'breakers["users:v1"].transitions'),
        (broken(breakers, ("users:v1", "transitions", 1, "to"), "gone"), 'breakers["users:v1"].transitions[1].to'),
        (broken(breakers, ("users:v1", "transitions", 0, "at"), "noon"), 'breakers["users:v1"].transitions[0].at'),
        (broken(breakers, ("users:v1", "state"), KeyError), 'breakers["users:v1"].state'),
    ],
)
def test_each_malformed_breaker_is_named_by_its_path(data: Any, field: str) -> None:
    assert field in validate_breakers(data)


def test_not_an_object_is_named_by_the_field() -> None:
    assert "counters" in validate_counters([])
    assert "breakers" in validate_breakers("open")


def test_percentiles_interpolate_within_the_bucket_holding_the_rank() -> None:
    # 50 observations at 2 ms (bucket 1-2.5 ms) and 50 at 20 ms (bucket 10-25 ms).
    buckets = histogram_of([0.002] * 50 + [0.02] * 50)
    assert histogram_percentile(buckets, 0.5) == pytest.approx(0.0025)  # rank 50: the top of the first bucket
    assert histogram_percentile(buckets, 0.25) == pytest.approx(0.001 + 0.0015 * 25 / 50)
    assert histogram_percentile(buckets, 0.99) == pytest.approx(0.01 + 0.015 * 49 / 50)
    assert histogram_percentile(buckets, 0.0) == pytest.approx(0.001)


def test_percentiles_of_a_known_set_land_in_the_true_values_bucket() -> None:
    observations = sorted([0.0004 * i for i in range(1, 1001)])  # 0.4 ms .. 400 ms
    buckets = histogram_of(observations)
    for q in (0.5, 0.95, 0.99):
        true = observations[int(q * len(observations)) - 1]
        estimate = histogram_percentile(buckets, q)
        assert estimate is not None
        index = bisect.bisect_left(LATENCY_BUCKETS, true)
        lower = LATENCY_BUCKETS[index - 1] if index else 0.0
        assert lower <= estimate <= LATENCY_BUCKETS[index]


def test_no_observations_has_no_percentile_and_the_open_bucket_answers_the_last_bound() -> None:
    assert histogram_percentile([0] * BUCKET_COUNT, 0.5) is None
    assert histogram_percentile(histogram_of([120.0]), 0.99) == 60.0


def test_merge_adds_bucket_by_bucket() -> None:
    first, second = histogram_of([0.002, 0.3]), histogram_of([0.002, 100.0])
    merged = merge_histograms([first, second])
    assert merged == histogram_of([0.002, 0.3, 0.002, 100.0])
    assert merge_histograms([]) == [0] * BUCKET_COUNT


def test_the_data_planes_metrics_use_these_buckets() -> None:
    from dataplane.metrics import BUCKETS

    assert BUCKETS == LATENCY_BUCKETS
    assert copy.copy(LATENCY_BUCKETS) == tuple(sorted(LATENCY_BUCKETS))
