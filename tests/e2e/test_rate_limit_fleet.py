"""A limit set on an endpoint in the admin, enforced by two data planes together (ARCHITECTURE §11
`rate_limit`): a real uvicorn control plane on the test database, two real `python -m dataplane` nodes
following it, sharing their counts through a redis-server the test starts on a free port, a real
upstream; all on 127.0.0.1.

Two consumers and their keys are made through the API, `key_auth` too; an operator signs in through the
login form and adds `rate_limit: {limits: [{requests: 20, per: minute}], by: consumer, policy: redis}`
on the endpoint's change page, posting back what the browser would. Consumer A's traffic, split over
both nodes, gets exactly 20 answers then 429 with Retry-After and RateLimit-* headers; consumer B is
not affected. The operator raises the limit to 30 in the admin: the nodes take it without a restart.
The control plane's stats API and the endpoint dashboard then show A's 429s.

Counting is by wall-clock minute, so the test waits, if it must, until it is not near a minute's end
(`clear_of_the_window_edge`), and works out what the raised limit leaves from whether the minute
changed: bounds on where the requests fall, never a timing assertion.
"""

from __future__ import annotations

import json
import re
import time
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
from controlplane.dataplanes.models import DataPlaneNode
from controlplane.dataplanes.services import dataplane_token_issue
from controlplane.routing.models import Endpoint
from controlplane.routing.services import endpoint_create
from tests.conftest import PASSWORD, endpoint_body
from tests.controlplane.admin_forms import form_data_from
from tests.dataplane.processes import DataPlane, dataplane, upstream
from tests.e2e.servers import eventually, redis_server
from tests.e2e.test_dataplane_rate_limit import clear_of_the_window_edge
from tests.e2e.test_plugins_reach_dataplane import _sign_in
from tests.e2e.test_sync_longpoll import control_plane

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ACTOR = Actor.command("test")
NODES = ("edge-a", "edge-b")
KEY_AUTH = {"key_auth": {"key_names": ["apikey"]}}
WAIT = 90.0


def rate_limit(requests: int) -> dict[str, Any]:
    return {"limits": [{"requests": requests, "per": "minute"}], "by": "consumer", "policy": "redis"}


def both_nodes_took(sha: str) -> bool:
    """Both nodes reported on the document: applied it, or refused it (then the test fails saying why)."""
    nodes = {node.node_id: node for node in DataPlaneNode.objects.filter(node_id__in=NODES)}
    for node in nodes.values():
        if node.result == "rejected" and node.config_sha256 != sha:
            raise AssertionError(f"{node.node_id} was offered the new revision and refused it: {node.error}")
    return len(nodes) == 2 and all(n.result == "applied" and n.config_sha256 == sha for n in nodes.values())


def set_plugins_in_the_admin(browser: httpx.Client, base: str, pk: int, change: dict[str, Any]) -> None:
    """Open the endpoint's change page, merge `change` into its plugins JSON, post back what a browser would."""
    url = f"/admin/routing/endpoint/{pk}/change/"
    page = browser.get(url)
    assert page.status_code == 200
    data = form_data_from(page.text)
    plugins = json.loads(data["plugins"][0])
    data["plugins"] = [json.dumps(plugins | change, indent=2)]
    saved = browser.post(url, data=data, headers={"Referer": f"{base}{url}"})
    assert saved.status_code == 200 and saved.url.path == "/admin/routing/endpoint/", saved.url
    assert "errorlist" not in saved.text and "Not saved" not in saved.text, saved.text[:3000]
    revision = latest_revision()
    assert revision is not None
    eventually(lambda: both_nodes_took(revision.config_sha256), "both nodes applying the edit", WAIT)


def spread(client: httpx.Client, nodes: tuple[DataPlane, DataPlane], key: str, count: int) -> list[httpx.Response]:
    """`count` requests with `key`, every other one to the other node."""
    return [client.get(f"{nodes[i % 2].url}/users/echo", headers={"apikey": key}) for i in range(count)]


