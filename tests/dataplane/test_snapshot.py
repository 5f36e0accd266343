"""Seed loading, compiled snapshots and reloads (ARCHITECTURE §4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dataplane.runtime import Runtime
from dataplane.settings import Settings
from dataplane.snapshot import SnapshotError, compile_document, load_document_text, load_seed
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
    assert users.breaker["failure_threshold"] == 3
    assert snapshot.endpoints["legacy:v1"].enabled is False
    match = snapshot.routes.match("/users/1")
    assert match is not None and match.value is users


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


def test_a_reload_keeps_breaker_state_of_unchanged_endpoints_and_resets_changed_ones() -> None:
    runtime = Runtime(Settings(node_id="n"))
    runtime.apply(compile_document(document(endpoint("a"), endpoint("b"))))
    a_state, b_state = runtime.states["a:v1"], runtime.states["b:v1"]
    runtime.apply(compile_document(document(endpoint("a"), endpoint("b", timeout=5))))
    assert runtime.states["a:v1"] is a_state
    assert runtime.states["b:v1"] is not b_state


def test_a_bad_seed_on_reload_keeps_the_current_snapshot(tmp_path: Path) -> None:
    seed = tmp_path / "seed.yaml"
    seed.write_text(V0_SEED)
    runtime = Runtime(Settings(node_id="n", seed=seed))
    assert runtime.reload_seed()
    before = runtime.snapshot
    seed.write_text("endpoints: [broken")
    assert not runtime.reload_seed()
    assert runtime.snapshot is before
