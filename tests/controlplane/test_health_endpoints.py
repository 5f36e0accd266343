"""Health where endpoints are shown: each target's read-only `health` in the API (one query for a page,
never in the document), and the admin's badges and per-endpoint health page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from controlplane.core.actors import Actor
from controlplane.core.models import ConfigRevision
from controlplane.health.charts import Series, latency_chart
from controlplane.health.probes import ProbeResult
from controlplane.health.services import check_plans, health_results_record
from controlplane.routing.models import Endpoint
from controlplane.routing.services import endpoint_create
from controlplane.snapshots.services import config_export
from tests.conftest import endpoint_body

pytestmark = pytest.mark.django_db
ACTOR = Actor.system("test")
API = "/api/v1"
CHECK = {"path": "/health", "interval": 5, "timeout": 2, "unhealthy_threshold": 3, "healthy_threshold": 2}


def make_endpoint(name: str = "users", urls: tuple[str, ...] = ("http://127.0.0.1:8010/api",)) -> Endpoint:
    body = endpoint_body(name, targets=[{"url": url} for url in urls], health_check=CHECK)
    return endpoint_create(data=body, actor=ACTOR)


def record_known_sequence(endpoint: Endpoint, url: str = "http://127.0.0.1:8010/api") -> None:
    """10 probes, latencies 1..10 ms, the 4th and 8th failing: uptime 80 %, p50 5 ms, p95 10 ms."""
    target = endpoint.targets.get(url=url)
    plans = check_plans()
    now = datetime.now(UTC)
    for i in range(1, 11):
        ok = i not in (4, 8)
        result = ProbeResult(
            target.pk, ok, now - timedelta(minutes=10 - i), status_code=200 if ok else 500,
            latency_ms=float(i), reason="" if ok else "HTTP 500",
        )  # fmt: skip
        health_results_record(results=[result], plans=plans, actor=ACTOR)


# --- API ------------------------------------------------------------------------------------------


def test_each_target_carries_its_read_only_health(readonly_client: Any) -> None:
    endpoint = make_endpoint(urls=("http://127.0.0.1:8010/api", "http://127.0.0.1:8011/api"))
    record_known_sequence(endpoint)
    body = readonly_client.get(f"{API}/endpoints/users:v1/").json()
    checked, fresh = body["targets"]
    assert checked["url"] == "http://127.0.0.1:8010/api"
    # 2 successes in a row (the 8th failed, 9 and 10 passed): healthy again at healthy_threshold 2.
    assert checked["health"]["status"] == "healthy"
    assert checked["health"]["consecutive_successes"] == 2
    assert checked["health"]["consecutive_failures"] == 0
    assert checked["health"]["last_error"] == ""
    assert checked["health"]["last_checked_at"].endswith("Z")
    assert checked["health"]["uptime"] == {"last_100": 0.8, "24h": 0.8}
    assert checked["health"]["reason"] is None
    assert fresh["health"] == {
        "status": "unknown", "reason": "not_checked_yet", "consecutive_successes": 0, "consecutive_failures": 0,
        "last_checked_at": None, "last_error": "", "uptime": {"last_100": None, "24h": None},
    }  # fmt: skip
    listed = readonly_client.get(f"{API}/endpoints/").json()["results"][0]
    assert listed["targets"] == body["targets"]


def test_a_failing_target_shows_unhealthy_with_its_last_error(readonly_client: Any) -> None:
    endpoint = make_endpoint()
    target = endpoint.targets.get()
    plans = check_plans()
    now = datetime.now(UTC)
    for i in range(3):
        result = ProbeResult(target.pk, False, now - timedelta(seconds=3 - i), status_code=500, reason="HTTP 500")
        health_results_record(results=[result], plans=plans, actor=ACTOR)
    [health] = [t["health"] for t in readonly_client.get(f"{API}/endpoints/users:v1/").json()["targets"]]
    assert (health["status"], health["consecutive_failures"], health["last_error"]) == ("unhealthy", 3, "HTTP 500")
    assert health["uptime"] == {"last_100": 0.0, "24h": 0.0}


def list_queries(client: Any) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(f"{API}/endpoints/")
    assert response.status_code == 200
    return len(queries)


def test_the_list_reads_health_in_one_query_for_the_whole_page(readonly_client: Any) -> None:
    record_known_sequence(make_endpoint("a"))
    list_queries(readonly_client)  # warm: the user's roles, sessions
    few = list_queries(readonly_client)
    for name in ("b", "c", "d", "e", "f"):
        make_endpoint(name, urls=("http://127.0.0.1:8010/api", "http://127.0.0.1:8011/api"))
    assert list_queries(readonly_client) == few
    with CaptureQueriesContext(connection) as queries:
        readonly_client.get(f"{API}/endpoints/")
    health_queries = [q["sql"] for q in queries if "health_healthresult" in q["sql"]]
    assert len(health_queries) == 1


def test_a_get_representation_with_health_can_be_put_back(operator_client: Any) -> None:
    endpoint = make_endpoint()
    record_known_sequence(endpoint)
    got = operator_client.get(f"{API}/endpoints/users:v1/")
    body = got.json()
    assert "health" in body["targets"][0]
    count = ConfigRevision.objects.count()
    response = operator_client.put(f"{API}/endpoints/users:v1/", body, format="json", HTTP_IF_MATCH=got["ETag"])
    assert response.status_code == 200, response.content
    assert ConfigRevision.objects.count() == count
    body["targets"][0]["weight"] = 7
    response = operator_client.patch(f"{API}/endpoints/users:v1/", {"targets": body["targets"]}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["targets"][0]["weight"] == 7
    assert response.json()["targets"][0]["health"]["uptime"]["last_100"] == 0.8
    assert all("health" not in target for target in Endpoint.objects.get().document["targets"])


def test_health_is_never_in_the_document_nor_the_export(operator_client: Any) -> None:
    record_known_sequence(make_endpoint())
    exported = config_export()
    assert all(set(target) <= {"url", "weight", "enabled"} for target in exported["endpoints"][0]["targets"])
    over_http = operator_client.get(f"{API}/config/export/?format=json").content.decode()
    assert '"health"' not in over_http
    assert '"health"' not in Endpoint.objects.get().canonical


# --- admin ----------------------------------------------------------------------------------------


def browser(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_endpoint_list_shows_health_badges_per_endpoint(make_user: Any) -> None:
    endpoint = make_endpoint(urls=("http://127.0.0.1:8010/api", "http://127.0.0.1:8011/api"))
    target = endpoint.targets.get(url="http://127.0.0.1:8011/api")
    plans = check_plans()
    for _ in range(3):
        result = ProbeResult(target.pk, False, datetime.now(UTC), status_code=500, reason="HTTP 500")
        health_results_record(results=[result], plans=plans, actor=ACTOR)
    page = browser(make_user("rita", "readonly")).get("/admin/routing/endpoint/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'title="0 healthy"' in html and 'title="1 unhealthy"' in html and 'title="1 unknown"' in html
    assert f"/admin/routing/endpoint/{endpoint.pk}/health/" in html


def test_the_endpoint_list_badges_cost_no_query_per_row(make_user: Any) -> None:
    client = browser(make_user("rita", "readonly"))
    make_endpoint("a")
    client.get("/admin/routing/endpoint/")
    with CaptureQueriesContext(connection) as one:
        client.get("/admin/routing/endpoint/")
    for name in ("b", "c", "d"):
        make_endpoint(name)
    with CaptureQueriesContext(connection) as four:
        client.get("/admin/routing/endpoint/")
    assert len(four) == len(one)


def test_the_health_page_renders_for_readonly_with_uptime_and_an_svg_chart(make_user: Any) -> None:
    endpoint = make_endpoint(urls=("http://127.0.0.1:8010/api", "http://127.0.0.1:8011/api"))
    record_known_sequence(endpoint)
    client = browser(make_user("rita", "readonly"))
    change = client.get(f"/admin/routing/endpoint/{endpoint.pk}/change/")
    assert change.status_code == 200
    assert f"/admin/routing/endpoint/{endpoint.pk}/health/".encode() in change.content
    page = client.get(f"/admin/routing/endpoint/{endpoint.pk}/health/")
    assert page.status_code == 200
    html = page.content.decode()
    charts = html.split('<div class="health-charts">')[1].split("</div>")[0]
    assert charts.count("<svg") == 2 and '<path class="gw-series"' in charts and "<script" not in charts
    assert "http://127.0.0.1:8010/api" in html and "http://127.0.0.1:8011/api" in html
    # The known sequence: 8 of 10 probes succeeded; p50 5 ms and p95 10 ms (exact and from the buckets).
    assert html.count('<td class="uptime">80.00 %</td>') == 4  # last 100, 24 h, 7 d, 30 d
    for window in ("last 100 checks", "24 h", "7 d", "30 d"):
        assert f"<td>{window}</td>" in html
    assert "<td>5 ms</td><td>10 ms</td>" in html


def test_the_health_page_needs_config_read(make_user: Any) -> None:
    endpoint = make_endpoint()
    url = f"/admin/routing/endpoint/{endpoint.pk}/health/"
    anonymous = Client().get(url)
    assert anonymous.status_code == 302 and "/admin/login/" in anonymous["Location"]
    assert browser(make_user("alice", "admin")).get(url).status_code == 200
    assert browser(make_user("oscar", "operator")).get(url).status_code == 200
    assert browser(make_user("rita", "readonly")).get("/admin/routing/endpoint/999999/health/").status_code == 404


def test_the_chart_escapes_labels_and_draws_gaps_for_failures() -> None:
    svg = latency_chart(
        [Series("<b>x</b>", [(0, 1.0), (1, None), (2, 3.0), (3, 4.0)])], title="t & u", x_label="minutes"
    )
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "<b>" not in svg and "&lt;b&gt;" in svg and "t &amp; u" in svg
    # One path for the series: the point before the failure a dot ("h0"), the two after it a line.
    assert svg.count("<path") == 1 and svg.split(' d="')[1].split('"')[0].count("M") == 2 and " h0 M" in svg
    assert 'fill="#c62828"' in svg
    assert "no data yet" in latency_chart([], title="empty", x_label="minutes")


# --- probes at scale --------------------------------------------------------------------------------


def test_probes_share_one_tls_context_instead_of_building_one_each(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building an SSL context loads the CA bundle (tens of ms of CPU on the event loop); one per probe
    made every probe of a 1,000-target batch time out (bench/health_scale.py)."""
    import asyncio
    import ssl

    from controlplane.health import probes

    from .health_upstream import upstream

    probes._ssl_context.cache_clear()
    built: list[object] = []
    original = ssl.create_default_context

    def counting(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        built.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counting)
    with upstream() as server:
        specs = [probes.ProbeSpec(i, f"{server.base}/t{i}", "/health", 5.0, ["2xx"]) for i in range(20)]
        results = asyncio.run(probes.probe_all(specs))
    assert all(result.ok for result in results)
    assert len(built) <= 1
    assert probes._verify({}) is probes._verify({"verify": True})
    assert probes._verify({"verify": False}) is False


