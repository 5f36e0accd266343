"""A consumer's 429 `rate_limited` answers on the control plane: a report's optional `rate_limited`
count per consumer added to the minute (a node older than the field reports none and is still taken),
shown by `stats/endpoints/{key}/consumers/` (described in the OpenAPI schema) and in the endpoint
dashboard's "Top consumers" table as a 429 column; hostile counts refused at `dataplane/status`."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from controlplane.core.actors import Actor
from controlplane.routing.services import endpoint_create
from controlplane.stats.models import ConsumerTrafficMinute
from controlplane.stats.services import stats_ingest
from tests.conftest import endpoint_body
from tests.controlplane.test_hostile_input import post_status, status_report
from tests.controlplane.test_stats_consumers import counts, report

pytestmark = pytest.mark.django_db
ACTOR = Actor.command("test")
NOW = datetime(2026, 3, 1, 12, 30, 15, tzinfo=UTC)
API = "/api/v1"


def limited(ok: int, refused: int, other_4xx: int = 0) -> dict[str, int]:
    """A consumer's counts with `refused` 429 rate_limited answers among its 4xx."""
    return counts(ok, refused + other_4xx) | {"rate_limited": refused}


def limited_rows(at: datetime = NOW) -> dict[str, tuple[int, int]]:
    return {
        row.consumer: (row.requests_4xx, row.rate_limited)
        for row in ConsumerTrafficMinute.objects.filter(start=at.replace(second=0))
    }


def test_two_nodes_rate_limited_counts_add_up_per_consumer_and_an_older_node_counts_none() -> None:
    stats_ingest(report=report(1, alice=limited(20, 5), bob=counts(3)), now=NOW)
    stats_ingest(report=report(1, "edge-2-w0", alice=limited(0, 7, other_4xx=1), other=limited(1, 2)), now=NOW)
    stats_ingest(report=report(1, "edge-3-w0", alice=counts(1, 4)), now=NOW)  # a node older than the field
    assert limited_rows() == {"alice": (5 + 8 + 4, 12), "bob": (0, 0), "": (2, 2)}


def test_a_report_delivered_twice_adds_its_429s_once() -> None:
    stats_ingest(report=report(1, alice=limited(1, 3)), now=NOW)
    stats_ingest(report=report(1, alice=limited(1, 3)), now=NOW)
    assert limited_rows()["alice"] == (3, 3)


def test_a_well_formed_report_with_429s_is_stored_through_the_status_endpoint() -> None:
    consumers = {"epoch": 1, "endpoints": {"users:v1": {"top": {"alice": limited(2, 4)}, "other": counts()}}}
    response = post_status(json.dumps(status_report(consumers=consumers)).encode())
    assert response.status_code == 204, response.text
    assert ConsumerTrafficMinute.objects.get(consumer="alice").rate_limited == 4


@pytest.mark.parametrize(
    "raw",
    ["-1", "true", "1.5", '"3"', "null", "1e400", "99999999999999999999999999", '"\\u0000"', '"\\ud800"', "[1]"],
)
def test_a_hostile_rate_limited_count_is_400_naming_the_field_and_stores_nothing(raw: str) -> None:
    entry = '{"2xx": 1, "3xx": 0, "4xx": 5, "5xx": 0, "rate_limited": ' + raw + "}"
    consumers = '{"epoch": 1, "endpoints": {"users:v1": {"top": {"alice": ' + entry + '}, "other": {}}}}'
    body = json.dumps(status_report(consumers="PLACEHOLDER")).replace('"PLACEHOLDER"', consumers)
    response = post_status(body.encode())
    assert response.status_code == 400, response.text
    assert "rate_limited" in response.text
    assert not ConsumerTrafficMinute.objects.exists()


def test_a_duplicate_rate_limited_key_is_refused() -> None:
    entry = '{"2xx": 1, "3xx": 0, "4xx": 5, "5xx": 0, "rate_limited": 1, "rate_limited": 5}'
    consumers = '{"epoch": 1, "endpoints": {"users:v1": {"top": {"alice": ' + entry + '}, "other": {}}}}'
    body = json.dumps(status_report(consumers="PLACEHOLDER")).replace('"PLACEHOLDER"', consumers)
    assert post_status(body.encode()).status_code == 400
    assert not ConsumerTrafficMinute.objects.exists()


def test_the_api_shows_each_consumers_429s_and_the_others(readonly_client: APIClient) -> None:
    endpoint_create(data=endpoint_body("users"), actor=ACTOR)
    now = timezone.now()
    stats_ingest(report=report(1, alice=limited(20, 9), bob=counts(4), other=limited(0, 2)), now=now)
    stats_ingest(report=report(2, carol=limited(1, 1)), now=now)
    body = readonly_client.get(f"{API}/stats/endpoints/users:v1/consumers/?window=5m&limit=2").json()
    assert [(row["consumer"], row["requests"], row["rate_limited"]) for row in body["consumers"]] == [
        ("alice", 29, 9),
        ("bob", 4, 0),
    ]
    assert body["other"]["rate_limited"] == 2 + 1  # the nodes' `other` and carol, past the limit


def test_the_openapi_schema_describes_rate_limited(readonly_client: APIClient) -> None:
    schema = readonly_client.get(f"{API}/schema/?format=json").json()
    components = schema["components"]["schemas"]
    for name in ("ConsumerTraffic", "OtherConsumersTraffic"):
        field = components[name]["properties"]["rate_limited"]
        assert field["type"] == "integer" and "429" in field["description"]
        assert "rate_limited" in components[name]["required"]


def test_the_endpoint_dashboard_shows_a_429_column_in_top_consumers(make_user: Any) -> None:
    users = endpoint_create(data=endpoint_body("users"), actor=ACTOR)
    stats_ingest(report=report(1, alice=limited(20, 7), bob=counts(2), other=limited(3, 1)), now=timezone.now())
    browser = Client()
    browser.force_login(make_user("rita", "readonly"))
    page = browser.get(f"/admin/routing/endpoint/{users.pk}/dashboard/")
    assert page.status_code == 200
    table = re.search(r'<table id="endpoint-consumers">.*?</table>', page.content.decode(), re.S)
    assert table is not None

    def text(cell: str) -> str:
        return re.sub(r"<[^>]+>", "", cell).strip()

    headings = [text(cell) for cell in re.findall(r"<th[^>]*>(.*?)</th>", table.group(0), re.S)]
    assert headings == ["consumer", "requests", "2xx", "3xx", "4xx", "5xx", "429"]
    shown = [
        [text(cell) for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
        for row in re.findall(r"<tr [^>]*data-consumer[^>]*>(.*?)</tr>", table.group(0), re.S)
    ]
    assert shown == [
        ["alice", "27", "20", "0", "7", "0", "7"],
        ["bob", "2", "2", "0", "0", "0", "0"],
        ["all other consumers", "4", "3", "0", "1", "0", "1"],
    ]


def test_an_unknown_count_is_400_with_its_path_as_the_field_the_data_plane_recognises() -> None:
    """The shape a node relies on to tell a control plane older than a count (dataplane/sync.py)."""
    consumers = {"epoch": 1, "endpoints": {"users:v1": {"top": {"alice": counts(1) | {"429": 1}}, "other": counts()}}}
    response = post_status(json.dumps(status_report(consumers=consumers)).encode())
    assert response.status_code == 400
    assert response.json()["fields"] == {'consumers.endpoints["users:v1"].top["alice"].429': ["unknown field"]}
