"""Traffic by consumer on the control plane (ARCHITECTURE §11): a status report's `consumers` added to
the endpoint's minute once per report epoch, at most 100 named consumers per endpoint and minute, the
`stats/endpoints/{key}/consumers/` API, the endpoint dashboard's "Top consumers" table, hostile
reports refused at `dataplane/status`, and retention."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from controlplane.core.actors import Actor
from controlplane.dataplanes.models import DataPlaneNode
from controlplane.dataplanes.services import node_status_record
from controlplane.dataplanes.status import validate_status_report
from controlplane.routing.services import endpoint_create
from controlplane.stats.models import ConsumerTrafficMinute
from controlplane.stats.selectors import top_consumers
from controlplane.stats.services import stats_ingest, stats_prune
from tests.conftest import endpoint_body
from tests.controlplane.test_hostile_input import post_status, status_report

pytestmark = pytest.mark.django_db
ACTOR = Actor.command("test")
NOW = datetime(2026, 3, 1, 12, 30, 15, tzinfo=UTC)
API = "/api/v1"


def counts(ok: int = 0, client: int = 0, server: int = 0) -> dict[str, int]:
    return {"2xx": ok, "3xx": 0, "4xx": client, "5xx": server}


def report(epoch: int, node: str = "edge-1-w0", boot: str = "boot-1", *, other: dict[str, int] | None = None,
           key: str = "users:v1", **top: dict[str, int]) -> dict[str, Any]:  # fmt: skip
    return {
        "node_id": node, "boot_id": boot, "hostname": "edge", "version": "0.1.0", "revision": 1,
        "config_sha256": "a" * 64, "state_seq": 0, "result": "applied", "error": None, "breakers": {},
        "counters": {},
        "consumers": {"epoch": epoch, "endpoints": {key: {"top": top, "other": other or counts()}}},
    }  # fmt: skip


def record(body: dict[str, Any]) -> None:
    """As POST /api/v1/dataplane/status does: validate the bytes, then store."""
    node_status_record(report=validate_status_report(json.dumps(body).encode()))


def rows(at: datetime = NOW) -> dict[str, tuple[int, int, int, int]]:
    return {
        row.consumer: (row.requests_2xx, row.requests_3xx, row.requests_4xx, row.requests_5xx)
        for row in ConsumerTrafficMinute.objects.filter(start=at.replace(second=0))
    }


# --- ingestion --------------------------------------------------------------------------------------


def test_two_nodes_reports_add_up_per_consumer_in_the_minute() -> None:
    stats_ingest(report=report(1, alice=counts(5, 1), bob=counts(2)), now=NOW)
    stats_ingest(report=report(1, "edge-2-w0", alice=counts(3, server=1), other=counts(4)), now=NOW)
    stats_ingest(report=report(2, alice=counts(1)), now=NOW)
    assert rows() == {"alice": (9, 0, 1, 1), "bob": (2, 0, 0, 0), "": (4, 0, 0, 0)}


def test_a_report_delivered_twice_or_late_is_added_once() -> None:
    stats_ingest(report=report(1, alice=counts(5)), now=NOW)
    stats_ingest(report=report(2, alice=counts(1)), now=NOW)
    stats_ingest(report=report(2, alice=counts(1)), now=NOW)  # the same one again
    stats_ingest(report=report(1, alice=counts(5)), now=NOW)  # an older one, late
    assert rows()["alice"] == (6, 0, 0, 0)
    stats_ingest(report=report(1, boot="boot-2", alice=counts(2)), now=NOW)  # a restart counts from epoch 1
    assert rows()["alice"] == (8, 0, 0, 0)


def test_a_new_minute_gets_rows_of_its_own() -> None:
    stats_ingest(report=report(1, alice=counts(5)), now=NOW)
    later = NOW + timedelta(minutes=1)
    stats_ingest(report=report(2, alice=counts(1)), now=later)
    assert rows()["alice"] == (5, 0, 0, 0) and rows(later)["alice"] == (1, 0, 0, 0)


def test_a_minute_keeps_at_most_100_consumers_by_name_and_adds_the_rest_to_other() -> None:
    stats_ingest(report=report(1, **{f"c{index:03d}": counts(10) for index in range(99)}), now=NOW)
    # Another node: one known consumer, and three new ones of which only the biggest still fits.
    stats_ingest(report=report(1, "edge-2-w0", c000=counts(1), small=counts(1), big=counts(7), mid=counts(3)), now=NOW)
    found = rows()
    assert len([name for name in found if name]) == 100
    assert found["c000"] == (11, 0, 0, 0) and found["big"] == (7, 0, 0, 0)
    assert "small" not in found and "mid" not in found
    assert found[""] == (4, 0, 0, 0)


def test_a_report_without_consumers_changes_nothing() -> None:
    body = report(1, alice=counts(5))
    del body["consumers"]
    record(body)
    assert not ConsumerTrafficMinute.objects.exists()
    assert DataPlaneNode.objects.filter(node_id="edge-1-w0").exists()


def test_consumer_minutes_are_pruned_after_a_day() -> None:
    stats_ingest(report=report(1, alice=counts(5)), now=NOW - timedelta(hours=25))
    stats_ingest(report=report(2, alice=counts(5)), now=NOW)
    assert stats_prune(now=NOW)["consumer_minutes"] == 2  # alice's row and the `other` row of that minute
    assert set(ConsumerTrafficMinute.objects.values_list("start", flat=True)) == {NOW.replace(second=0)}


def test_top_consumers_lists_the_most_requests_first_and_folds_the_rest_into_other() -> None:
    stats_ingest(report=report(1, a=counts(1), b=counts(5, server=2), c=counts(3), other=counts(10)), now=NOW)
    top = top_consumers(endpoint_key="users:v1", since=NOW - timedelta(minutes=5), limit=2)
    assert top["consumers"] == [
        {"consumer": "b", "requests": 7, "by_class": counts(5, server=2), "rate_limited": 0},
        {"consumer": "c", "requests": 3, "by_class": counts(3), "rate_limited": 0},
    ]
    assert top["other"] == {"requests": 11, "by_class": counts(11), "rate_limited": 0}


# --- the status endpoint refuses hostile `consumers` ----------------------------------------------------


@pytest.mark.parametrize(
    ("consumers", "field"),
    [
        ("nope", "consumers"),
        ({"epoch": -1, "endpoints": {}}, "consumers.epoch"),
        ({"epoch": 1, "endpoints": {"users:v1": {"top": {"a": counts(-1)}, "other": counts()}}},
         'consumers.endpoints["users:v1"].top["a"].2xx'),
        ({"epoch": 1, "endpoints": {"users:v1": {"top": {"bad name": counts(1)}, "other": counts()}}},
         'consumers.endpoints["users:v1"].top'),
        ({"epoch": 1, "endpoints": {"users:v1": {"top": {f"c{n}": counts(1) for n in range(101)}, "other": counts()}}},
         'consumers.endpoints["users:v1"].top'),
        ({"epoch": 1, "endpoints": {"users": {"top": {}, "other": counts()}}}, 'consumers.endpoints["users"]'),
    ],
)  # fmt: skip
def test_a_report_with_malformed_consumers_is_400_naming_the_field_and_nothing_is_stored(
    consumers: Any, field: str
) -> None:
    response = post_status(json.dumps(status_report(consumers=consumers)).encode())
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "validation_error"
    assert field in response.json()["fields"], response.json()
    assert not DataPlaneNode.objects.exists() and not ConsumerTrafficMinute.objects.exists()


@pytest.mark.parametrize(
    "raw",
    [
        '{"epoch": 1, "endpoints": {"users:v1": {"top": {"a\\u0000b": {"2xx": 1}}, "other": {}}}}',
        '{"epoch": 1, "endpoints": {"users:v1": {"top": {"\\ud800": {"2xx": 1}}, "other": {}}}}',
        '{"epoch": 1, "endpoints": {"users:v1": {"top": {"a": {"2xx": 1}, "a": {"2xx": 2}}, "other": {}}}}',
    ],
    ids=["nul", "lone surrogate", "duplicate key"],
)
def test_nul_surrogates_and_duplicate_keys_in_consumers_are_refused_not_stored(raw: str) -> None:
    body = json.dumps(status_report(consumers="PLACEHOLDER")).replace('"PLACEHOLDER"', raw)
    response = post_status(body.encode())
    assert response.status_code == 400, response.text
    assert not ConsumerTrafficMinute.objects.exists()


def test_a_well_formed_report_with_consumers_is_stored_through_the_status_endpoint() -> None:
    consumers = {"epoch": 1, "endpoints": {"users:v1": {"top": {"alice": counts(2)}, "other": counts()}}}
    response = post_status(json.dumps(status_report(consumers=consumers)).encode())
    assert response.status_code == 204, response.text
    assert ConsumerTrafficMinute.objects.get(consumer="alice").requests_2xx == 2


# --- the API ----------------------------------------------------------------------------------------------


def test_the_api_shows_an_endpoints_top_consumers_over_a_window(readonly_client: APIClient) -> None:
    endpoint_create(data=endpoint_body("users"), actor=ACTOR)
    now = timezone.now()
    stats_ingest(report=report(1, alice=counts(5, 1), bob=counts(2), other=counts(1)), now=now)
    stats_ingest(report=report(2, carol=counts(1)), now=now - timedelta(hours=2))
    body = readonly_client.get(f"{API}/stats/endpoints/users:v1/consumers/?window=1h").json()
    assert body["endpoint"] == "users:v1" and body["window"] == "1h"
    assert [(row["consumer"], row["requests"]) for row in body["consumers"]] == [("alice", 6), ("bob", 2)]
    assert body["consumers"][0]["by_class"] == counts(5, 1)
    assert body["other"] == {"requests": 1, "by_class": counts(1), "rate_limited": 0}
    day = readonly_client.get(f"{API}/stats/endpoints/users:v1/consumers/?window=24h&limit=1").json()
    assert [row["consumer"] for row in day["consumers"]] == ["alice"]
    assert day["other"]["requests"] == 1 + 2 + 1


@pytest.mark.parametrize(
    ("query", "field"),
    [("window=7d", "window"), ("window=%00", "window"), ("limit=0", "limit"), ("limit=101", "limit"),
     ("limit=ten", "limit"), ("limit=1e9", "limit")],
)  # fmt: skip
def test_a_bad_window_or_limit_is_400_naming_it(readonly_client: APIClient, query: str, field: str) -> None:
    endpoint_create(data=endpoint_body("users"), actor=ACTOR)
    response = readonly_client.get(f"{API}/stats/endpoints/users:v1/consumers/?{query}")
    assert response.status_code == 400
    assert field in json.dumps(response.json())


@pytest.mark.parametrize("key", ["nowhere:v1", "users%00:v1", "%ED%A0%80:v1", "x" * 5000])
def test_an_unknown_endpoint_is_404_not_500(readonly_client: APIClient, key: str) -> None:
    assert readonly_client.get(f"{API}/stats/endpoints/{key}/consumers/").status_code == 404


def test_the_openapi_schema_describes_the_consumers_answer(readonly_client: APIClient) -> None:
    schema = readonly_client.get(f"{API}/schema/?format=json").json()
    operation = schema["paths"]["/api/v1/stats/endpoints/{key}/consumers/"]["get"]
    assert {parameter["name"] for parameter in operation["parameters"]} >= {"key", "window", "limit"}
    answer = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    properties = schema["components"]["schemas"][answer]["properties"]
    assert set(properties) == {"endpoint", "window", "since", "consumers", "other"}


# --- the dashboard -----------------------------------------------------------------------------------


def test_the_endpoint_dashboard_shows_the_top_consumers_table(make_user: Any) -> None:
    users = endpoint_create(data=endpoint_body("users"), actor=ACTOR)
    stats_ingest(report=report(1, alice=counts(5, 1), bob=counts(2), other=counts(3)), now=timezone.now())
    browser = Client()
    browser.force_login(make_user("rita", "readonly"))
    page = browser.get(f"/admin/routing/endpoint/{users.pk}/dashboard/")
    assert page.status_code == 200
    html = page.content.decode()
    table = re.search(r'<table id="endpoint-consumers">.*?</table>', html, re.S)
    assert table is not None and "Top consumers (1h)" in table.group(0)
    shown = [
        [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
        for row in re.findall(r"<tr [^>]*data-consumer[^>]*>(.*?)</tr>", table.group(0), re.S)
    ]
    assert shown == [
        ["alice", "6", "5", "0", "1", "0", "0"],
        ["bob", "2", "2", "0", "0", "0", "0"],
        ["all other consumers", "3", "3", "0", "0", "0", "0"],
    ]


def test_the_dashboard_escapes_and_says_when_there_is_no_consumer_traffic(make_user: Any) -> None:
    orders = endpoint_create(data=endpoint_body("orders"), actor=ACTOR)
    browser = Client()
    browser.force_login(make_user("rita", "readonly"))
    html = browser.get(f"/admin/routing/endpoint/{orders.pk}/dashboard/").content.decode()
    assert "No requests with a consumer in this window." in html


def test_a_consumer_listed_with_no_requests_takes_no_place_in_the_minute() -> None:
    stats_ingest(report=report(1, idle=counts(), alice=counts(1)), now=NOW)
    assert rows() == {"alice": (1, 0, 0, 0), "": (0, 0, 0, 0)}