# --- why a target is `unknown` ------------------------------------------------------------------------


def unknown_world(operator_client: Any) -> None:
    """Through the API, as an operator sets them up: no health path; a path with checks switched off; a
    path with checks on (one target disabled); and a checked target."""
    bodies = [
        endpoint_body("nopath", targets=[{"url": "http://127.0.0.1:8010/a"}]),
        endpoint_body("off", targets=[{"url": "http://127.0.0.1:8010/b"}], health_check={**CHECK, "enabled": False}),
        endpoint_body(
            "pending",
            targets=[{"url": "http://127.0.0.1:8010/c"}, {"url": "http://127.0.0.1:8010/d", "enabled": False}],
            health_check=CHECK,
        ),
    ]
    for body in bodies:
        assert operator_client.post(f"{API}/endpoints/", body, format="json").status_code == 201
    record_known_sequence(make_endpoint("checked"))


EXPECTED_REASONS = {
    "http://127.0.0.1:8010/a": ("unknown", "no_health_check"),
    "http://127.0.0.1:8010/b": ("unknown", "no_health_check"),
    "http://127.0.0.1:8010/c": ("unknown", "not_checked_yet"),
    "http://127.0.0.1:8010/d": ("unknown", "disabled"),
    "http://127.0.0.1:8010/api": ("healthy", None),
}


