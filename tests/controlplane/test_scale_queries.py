"""What a write and a list cost must not grow with the number of endpoints (bench/large_config.py
and bench/api_scale.py measure the same at 10,000)."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from configdoc.reports import BUCKET_COUNT
from controlplane.core import revisions
from controlplane.core.actors import Actor
from controlplane.core.revisions import current_document_bytes, latest_revision, revision_document_bytes
from controlplane.snapshots.services import config_import
from controlplane.stats.services import stats_ingest

pytestmark = pytest.mark.django_db
API = "/api/v1"


def document(count: int) -> dict[str, Any]:
    return {
        "format_version": 1,
        "breaker_policies": [],
        "endpoints": [
            {
                "name": f"svc-{i:04d}",
                "version": "v1",
                "description": f"service number {i}",
                "tags": ["even" if i % 2 == 0 else "odd"],
                "targets": [{"url": f"http://127.0.0.1:9000/a{i}"}, {"url": f"http://127.0.0.1:9001/b{i}"}],
            }
            for i in range(count)
        ],
    }


def populate(count: int) -> None:
    config_import(document=document(count), actor=Actor.command("test"))


def statements(call: Any) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        response = call()
    assert response.status_code == 200, response.content
    return [query["sql"] for query in captured.captured_queries]


def patch_one(client: APIClient, number: int = 0) -> Any:
    return lambda: client.patch(f"{API}/endpoints/svc-0003:v1/", {"description": f"edit {number}"}, format="json")


def assert_live_document_matches_latest_revision() -> None:
    live = current_document_bytes()
    revision = latest_revision()
    assert revision is not None
    assert hashlib.sha256(live).hexdigest() == revision.config_sha256
    assert revision_document_bytes(revision.number) == live


def whole_table_reads(sql: list[str], table: str) -> list[str]:
    """SELECTs from `table` with no WHERE: a read of every row."""
    pattern = re.compile(f'SELECT .* FROM "{table}"')  # noqa: S608 - a regex over captured SQL, not a query
    return [q for q in sql if pattern.match(q) and " WHERE " not in q]


@pytest.mark.parametrize("count", [10, 200])
def test_patching_one_endpoint_reads_no_whole_table_of_endpoints(admin_client: APIClient, count: int) -> None:
    populate(count)
    admin_client.patch(f"{API}/endpoints/svc-0003:v1/", {"description": "warm"}, format="json")
    sql = statements(patch_one(admin_client))
    assert whole_table_reads(sql, "routing_endpoint") == []
    assert whole_table_reads(sql, "routing_target") == []
    assert_live_document_matches_latest_revision()


def test_one_write_runs_the_same_statements_at_10_and_at_200_endpoints(admin_client: APIClient) -> None:
    populate(10)
    admin_client.patch(f"{API}/endpoints/svc-0003:v1/", {"description": "warm"}, format="json")
    small = len(statements(patch_one(admin_client, 1)))
    config_import(document=document(200), actor=Actor.command("test"))
    admin_client.patch(f"{API}/endpoints/svc-0003:v1/", {"description": "warm again"}, format="json")
    large = len(statements(patch_one(admin_client, 2)))
    assert large == small


def test_writes_that_rename_delete_and_move_defaults_keep_the_recorded_hash_true(admin_client: APIClient) -> None:
    populate(20)
    steps = [
        lambda: admin_client.patch(f"{API}/endpoints/svc-0001:v1/", {"name": "renamed"}, format="json"),
        lambda: admin_client.post(
            f"{API}/endpoints/",
            {"name": "svc-0002", "version": "v2", "default": True, "targets": [{"url": "http://127.0.0.1:9/"}]},
            format="json",
        ),
        lambda: admin_client.delete(f"{API}/endpoints/svc-0002:v2/"),
        lambda: admin_client.post(
            f"{API}/endpoints/",
            {"name": "aaa-first", "version": "v1", "targets": [{"url": "http://127.0.0.1:9/"}]},
            format="json",
        ),
        lambda: admin_client.patch(f"{API}/breaker-policies/default/", {"failure_threshold": 9}, format="json"),
    ]
    for step in steps:
        assert step().status_code in {200, 201, 204}
        assert_live_document_matches_latest_revision()


def test_a_write_after_another_process_wrote_reads_the_whole_document(admin_client: APIClient) -> None:
    populate(20)
    admin_client.patch(f"{API}/endpoints/svc-0003:v1/", {"description": "seen here"}, format="json")
    stale = revisions._last
    # Another process writes: this one never sees that document.
    admin_client.patch(f"{API}/endpoints/svc-0004:v1/", {"description": "written elsewhere"}, format="json")
    revisions._last = stale
    sql = statements(patch_one(admin_client, 3))
    assert len(whole_table_reads(sql, "routing_endpoint")) == 1
    assert_live_document_matches_latest_revision()
    assert b"written elsewhere" in current_document_bytes()


LIST_QUERIES = {
    "first page": "/endpoints/",
    "a page of 5": "/endpoints/?limit=5",
    "a deep page": "/endpoints/?limit=5&offset={deep}",
    "by tag": "/endpoints/?tag=even",
    "by search": "/endpoints/?search=number+7",
    "by name": "/endpoints/?name=svc-0007",
}


@pytest.mark.parametrize("query", LIST_QUERIES)
def test_listing_endpoints_runs_the_same_statements_at_10_and_at_200(admin_client: APIClient, query: str) -> None:
    counts = []
    for count in (10, 200):
        config_import(document=document(count), actor=Actor.command("test"))
        url = API + LIST_QUERIES[query].format(deep=count - 5)
        response = admin_client.get(url)
        assert response.json()["count"] > 0
        counts.append(len(statements(lambda url=url: admin_client.get(url))))
    assert counts[0] == counts[1]


def test_importing_new_endpoints_runs_the_same_statements_for_10_and_for_200(admin_client: APIClient) -> None:
    counts = []
    for count in (10, 200):
        config_import(document=document(0), actor=Actor.command("test"), prune=True)
        with CaptureQueriesContext(connection) as captured:
            plan = config_import(document=document(count), actor=Actor.command("test"))
        assert plan.counts() == {"create": count, "update": 0, "delete": 0}
        counts.append(len(captured.captured_queries))
        body = admin_client.get(f"{API}/endpoints/svc-0007:v1/").json()
        assert [t["url"] for t in body["targets"]] == ["http://127.0.0.1:9000/a7", "http://127.0.0.1:9001/b7"]
    assert counts[0] == counts[1]
    assert_live_document_matches_latest_revision()


def test_the_snapshot_state_works_out_health_plans_only_for_endpoints_with_a_known_status(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from controlplane.health import services as health_services
    from controlplane.health.models import HealthStatus, TargetHealth
    from controlplane.health.selectors import target_health_state
    from controlplane.routing.models import Target

    wanted = document(200)
    for spec in wanted["endpoints"][:2]:
        spec["health_check"] = {"path": "/health"}
    config_import(document=wanted, actor=Actor.command("test"))
    checked = Target.objects.get(endpoint__name="svc-0001", url="http://127.0.0.1:9000/a1")
    TargetHealth.objects.create(target=checked, status=HealthStatus.UNHEALTHY)
    worked_out = []
    original = health_services.effective_endpoint
    monkeypatch.setattr(
        health_services, "effective_endpoint", lambda doc, *a: worked_out.append(doc["name"]) or original(doc, *a)
    )
    assert target_health_state() == {"svc-0001:v1": {"http://127.0.0.1:9000/a1": "unhealthy"}}
    assert worked_out == ["svc-0001"]


def test_the_snapshot_after_a_write_reuses_the_written_document_and_matches_the_database(
    admin_client: APIClient,
) -> None:
    from controlplane.dataplanes.snapshot import load_snapshot

    populate(50)
    admin_client.patch(f"{API}/endpoints/svc-0003:v1/", {"description": "written here"}, format="json")
    with CaptureQueriesContext(connection) as captured:
        snapshot = load_snapshot()
    assert whole_table_reads([q["sql"] for q in captured.captured_queries], "routing_endpoint") == []
    assert snapshot.body.startswith(b'{"config":' + current_document_bytes() + b",")


def test_the_snapshot_reads_the_database_when_another_process_wrote_last(admin_client: APIClient) -> None:
    from controlplane.dataplanes.snapshot import load_snapshot

    populate(50)
    admin_client.patch(f"{API}/endpoints/svc-0003:v1/", {"description": "seen here"}, format="json")
    stale = revisions._last
    admin_client.patch(f"{API}/endpoints/svc-0004:v1/", {"description": "written elsewhere"}, format="json")
    revisions._last = stale
    assert b"written elsewhere" in load_snapshot().body


def traffic(ok: int) -> dict[str, Any]:
    """One endpoint's counters in a status report (configdoc/reports.py shape): `ok` 2xx answers."""
    buckets = [0] * BUCKET_COUNT
    buckets[4] = ok
    return {
        "requests": {"2xx": ok, "3xx": 0, "4xx": 0, "5xx": 0},
        "errors": {},
        "retries": 0,
        "breaker_trips": 0,
        "duration": {"buckets": buckets, "sum": 0.02 * ok},
        "upstream_duration": {"buckets": buckets, "sum": 0.01 * ok},
    }


