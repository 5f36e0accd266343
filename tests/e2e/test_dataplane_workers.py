"""`python -m dataplane --workers 2`: two proxy processes on one listener, one admin listener."""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from tests.dataplane.processes import DataPlane, dataplane, seed, upstream
from tests.e2e.servers import clean_env, eventually, free_port, running

pytestmark = pytest.mark.e2e


def test_two_workers_serve_traffic_as_their_own_nodes_and_metrics_show_both(tmp_path: Path) -> None:
    with upstream(tmp_path, "alpha") as origin:
        seed_path = tmp_path / "seed.yaml"
        seed_path.write_text(yaml.safe_dump(seed({"name": "users", "version": "v1", "targets": [{"url": origin.url}]})))
        port, admin = free_port(), free_port()
        env = clean_env(
            DATAPLANE_LISTEN=f"127.0.0.1:{port}",
            DATAPLANE_ADMIN_LISTEN=f"127.0.0.1:{admin}",
            DATAPLANE_SEED=str(seed_path),
            DATAPLANE_NODE_ID="edge",
            DATAPLANE_DRAIN_DELAY="0.2",
        )
        argv = [sys.executable, "-m", "dataplane", "--workers", "2"]
        log = tmp_path / "workers.log"
        with running(argv, env=env, ready_url=f"http://127.0.0.1:{admin}/-/readyz", log=log) as process:
            vias = set()
            for _ in range(30):
                with httpx.Client() as client:  # a new connection each time, so either worker may accept it
                    response = client.get(f"http://127.0.0.1:{port}/v1/users/x")
                assert response.status_code == 200
                vias.add(dict(response.json()["headers"])["via"])
            assert vias and all(re.fullmatch(r"1\.1 edge-w[01]", via) for via in vias)
            metrics = httpx.get(f"http://127.0.0.1:{admin}/-/metrics").text
            assert 'gateway_requests_total{endpoint="users:v1",method="GET",status_class="2xx"} 30.0' in metrics
            assert httpx.get(f"http://127.0.0.1:{admin}/-/routes", params={"path": "/v1/users"}).status_code == 200
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0


def worker_pids(supervisor: int) -> set[int]:
    """The supervisor's worker processes (its other child is multiprocessing's resource tracker)."""
    children: set[int] = set()
    for listing in Path(f"/proc/{supervisor}/task").glob("*/children"):
        children.update(int(pid) for pid in listing.read_text().split())
    workers = set()
    for pid in children:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"spawn_main" in cmdline:
            workers.add(pid)
    return workers


def ready(node: DataPlane) -> bool:
    return httpx.get(f"{node.admin}/-/readyz").status_code == 200


def test_a_killed_worker_is_restarted_while_the_other_keeps_serving(tmp_path: Path) -> None:
    with (
        upstream(tmp_path, "alpha") as origin,
        dataplane(
            tmp_path, seed({"name": "users", "version": "v1", "targets": [{"url": origin.url}]}), workers=2
        ) as node,
    ):
        eventually(lambda: len(worker_pids(node.process.pid)) == 2 and ready(node), "both workers up")
        before = worker_pids(node.process.pid)
        for _ in range(10):
            assert httpx.get(f"{node.url}/v1/users/x").status_code == 200
        served = 'gateway_requests_total{endpoint="users:v1",method="GET",status_class="2xx"}'
        eventually(lambda: f"{served} 10.0" in httpx.get(f"{node.admin}/-/metrics").text, "the requests counted")
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        eventually(lambda: victim not in worker_pids(node.process.pid), "the killed worker to be reaped")

        # The other worker answers while the killed one is down and booting again.
        for _ in range(10):
            with httpx.Client() as client:  # a new connection each time, as after a worker's death
                assert client.get(f"{node.url}/v1/users/x").status_code == 200
        eventually(lambda: ready(node), "/-/readyz to be 200 again", timeout=30)

        after = worker_pids(node.process.pid)
        assert len(after) == 2 and victim not in after and before - {victim} <= after
        metrics = httpx.get(f"{node.admin}/-/metrics").text
        assert f'pid="{victim}"' not in metrics  # its gauges are gone ...
        # ... its requests still count.
        assert f"{served} 20.0" in metrics
        log = (tmp_path / "dataplane.log").read_text()
        assert re.search(rf"worker [01] \(pid {victim}\) was killed by SIGKILL; restarting it", log)


def test_the_workers_gauges_move_by_the_clock_without_traffic_or_a_scrape_reaching_them(tmp_path: Path) -> None:
    policy = {"name": "quick", "failure_threshold": 3, "reset_timeout": 1}
    with upstream(tmp_path, "alpha") as origin:
        endpoint = {"name": "cons", "version": "v1", "targets": [{"url": origin.url}], "breaker_policy": "quick"}
        with dataplane(tmp_path, seed(endpoint, policies=[policy]), workers=2) as node:
            for _ in range(8):  # on new connections: each worker has its own breaker; at least one opens
                with httpx.Client() as client:
                    assert client.get(f"{node.url}/v1/cons/status/500").status_code in {500, 503}

            def circuits() -> list[str]:
                metrics = httpx.get(f"{node.admin}/-/metrics").text
                return re.findall(r'gateway_circuit_state\{endpoint="cons:v1",pid="\d+"\} (\S+)', metrics)

            def config_ages() -> list[float]:
                metrics = httpx.get(f"{node.admin}/-/metrics").text
                return [float(age) for age in re.findall(r'gateway_config_age_seconds\{pid="\d+"\} (\S+)', metrics)]

            # Open (1.0) for reset_timeout, then half-open (2.0) by the clock alone.
            eventually(lambda: "2.0" in circuits(), "a circuit to be half-open in /-/metrics", timeout=10)
            eventually(lambda: len(config_ages()) == 2 and min(config_ages()) > 0, "config ages to grow", timeout=10)
