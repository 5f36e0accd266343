"""Prometheus tooling on both planes: `promtool check metrics` on the control plane's `/metrics`
and the data plane's `/-/metrics` (one process, and `--workers 2`), and the documented alert rules
(`promtool check rules`, `promtool test rules` with docs/prometheus/alerts_test.yml).

promtool comes with Debian's `prometheus` package; CI (.ci/run) installs it. Without it these tests fail,
saying so, rather than skip: a silent skip would let broken metrics through.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from controlplane.core.actors import Actor
from controlplane.core.models import ConfigRevision
from controlplane.dataplanes.services import dataplane_token_issue
from controlplane.routing.services import endpoint_create
from tests.conftest import endpoint_body
from tests.dataplane.processes import dataplane, seed, upstream
from tests.e2e.servers import ROOT, eventually, free_port

RULES = ROOT / "docs" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "docs" / "prometheus" / "alerts_test.yml"


def promtool(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: `apt-get install prometheus` (Debian) puts it in /usr/bin")
    return subprocess.run(  # noqa: S603 - a fixed tool with our own arguments
        [path, *args], input=stdin.decode() if stdin is not None else None, capture_output=True, text=True, timeout=60
    )


def check_metrics(text: bytes) -> None:
    result = promtool("check", "metrics", stdin=text)
    # promtool prints lint problems (names, HELP, units) and exits non-zero on any of them.
    assert result.returncode == 0, f"promtool check metrics:\n{result.stdout}{result.stderr}"


def test_the_alert_rules_are_valid() -> None:
    result = promtool("check", "rules", str(RULES))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 rules found" in result.stdout


def test_each_alert_fires_on_its_synthetic_series() -> None:
    tested = {test["alertname"] for group in yaml.safe_load(RULE_TESTS.read_text())["tests"]
              for test in group["alert_rule_test"]}  # fmt: skip
    alerts = {rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]}

    result = promtool("test", "rules", str(RULE_TESTS))

    assert result.returncode == 0, result.stdout + result.stderr
    assert tested == alerts


def gauge(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(f"{series} "):
            return float(line.split()[-1])
    raise AssertionError(f"{series} is not on /metrics")


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_the_control_planes_metrics_pass_promtool_and_count_reporting_nodes(tmp_path: Path) -> None:
    from tests.e2e.test_sync_longpoll import control_plane

    actor = Actor.command("test")
    _, secret = dataplane_token_issue(name="edge", actor=actor)
    endpoint_create(data=endpoint_body("users"), actor=actor)
    with control_plane(tmp_path) as (base, _):
        for node_id, state in (("edge-a", "open"), ("edge-b", "closed")):
            report: dict[str, Any] = {
                "node_id": node_id,
                "boot_id": "boot",
                "hostname": node_id,
                "version": "0.1.0",
                "revision": 1,
                "config_sha256": "a" * 64,
                "state_seq": 0,
                "result": "applied" if node_id == "edge-a" else "rejected",
                "error": None if node_id == "edge-a" else "bad snapshot",
                "breakers": {"users:v1": {"state": state, "forced": None, "reset_generation": 0, "transitions": []}},
                "counters": {},
            }
            sent = httpx.post(
                f"{base}/api/v1/dataplane/status", json=report, headers={"Authorization": f"Bearer {secret}"}
            )
            assert sent.status_code == 204, sent.text
        httpx.get(f"{base}/healthz")  # some django-prometheus request series too

        metrics = httpx.get(f"{base}/metrics")

    assert metrics.status_code == 200
    check_metrics(metrics.content)
    text = metrics.text
    assert gauge(text, 'gateway_cp_nodes{state="live"}') == 2
    assert gauge(text, 'gateway_cp_nodes{state="stale"}') == 0
    assert gauge(text, "gateway_cp_revision") == ConfigRevision.objects.order_by("-number").first().number  # type: ignore[union-attr]
    assert gauge(text, "gateway_cp_open_breakers") == 1
    assert gauge(text, "gateway_cp_nodes_rejected") == 1
    assert gauge(text, "gateway_cp_unhealthy_targets") == 0


def traffic(url: str) -> None:
    with httpx.Client(timeout=10) as client:
        statuses = {client.get(f"{url}/users/{i}").status_code for i in range(10)}
        statuses.add(client.get(f"{url}/nowhere").status_code)
        statuses.add(client.get(f"{url}/broken/1").status_code)
    assert statuses >= {200, 404}, statuses


def endpoints(origin: str) -> dict[str, Any]:
    users = {"name": "users", "version": "v1", "targets": [{"url": f"{origin}/api"}]}
    # A dead target: connection refused, so the data plane answers gateway-made errors too.
    broken = {"name": "broken", "version": "v1", "targets": [{"url": f"http://127.0.0.1:{free_port()}/x"}]}
    return seed(users, broken)


@pytest.mark.e2e
def test_the_data_planes_metrics_pass_promtool_after_traffic(tmp_path: Path) -> None:
    with upstream(tmp_path, "origin") as origin, dataplane(tmp_path, endpoints(origin.url)) as node:
        traffic(node.url)

        metrics = httpx.get(f"{node.admin}/-/metrics")

    assert metrics.status_code == 200
    check_metrics(metrics.content)
    assert 'gateway_requests_total{endpoint="users:v1",method="GET",status_class="2xx"} 10.0' in metrics.text


@pytest.mark.e2e
def test_the_data_planes_metrics_pass_promtool_with_two_workers(tmp_path: Path) -> None:
    with (
        upstream(tmp_path, "origin") as origin,
        dataplane(tmp_path, endpoints(origin.url), workers=2, DATAPLANE_NODE_ID="edge") as node,
    ):
        traffic(node.url)
        admin_url = f"{node.admin}/-/metrics"
        ok = 'gateway_requests_total{endpoint="users:v1",method="GET",status_class="2xx"} 10.0'
        eventually(lambda: ok in httpx.get(admin_url).text, "both workers' requests merged on /-/metrics")

        metrics = httpx.get(admin_url)

    assert metrics.status_code == 200
    check_metrics(metrics.content)