def status_report(node: str, counters: dict[str, Any]) -> dict[str, Any]:
    return {
        "node_id": node, "boot_id": "boot-1", "hostname": "edge", "version": "0.1.0", "revision": 1,
        "config_sha256": "a" * 64, "state_seq": 0, "result": "applied", "error": None, "breakers": {},
        "counters": counters,
    }  # fmt: skip


def test_ingesting_a_report_runs_the_same_statements_for_10_and_for_200_endpoints_with_traffic() -> None:
    from controlplane.stats.models import TrafficHour, TrafficMinute

    now = datetime(2026, 3, 1, 12, 30, 15, tzinfo=UTC)
    counts = []
    for count in (10, 200):
        node = f"edge-{count}"
        keys = [f"svc-{i:04d}:v1" for i in range(count)]
        with CaptureQueriesContext(connection) as first:  # rows created
            stats_ingest(report=status_report(node, {key: traffic(1) for key in keys}), now=now)
        with CaptureQueriesContext(connection) as second:  # rows added to
            stats_ingest(report=status_report(node, {key: traffic(100) for key in keys}), now=now)
        counts.append((len(first.captured_queries), len(second.captured_queries)))
        assert TrafficHour.objects.count() == count
    # Both nodes' 100 requests on the endpoints they share, in the same minute and hour.
    assert TrafficMinute.objects.get(endpoint_key="svc-0007:v1").requests_2xx == 200
    assert TrafficHour.objects.get(endpoint_key="svc-0150:v1").requests_2xx == 100
    assert counts[0] == counts[1]
