"""Active health checks (ARCHITECTURE §7): hysteresis, probes against a real upstream, history, API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from controlplane.core.actors import Actor
from controlplane.core.models import AuditEvent, ConfigRevision, StateCounter
from controlplane.health import hysteresis
from controlplane.health.models import HealthResult, HealthRollup, TargetHealth
from controlplane.health.probes import ProbeResult, ProbeSpec, probe_one, probe_url
from controlplane.health.selectors import target_health_state, target_health_summary
from controlplane.health.services import (
    check_plans,
    endpoint_check_now,
    health_checks_run_due,
    health_history_purge,
    health_results_record,
)
from controlplane.health.stats import bucket_percentile, percentile
from controlplane.routing.models import Endpoint
from controlplane.routing.services import endpoint_create
from tests.conftest import endpoint_body

from .health_upstream import upstream

ACTOR = Actor.system("test")


def make_endpoint(base: str, *, name: str = "users", **health_check: Any) -> Endpoint:
    check = {"path": "/health", "interval": 5, "timeout": 2, "unhealthy_threshold": 3, "healthy_threshold": 2}
    check.update(health_check)
    return endpoint_create(data=endpoint_body(name, targets=[{"url": f"{base}/api"}], health_check=check), actor=ACTOR)


def state_seq() -> int:
    return StateCounter.objects.filter(pk=1).values_list("state_seq", flat=True).first() or 0


def health_of(endpoint: Endpoint) -> TargetHealth:
    return TargetHealth.objects.get(target__endpoint=endpoint)


# --- hysteresis (pure) --------------------------------------------------------------------------


def run(sequence: str, *, healthy: int = 2, unhealthy: int = 3) -> list[str]:
    state = hysteresis.HealthState()
    seen = []
    for outcome in sequence:
        state = hysteresis.advance(state, ok=outcome == "+", healthy_threshold=healthy, unhealthy_threshold=unhealthy)
        seen.append(state.status)
    return seen


def test_a_known_probe_sequence_gives_exact_statuses() -> None:
    assert run("--+-" "---" "+" "+" "-+" "+") == [
        "unknown", "unknown", "unknown", "unknown",
        "unknown", "unhealthy", "unhealthy",
        "unhealthy", "healthy",
        "healthy", "healthy", "healthy",
    ]  # fmt: skip


def test_the_first_probe_counts_so_threshold_one_decides_at_once() -> None:
    assert run("+", healthy=1) == ["healthy"]
    assert run("-", unhealthy=1) == ["unhealthy"]


def test_a_flapping_target_keeps_its_status() -> None:
    assert run("++" + "-+-+-+" + "--", healthy=2, unhealthy=3)[-1] == "healthy"


# --- statistics (pure) --------------------------------------------------------------------------


def test_percentiles_are_nearest_rank_and_bucket_upper_bounds() -> None:
    assert percentile([float(v) for v in range(1, 101)], 0.5) == 50
    assert percentile([float(v) for v in range(1, 101)], 0.95) == 95
    assert percentile([], 0.5) is None
    # 90 samples at <= 10 ms, 10 at <= 250 ms (bounds 1, 2.5, 5, 10, 25, 50, 100, 250, ...)
    buckets = [0, 0, 0, 90, 0, 0, 0, 10] + [0] * 8
    assert bucket_percentile(buckets, 0.5) == 10
    assert bucket_percentile(buckets, 0.95) == 250


# --- probes against a real upstream -------------------------------------------------------------


def test_probe_url_joins_the_target_base_path_and_the_health_path() -> None:
    assert probe_url("http://127.0.0.1:1/api/", "/health?deep=1") == "http://127.0.0.1:1/api/health?deep=1"
    assert probe_url("http://127.0.0.1:1", "/health") == "http://127.0.0.1:1/health"


def spec(url: str, **fields: Any) -> ProbeSpec:
    values: dict[str, Any] = {"path": "/health", "timeout": 2.0, "expected_statuses": ("2xx", "3xx")}
    values.update(fields)
    return ProbeSpec(target_id=1, url=url, **values)


def test_a_probe_gets_the_health_path_under_the_base_path_with_the_targets_host() -> None:
    import asyncio

    with upstream() as server:
        result = asyncio.run(probe_one(spec(f"{server.base}/api")))
    assert result.ok and result.status_code == 200 and result.latency_ms is not None
    assert server.paths == ["/api/health"]
    assert server.hosts == [f"127.0.0.1:{server.port}"]


def test_a_redirect_is_not_followed_and_fails_when_3xx_is_not_expected() -> None:
    import asyncio

    with upstream() as server:
        server.status, server.location = 302, f"{server.base}/elsewhere"
        result = asyncio.run(probe_one(spec(server.base, expected_statuses=("2xx",))))
    assert (result.ok, result.reason) == (False, "HTTP 302")
    assert server.paths == ["/health"]


def test_expected_statuses_may_name_a_single_status() -> None:
    import asyncio

    with upstream() as server:
        server.status = 404
        result = asyncio.run(probe_one(spec(server.base, expected_statuses=("2xx", 404))))
    assert result.ok


def test_a_slow_upstream_is_a_timeout() -> None:
    import asyncio

    with upstream() as server:
        server.delay = 1.0
        result = asyncio.run(probe_one(spec(server.base, timeout=0.3)))
    assert (result.ok, result.reason) == (False, "timeout")


def test_a_closed_port_is_connection_refused() -> None:
    import asyncio

    from tests.e2e.servers import free_port

    result = asyncio.run(probe_one(spec(f"http://127.0.0.1:{free_port()}")))
    assert (result.ok, result.reason) == (False, "connection refused")


def test_a_link_local_address_is_never_contacted() -> None:
    import asyncio

    result = asyncio.run(probe_one(spec("http://169.254.169.254")))
    assert not result.ok and result.reason.startswith("denied address")


# --- dispatcher, hysteresis in the database, events ---------------------------------------------


@pytest.mark.django_db
def test_a_failing_target_turns_unhealthy_after_exactly_the_threshold_and_bumps_state_seq() -> None:
    with upstream() as server:
        endpoint = make_endpoint(server.base, unhealthy_threshold=3, healthy_threshold=2)
        revisions = ConfigRevision.objects.count()
        now = datetime.now(UTC)
        assert health_checks_run_due(now=now) == 1
        assert health_checks_run_due(now=now + timedelta(seconds=5)) == 1
        assert health_of(endpoint).status == "healthy"
        seq = state_seq()
        server.status = 500
        statuses = []
        for i in range(1, 4):
            assert health_checks_run_due(now=now + timedelta(seconds=5 * (i + 1))) == 1
            statuses.append(health_of(endpoint).status)
    assert statuses == ["healthy", "healthy", "unhealthy"]
    health = health_of(endpoint)
    assert (health.consecutive_failures, health.last_error) == (3, "HTTP 500")
    assert state_seq() == seq + 1
    event = AuditEvent.objects.filter(action="target.health_change").first()
    assert event is not None and event.after == {"status": "unhealthy", "reason": "HTTP 500"}
    assert event.object_key == f"users:v1 {server.base}/api"
    assert ConfigRevision.objects.count() == revisions
    assert target_health_state() == {"users:v1": {f"{server.base}/api": "unhealthy"}}


@pytest.mark.django_db
def test_a_target_is_probed_once_per_interval() -> None:
    with upstream() as server:
        make_endpoint(server.base, interval=10)
        now = datetime.now(UTC)
        assert health_checks_run_due(now=now) == 1
        assert health_checks_run_due(now=now + timedelta(seconds=9)) == 0
        assert health_checks_run_due(now=now + timedelta(seconds=10)) == 1
    assert len(server.paths) == 2


@pytest.mark.django_db
def test_endpoints_without_a_health_path_or_disabled_are_not_checked() -> None:
    with upstream() as server:
        endpoint_create(data=endpoint_body("nopath", targets=[{"url": server.base}]), actor=ACTOR)
        make_endpoint(server.base, name="off", enabled=False)
        body = endpoint_body("disabled", targets=[{"url": server.base}], health_check={"path": "/health"})
        endpoint_create(data={**body, "enabled": False}, actor=ACTOR)
        assert check_plans() == {}
        assert health_checks_run_due() == 0
    assert server.paths == []


@pytest.mark.django_db
def test_uptime_and_percentiles_match_a_known_sequence() -> None:
    with upstream() as server:
        endpoint = make_endpoint(server.base)
    target = endpoint.targets.get()
    plans = check_plans()
    now = datetime(2026, 5, 1, 12, 30, tzinfo=UTC)
    # 10 results: latencies 1..10 ms, the 4th and 8th failing with HTTP 500.
    for i in range(1, 11):
        ok = i not in (4, 8)
        result = ProbeResult(
            target.pk, ok, now - timedelta(minutes=10 - i), status_code=200 if ok else 500,
            latency_ms=float(i), reason="" if ok else "HTTP 500",
        )  # fmt: skip
        health_results_record(results=[result], plans=plans, actor=ACTOR)
    summary = target_health_summary(target_id=target.pk, now=now)
    assert summary["last_100"] == {"checks": 10, "uptime": 0.8, "p50_ms": 5.0, "p95_ms": 10.0}
    # Buckets: <=1:1, <=2.5:1, <=5:3, <=10:5 → p50 is in the <=5 bucket, p95 in the <=10 bucket.
    assert summary["24h"] == {"checks": 10, "uptime": 0.8, "p50_ms": 5, "p95_ms": 10}
    assert summary["30d"]["checks"] == 10
    assert HealthRollup.objects.get().latency_buckets[:5] == [1, 1, 3, 5, 0]


@pytest.mark.django_db
def test_only_the_last_100_results_are_kept() -> None:
    with upstream() as server:
        endpoint = make_endpoint(server.base)
    target = endpoint.targets.get()
    plans = check_plans()
    now = datetime.now(UTC)
    results = [ProbeResult(target.pk, True, now, 200, 1.0) for _ in range(105)]
    for result in results:
        health_results_record(results=[result], plans=plans, actor=ACTOR)
    assert HealthResult.objects.filter(target=target).count() == 100
    assert HealthRollup.objects.get(target=target).checks == 105


@pytest.mark.django_db
def test_history_older_than_35_days_is_purged() -> None:
    with upstream() as server:
        endpoint = make_endpoint(server.base)
    target = endpoint.targets.get()
    now = datetime(2026, 5, 1, tzinfo=UTC)
    HealthRollup.objects.create(target=target, hour=now - timedelta(days=36), checks=1, latency_buckets=[])
    HealthRollup.objects.create(target=target, hour=now - timedelta(days=34), checks=1, latency_buckets=[])
    health_history_purge(now=now)
    assert list(HealthRollup.objects.values_list("hour", flat=True)) == [now - timedelta(days=34)]


@pytest.mark.django_db
def test_check_now_probes_and_records_the_endpoints_targets() -> None:
    with upstream() as server:
        endpoint = make_endpoint(server.base, healthy_threshold=1)
        [(plan, result)] = endpoint_check_now(endpoint=endpoint, actor=ACTOR)
    assert (plan.url, result.ok) == (f"{server.base}/api", True)
    assert health_of(endpoint).status == "healthy"


# --- API ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_health_list_filters_by_endpoint_and_status(readonly_client: Any) -> None:
    with upstream() as server:
        make_endpoint(server.base, healthy_threshold=1)
        make_endpoint(server.base, name="orders")
        health_checks_run_due()
    body = readonly_client.get("/api/v1/health/", {"endpoint": "users:v1"}).json()
    [row] = body["results"]
    assert row["endpoint"] == "users:v1" and row["url"] == f"{server.base}/api" and row["status"] == "healthy"
    assert row["uptime"]["last_100"]["checks"] == 1
    statuses = readonly_client.get("/api/v1/health/", {"status": "unknown"}).json()["results"]
    assert [r["endpoint"] for r in statuses] == ["orders:v1"]


@pytest.mark.django_db
def test_the_health_list_reads_a_page_in_a_fixed_number_of_queries(readonly_client: Any) -> None:
    targets = [{"url": f"http://127.0.0.1:9/t{i:02}"} for i in range(12)]
    check = {"path": "/health", "interval": 5, "timeout": 2, "unhealthy_threshold": 3, "healthy_threshold": 2}
    endpoint_create(data=endpoint_body("many", targets=targets, health_check=check), actor=ACTOR)
    plans = check_plans()
    now = datetime.now(UTC)
    # Target i has i + 1 results, its last one failing: every row's uptime is its own.
    for index, target_id in enumerate(sorted(plans, key=lambda pk: plans[pk].url)):
        results = [ProbeResult(target_id, True, now, 200, 3.0) for _ in range(index)]
        results.append(ProbeResult(target_id, False, now, 500, 7.0, "HTTP 500"))
        for result in results:
            health_results_record(results=[result], plans=plans, actor=ACTOR)

    def page(limit: int) -> tuple[int, list[dict[str, Any]]]:
        with CaptureQueriesContext(connection) as queries:
            response = readonly_client.get("/api/v1/health/", {"endpoint": "many:v1", "limit": limit})
        assert response.status_code == 200
        return len(queries), response.json()["results"]

    small_count, small = page(2)
    large_count, large = page(12)
    assert (len(small), len(large)) == (2, 12)
    assert small_count == large_count <= 8  # 8: the health_check defaults, for each unknown target's reason
    for index, row in enumerate(large):
        assert row["url"] == f"http://127.0.0.1:9/t{index:02}"
        assert row["uptime"]["last_100"]["checks"] == row["uptime"]["24h"]["checks"] == index + 1
        assert row["uptime"]["last_100"]["uptime"] == index / (index + 1)
        assert row["uptime"]["last_100"]["p95_ms"] == 7.0
    # The same figures as the one-target summary gives, in every window.
    by_url = {plan.url: target_id for target_id, plan in plans.items()}
    assert large[5]["uptime"] == target_health_summary(target_id=by_url[large[5]["url"]])


@pytest.mark.django_db
def test_check_endpoint_answers_the_probe_results(operator_client: Any) -> None:
    with upstream() as server:
        make_endpoint(server.base)
        server.status = 503
        response = operator_client.post("/api/v1/endpoints/users:v1/check/")
    assert response.status_code == 200, response.content
    [result] = response.json()["results"]
    assert result["url"] == f"{server.base}/api"
    assert (result["ok"], result["status_code"], result["reason"]) == (False, 503, "HTTP 503")
    assert result["health"]["consecutive_failures"] == 1


@pytest.mark.django_db
def test_check_endpoint_needs_config_write(readonly_client: Any) -> None:
    with upstream() as server:
        make_endpoint(server.base)
        assert readonly_client.post("/api/v1/endpoints/users:v1/check/").status_code == 403
    assert server.paths == []


@pytest.mark.django_db
def test_health_list_needs_authentication(client: Any) -> None:
    assert client.get("/api/v1/health/").status_code == 401


@pytest.mark.django_db
def test_a_target_never_checked_is_listed_as_unknown(readonly_client: Any) -> None:
    endpoint_create(data=endpoint_body("fresh"), actor=ACTOR)
    [row] = readonly_client.get("/api/v1/health/", {"status": "unknown"}).json()["results"]
    assert (row["endpoint"], row["status"], row["last_checked_at"]) == ("fresh:v1", "unknown", None)
    assert readonly_client.get("/api/v1/health/", {"status": "healthy"}).json()["results"] == []


@pytest.mark.django_db
def test_the_admin_shows_health_read_only_with_badges(make_user: Any) -> None:
    from django.test import Client

    with upstream() as server:
        make_endpoint(server.base, healthy_threshold=1)
        health_checks_run_due()
    client = Client()
    client.force_login(make_user("rita", "readonly"))
    page = client.get("/admin/health/targethealth/")
    assert page.status_code == 200
    assert b"healthy</span>" in page.content and b"100.00 %" in page.content
    pk = TargetHealth.objects.get().pk
    detail = client.get(f"/admin/health/targethealth/{pk}/change/")
    assert detail.status_code == 200 and b"p95" in detail.content
    assert client.get("/admin/health/targethealth/add/").status_code == 403


@pytest.mark.django_db
def test_the_brief_health_of_a_target_carries_status_counters_and_uptime() -> None:
    from controlplane.health.selectors import target_health_brief

    with upstream() as server:
        endpoint = make_endpoint(server.base, healthy_threshold=1)
        health_checks_run_due()
    fresh = endpoint_create(data=endpoint_body("fresh"), actor=ACTOR).targets.get()
    target = endpoint.targets.get()
    brief = target_health_brief([target.pk, fresh.pk])
    assert brief[target.pk]["status"] == "healthy" and brief[target.pk]["uptime"]["last_100"] == 1.0
    assert brief[target.pk]["reason"] is None
    assert brief[fresh.pk] == {
        "status": "unknown", "reason": "no_health_check", "consecutive_successes": 0, "consecutive_failures": 0,
        "last_checked_at": None, "last_error": "", "uptime": {"last_100": None, "24h": None},
    }  # fmt: skip


@pytest.mark.django_db
def test_a_result_for_a_target_deleted_during_its_probe_is_dropped_and_the_rest_recorded() -> None:
    with upstream() as server:
        kept = make_endpoint(server.base).targets.get()
        gone = make_endpoint(server.base, name="gone").targets.get()
    plans = check_plans()
    now = datetime.now(UTC)
    gone.delete()
    results = [ProbeResult(kept.pk, True, now, 200, 1.0), ProbeResult(gone.pk, True, now, 200, 1.0)]
    health_results_record(results=results, plans=plans, actor=ACTOR)
    assert list(HealthResult.objects.values_list("target_id", flat=True)) == [kept.pk]