def test_an_unknown_target_says_whether_no_check_is_configured_or_it_is_not_checked_yet(
    operator_client: Any, readonly_client: Any
) -> None:
    unknown_world(operator_client)

    endpoints = readonly_client.get(f"{API}/endpoints/").json()["results"]
    seen = {t["url"]: (t["health"]["status"], t["health"]["reason"]) for e in endpoints for t in e["targets"]}
    assert seen == EXPECTED_REASONS
    listed = readonly_client.get(f"{API}/health/").json()["results"]
    assert {row["url"]: (row["status"], row["reason"]) for row in listed} == EXPECTED_REASONS
    one = readonly_client.get(f"{API}/endpoints/pending:v1/").json()["targets"][0]["health"]
    assert (one["status"], one["reason"]) == ("unknown", "not_checked_yet")


def test_the_admin_pages_say_why_a_target_is_unknown(operator_client: Any, make_user: Any) -> None:
    unknown_world(operator_client)
    browser = Client()
    browser.force_login(make_user("rita", "readonly", is_staff=True))

    nopath = Endpoint.objects.get(name="nopath")
    pending = Endpoint.objects.get(name="pending")
    health_page = browser.get(f"/admin/routing/endpoint/{pending.pk}/health/").content.decode()
    assert '<span class="unknown-reason help">(not checked yet)</span>' in health_page
    assert '<span class="unknown-reason help">(not checked: disabled)</span>' in health_page
    dashboard = browser.get(f"/admin/routing/endpoint/{nopath.pk}/dashboard/").content.decode()
    assert '<span class="unknown-reason help">(no health check configured)</span>' in dashboard
