"""The status report's `counters` and `breakers` built from the runtime (dataplane/report.py), after
real traffic through the proxy's ASGI app with a fake upstream."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from configdoc.reports import BUCKET_COUNT, validate_breakers, validate_counters
from dataplane.breaker import State
from dataplane.report import build_breakers, build_counters
from tests.dataplane.harness import Gateway, document, endpoint, ok

POLICY = {"name": "strict", "failure_threshold": 2, "reset_timeout": 60}


def send(gateway: Gateway, *paths: str) -> list[int]:
    async def go() -> list[int]:
        async with gateway.client() as client:
            return [(await client.get(path)).status_code for path in paths]

    return asyncio.run(go())


def by_path(request: httpx.Request) -> httpx.Response:
    path = request.url.path
    if path.endswith("/missing"):
        return httpx.Response(404, text="no")
    if path.endswith("/boom"):
        return httpx.Response(500, text="boom")
    if path.endswith("/moved"):
        return httpx.Response(302, headers={"location": "/elsewhere"})
    return httpx.Response(200, json={"ok": True})


def test_counters_count_each_answer_by_class_with_histograms_of_every_request() -> None:
    gateway = Gateway(document(endpoint("users", default=True), endpoint("orders", default=True)), by_path)
    statuses = send(gateway, "/users", "/users/a", "/users/missing", "/users/boom", "/users/moved", "/orders")
    assert statuses == [200, 200, 404, 500, 302, 200]
    send(gateway, "/nowhere")  # no route: not an endpoint, not reported

    counters = build_counters(gateway.runtime.metrics)

    assert set(counters) == {"users:v1", "orders:v1"}
    users = counters["users:v1"]
    assert users["requests"] == {"2xx": 2, "3xx": 1, "4xx": 1, "5xx": 1}
    assert users["errors"] == {}
    assert (users["retries"], users["breaker_trips"]) == (0, 0)
    assert len(users["duration"]["buckets"]) == BUCKET_COUNT
    assert sum(users["duration"]["buckets"]) == 5
    assert sum(users["upstream_duration"]["buckets"]) == 5
    assert users["duration"]["sum"] > 0
    assert counters["orders:v1"]["requests"] == {"2xx": 1, "3xx": 0, "4xx": 0, "5xx": 0}
    assert validate_counters(counters) == {}


def test_a_tripped_breaker_shows_in_counters_errors_and_breakers_with_its_transition() -> None:
    doc = document(endpoint("users", default=True, breaker_policy="strict"), endpoint("orders"), policies=[POLICY])
    gateway = Gateway(doc, lambda request: httpx.Response(500, text="boom"))
    before = time.time()
    assert send(gateway, "/users", "/users", "/users") == [500, 500, 503]

    counters = build_counters(gateway.runtime.metrics)
    users = counters["users:v1"]
    assert users["requests"]["5xx"] == 3
    assert users["errors"] == {"circuit_open": 1}
    assert users["breaker_trips"] == 1
    assert sum(users["upstream_duration"]["buckets"]) == 2  # the open circuit sent nothing upstream

    breakers = build_breakers(gateway.runtime)
    assert set(breakers) == {"users:v1"}  # orders: closed, not forced, no transitions
    entry = breakers["users:v1"]
    assert (entry["state"], entry["forced"], entry["reset_generation"]) == ("open", None, 0)
    assert [(t["from"], t["to"]) for t in entry["transitions"]] == [("closed", "open")]
    assert before <= entry["transitions"][0]["at"] <= time.time()
    assert validate_breakers(breakers) == {}


def test_a_forced_breaker_is_reported_with_the_override_and_a_reset_generation() -> None:
    gateway = Gateway(document(endpoint("users", default=True)), ok)
    breaker = gateway.runtime.states["users:v1"].breaker
    breaker.reset(3)
    breaker.force(State.CLOSED)
    assert build_breakers(gateway.runtime) == {
        "users:v1": {"state": "closed", "forced": "closed", "reset_generation": 3, "transitions": []}
    }
    assert build_counters(gateway.runtime.metrics) == {}  # no traffic yet


def test_only_the_last_20_transitions_are_kept_oldest_first() -> None:
    gateway = Gateway(document(endpoint("users", default=True)), ok)
    breaker = gateway.runtime.states["users:v1"].breaker
    for _ in range(15):
        breaker.force(None)
        breaker._open(0.0)
        breaker._close()
    transitions = build_breakers(gateway.runtime)["users:v1"]["transitions"]
    assert len(transitions) == 20
    assert [t["to"] for t in transitions[:2]] == ["open", "closed"]
    assert [t["at"] for t in transitions] == sorted(t["at"] for t in transitions)
    assert build_counters(gateway.runtime.metrics)["users:v1"]["breaker_trips"] == 15  # counted, not capped


def test_a_retry_is_counted() -> None:
    answers = itertools.chain([httpx.ConnectError("refused")], itertools.repeat(None))

    def flaky(request: httpx.Request) -> httpx.Response:
        error = next(answers)
        if error is not None:
            raise error
        return httpx.Response(200, text="ok")

    gateway = Gateway(
        document(endpoint("users", "http://127.0.0.1:8010/a", "http://127.0.0.1:8011/b", default=True)), flaky
    )
    assert send(gateway, "/users") == [200]
    users = build_counters(gateway.runtime.metrics)["users:v1"]
    assert users["retries"] == 1
    assert users["requests"]["2xx"] == 1


WORKER = """
import asyncio, json, sys
import httpx
from dataplane.report import build_counters
from tests.dataplane.harness import Gateway, document, endpoint, ok

