"""Seed loading, compiled snapshots and reloads (ARCHITECTURE §4)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dataplane.runtime import Runtime
from dataplane.settings import Settings
from dataplane.snapshot import SnapshotError, compile_document, load_document_text, load_seed, load_sync_snapshot
from tests.dataplane.harness import document, endpoint

V0_SEED = """
endpoints:
  - name: users
    version: v1
    url: http://127.0.0.1:8010/api
    methods: [GET, POST]
    health_check_path: /health
    timeout: 20
  - name: legacy
    version: v1
    url: http://127.0.0.1:8011
    disabled: true
circuit_breaker:
  failure_threshold: 3
log_level: INFO
"""


def test_a_seed_in_the_seed_gateways_v0_format_is_served(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(V0_SEED)
    snapshot = load_seed(path)
    users = snapshot.endpoints["users:v1"]
    assert users.targets[0].url == "http://127.0.0.1:8010/api"
    assert users.methods == {"GET", "HEAD", "POST"}
    assert users.timeout == 20
    assert users.breaker.failure_threshold == 3
    assert snapshot.endpoints["legacy:v1"].enabled is False
    match = snapshot.routes.match("/users/1")
    assert match is not None and match.value is users


def test_a_seed_endpoint_with_only_a_one_second_timeout_connects_within_that_second(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(V0_SEED.replace("timeout: 20", "timeout: 1"))
    users = load_seed(path).endpoints["users:v1"]
    assert (users.timeout, users.connect_timeout) == (1, 1)
    assert load_seed(path).endpoints["legacy:v1"].connect_timeout == 5


def test_an_invalid_seed_lists_every_problem() -> None:
    text = "format_version: 1\nendpoints:\n  - {name: a, version: v1, targets: [{url: ftp://x}], timeout: 0}\n"
    with pytest.raises(SnapshotError) as caught:
        load_document_text(text)
    assert len(caught.value.problems) == 2
    assert any("endpoints[0].timeout" in problem for problem in caught.value.problems)


def test_the_mount_prefix_goes_in_front_of_every_route_key() -> None:
    snapshot = compile_document(document(endpoint("users", paths=["/people"])), mount_prefix="/gw")
    assert snapshot.routes.match("/gw/people/1") is not None
    assert snapshot.routes.match("/people/1") is None


def test_ten_thousand_endpoints_compile_and_route() -> None:
    doc = document(*(endpoint(f"svc{i}", f"http://127.0.0.1:{10000 + i % 50000}") for i in range(10_000)))
    snapshot = compile_document(doc)
    match = snapshot.routes.match("/v1/svc9999/items/1")
    assert match is not None and match.value.key == "svc9999:v1"
    assert match.rest == "/items/1"


def test_a_reload_keeps_the_state_of_unchanged_endpoints_and_a_changed_ones_breaker() -> None:
    runtime = Runtime(Settings(node_id="n"))
    runtime.apply(compile_document(document(endpoint("a"), endpoint("b"))))
    a_state, b_state = runtime.states["a:v1"], runtime.states["b:v1"]
    runtime.apply(compile_document(document(endpoint("a"), endpoint("b", timeout=5))))
    assert runtime.states["a:v1"] is a_state
    assert runtime.states["b:v1"] is not b_state and runtime.states["b:v1"].endpoint.timeout == 5
    assert runtime.states["b:v1"].breaker is b_state.breaker  # a timeout says nothing about the upstream's health


def test_a_bad_seed_on_reload_keeps_the_current_snapshot(tmp_path: Path) -> None:
    seed = tmp_path / "seed.yaml"
    seed.write_text(V0_SEED)
    runtime = Runtime(Settings(node_id="n", seed=seed))
    assert runtime.reload_seed()
    before = runtime.snapshot
    seed.write_text("endpoints: [broken")
    assert not runtime.reload_seed()
    assert runtime.snapshot is before


GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "snapshot-golden.json"


def test_the_golden_control_plane_snapshot_compiles_into_routes() -> None:
    snapshot = load_sync_snapshot(GOLDEN.read_bytes())
    golden = json.loads(GOLDEN.read_bytes())
    assert (snapshot.revision, snapshot.config_sha256) == (golden["revision"], golden["config_sha256"])
    users = snapshot.routes.match("/users/7")
    assert users is not None and users.value.key == "users:v1"
    assert [t.weight for t in users.value.targets] == [100, 50]
    assert users.value.breaker.fallback_strategy == "default_response"
    orders = snapshot.routes.match("/api/orders/1")
    assert orders is not None and orders.value.key == "orders:v2"


def test_a_snapshot_whose_hash_does_not_match_its_document_is_rejected() -> None:
    golden = json.loads(GOLDEN.read_bytes())
    golden["config"]["endpoints"][0]["version"] = "v3"
    with pytest.raises(SnapshotError, match="config_sha256"):
        load_sync_snapshot(json.dumps(golden).encode())


def test_a_snapshot_in_a_format_this_node_cannot_read_is_rejected() -> None:
    golden = json.loads(GOLDEN.read_bytes())
    golden["format_version"] = 3  # one past the newest this node reads (format 2: plugins)
    with pytest.raises(SnapshotError, match="format_version"):
        load_sync_snapshot(json.dumps(golden).encode())


def test_targets_the_control_plane_reports_unhealthy_get_no_traffic() -> None:
    golden = json.loads(GOLDEN.read_bytes())
    golden["state"] = {"targets": {"users:v1": {"http://127.0.0.1:8010/api": "unhealthy"}}, "breakers": {}}
    runtime = Runtime(Settings(node_id="n"))
    runtime.apply(load_sync_snapshot(json.dumps(golden).encode()))
    balancer = runtime.states["users:v1"].balancer
    assert {balancer.pick().url for _ in range(5)} == {"http://127.0.0.1:8011/api"}  # type: ignore[union-attr]


def test_config_info_names_only_the_applied_config() -> None:
    runtime = Runtime(Settings(node_id="n"))
    first, second = compile_document(document(endpoint("a"))), compile_document(document(endpoint("b")))
    runtime.apply(first)
    runtime.apply(second)
    text = runtime.metrics.render().decode()
    assert f'gateway_config_info{{config_sha256="{second.config_sha256}"}} 1.0' in text
    assert first.config_sha256 not in text


def test_policies_are_typed_and_equal_ones_are_one_object() -> None:
    outlier = {"consecutive_failures": 3, "base_ejection_seconds": 10, "max_ejection_percent": 50}
    snapshot = compile_document(
        document(
            endpoint("a"),
            endpoint("b"),
            endpoint("c", outlier=outlier, retries={"attempts": 3, "on": ["connect_error", "timeout", "503"]}),
            endpoint("d", outlier=dict(outlier)),
        )
    )
    a, b, c, d = (snapshot.endpoints[f"{name}:v1"] for name in "abcd")
    for part in ("retries", "outlier", "tls", "health_check", "breaker"):
        assert getattr(a, part) is getattr(b, part), part  # the defaults: one object for every endpoint
    assert c.outlier is d.outlier and c.outlier is not a.outlier  # equal custom ones: interned
    assert (c.outlier.consecutive_failures, c.outlier.base_ejection_seconds) == (3, 10.0)
    assert c.retries.attempts == 3 and c.retries.on_timeout and 503 in c.retries.statuses
    assert not a.retries.on_timeout and a.retries.statuses == frozenset()
    assert a.tls.verify is True and a.tls.ca_file is None and a.health_check.panic is False
    with pytest.raises(AttributeError):
        a.retries.attempts = 5  # type: ignore[misc]  # frozen: nothing on the request path changes a policy