def test_a_limit_set_in_the_admin_is_enforced_by_two_data_planes_together(tmp_path: Path) -> None:
    _, secret = dataplane_token_issue(name="edge", actor=ACTOR)
    operator = get_user_model().objects.create_user(username="olga", is_staff=True)
    hasher = PBKDF2PasswordHasher()  # as the control plane process checks it (the tests use a fast hasher)
    operator.password = hasher.encode(PASSWORD, hasher.salt())
    operator.save(update_fields=["password"])
    operator.groups.set(Group.objects.filter(name="operator"))
    with ExitStack() as stack:
        origin = stack.enter_context(upstream(tmp_path, "origin"))
        endpoint_create(data=endpoint_body(targets=[{"url": f"{origin.url}/api"}]), actor=ACTOR)
        users = Endpoint.objects.get(name="users", version="v1")
        base, _ = stack.enter_context(control_plane(tmp_path))
        redis_port, _ = stack.enter_context(redis_server(tmp_path / "redis.log"))
        nodes = []
        for name in NODES:
            (tmp_path / name).mkdir()
            env = {
                "DATAPLANE_NODE_ID": name,
                "DATAPLANE_CONTROL_PLANE_URL": base,
                "DATAPLANE_TOKEN": secret,
                "DATAPLANE_CACHE_DIR": str(tmp_path / name / "cache"),
                "DATAPLANE_REPORT_INTERVAL": "0.5",
                "DATAPLANE_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            }
            nodes.append(stack.enter_context(dataplane(tmp_path / name, None, **env)))
        a_node, b_node = nodes
        pair = (a_node, b_node)
        for node in pair:
            eventually(lambda node=node: httpx.get(f"{node.url}/users/echo").status_code == 200, "routing", WAIT)
        client = stack.enter_context(httpx.Client(timeout=10))

        # Consumers, their keys and key_auth through the API, with the operator's JWT.
        token = httpx.post(f"{base}/api/v1/auth/token/", json={"username": "olga", "password": PASSWORD}, timeout=30)
        assert token.status_code == 200, token.text
        api = stack.enter_context(
            httpx.Client(base_url=f"{base}/api/v1", headers={"Authorization": f"Bearer {token.json()['access']}"})
        )
        keys = {}
        for username in ("consumer-a", "consumer-b"):
            assert api.post("/consumers/", json={"username": username}).status_code == 201
            issued = api.post(f"/consumers/{username}/keys/", json={"label": "k1"})
            assert issued.status_code == 201, issued.text
            keys[username] = issued.json()["key"]
        assert api.patch("/endpoints/users:v1/", json={"plugins": KEY_AUTH}).status_code == 200
        revision = latest_revision()
        assert revision is not None
        eventually(lambda: both_nodes_took(revision.config_sha256), "both nodes applying key_auth", WAIT)
        assert httpx.get(f"{a_node.url}/users/echo").status_code == 401

        # The operator adds the limit on the endpoint's change page.
        browser = stack.enter_context(httpx.Client(base_url=base, timeout=30, follow_redirects=True))
        _sign_in(browser, base, "olga")
        set_plugins_in_the_admin(browser, base, users.pk, {"rate_limit": rate_limit(20)})

        clear_of_the_window_edge(60)
        first_minute = int(time.time() // 60)
        answers = spread(client, pair, keys["consumer-a"], 26)
        assert [answer.status_code for answer in answers] == [200] * 20 + [429] * 6
        assert [answer.headers["ratelimit-remaining"] for answer in answers[:3]] == ["19", "18", "17"]
        assert {answer.headers["ratelimit-limit"] for answer in answers} == {"20"}
        refused = answers[-1]
        assert refused.json()["error"] == "rate_limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert 1 <= int(refused.headers["ratelimit-reset"]) <= 60
        # Consumer B has a count of its own, on either node.
        others = spread(client, pair, keys["consumer-b"], 4)
        assert [answer.status_code for answer in others] == [200] * 4
        assert [answer.headers["ratelimit-remaining"] for answer in others] == ["19", "18", "17", "16"]

        # The operator raises the limit to 30: the running nodes take it, no restart.
        set_plugins_in_the_admin(browser, base, users.pk, {"rate_limit": rate_limit(30)})
        assert a_node.process.poll() is None and b_node.process.poll() is None
        clear_of_the_window_edge(60)
        # The count of the minute carries over (the keys do not name the limit): in the same minute A has
        # 10 left; in a new one, 30.
        left = 10 if int(time.time() // 60) == first_minute else 30
        more = spread(client, pair, keys["consumer-a"], left + 3)
        assert [answer.status_code for answer in more] == [200] * left + [429] * 3
        assert {answer.headers["ratelimit-limit"] for answer in more} == {"30"}
        refused_a = 6 + 3

        # The control plane shows A's 429s: the stats API, and the dashboard's Top consumers table.
        def consumers() -> dict[str, Any]:
            response = api.get("/stats/endpoints/users:v1/consumers/?window=1h")
            assert response.status_code == 200, response.text
            return {row["consumer"]: row for row in response.json()["consumers"]}

        eventually(
            lambda: consumers().get("consumer-a", {}).get("rate_limited") == refused_a
            and consumers().get("consumer-b", {}).get("requests") == 4,
            "consumer A's 429s in stats/",
            WAIT,
        )
        row_a, row_b = consumers()["consumer-a"], consumers()["consumer-b"]
        assert (row_a["requests"], row_a["by_class"]["2xx"], row_a["by_class"]["4xx"]) == (
            26 + left + 3,
            20 + left,
            refused_a,
        )
        assert row_b["rate_limited"] == 0
        totals = api.get("/stats/endpoints/users:v1/?window=1h").json()["totals"]
        assert totals["errors"].get("rate_limited") == refused_a
        page = browser.get(f"/admin/routing/endpoint/{users.pk}/dashboard/")
        assert page.status_code == 200
        table = re.search(r'<table id="endpoint-consumers">.*?</table>', page.text, re.S)
        assert table is not None and re.search(r"<th[^>]*>429</th>", table.group(0))
        row = re.search(r'<tr [^>]*data-consumer="consumer-a"[^>]*>(.*?)</tr>', table.group(0), re.S)
        assert row is not None
        cells = [
            re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row.group(1), re.S)
        ]
        assert cells[0] == "consumer-a" and cells[-1] == str(refused_a)
