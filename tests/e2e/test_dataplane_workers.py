"""`python -m dataplane --workers 2`: two proxy processes on one listener, one admin listener."""

from __future__ import annotations

import re
import signal
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from tests.dataplane.processes import seed, upstream
from tests.e2e.servers import clean_env, free_port, running

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
