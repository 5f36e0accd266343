"""Weighted round-robin, outlier ejection, retry rules and the retry budget (ARCHITECTURE §5)."""

from __future__ import annotations

from collections import Counter

from configdoc import effective_endpoint
from dataplane.balancer import Balancer
from dataplane.errors import (
    UpstreamConnectError,
    UpstreamConnectTimeout,
    UpstreamProtocolError,
    UpstreamReset,
    UpstreamTimeout,
)
from dataplane.policies import RetryPolicy, compile_retries
from dataplane.retry import RetryBudget, may_retry, per_try_timeout
from dataplane.snapshot import Target, compile_target


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def targets(*weights: int, enabled: bool = True) -> list[Target]:
    return [
        compile_target({"url": f"http://127.0.0.1:{9000 + i}", "weight": w, "enabled": enabled})
        for i, w in enumerate(weights)
    ]


OUTLIER = {"consecutive_failures": 2, "base_ejection_seconds": 30, "max_ejection_percent": 50}
RAW_RETRIES = effective_endpoint({"name": "e", "version": "v1", "targets": [{"url": "http://127.0.0.1"}]})["retries"]
RETRIES = compile_retries(RAW_RETRIES)


def retries(**fields: object) -> RetryPolicy:
    return compile_retries({**RAW_RETRIES, **fields})


def test_round_robin_follows_the_weights_smoothly() -> None:
    b = Balancer(targets(5, 1, 1), OUTLIER)
    picks = [b.pick() for _ in range(7)]
    counts = Counter(t.url for t in picks if t)
    assert counts == {"http://127.0.0.1:9000": 5, "http://127.0.0.1:9001": 1, "http://127.0.0.1:9002": 1}
    assert picks[0] != picks[1] or picks[1] != picks[2]  # smooth: the heavy target is interleaved


def test_disabled_targets_get_no_traffic() -> None:
    ts = targets(1, 1)
    off = compile_target({"url": "http://127.0.0.1:9100", "weight": 100, "enabled": False})
    b = Balancer([*ts, off], OUTLIER)
    assert off not in {b.pick() for _ in range(20)}


def test_another_target_is_preferred_for_a_retry() -> None:
    ts = targets(100, 1)
    b = Balancer(ts, OUTLIER)
    assert b.pick(exclude=[ts[0]]) == ts[1]


def test_a_target_is_ejected_after_consecutive_failures_for_a_growing_time() -> None:
    clock = Clock()
    ts = targets(1, 1)
    b = Balancer(ts, OUTLIER, clock=clock)
    b.record(ts[0], failed=True)
    assert b.record(ts[0], failed=True)
    assert {b.pick() for _ in range(4)} == {ts[1]}
    clock.now += 30
    assert not b.is_ejected(ts[0])
    b.record(ts[0], failed=True)
    b.record(ts[0], failed=True)
    clock.now += 59
    assert b.is_ejected(ts[0])


def test_a_single_target_is_never_ejected() -> None:
    ts = targets(1)
    b = Balancer(ts, {**OUTLIER, "max_ejection_percent": 100, "consecutive_failures": 1})
    for _ in range(10):
        b.record(ts[0], failed=True)
    assert b.pick() == ts[0]


def test_ejection_never_exceeds_max_ejection_percent_rounded_down() -> None:
    ts = targets(1, 1, 1)
    b = Balancer(ts, OUTLIER)  # 50 % of 3 = 1.5 → 1
    for target in ts:
        b.record(target, failed=True)
        b.record(target, failed=True)
    assert sum(b.is_ejected(t) for t in ts) == 1


def test_a_connect_error_or_connect_timeout_retries_any_method() -> None:
    assert may_retry(RETRIES, "POST", UpstreamConnectError(), replayable=False)
    assert may_retry(RETRIES, "POST", UpstreamConnectTimeout(), replayable=False)


def test_timeouts_retry_only_idempotent_methods_unless_allowed() -> None:
    policy = retries(on=["connect_error", "timeout"])
    assert may_retry(policy, "GET", UpstreamTimeout(), replayable=True)
    assert not may_retry(policy, "POST", UpstreamTimeout(), replayable=True)
    assert may_retry(retries(on=["timeout"], retry_non_idempotent=True), "POST", UpstreamTimeout(), replayable=True)


def test_a_condition_not_listed_is_not_retried() -> None:
    assert not may_retry(RETRIES, "GET", UpstreamTimeout(), replayable=True)
    # A connect timeout is a connect error's kind: `timeout` alone does not retry it.
    assert not may_retry(retries(on=["timeout"]), "GET", UpstreamConnectTimeout(), replayable=True)


def test_a_reset_or_garbage_is_never_retried_whatever_the_policy() -> None:
    policy = retries(on=["connect_error", "timeout", "5xx"])
    assert not may_retry(policy, "GET", UpstreamReset(), replayable=True)
    assert not may_retry(policy, "GET", UpstreamProtocolError(), replayable=True)


def test_a_body_too_large_to_replay_is_not_retried_after_it_was_sent() -> None:
    assert not may_retry(retries(on=["5xx"]), "PUT", None, replayable=False)


def test_two_targets_may_both_be_ejected_at_100_percent() -> None:
    ts = targets(1, 1)
    b = Balancer(ts, {**OUTLIER, "max_ejection_percent": 100, "consecutive_failures": 1})
    assert b.record(ts[0], failed=True) and b.record(ts[1], failed=True)
    assert b.pick() is None


def test_the_per_try_timeout_defaults_to_timeout_over_attempts() -> None:
    assert per_try_timeout(retries(attempts=3), 30) == 10
    assert per_try_timeout(retries(per_try_timeout=4), 30) == 4


def test_the_budget_allows_three_retries_with_little_traffic() -> None:
    budget = RetryBudget(clock=Clock())
    budget.record_request()
    assert [budget.try_spend() for _ in range(4)] == [True, True, True, False]


def test_the_budget_caps_retries_at_a_fifth_of_requests_in_ten_seconds() -> None:
    clock = Clock()
    budget = RetryBudget(clock=clock)
    granted = 0
    for _ in range(100):
        budget.record_request()
        granted += budget.try_spend()
    assert granted == 20
    clock.now += 10.1
    budget.record_request()
    assert budget.try_spend()


def test_the_balancer_says_when_the_first_ejected_target_returns() -> None:
    clock = Clock()
    ts = targets(1, 1)
    b = Balancer(ts, {**OUTLIER, "max_ejection_percent": 100}, clock=clock)
    assert b.seconds_until_routable() is None
    for target in ts:
        b.record(target, failed=True)
        b.record(target, failed=True)
    clock.now += 10
    assert b.pick() is None
    assert b.seconds_until_routable() == 20
