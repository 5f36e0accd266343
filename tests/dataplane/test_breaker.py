"""The circuit breaker's state machine (ARCHITECTURE §6) on an injected clock."""

from __future__ import annotations

import random
from typing import Any

from configdoc import effective_breaker_policy
from dataplane.breaker import CircuitBreaker, ResponseCache, State


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, **policy: Any) -> tuple[CircuitBreaker, list[tuple[str, str]]]:
    transitions: list[tuple[str, str]] = []
    b = CircuitBreaker(
        effective_breaker_policy({"name": "p", **policy}),
        clock=clock,
        on_transition=lambda old, new: transitions.append((old.value, new.value)),
    )
    return b, transitions


def call(b: CircuitBreaker, *, failed: bool) -> bool:
    permit = b.acquire()
    if permit is None:
        return False
    b.record(permit, failed=failed)
    return True


def test_a_closed_circuit_opens_after_the_consecutive_failure_threshold() -> None:
    clock = Clock()
    b, transitions = breaker(clock, failure_threshold=3)
    for _ in range(2):
        call(b, failed=True)
    assert b.state is State.CLOSED
    call(b, failed=True)
    assert b.state is State.OPEN
    assert transitions == [("closed", "open")]


def test_a_success_resets_the_consecutive_failure_count() -> None:
    b, _ = breaker(Clock(), failure_threshold=3)
    for failed in (True, True, False, True, True):
        call(b, failed=failed)
    assert b.state is State.CLOSED


def test_the_rate_rule_opens_once_the_window_has_minimum_calls() -> None:
    clock = Clock()
    b, _ = breaker(clock, failure_threshold=1000, failure_rate_threshold=50, minimum_calls=10, window_seconds=30)
    for index in range(9):
        call(b, failed=index % 2 == 0)  # 5 of 9 failed, but under minimum_calls
    assert b.state is State.CLOSED
    call(b, failed=False)  # 5 of 10 = 50 %
    assert b.state is State.OPEN


def test_the_rate_rule_forgets_calls_older_than_the_window() -> None:
    clock = Clock()
    b, _ = breaker(clock, failure_threshold=1000, failure_rate_threshold=50, minimum_calls=4, window_seconds=10)
    for _ in range(3):
        call(b, failed=True)
    clock.now += 11
    for _ in range(3):
        call(b, failed=False)
    call(b, failed=True)
    assert b.state is State.CLOSED


def test_the_rate_rule_opens_exactly_when_a_recount_of_the_window_says_so() -> None:
    """The window keeps running counts; a recount of every call in the last window_seconds, done
    here from the outcomes the test itself sent, must agree on every call of a random walk."""
    rng = random.Random(11)
    for walk in range(30):
        clock = Clock()
        policy = {"failure_rate_threshold": rng.choice([10, 35, 50, 90]), "minimum_calls": rng.choice([1, 5, 20])}
        b, transitions = breaker(clock, failure_threshold=100_000, window_seconds=10, **policy)
        sent: list[tuple[float, bool]] = []
        for _ in range(300):
            clock.now += rng.random() * rng.choice([0.05, 2.0])
            failed = rng.random() < 0.3
            assert call(b, failed=failed), f"walk {walk}: the circuit opened earlier than the recount says"
            sent.append((clock.now, failed))
            recent = [f for at, f in sent if at >= clock.now - 10]
            should_open = len(recent) >= policy["minimum_calls"] and (
                sum(recent) * 100 >= policy["failure_rate_threshold"] * len(recent)
            )
            assert (b.state is State.OPEN) == should_open, f"walk {walk}, call {len(sent)}"
            if should_open:
                assert transitions == [("closed", "open")]
                break


def test_an_open_circuit_lets_nothing_through_until_the_reset_timeout() -> None:
    clock = Clock()
    b, _ = breaker(clock, failure_threshold=1, reset_timeout=60)
    call(b, failed=True)
    clock.now += 59.9
    assert b.acquire() is None
    assert b.retry_after() == 1


