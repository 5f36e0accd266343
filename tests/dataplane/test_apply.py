"""Applying snapshots in two steps: the preparation off the event loop, the commit on it.

What a user sees: state (breaker, ejections) survives a reload for the endpoints whose config did not
change; a health or override change reaches the endpoint it names even when that endpoint's config is
unchanged; a compile against the previous snapshot reuses its unchanged endpoints; a preparation made
before another apply is never committed over it.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from pathlib import Path
from typing import Any

import pytest

from dataplane.breaker import State
from dataplane.runtime import FREEZE_AT_ENDPOINTS, Runtime, StalePreparation
from dataplane.settings import Settings
from dataplane.snapshot import Snapshot, compile_document
from tests.dataplane.harness import document, endpoint
from tests.dataplane.test_sync import Recorder, make, ok, polls, snapshot_body

URL = "http://127.0.0.1:8010/api"


def runtime() -> Runtime:
    return Runtime(Settings(node_id="n"))


def compiled(
    *endpoints: dict[str, Any],
    previous: Snapshot | None = None,
    targets: dict[str, Any] | None = None,
    breakers: dict[str, Any] | None = None,
    **options: Any,
) -> Snapshot:
    state = {"targets": targets or {}, "breakers": breakers or {}}
    return compile_document(document(*endpoints, **options), state=state, previous=previous)


def gauge(rt: Runtime, name: str, endpoint_key: str, target: str | None = None) -> str:
    labels = f'endpoint="{endpoint_key}"' + (f',target="{target}"' if target else "")
    line = next(line for line in rt.metrics.render().decode().splitlines() if line.startswith(f"{name}{{{labels}}}"))
    return line.rsplit(" ", 1)[1]


def test_an_open_breaker_survives_a_reload_that_changes_another_endpoint() -> None:
    rt = runtime()
    first = compiled(endpoint("a"), endpoint("b"))
    rt.apply(first)
    rt.states["a:v1"].breaker.force(State.OPEN)
    a_state, b_state = rt.states["a:v1"], rt.states["b:v1"]
    rt.apply(compiled(endpoint("a"), endpoint("b", timeout=5), previous=first))
    assert rt.states["a:v1"] is a_state and a_state.breaker.forced() is State.OPEN
    assert rt.states["b:v1"] is not b_state


def test_a_health_change_on_an_unchanged_endpoint_takes_effect() -> None:
    rt = runtime()
    first = compiled(endpoint("a"), endpoint("b"))
    rt.apply(first)
    a_state = rt.states["a:v1"]
    rt.apply(compiled(endpoint("a"), endpoint("b"), previous=first, targets={"a:v1": {URL: "unhealthy"}}))
    assert rt.states["a:v1"] is a_state
    assert [t.healthy for t in a_state.balancer.states] == [False]
    assert [t.healthy for t in rt.states["b:v1"].balancer.states] == [True]
    assert gauge(rt, "gateway_target_health", "a:v1", URL) == "0.0"
    assert gauge(rt, "gateway_target_health", "b:v1", URL) == "1.0"


def test_health_left_out_of_the_next_snapshot_makes_the_target_routable_again() -> None:
    rt = runtime()
    first = compiled(endpoint("a"), targets={"a:v1": {URL: "unhealthy"}})
    rt.apply(first)
    assert [t.healthy for t in rt.states["a:v1"].balancer.states] == [False]
    rt.apply(compiled(endpoint("a"), previous=first))
    assert [t.healthy for t in rt.states["a:v1"].balancer.states] == [True]
    assert gauge(rt, "gateway_target_health", "a:v1", URL) == "1.0"


def test_an_override_on_an_unchanged_endpoint_is_applied_and_lifted() -> None:
    rt = runtime()
    first = compiled(endpoint("a"), endpoint("b"))
    rt.apply(first)
    forced = compiled(endpoint("a"), endpoint("b"), previous=first, breakers={"a:v1": {"force": "open"}})
    rt.apply(forced)
    assert rt.states["a:v1"].breaker.acquire() is None
    assert rt.states["b:v1"].breaker.acquire() is not None
    rt.apply(compiled(endpoint("a"), endpoint("b"), previous=forced))
    assert rt.states["a:v1"].breaker.acquire() is not None


def test_an_unchanged_override_does_not_reset_the_breaker_again() -> None:
    rt = runtime()
    breakers = {"a:v1": {"reset_generation": 3}}
    first = compiled(endpoint("a"), breakers=breakers)
    rt.apply(first)
    breaker = rt.states["a:v1"].breaker
    breaker.force(State.OPEN)
    breaker.force(None)
    for _ in range(5):
        breaker.record(breaker.acquire(), failed=True)  # type: ignore[arg-type]
    assert breaker.state is State.OPEN
    rt.apply(compiled(endpoint("a"), previous=first, breakers=breakers))
    assert rt.states["a:v1"].breaker is breaker and breaker.state is State.OPEN


def test_a_changed_endpoint_gets_a_new_state_with_the_snapshots_health_and_override() -> None:
    rt = runtime()
    first = compiled(endpoint("a"))
    rt.apply(first)
    rt.states["a:v1"].breaker.force(State.OPEN)
    rt.apply(
        compiled(
            endpoint("a", timeout=5),
            previous=first,
            targets={"a:v1": {URL: "unhealthy"}},
            breakers={"a:v1": {"force": "closed"}},
        )
    )
    state = rt.states["a:v1"]
    assert state.breaker.forced() is State.CLOSED
    assert [t.healthy for t in state.balancer.states] == [False]
    assert gauge(rt, "gateway_target_health", "a:v1", URL) == "0.0"
    assert gauge(rt, "gateway_circuit_state", "a:v1") == "0.0"


def tripped(rt: Runtime, key: str) -> None:
    breaker = rt.states[key].breaker
    while breaker.state is State.CLOSED:
        breaker.record(breaker.acquire(), failed=True)  # type: ignore[arg-type]


def transitions_total(rt: Runtime, key: str, old: str, new: str) -> float:
    labels = f'endpoint="{key}",from="{old}",to="{new}"'
    lines = rt.metrics.render().decode().splitlines()
    found = [line for line in lines if line.startswith(f"gateway_circuit_transitions_total{{{labels}}}")]
    return float(found[0].rsplit(" ", 1)[1]) if found else 0.0


def test_an_open_breaker_survives_an_edit_that_leaves_its_policy_and_targets_alone() -> None:
    rt = runtime()
    first = compiled(endpoint("a"))
    rt.apply(first)
    tripped(rt, "a:v1")
    breaker = rt.states["a:v1"].breaker
    second = compiled(endpoint("a", description="now documented", timeout=7, paths=["/alpha"]), previous=first)
    rt.apply(second)
    assert rt.states["a:v1"].endpoint.timeout == 7
    assert rt.states["a:v1"].breaker is breaker and breaker.state is State.OPEN
    assert gauge(rt, "gateway_circuit_state", "a:v1") == "1.0"
    assert [t["to"] for t in rt.transitions["a:v1"]] == ["open"]


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"targets": [{"url": "http://127.0.0.1:8011/api"}]}, "targets changed"),
        ({"targets": [{"url": URL, "enabled": False}, {"url": "http://127.0.0.1:8011/api"}]}, "targets changed"),
        ({"breaker_policy": "strict"}, "breaker policy changed"),
    ],
)
def test_a_breaker_reset_by_an_edit_is_a_recorded_transition(
    change: dict[str, Any], why: str, caplog: pytest.LogCaptureFixture
) -> None:
    rt = runtime()
    policies = [{"name": "strict", "failure_threshold": 1}]
    first = compiled(endpoint("a"), policies=policies)
    rt.apply(first)
    tripped(rt, "a:v1")
    with caplog.at_level("WARNING", logger="dataplane"):
        rt.apply(compiled(endpoint("a", **change), previous=first, policies=policies))
    assert rt.states["a:v1"].breaker.state is State.CLOSED
    assert [(t["from"], t["to"]) for t in rt.transitions["a:v1"]] == [("closed", "open"), ("open", "closed")]
    assert transitions_total(rt, "a:v1", "open", "closed") == 1
    assert gauge(rt, "gateway_circuit_state", "a:v1") == "0.0"
    assert f"circuit of a:v1: open -> closed (reset: its {why})" in caplog.text


def test_a_closed_breaker_replaced_by_an_edit_records_no_transition() -> None:
    rt = runtime()
    first = compiled(endpoint("a"))
    rt.apply(first)
    rt.apply(compiled(endpoint("a", targets=[{"url": "http://127.0.0.1:8011/api"}]), previous=first))
    assert "a:v1" not in rt.transitions


def test_ejections_and_the_retry_budget_survive_an_edit_that_leaves_the_targets_alone() -> None:
    rt = runtime()
    other = "http://127.0.0.1:8011/api"
    first = compiled(endpoint("a", URL, other, outlier={"consecutive_failures": 1}))
    rt.apply(first)
    state = rt.states["a:v1"]
    assert state.balancer.record(state.balancer.states[0].target, failed=True)  # ejected
    state.budget.record_request()
    budget = state.budget
    rt.apply(compiled(endpoint("a", URL, other, outlier={"consecutive_failures": 1}, timeout=9), previous=first))
    after = rt.states["a:v1"]
    assert after is not state and after.balancer is state.balancer and after.budget is budget
    assert gauge(rt, "gateway_target_ejected", "a:v1", URL) == "1.0"
    rt.apply(compiled(endpoint("a", URL, other, timeout=9), previous=first))  # the outlier rules changed
    assert rt.states["a:v1"].balancer is not state.balancer and rt.states["a:v1"].budget is budget
    assert gauge(rt, "gateway_target_ejected", "a:v1", URL) == "0.0"


def test_the_gauges_of_removed_endpoints_and_targets_leave_the_metrics() -> None:
    rt = runtime()
    other = "http://127.0.0.1:8011/api"
    first = compiled(endpoint("users", URL, other), endpoint("orders", URL))
    rt.apply(first)
    rt.refresh_gauges()
    assert gauge(rt, "gateway_target_health", "users:v1", other) == "1.0"
    rt.apply(compiled(endpoint("users", URL), previous=first))  # orders gone, users lost a target
    text = rt.metrics.render().decode()
    assert 'endpoint="orders:v1"' not in text
    assert f'target="{other}"' not in text
    assert gauge(rt, "gateway_target_health", "users:v1", URL) == "1.0"  # what stays keeps its series
    assert gauge(rt, "gateway_circuit_state", "users:v1") == "0.0"


def test_a_compile_reuses_the_endpoints_whose_inputs_are_unchanged() -> None:
    first = compiled(endpoint("a"), endpoint("b"))
    second = compiled(endpoint("a"), endpoint("b", timeout=5), previous=first)
    assert second.endpoints["a:v1"] is first.endpoints["a:v1"]
    assert second.endpoints["b:v1"] is not first.endpoints["b:v1"]
    assert second.endpoints["b:v1"].timeout == 5.0
    assert second.routes.match("/v1/a/x").value is first.endpoints["a:v1"]  # type: ignore[union-attr]


def test_a_changed_breaker_policy_recompiles_the_endpoints_using_it() -> None:
    strict = {"name": "strict", "failure_threshold": 2}
    first = compiled(endpoint("a", breaker_policy="strict"), endpoint("b"), policies=[strict])
    second = compiled(
        endpoint("a", breaker_policy="strict"),
        endpoint("b"),
        previous=first,
        policies=[{**strict, "failure_threshold": 3}],
    )
    assert second.endpoints["a:v1"] is not first.endpoints["a:v1"]
    assert second.endpoints["a:v1"].breaker.failure_threshold == 3
    assert second.endpoints["b:v1"] is first.endpoints["b:v1"]


def test_changed_health_check_defaults_recompile_every_endpoint() -> None:
    first = compiled(endpoint("a"))
    doc = {**document(endpoint("a")), "health_check": {"interval": 60}}
    second = compile_document(doc, previous=first)
    assert second.endpoints["a:v1"] is not first.endpoints["a:v1"]
    assert second.endpoints["a:v1"].health_check.interval == 60


def test_another_mount_prefix_recompiles_every_endpoint() -> None:
    first = compile_document(document(endpoint("a", paths=["/people"])))
    second = compile_document(document(endpoint("a", paths=["/people"])), mount_prefix="/gw", previous=first)
    assert second.endpoints["a:v1"].extra_paths == frozenset({"/gw/people"})
    assert second.routes.match("/gw/people") is not None


def test_a_reused_endpoint_has_the_fingerprint_a_fresh_compile_gives() -> None:
    first = compiled(endpoint("a"), endpoint("b"))
    second = compiled(endpoint("a"), endpoint("b", timeout=5), previous=first)
    fresh = compiled(endpoint("a"), endpoint("b", timeout=5))
    assert [e.fingerprint for e in second.endpoints.values()] == [e.fingerprint for e in fresh.endpoints.values()]


def test_a_preparation_is_not_committed_over_a_newer_apply() -> None:
    rt = runtime()
    rt.apply(compiled(endpoint("a")))
    older = rt.prepare(compiled(endpoint("a"), endpoint("old")))
    newer = compiled(endpoint("a"), endpoint("new"))
    rt.apply(newer)
    with pytest.raises(StalePreparation):
        rt.commit(older)
    assert rt.snapshot is newer and sorted(rt.states) == ["a:v1", "new:v1"]


def test_apply_off_loop_prepares_again_when_the_states_changed_meanwhile() -> None:
    rt = runtime()
    rt.apply(compiled(endpoint("a")))
    interloper = compiled(endpoint("a", timeout=5))
    wanted = compiled(endpoint("a", timeout=5), endpoint("b"))
    prepare = rt.prepare
    calls: list[Any] = []

    def prepare_then_interleave(snapshot: Snapshot) -> Any:
        prepared = prepare(snapshot)
        calls.append(prepared)
        if len(calls) == 1:
            rt.commit(prepare(interloper))  # a synchronous apply landing while the thread prepared
        return prepared

    rt.prepare = prepare_then_interleave  # type: ignore[method-assign]
    asyncio.run(rt.apply_off_loop(wanted))
    assert len(calls) == 2 and rt.snapshot is wanted and sorted(rt.states) == ["a:v1", "b:v1"]
    # `a` keeps the state the interloper built for its new config, not the one first prepared for it.
    assert rt.states["a:v1"] is calls[1].states["a:v1"] is not calls[0].states["a:v1"]
    assert rt.states["a:v1"].endpoint.timeout == 5.0


def test_the_sync_client_keeps_unchanged_endpoints_and_applies_a_health_change_to_one(tmp_path: Path) -> None:
    health = {"breakers": {}, "targets": {"a:v1": {URL: "unhealthy"}}}
    recorder = Recorder(
        ok(snapshot_body(endpoint("a"), endpoint("b"), revision=1)),
        ok(snapshot_body(endpoint("a"), endpoint("b", timeout=5), revision=2, state_seq=1, state=health)),
    )
    rt, sync = make(tmp_path, recorder)
    asyncio.run(polls(sync, recorder, 1))
    assert rt.snapshot is not None
    a_endpoint, a_state, b_state = rt.snapshot.endpoints["a:v1"], rt.states["a:v1"], rt.states["b:v1"]
    a_state.breaker.force(State.OPEN)
    asyncio.run(polls(sync, recorder, 1))
    assert rt.snapshot is not None and rt.snapshot.revision == 2
    assert rt.snapshot.endpoints["a:v1"] is a_endpoint and rt.states["a:v1"] is a_state
    assert a_state.breaker.forced() is State.OPEN
    assert [t.healthy for t in a_state.balancer.states] == [False]
    assert rt.states["b:v1"] is not b_state and rt.states["b:v1"].endpoint.timeout == 5.0


def test_a_large_config_is_frozen_out_of_the_collector_and_still_freed_when_replaced() -> None:
    """At FREEZE_AT_ENDPOINTS endpoints the applied config leaves the cyclic collector's walk (no full
    collection stalls the loop over it); a later config still frees it, by reference counting alone."""
    rt = runtime()
    many = [endpoint(f"svc{index:04d}") for index in range(FREEZE_AT_ENDPOINTS)]
    frozen_before = gc.get_freeze_count()
    gc.disable()  # nothing but reference counting may free the first config below
    try:
        first = compiled(*many)
        asyncio.run(rt.apply_off_loop(first))
        assert gc.get_freeze_count() > frozen_before + 50 * FREEZE_AT_ENDPOINTS
        gone = weakref.ref(first)
        del first
        asyncio.run(rt.apply_off_loop(compiled(endpoint("only"))))
        assert gone() is None
        assert list(rt.snapshot.endpoints) == ["only:v1"]  # type: ignore[union-attr]
    finally:
        gc.enable()
        gc.unfreeze()
