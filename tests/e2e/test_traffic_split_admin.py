"""A canary set up as an operator would (ARCHITECTURE §12): a real uvicorn control plane on the test
database, a real `python -m dataplane` following it, two real upstreams (the stable and the canary
version), all on 127.0.0.1.

The operator signs in, opens users:v1's change page and posts back what the browser shows with only
the traffic_split field changed: first 20 % to v2, then a header canary (`X-Canary: 1`, percent 0).
After each, the route-debug page says what the split does, real traffic through the node splits that
way, and the endpoint's dashboard shows the requests and share per version from the node's reports.
No timing assertions: we poll until a condition holds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.auth.models import Group

from controlplane.core.actors import Actor
from controlplane.core.revisions import latest_revision
from controlplane.dataplanes.services import dataplane_token_issue
from controlplane.routing.models import Endpoint
from controlplane.routing.services import endpoint_create
from tests.conftest import endpoint_body
from tests.controlplane.admin_forms import form_data_from
from tests.dataplane.processes import DataPlane, dataplane, upstream
from tests.e2e.servers import eventually
from tests.e2e.test_plugins_reach_dataplane import _node_took, _sign_in
from tests.e2e.test_sync_longpoll import control_plane

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ACTOR = Actor.command("test")
PASSWORD_HASHER = PBKDF2PasswordHasher()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[str, DataPlane, Endpoint]]:
    from tests.conftest import PASSWORD

    _, secret = dataplane_token_issue(name="edge-1", actor=ACTOR)
    operator = get_user_model().objects.create_user(username="olga", is_staff=True)
    # Hashed the way the control plane process checks it (the tests' own settings use a fast hasher).
    operator.password = PASSWORD_HASHER.encode(PASSWORD, PASSWORD_HASHER.salt())
    operator.save(update_fields=["password"])
    operator.groups.set(Group.objects.filter(name="operator"))
    with ExitStack() as stack:
        stable = stack.enter_context(upstream(tmp_path, "stable"))
        canary = stack.enter_context(upstream(tmp_path, "canary"))
        v1 = endpoint_create(data=endpoint_body("users", "v1", targets=[{"url": f"{stable.url}/api"}]), actor=ACTOR)
        endpoint_create(data=endpoint_body("users", "v2", targets=[{"url": f"{canary.url}/api"}]), actor=ACTOR)
        base, _ = stack.enter_context(control_plane(tmp_path))
        env = {
            "DATAPLANE_CONTROL_PLANE_URL": base,
            "DATAPLANE_TOKEN": secret,
            "DATAPLANE_CACHE_DIR": str(tmp_path),
            "DATAPLANE_REPORT_INTERVAL": "0.5",
        }
        node = stack.enter_context(dataplane(tmp_path, None, **env))
        eventually(lambda: httpx.get(f"{node.url}/users/1").status_code == 200, "users:v1 routed by the node")
        yield base, node, v1


def set_split(browser: httpx.Client, base: str, endpoint: Endpoint, split: dict[str, Any]) -> None:
    """On the change page, change only the traffic_split field and save, as a browser posts it."""
    url = f"/admin/routing/endpoint/{endpoint.pk}/change/"
    page = browser.get(url)
    assert page.status_code == 200
    data = form_data_from(page.text)
    assert "traffic_split" in data
    before = latest_revision()
    assert before is not None
    data["traffic_split"] = [json.dumps(split)]
    saved = browser.post(url, data=data, headers={"Referer": f"{base}{url}"})
    assert saved.status_code == 200 and saved.url.path == "/admin/routing/endpoint/", saved.text[:2000]
    assert "errorlist" not in saved.text
    revision = latest_revision()
    assert revision is not None and revision.number == before.number + 1
    eventually(lambda: _node_took(revision.config_sha256), "the node applying the split")


def served(node: DataPlane, count: int, **kwargs: Any) -> list[str]:
    with httpx.Client(base_url=node.url) as client:
        answers = [client.get("/users/items", **kwargs) for _ in range(count)]
    assert all(answer.status_code == 200 for answer in answers)
    return [answer.headers["x-endpoint-id"] for answer in answers]


def version_rows(html: str) -> dict[str, tuple[int, str]]:
    rows = re.findall(
        r'data-endpoint="([^"]+)">\s*<td class="version">[^<]*</td><td class="requests">(\d+)</td>'
        r'<td class="share">([^<]*)</td>',
        html,
    )
    return {key: (int(requests), share) for key, requests, share in rows}


def test_an_operator_sets_a_canary_in_the_admin_and_watches_its_share(
    fleet: tuple[str, DataPlane, Endpoint],
) -> None:
    base, node, v1 = fleet
    with httpx.Client(base_url=base, timeout=30, follow_redirects=True) as browser:
        _sign_in(browser, base, "olga")
        form = form_data_from(browser.get(f"/admin/routing/endpoint/{v1.pk}/change/").text)
        assert form["traffic_split"] == ["{}"]  # no split yet

        # 1. By percent.
        set_split(browser, base, v1, {"version": "v2", "percent": 20})
        assert Endpoint.objects.get(pk=v1.pk).document["traffic_split"] == {"version": "v2", "percent": 20}
        debug = browser.get("/admin/routing/endpoint/route-debug/", params={"path": "/users/1"}).text
        assert '<td class="endpoint">users:v1</td>' in debug
        assert 'class="traffic-split" data-decided-by="random"' in debug and "20 % go to v2" in debug
        split = served(node, 2000)
        share = split.count("users:v2") / len(split)
        assert 0.17 <= share <= 0.23, share

        # 2. By header: only the requests carrying X-Canary: 1.
        set_split(browser, base, v1, {"version": "v2", "header": {"X-Canary": "1"}})
        debug = browser.get(
            "/admin/routing/endpoint/route-debug/", params={"path": "/users/1", "headers": "X-Canary: 1"}
        ).text
        assert '<td class="endpoint">users:v2</td>' in debug and '<td class="decided-by">traffic_split</td>' in debug
        assert set(served(node, 100, headers={"X-Canary": "1"})) == {"users:v2"}
        assert set(served(node, 100)) == {"users:v1"}

        # 3. The dashboard: every request the node served, by version, from its reports.
        v2_total = split.count("users:v2") + 100
        v1_total = split.count("users:v1") + 100

        def dashboard_counts() -> dict[str, tuple[int, str]]:
            page = browser.get(f"/admin/routing/endpoint/{v1.pk}/dashboard/", params={"window": "1h"})
            assert page.status_code == 200
            return version_rows(page.text)

        eventually(
            lambda: {key: row[0] for key, row in dashboard_counts().items()}
            == {"users:v1": v1_total + 1, "users:v2": v2_total},  # + the fixture's first request
            "the dashboard counting every request per version",
        )
        shown = dashboard_counts()
        expected = f"{v2_total / (v1_total + 1 + v2_total) * 100:.2f} %"
        assert shown["users:v2"][1] == expected
        page = browser.get(f"/admin/routing/endpoint/{v1.pk}/dashboard/").text
        assert 'id="endpoint-traffic-split"' in page and "X-Canary: 1" in page
