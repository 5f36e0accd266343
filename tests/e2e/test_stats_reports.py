"""Traffic statistics end to end: a real control plane, a real `python -m dataplane` syncing
with a data-plane token and reporting every half second, and a real upstream, all on 127.0.0.1.

Requests answered 200, 404 and 500 through the data plane show up in the control plane's `stats/`
API with exactly those counts by class; no timing assertions, we poll until the counts appear.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.auth.models import Group
from django.utils import timezone

from controlplane.core.actors import Actor
from controlplane.dataplanes.models import DataPlaneNode
from controlplane.dataplanes.services import dataplane_token_issue
from controlplane.routing.services import endpoint_create
from controlplane.stats.selectors import traffic_totals
from tests.conftest import PASSWORD, endpoint_body
from tests.dataplane.processes import dataplane, upstream
from tests.e2e.servers import eventually
from tests.e2e.test_sync_longpoll import control_plane

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ACTOR = Actor.command("test")


def test_requests_through_a_data_plane_show_in_the_stats_api_by_class(tmp_path: Path) -> None:
    _, secret = dataplane_token_issue(name="edge-1", actor=ACTOR)
    # Hashed with a hasher the server's settings know (the test settings use a fast one it does not).
    hashed = PBKDF2PasswordHasher().encode(PASSWORD, "e2e-salt", iterations=1000)
    get_user_model().objects.create(username="reader", password=hashed).groups.add(Group.objects.get(name="readonly"))
    with upstream(tmp_path, "origin") as origin, control_plane(tmp_path) as (base, _):
        # The management API as a user reaches it: a JWT from the control plane's `auth/token/`.
        token = httpx.post(f"{base}/api/v1/auth/token/", json={"username": "reader", "password": PASSWORD})
        assert token.status_code == 200, token.text
        auth = {"Authorization": f"Bearer {token.json()['access']}"}
        endpoint_create(data=endpoint_body(targets=[{"url": f"{origin.url}/api"}]), actor=ACTOR)
        env = {
            "DATAPLANE_CONTROL_PLANE_URL": base,
            "DATAPLANE_TOKEN": secret,
            "DATAPLANE_CACHE_DIR": str(tmp_path / "cache"),
            "DATAPLANE_REPORT_INTERVAL": "0.5",
        }
        with dataplane(tmp_path, None, **env) as node, httpx.Client(timeout=10) as client:
            eventually(lambda: client.get(f"{node.url}/users/status/200").status_code == 200, "the endpoint to route")
            # Requests so far: however many polls it took, all 200; count them from the data plane's view.
            paths = ["/users/status/200"] * 5 + ["/users/status/404"] * 2 + ["/users/status/500"] * 3
            statuses = [client.get(f"{node.url}{path}").status_code for path in paths]
            assert statuses == [200] * 5 + [404] * 2 + [500] * 3

            def stats() -> dict[str, Any]:
                response = client.get(f"{base}/api/v1/stats/?window=5m", headers=auth)
                assert response.status_code == 200, response.text
                return response.json()

            def shown() -> bool:
                by_class = stats()["totals"]["by_class"]
                return (by_class["4xx"], by_class["5xx"]) == (2, 3) and by_class["2xx"] >= 5

            eventually(shown, "the report's counts in stats/")
            body = stats()
            ok = body["totals"]["by_class"]["2xx"]
            # Exactly what the data plane itself counted (the warm-up polls included), nothing more.
            metrics = client.get(f"{node.admin}/-/metrics").text
            line = next(
                row for row in metrics.splitlines()
                if row.startswith("gateway_requests_total{") and 'endpoint="users:v1"' in row
                and 'status_class="2xx"' in row
            )  # fmt: skip
            assert ok == int(float(line.rsplit(" ", 1)[1]))
            users = body["endpoints"]["users:v1"]
            assert users["by_class"] == {"2xx": ok, "3xx": 0, "4xx": 2, "5xx": 3}
            assert users["error_rate"] == pytest.approx(3 / (ok + 5))
            assert users["latency_ms"]["p50"] is not None and users["upstream_latency_ms"]["p99"] is not None

            detail = client.get(f"{base}/api/v1/stats/endpoints/users:v1/?window=5m", headers=auth).json()
            assert sum(point["errors_5xx"] for point in detail["series"]) == 3
            summary = client.get(f"{base}/api/v1/stats/summary/", headers=auth).json()
            assert summary["nodes"] == {"live": 1, "stale": 0, "gone": 0}


def test_with_workers_each_worker_reports_its_own_requests_and_none_is_counted_twice(tmp_path: Path) -> None:
    _, secret = dataplane_token_issue(name="edge-1", actor=ACTOR)
    with upstream(tmp_path, "origin") as origin, control_plane(tmp_path) as (base, _):
        endpoint_create(data=endpoint_body(targets=[{"url": f"{origin.url}/api"}]), actor=ACTOR)
        with dataplane(
            tmp_path,
            None,
            workers=2,
            DATAPLANE_NODE_ID="edge",
            DATAPLANE_CONTROL_PLANE_URL=base,
            DATAPLANE_TOKEN=secret,
            DATAPLANE_CACHE_DIR=str(tmp_path / "cache"),
            DATAPLANE_REPORT_INTERVAL="0.5",
        ) as node:
            eventually(
                lambda: set(DataPlaneNode.objects.filter(result="applied").values_list("node_id", flat=True))
                == {"edge-w0", "edge-w1"},
                "both workers' status reports",
            )
            sent = 40
            for _ in range(sent):  # a new connection each time, so both workers get some
                assert httpx.get(f"{node.url}/users/status/404").status_code == 404

            def counted() -> int:
                return int(traffic_totals(since=timezone.now() - timedelta(minutes=5))["by_class"]["4xx"])

            eventually(lambda: counted() >= sent, "the workers' reports in the stats")
            # Each worker reported only its own share: the sum is what was sent, not twice it.
            assert counted() == sent
            shares = {
                node.node_id: node.counters.get("users:v1", {}).get("requests", {}).get("4xx", 0)
                for node in DataPlaneNode.objects.all()
            }
            assert sum(shares.values()) == sent
