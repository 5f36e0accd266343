"""Traffic statistics from the nodes' status reports: delta derivation, the minute and hour rows,
retention, the selectors, the system summary and the `stats/` API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import pytest
from django.utils import timezone

from configdoc.reports import BUCKET_COUNT
from controlplane.core.actors import Actor
from controlplane.dataplanes.models import DataPlaneNode
from controlplane.dataplanes.services import dataplane_token_issue, node_status_record
from controlplane.routing.services import endpoint_create
from controlplane.stats.models import NodeCounterBaseline, TrafficHour, TrafficMinute
from controlplane.stats.selectors import system_summary, traffic_series, traffic_totals
from controlplane.stats.services import stats_ingest, stats_prune
from tests.conftest import endpoint_body

pytestmark = pytest.mark.django_db
ACTOR = Actor.command("test")
NOW = datetime(2026, 3, 1, 12, 30, 15, tzinfo=UTC)


def histogram(**counts: int) -> list[int]:
    """Buckets by index: histogram(b4=2) → two observations in bucket 4 (10-25 ms)."""
    buckets = [0] * BUCKET_COUNT
    for name, count in counts.items():
        buckets[int(name[1:])] = count
    return buckets


def entry(ok: int = 0, client: int = 0, server: int = 0, *, errors: dict[str, int] | None = None, retries: int = 0,
          trips: int = 0, fast: int | None = None) -> dict[str, Any]:  # fmt: skip
    total = ok + client + server
    return {
        "requests": {"2xx": ok, "3xx": 0, "4xx": client, "5xx": server},
        "errors": errors or {},
        "retries": retries,
        "breaker_trips": trips,
        "duration": {"buckets": histogram(b4=total if fast is None else fast), "sum": 0.02 * total},
        "upstream_duration": {"buckets": histogram(b3=total), "sum": 0.01 * total},
    }


def report(node: str = "edge-1-w0", boot: str = "boot-1", **counters: dict[str, Any]) -> dict[str, Any]:
    return {
        "node_id": node, "boot_id": boot, "hostname": "edge", "version": "0.1.0", "revision": 1,
        "config_sha256": "a" * 64, "state_seq": 0, "result": "applied", "error": None, "breakers": {},
        "counters": {key.replace("_", ":"): value for key, value in counters.items()},
    }  # fmt: skip


def minute(key: str = "users:v1", at: datetime = NOW) -> TrafficMinute:
    return TrafficMinute.objects.get(endpoint_key=key, start=at.replace(second=0, microsecond=0))


def classes(row: TrafficMinute | TrafficHour) -> tuple[int, int, int, int]:
    return (row.requests_2xx, row.requests_3xx, row.requests_4xx, row.requests_5xx)


# --- deltas -----------------------------------------------------------------------------------------


def test_the_first_report_of_a_boot_is_the_delta_and_the_next_adds_only_the_growth() -> None:
    stats_ingest(report=report(users_v1=entry(5, 1, 2, errors={"upstream_timeout": 2}, retries=1)), now=NOW)
    stats_ingest(report=report(users_v1=entry(8, 1, 3, errors={"upstream_timeout": 3}, retries=1, trips=1)), now=NOW)
    row = minute()
    assert classes(row) == (8, 0, 1, 3)
    assert row.errors == {"upstream_timeout": 3}
    assert (row.retries, row.breaker_trips) == (1, 1)
    assert row.duration_buckets == histogram(b4=12)
    assert row.duration_sum == pytest.approx(0.24)
    hour = TrafficHour.objects.get(endpoint_key="users:v1")
    assert classes(hour) == (8, 0, 1, 3)
    assert hour.start == NOW.replace(minute=0, second=0)


def test_a_new_boot_counts_from_zero_so_its_counters_are_the_delta() -> None:
    stats_ingest(report=report(users_v1=entry(10)), now=NOW)
    stats_ingest(report=report(boot="boot-2", users_v1=entry(3)), now=NOW)  # restarted: new boot_id
    assert classes(minute()) == (13, 0, 0, 0)


def test_a_counter_that_went_down_is_taken_as_restarted() -> None:
    stats_ingest(report=report(users_v1=entry(10, server=4)), now=NOW)
    stats_ingest(report=report(users_v1=entry(12, server=1)), now=NOW)  # 5xx reset, 2xx grew
    assert classes(minute()) == (12, 0, 0, 5)


def test_an_older_report_arriving_late_adds_nothing() -> None:
    stats_ingest(report=report(users_v1=entry(5)), now=NOW)
    stats_ingest(report=report(users_v1=entry(9)), now=NOW)
    stats_ingest(report=report(users_v1=entry(7)), now=NOW)  # out of order: older than the last
    stats_ingest(report=report(users_v1=entry(10)), now=NOW)
    assert classes(minute()) == (10, 0, 0, 0)


def test_a_late_report_of_an_earlier_boot_counts_against_that_boot() -> None:
    stats_ingest(report=report(users_v1=entry(5)), now=NOW)
    stats_ingest(report=report(boot="boot-2", users_v1=entry(2)), now=NOW)
    stats_ingest(report=report(users_v1=entry(6)), now=NOW)  # boot-1's last words, delivered late
    assert classes(minute()) == (8, 0, 0, 0)


def test_two_nodes_add_up_and_each_has_its_own_baseline() -> None:
    stats_ingest(report=report("edge-1-w0", users_v1=entry(5), orders_v2=entry(1)), now=NOW)
    stats_ingest(report=report("edge-1-w1", users_v1=entry(7)), now=NOW)
    stats_ingest(report=report("edge-1-w0", users_v1=entry(6), orders_v2=entry(1)), now=NOW)
    assert classes(minute()) == (13, 0, 0, 0)
    assert classes(minute("orders:v2")) == (1, 0, 0, 0)
    assert NodeCounterBaseline.objects.count() == 2


def test_deltas_go_to_the_minute_they_arrive_in() -> None:
    stats_ingest(report=report(users_v1=entry(5)), now=NOW)
    stats_ingest(report=report(users_v1=entry(9)), now=NOW + timedelta(minutes=1))
    assert classes(minute()) == (5, 0, 0, 0)
    assert classes(minute(at=NOW + timedelta(minutes=1))) == (4, 0, 0, 0)
    assert classes(TrafficHour.objects.get()) == (9, 0, 0, 0)


def test_the_node_status_record_ingests_before_storing_the_report() -> None:
    node_status_record(report=report(users_v1=entry(4)))
    node_status_record(report=report(users_v1=entry(6)))
    assert DataPlaneNode.objects.get().counters["users:v1"]["requests"]["2xx"] == 6
    assert traffic_totals(since=timezone.now() - timedelta(minutes=5))["requests"] == 6


# --- retention --------------------------------------------------------------------------------------


def test_retention_keeps_minutes_a_day_and_hours_thirty_days() -> None:
    for age in (timedelta(hours=23), timedelta(hours=25)):
        stats_ingest(report=report(node=f"n{age.seconds}", users_v1=entry(1)), now=NOW - age)
    for age in (timedelta(days=29), timedelta(days=31)):
        stats_ingest(report=report(node=f"m{age.days}", users_v1=entry(1)), now=NOW - age)
    result = stats_prune(now=NOW)
    assert sorted(TrafficMinute.objects.values_list("start", flat=True)) == [
        (NOW - timedelta(hours=23)).replace(second=0)
    ]
    assert sorted(TrafficHour.objects.values_list("start", flat=True)) == [
        (NOW - timedelta(days=29)).replace(minute=0, second=0),
        (NOW - timedelta(hours=25)).replace(minute=0, second=0),
        (NOW - timedelta(hours=23)).replace(minute=0, second=0),
    ]
    assert result["minutes"] == 3 and result["hours"] == 1
    assert NodeCounterBaseline.objects.count() == 1  # only the boot heard from within a day


# --- selectors --------------------------------------------------------------------------------------


def test_totals_merge_endpoints_and_compute_the_error_rate_and_percentiles() -> None:
    now = timezone.now()
    stats_ingest(report=report(users_v1=entry(6, 2, 2, errors={"upstream_timeout": 2}, fast=10)), now=now)
    stats_ingest(report=report(node="b", orders_v1=entry(10, fast=10)), now=now)
    totals = traffic_totals(since=now - timedelta(minutes=5))
    assert totals["requests"] == 20
    assert totals["by_class"] == {"2xx": 16, "3xx": 0, "4xx": 2, "5xx": 2}
    assert (totals["errors"], totals["gateway_errors"]) == ({"upstream_timeout": 2}, 2)
    assert totals["error_rate"] == pytest.approx(0.1)
    # 20 observations in 10-25 ms: p50 is halfway through that bucket.
    assert totals["latency_ms"]["p50"] == pytest.approx(17.5)
    assert totals["upstream_latency_ms"]["p99"] == pytest.approx(5 + 5 * 0.99)
    users = traffic_totals(since=now - timedelta(minutes=5), endpoint_key="users:v1")
    assert (users["requests"], users["error_rate"]) == (10, pytest.approx(0.2))


def test_totals_without_traffic_are_zeros_and_no_percentiles() -> None:
    totals = traffic_totals(since=timezone.now() - timedelta(hours=1), endpoint_key="users:v1")
    assert totals["requests"] == 0 and totals["error_rate"] == 0.0
    assert totals["latency_ms"] == {"p50": None, "p95": None, "p99": None}


def test_a_window_older_than_a_day_reads_the_hour_rows() -> None:
    now = timezone.now()
    stats_ingest(report=report(users_v1=entry(3)), now=now - timedelta(days=3))
    stats_ingest(report=report(users_v1=entry(5)), now=now)
    assert traffic_totals(since=now - timedelta(days=7))["requests"] == 5
    assert traffic_totals(since=now - timedelta(hours=1))["requests"] == 2


def test_the_series_has_every_step_with_zeros_oldest_first() -> None:
    now = timezone.now()
    stats_ingest(report=report(users_v1=entry(60, server=60)), now=now - timedelta(minutes=3))
    series = traffic_series(since=now - timedelta(minutes=5), endpoint_key="users:v1")
    assert len(series) == 6
    assert [point["at"] for point in series] == sorted(point["at"] for point in series)
    assert [point["requests"] for point in series] == [0, 0, 120, 0, 0, 0]
    busy = series[2]
    assert (busy["rate_per_s"], busy["errors_5xx"], busy["error_rate"]) == (2.0, 60, 0.5)
    assert busy["p50_ms"] is not None and series[0]["p50_ms"] is None
    hourly = traffic_series(since=now - timedelta(hours=5), step="hour")
    assert len(hourly) == 6 and sum(point["requests"] for point in hourly) == 120


def test_the_step_in_progress_is_a_rate_over_the_seconds_it_has_run() -> None:
    # 20 s into a minute, 40 requests: 2/s, not 40/60 (the chart's last point would otherwise dip).
    start = timezone.now().replace(second=0, microsecond=0) + timedelta(minutes=1)
    stats_ingest(report=report(users_v1=entry(20, server=20)), now=start + timedelta(seconds=5))
    with mock.patch("django.utils.timezone.now", return_value=start + timedelta(seconds=20)):
        series = traffic_series(since=start - timedelta(minutes=1), endpoint_key="users:v1")
    assert [point["requests"] for point in series] == [0, 40]
    assert series[-1]["rate_per_s"] == 2.0


# --- system summary ---------------------------------------------------------------------------------


def test_the_summary_is_healthy_with_no_nodes_and_routable_targets() -> None:
    endpoint_create(data=endpoint_body("users"), actor=ACTOR)
    endpoint_create(data=endpoint_body("orders", enabled=False), actor=ACTOR)
    summary = system_summary()
    assert summary["status"] == "healthy", summary["reasons"]
    assert summary["registry"] == {
        "endpoints": {"total": 2, "enabled": 1, "disabled": 1},
        "targets": {"total": 2, "enabled": 2},
    }
    assert summary["health"] == {"healthy": 0, "unhealthy": 0, "unknown": 1}
    assert (summary["open_breakers"], summary["unhealthy_endpoints"]) == ([], [])
    assert summary["nodes"] == {"live": 0, "stale": 0, "gone": 0}


def test_an_open_breaker_on_a_live_node_degrades_and_an_unroutable_endpoint_makes_it_unhealthy() -> None:
    from controlplane.health.models import HealthStatus, TargetHealth
    from controlplane.routing.models import Target

    endpoint_create(data=endpoint_body("users"), actor=ACTOR)
    node_status_record(
        report={
            **report(),
            "breakers": {"users:v1": {"state": "open", "forced": None, "reset_generation": 0, "transitions": []}},
        }  # fmt: skip
    )
    summary = system_summary()
    assert (summary["status"], summary["open_breakers"]) == ("degraded", ["users:v1"])
    assert summary["nodes"] == {"live": 1, "stale": 0, "gone": 0}

    TargetHealth.objects.create(target=Target.objects.get(), status=HealthStatus.UNHEALTHY)
    summary = system_summary()
    assert (summary["status"], summary["unhealthy_endpoints"]) == ("unhealthy", ["users:v1"])
    assert summary["health"]["unhealthy"] == 1


def test_a_high_5xx_rate_degrades_and_no_live_node_is_unhealthy() -> None:
    stats_ingest(report=report(users_v1=entry(90, server=10)))
    assert system_summary()["status"] == "degraded"
    DataPlaneNode.objects.create(
        node_id="old", boot_id="b", hostname="h", version="1", result="applied",
        last_seen=timezone.now() - timedelta(hours=1),
    )  # fmt: skip
    summary = system_summary()
    assert summary["status"] == "unhealthy"
    assert summary["nodes"] == {"live": 0, "stale": 0, "gone": 1}  # gone, yet the only node: unhealthy


# --- API ----------------------------------------------------------------------------------------------


def test_the_stats_api_shows_overall_and_per_endpoint_totals(admin_client: Any) -> None:
    endpoint_create(data=endpoint_body("users"), actor=ACTOR)
    stats_ingest(report=report(users_v1=entry(3, 1, 1)))
    body = admin_client.get("/api/v1/stats/?window=5m").json()
    assert body["window"] == "5m"
    assert body["totals"]["by_class"] == {"2xx": 3, "3xx": 0, "4xx": 1, "5xx": 1}
    assert body["endpoints"]["users:v1"]["requests"] == 5
    detail = admin_client.get("/api/v1/stats/endpoints/users:v1/?window=1h").json()
    assert (detail["step"], detail["totals"]["requests"], len(detail["series"])) == ("minute", 5, 61)
    assert admin_client.get("/api/v1/stats/endpoints/users:v1/?window=7d").json()["step"] == "hour"
    assert admin_client.get("/api/v1/stats/summary/").json()["registry"]["endpoints"]["total"] == 1


def test_an_unknown_endpoint_is_404_and_a_bad_window_is_400_naming_the_field(admin_client: Any) -> None:
    assert admin_client.get("/api/v1/stats/endpoints/ghost:v1/").status_code == 404
    for path in ("/api/v1/stats/?window=2d", "/api/v1/stats/endpoints/ghost:v1/?window=forever"):
        response = admin_client.get(path)
        assert response.status_code == 400
        assert response.json()["error"] == "validation_error"
        assert "window" in response.json()["fields"]


# --- the status report's shapes ---------------------------------------------------------------------------


def test_a_status_report_with_malformed_counters_is_400_by_path_and_nothing_is_stored() -> None:
    from tests.controlplane.test_dataplane_sync import post_status

    secret = dataplane_token_issue(name="edge-1", actor=ACTOR)[1]
    bad = report(users_v1={**entry(1), "requests": {"2xx": -1, "3xx": 0, "4xx": 0, "5xx": 0}})
    response = post_status(secret, bad)
    assert response.status_code == 400
    assert response.json()["error"] == "validation_error"
    assert 'counters["users:v1"].requests.2xx' in response.json()["fields"]
    assert not DataPlaneNode.objects.exists()
    assert not TrafficMinute.objects.exists() and not NodeCounterBaseline.objects.exists()

    bad_breaker = {**report(), "breakers": {"users:v1": {"state": "ajar"}}}
    fields = post_status(secret, bad_breaker).json()["fields"]
    assert 'breakers["users:v1"].state' in fields and 'breakers["users:v1"].transitions' in fields

    assert post_status(secret, report(users_v1=entry(2))).status_code == 204
    assert TrafficMinute.objects.get().requests_2xx == 2