def test_after_the_reset_timeout_the_next_request_finds_half_open() -> None:
    clock = Clock()
    b, transitions = breaker(clock, failure_threshold=1, reset_timeout=60)
    call(b, failed=True)
    clock.now += 60
    assert b.state is State.HALF_OPEN
    assert transitions == [("closed", "open"), ("open", "half_open")]


def test_half_open_allows_at_most_half_open_max_calls_probes_in_flight() -> None:
    clock = Clock()
    b, _ = breaker(clock, failure_threshold=1, reset_timeout=1, half_open_max_calls=2, success_threshold=2)
    call(b, failed=True)
    clock.now += 1
    first, second, third = b.acquire(), b.acquire(), b.acquire()
    assert first is not None and first.probe
    assert second is not None and second.probe
    assert third is None
    b.release(first)
    assert b.acquire() is not None


def test_success_threshold_consecutive_probe_successes_close_the_circuit() -> None:
    clock = Clock()
    b, transitions = breaker(clock, failure_threshold=1, reset_timeout=1, half_open_max_calls=3, success_threshold=2)
    call(b, failed=True)
    clock.now += 1
    call(b, failed=False)
    assert b.state is State.HALF_OPEN
    call(b, failed=False)
    assert b.state is State.CLOSED
    assert transitions[-1] == ("half_open", "closed")


def test_a_failed_probe_reopens_the_circuit_and_restarts_the_timer() -> None:
    clock = Clock()
    b, _ = breaker(clock, failure_threshold=1, reset_timeout=10)
    call(b, failed=True)
    clock.now += 10
    call(b, failed=True)
    assert b.state is State.OPEN
    clock.now += 9
    assert b.state is State.OPEN
    clock.now += 1
    assert b.state is State.HALF_OPEN


def test_an_operator_can_force_the_circuit_open_until_a_deadline() -> None:
    clock = Clock()
    b, _ = breaker(clock)
    b.force(State.OPEN, seconds=30)
    assert b.acquire() is None
    clock.now += 30
    assert b.acquire() is not None


def test_a_forced_state_is_what_the_gauge_and_retry_after_show() -> None:
    clock = Clock()
    b, _ = breaker(clock, failure_threshold=1, reset_timeout=10)
    b.force(State.OPEN, seconds=45)
    assert b.current_state_gauge() == State.OPEN.gauge
    assert b.retry_after() == 45  # the end of the override, not a probe that will not be let through
    clock.now += 40
    assert b.retry_after() == 5
    b.force(State.OPEN)  # no end: the policy's reset_timeout is the hint
    assert b.retry_after() == 10
    b.force(None)
    call(b, failed=True)  # opens the circuit
    b.force(State.CLOSED)
    assert b.current_state_gauge() == State.CLOSED.gauge
    b.force(None)
    assert b.current_state_gauge() == State.OPEN.gauge


def test_a_circuit_forced_closed_keeps_traffic_flowing_through_failures() -> None:
    b, _ = breaker(Clock(), failure_threshold=1)
    b.force(State.CLOSED)
    for _ in range(5):
        assert call(b, failed=True)
    b.force(None)
    call(b, failed=True)
    assert b.acquire() is None


def test_a_reset_is_acted_on_once_per_generation() -> None:
    b, transitions = breaker(Clock(), failure_threshold=1)
    call(b, failed=True)
    assert b.reset(1)
    assert b.state is State.CLOSED
    call(b, failed=True)
    assert not b.reset(1)
    assert b.state is State.OPEN
    assert transitions == [("closed", "open"), ("open", "closed"), ("closed", "open")]


def test_a_control_plane_override_forces_the_circuit_until_its_expiry() -> None:
    clock = Clock()
    b, _ = breaker(clock)
    b.apply_override({"force": "open", "until": 1_000_060.0, "reset_generation": 0}, wall_now=1_000_000.0)
    assert b.acquire() is None
    clock.now += 60
    assert b.acquire() is not None
    b.apply_override({"force": "open", "until": 999_999.0}, wall_now=1_000_000.0)  # already expired
    assert b.acquire() is not None


