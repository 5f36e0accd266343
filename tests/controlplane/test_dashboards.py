"""The admin's dashboards: the landing page's fleet view and the per-endpoint traffic page, fed by
status reports stored through the same service the status endpoint calls."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from configdoc.reports import BUCKET_COUNT
from controlplane.core.actors import Actor
from controlplane.dataplanes.models import DataPlaneNode
from controlplane.dataplanes.services import node_status_record
from controlplane.dataplanes.status import validate_status_report
from controlplane.health.charts import Series, line_chart
from controlplane.routing.models import Endpoint
from controlplane.routing.services import endpoint_create
from tests.conftest import endpoint_body

pytestmark = pytest.mark.django_db
ACTOR = Actor.system("test")


def histogram(count: int, bucket: int = 5) -> dict[str, Any]:
    """`count` observations in one bucket (bucket 5 is 25–50 ms)."""
    buckets = [0] * BUCKET_COUNT
    buckets[bucket] = count
    return {"buckets": buckets, "sum": count * 0.03}


def counters(ok: int, failed: int, *, errors: dict[str, int] | None = None) -> dict[str, Any]:
    """One endpoint's cumulative counters in the report contract's shape."""
    return {
        "requests": {"2xx": ok, "3xx": 0, "4xx": 0, "5xx": failed},
        "errors": errors or {},
        "retries": 0,
        "breaker_trips": 1 if failed else 0,
        "duration": histogram(ok + failed),
        "upstream_duration": histogram(ok + failed, 4),
    }


def report(node_id: str, *, revision: int, breakers: dict[str, Any] | None = None, **traffic: Any) -> dict[str, Any]:
    return {
        "node_id": node_id, "boot_id": f"{node_id}-boot", "hostname": f"{node_id}.local", "version": "0.1.0",
        "revision": revision, "config_sha256": "a" * 64, "state_seq": 0, "result": "applied", "error": None,
        "breakers": breakers or {}, "counters": traffic,
    }  # fmt: skip


OPEN = {"state": "open", "forced": None, "reset_generation": 0, "transitions": [
    {"from": "closed", "to": "open", "at": 1_700_000_000.5},
]}  # fmt: skip


def record(body: dict[str, Any]) -> None:
    """As POST /api/v1/dataplane/status does: validate the bytes, then store."""
    import json

    node_status_record(report=validate_status_report(json.dumps(body).encode()))


@pytest.fixture
def fleet() -> Endpoint:
    """Two endpoints; edge-a runs the latest revision with users:v1's breaker open and traffic (two
    reports); edge-b runs an older revision with its breaker closed."""
    users = endpoint_create(data=endpoint_body("users"), actor=ACTOR)
    endpoint_create(data=endpoint_body("orders"), actor=ACTOR)
    latest = DataPlaneNode._meta.apps.get_model("core", "ConfigRevision").objects.order_by("-number").first().number
    record(report("edge-a", revision=latest, **{"users:v1": counters(10, 0)}))
    record(report("edge-a", revision=latest, breakers={"users:v1": OPEN}, **{"users:v1": counters(30, 10)}))
    record(report("edge-b", revision=latest - 1, **{"users:v1": counters(5, 0)}))
    return users


def browser(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def charts(html: str) -> dict[str, list[str]]:
    """data-chart name → the `d` of each series path in that chart."""
    found = {}
    for match in re.finditer(r'<svg [^>]*data-chart="([^"]+)".*?</svg>', html, re.S):
        found[match.group(1)] = re.findall(r'<path class="gw-series"[^>]* d="([^"]*)"', match.group(0))
    return found


def test_the_landing_page_shows_the_fleet_with_drawn_traffic_charts(make_user: Any, fleet: Endpoint) -> None:
    page = browser(make_user("alice", "admin")).get("/admin/")
    assert page.status_code == 200
    html = page.content.decode()
    drawn = charts(html)
    assert set(drawn) >= {"request-rate", "error-rate"}
    assert all(d.startswith("M") and " L" in d for d in drawn["request-rate"] + drawn["error-rate"])
    assert "<script" not in html.split('id="fleet-dashboard"')[1].split("</svg>")[0]
    # Both nodes with the revision each runs; edge-b one behind.
    nodes = html.split('id="fleet-nodes"')[1].split("</table>")[0]
    assert '<td class="node-id">edge-a</td>' in nodes and '<td class="node-id">edge-b</td>' in nodes
    assert "up to date" in nodes and "1 behind" in nodes
    # users:v1 open on one node of two, linked to its dashboard.
    breakers = html.split('id="fleet-breakers"')[1].split("</table>")[0]
    assert f'/admin/routing/endpoint/{fleet.pk}/dashboard/">users:v1</a>' in breakers
    assert '<td class="open-on">1 of 2 nodes</td>' in breakers
    # 45 requests, 10 of them 5xx, all in the last hour; the open breaker makes the system degraded.
    assert re.search(r'id="card-traffic"><span class="gw-figure">45</span>', html)
    assert "5xx 22.22 %" in html
    assert 'id="system-status" class="gw-status gw-status-degraded">degraded<' in html
    # The app list is still there below.
    assert "/admin/routing/endpoint/" in html


def test_the_landing_page_without_nodes_or_traffic_says_so_and_still_draws_axes(make_user: Any) -> None:
    html = browser(make_user("rita", "readonly")).get("/admin/").content.decode()
    assert "No data plane has reported yet." in html and "No breaker is open on a live node." in html
    assert 'data-chart="request-rate"' in html and 'data-chart="error-rate"' in html


def test_a_stale_node_is_marked_stale_and_its_breakers_no_longer_count(make_user: Any, fleet: Endpoint) -> None:
    DataPlaneNode.objects.filter(node_id="edge-a").update(last_seen=timezone.now() - timedelta(minutes=5))
    html = browser(make_user("alice", "admin")).get("/admin/").content.decode()
    row = html.split('data-node="edge-a"')[1].split("</tr>")[0]
    assert '<td class="node-state">stale</td>' in row
    assert "No breaker is open on a live node." in html
    assert "1 stale node(s)" in html and 'gw-status-degraded">degraded<' in html


def test_a_node_gone_past_the_grace_is_listed_as_gone_without_degrading_and_each_node_shows_its_token(
    make_user: Any,
) -> None:
    endpoint_create(data=endpoint_body("users"), actor=ACTOR)
    record(report("edge-a", revision=1))
    record(report("stopped", revision=1))
    DataPlaneNode.objects.filter(node_id="edge-a").update(token_name="region-a")
    DataPlaneNode.objects.filter(node_id="stopped").update(last_seen=timezone.now() - timedelta(hours=1))

    html = browser(make_user("olga", "operator")).get("/admin/").content.decode()

    row = html.split('data-node="stopped"')[1].split("</tr>")[0]
    assert '<td class="node-state">gone</td>' in row
    assert '<td class="node-token">region-a</td>' in html.split('data-node="edge-a"')[1].split("</tr>")[0]
    assert 'id="system-status" class="gw-status gw-status-healthy">healthy<' in html
    card = r'id="card-nodes"><span class="gw-figure">1</span>\s*<span class="gw-caption">live node, 1 gone'
    assert re.search(card, html)
    assert 'class="nodes-link">all nodes, retire</a>' in html


def test_the_endpoint_dashboard_draws_rate_error_and_latency_and_shows_breakers_per_node(
    make_user: Any, fleet: Endpoint
) -> None:
    page = browser(make_user("alice", "admin")).get(f"/admin/routing/endpoint/{fleet.pk}/dashboard/")
    assert page.status_code == 200
    html = page.content.decode()
    drawn = charts(html)
    assert set(drawn) == {"request-rate", "error-rate", "latency"}
    assert len(drawn["latency"]) == 3 and all(d.startswith("M") for d in drawn["latency"])  # p50, p95, p99
    assert "<title>Latency to the response head (p50, p95, p99)</title>" in html
    # Every observation is in the 25–50 ms bucket: each percentile's latest point lies in it.
    latest = re.search(
        r"<desc>p50: latest ([0-9.]+) ms; p95: latest ([0-9.]+) ms; p99: latest ([0-9.]+) ms</desc>", html
    )
    assert latest and all(25 <= float(value) <= 50 for value in latest.groups())
    rows = html.split('id="endpoint-breakers"')[1].split("</table>")[0]
    assert re.search(
        r'data-node="edge-a">\s*<td class="node-id">edge-a</td>\s*<td class="breaker-state gw-state-open">open', rows
    )
    assert re.search(
        r'data-node="edge-b">\s*<td class="node-id">edge-b</td>\s*<td class="breaker-state gw-state-closed">closed',
        rows,
    )
    assert "closed → open" in rows
    assert '<span class="gw-figure">45</span>' in html and "22.22 %" in html
    uptime = html.split('id="endpoint-uptime"')[1].split("</table>")[0]
    assert "http://127.0.0.1:8010/api" in uptime and "unknown" in uptime


def test_the_window_switch_reads_24_hours_and_an_unknown_window_falls_back_to_1_hour(
    make_user: Any, fleet: Endpoint
) -> None:
    client = browser(make_user("rita", "readonly"))
    day = client.get(f"/admin/routing/endpoint/{fleet.pk}/dashboard/?window=24h").content.decode()
    assert 'href="?window=24h" class="gw-current"' in day and "requests (24h)" in day
    assert len(re.findall(r"[ML]", charts(day)["request-rate"][0])) > 1000  # one point a minute
    odd = client.get(f"/admin/routing/endpoint/{fleet.pk}/dashboard/?window=7y").content.decode()
    assert 'href="?window=1h" class="gw-current"' in odd


def test_an_endpoint_without_traffic_has_empty_latency_and_flat_rate(make_user: Any, fleet: Endpoint) -> None:
    orders = Endpoint.objects.get(name="orders")
    html = (
        browser(make_user("rita", "readonly")).get(f"/admin/routing/endpoint/{orders.pk}/dashboard/").content.decode()
    )
    drawn = charts(html)
    assert drawn["latency"] == [] and "no data yet" in html
    assert drawn["request-rate"] and "requests/s: latest 0/s" in html


def test_readonly_sees_the_dashboards_and_they_are_linked(make_user: Any, fleet: Endpoint) -> None:
    client = browser(make_user("rita", "readonly"))
    assert 'id="fleet-dashboard"' in client.get("/admin/").content.decode()
    url = f"/admin/routing/endpoint/{fleet.pk}/dashboard/"
    assert client.get(url).status_code == 200
    assert url in client.get("/admin/routing/endpoint/").content.decode()
    assert url in client.get(f"/admin/routing/endpoint/{fleet.pk}/health/").content.decode()
    assert url in client.get(f"/admin/routing/endpoint/{fleet.pk}/change/").content.decode()


def test_anonymous_is_sent_to_the_login_page(fleet: Endpoint) -> None:
    for url in ("/admin/", f"/admin/routing/endpoint/{fleet.pk}/dashboard/"):
        response = Client().get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_a_data_plane_user_cannot_open_the_dashboards(make_user: Any, fleet: Endpoint) -> None:
    client = browser(make_user("edge", "dataplane"))
    response = client.get(f"/admin/routing/endpoint/{fleet.pk}/dashboard/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_an_unknown_endpoint_dashboard_is_404(make_user: Any) -> None:
    assert browser(make_user("rita", "readonly")).get("/admin/routing/endpoint/999999/dashboard/").status_code == 404


# --- the chart drawer ------------------------------------------------------------------------------------


def test_a_chart_is_named_titled_and_draws_one_path_per_series_with_gaps() -> None:
    svg = line_chart(
        [Series("a<b", [(0, 1.0), (1, 2.0), (2, None), (3, 4.0)]), Series("c", [(0, 0.5), (3, 0.5)])],
        title="Rate & more",
        chart="request-rate",
        x_label="time",
        x_ticks=[(0, "12:00"), (3, "12:03")],
        y_unit="/s",
    )
    assert svg.startswith('<svg xmlns="http://www.w3.org/2000/svg" class="gw-chart" data-chart="request-rate"')
    assert "<title>Rate &amp; more</title>" in svg and 'aria-label="Rate &amp; more"' in svg
    assert "a&lt;b" in svg and "a<b" not in svg
    paths = re.findall(r' d="([^"]*)"', svg)
    assert len(paths) == 2
    assert paths[0].count("M") == 2 and paths[0].count("L") == 1 and paths[0].endswith(" h0")  # a gap, then a dot
    assert ">12:00</text>" in svg and ">12:03</text>" in svg and ">5/s</text>" in svg  # y axis up to 5


def test_a_chart_without_values_says_no_data_and_draws_no_path() -> None:
    svg = line_chart([Series("p50", [(0, None), (1, None)])], title="t", chart="latency", x_label="x")
    assert "no data yet" in svg and "<path" not in svg