count = int(sys.argv[1])
gateway = Gateway(document(endpoint("users", default=True)), ok)

async def go():
    async with gateway.client() as client:
        for _ in range(count):
            await client.get("/users")

asyncio.run(go())
print(json.dumps(build_counters(gateway.runtime.metrics)["users:v1"]["requests"]))
"""


def test_under_multiprocess_metrics_each_worker_reports_only_its_own_counts(tmp_path: Path) -> None:
    # Two processes sharing one PROMETHEUS_MULTIPROC_DIR, as `--workers 2` runs them: each is its own node.
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    root = Path(__file__).resolve().parents[2]
    results = []
    for count in (3, 5):
        done = subprocess.run(
            [sys.executable, "-c", WORKER, str(count)], env=env, cwd=root, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        results.append(done.stdout.strip().splitlines()[-1])
    assert results == ['{"2xx": 3, "3xx": 0, "4xx": 0, "5xx": 0}', '{"2xx": 5, "3xx": 0, "4xx": 0, "5xx": 0}']
    assert list(tmp_path.glob("counter_*.db"))  # the values really went to the shared directory


def test_the_report_interval_comes_from_the_environment_default_10_seconds() -> None:
    from dataplane.settings import Settings, SettingsError

    assert Settings.from_env({}).report_interval == 10.0
    assert Settings.from_env({"DATAPLANE_REPORT_INTERVAL": "2.5"}).report_interval == 2.5
    with pytest.raises(SettingsError, match="DATAPLANE_REPORT_INTERVAL"):
        Settings.from_env({"DATAPLANE_REPORT_INTERVAL": "0"})


def test_the_sync_reports_at_the_configured_interval_and_sends_the_built_counters(tmp_path: Path) -> None:
    from dataplane.sync import Sync

    gateway = Gateway(
        document(endpoint("users", default=True)),
        ok,
        control_plane_url="http://127.0.0.1:1",
        token="gwdp_x",
        cache_dir=tmp_path,
        report_interval=3.0,
    )
    sync = Sync(gateway.runtime)
    assert sync.report_every == 3.0
    send(gateway, "/users")
    status = sync.status()
    assert status["counters"]["users:v1"]["requests"]["2xx"] == 1
    assert status["breakers"] == {}