def test_failure_statuses_accept_classes_and_numbers() -> None:
    b, _ = breaker(Clock(), failure_statuses=["5xx", 429])
    assert b.is_failure_status(503) and b.is_failure_status(429)
    assert not b.is_failure_status(404)


def test_random_walks_never_break_the_state_machines_invariants() -> None:
    rng = random.Random(5)
    for _ in range(200):
        clock = Clock()
        b, transitions = breaker(
            clock,
            failure_threshold=rng.randint(1, 4),
            reset_timeout=rng.randint(1, 5),
            half_open_max_calls=3,
            success_threshold=rng.randint(1, 3),
        )
        held = []
        for _ in range(60):
            action = rng.random()
            if action < 0.5:
                permit = b.acquire()
                if b.state is State.OPEN:
                    assert permit is None
                if permit is not None:
                    held.append(permit)
            elif action < 0.8 and held:
                b.record(held.pop(rng.randrange(len(held))), failed=rng.random() < 0.5)
            else:
                clock.now += rng.random() * 3
            assert b._probes_in_flight <= 3
        allowed = {("closed", "open"), ("open", "half_open"), ("half_open", "open"), ("half_open", "closed")}
        assert set(transitions) <= allowed


# --- the cache behind cached_response -------------------------------------------------------------


def cache(clock: Clock | None = None, **limits: Any) -> ResponseCache:
    return ResponseCache({"max_entries": 10, "max_bytes": 1000, "max_age": 60, **limits}, clock=clock or Clock())


def test_the_cache_answers_the_same_path_and_query_with_its_age() -> None:
    clock = Clock()
    c = cache(clock)
    c.store(b"/a?x=1", [], 200, [(b"content-type", b"text/plain")], b"hello")
    clock.now += 7
    found = c.lookup(b"/a?x=1", [])
    assert found is not None
    assert (found[0].body, found[1]) == (b"hello", 7)
    assert c.lookup(b"/a?x=2", []) is None


def test_the_cache_forgets_answers_older_than_max_age() -> None:
    clock = Clock()
    c = cache(clock, max_age=5)
    c.store(b"/a?", [], 200, [], b"x")
    clock.now += 6
    assert c.lookup(b"/a?", []) is None


def test_the_cache_honours_vary() -> None:
    c = cache()
    c.store(b"/a?", [(b"accept-language", b"fr")], 200, [(b"vary", b"Accept-Language")], b"bonjour")
    assert c.lookup(b"/a?", [(b"accept-language", b"fr")]) is not None
    assert c.lookup(b"/a?", [(b"accept-language", b"en")]) is None


def test_the_cache_stays_within_its_entry_and_byte_bounds() -> None:
    c = cache(max_entries=2, max_bytes=10)
    for index in range(3):
        c.store(f"/{index}?".encode(), [], 200, [], b"12345")
    assert c.lookup(b"/0?", []) is None
    assert c.lookup(b"/2?", []) is not None


def test_private_personal_or_uncacheable_answers_are_never_stored() -> None:
    assert not ResponseCache.request_cacheable("GET", [(b"authorization", b"Bearer x")])
    assert not ResponseCache.request_cacheable("GET", [(b"cookie", b"s=1")])
    assert not ResponseCache.request_cacheable("POST", [])
    assert not ResponseCache.response_cacheable(200, [(b"set-cookie", b"s=1")])
    assert not ResponseCache.response_cacheable(200, [(b"cache-control", b"private, max-age=5")])
    assert not ResponseCache.response_cacheable(200, [(b"cache-control", b"no-store")])
    assert not ResponseCache.response_cacheable(200, [(b"vary", b"*")])
    assert not ResponseCache.response_cacheable(500, [])
    assert ResponseCache.response_cacheable(200, [(b"cache-control", b"max-age=60")])
