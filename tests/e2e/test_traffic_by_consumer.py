"""Traffic by consumer and secrets by reference end to end (ARCHITECTURE §11): a real control plane
(uvicorn on the test database) holding the consumers, a real `python -m dataplane` following it with a
data-plane token, a real upstream, all on 127.0.0.1; no timing assertions, we poll until a condition
holds. What the tests assert is what the real control plane stored and shows: its `stats/` and
`dataplanes/` APIs and the admin's fleet views, and what the node answers.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.auth.models import Group

from controlplane.consumers.services import consumer_create, consumer_key_create
from controlplane.core.actors import Actor
from controlplane.core.revisions import latest_revision
from controlplane.dataplanes.models import DataPlaneNode
from controlplane.dataplanes.services import dataplane_token_issue
from controlplane.routing.services import endpoint_create
from tests.conftest import PASSWORD
from tests.dataplane.processes import dataplane, upstream
from tests.e2e.servers import eventually
from tests.e2e.test_sync_longpoll import control_plane

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ACTOR = Actor.command("test")


def issued_key(username: str, label: str) -> str:
    """A consumer with one API key, as the control plane generates it (shown this once)."""
    consumer = consumer_create(data={"username": username}, actor=ACTOR)
    _, _, key = consumer_key_create(consumer=consumer, label=label, actor=ACTOR)
    return key


def reader_token(base: str) -> dict[str, str]:
    """A readonly user's JWT from the control plane's `auth/token/`, as an API client gets one."""
    hashed = PBKDF2PasswordHasher().encode(PASSWORD, "e2e-salt", iterations=1000)
    get_user_model().objects.create(username="reader", password=hashed).groups.add(Group.objects.get(name="readonly"))
    token = httpx.post(f"{base}/api/v1/auth/token/", json={"username": "reader", "password": PASSWORD}, timeout=30)
    assert token.status_code == 200, token.text
    return {"Authorization": f"Bearer {token.json()['access']}"}


def node_env(base: str, secret: str, tmp_path: Path) -> dict[str, str]:
    return {
        "DATAPLANE_CONTROL_PLANE_URL": base,
        "DATAPLANE_TOKEN": secret,
        "DATAPLANE_CACHE_DIR": str(tmp_path / "cache"),
        "DATAPLANE_REPORT_INTERVAL": "0.5",
    }


def test_two_consumers_traffic_through_a_data_plane_shows_in_the_stats_api_by_consumer(tmp_path: Path) -> None:
    _, secret = dataplane_token_issue(name="edge-1", actor=ACTOR)
    with upstream(tmp_path, "origin") as origin, control_plane(tmp_path) as (base, _):
        auth = reader_token(base)
        partner_key, intern_key = issued_key("partner", "p1"), issued_key("intern", "i1")
        keyed = {"name": "keyed", "version": "v1", "targets": [{"url": f"{origin.url}/api"}],
                 "plugins": {"key_auth": {"key_names": ["apikey"]}}}  # fmt: skip
        endpoint_create(data=keyed, actor=ACTOR)
        with (
            dataplane(tmp_path, None, **node_env(base, secret, tmp_path)) as node,
            httpx.Client(timeout=10) as client,
        ):
            # Routed once a request without a key meets the gate (401) rather than no route (404).
            eventually(lambda: client.get(f"{node.url}/keyed/status/200").status_code == 401, "the endpoint to route")
            statuses = [client.get(f"{node.url}/keyed/status/200", headers={"apikey": partner_key}).status_code
                        for _ in range(3)]  # fmt: skip
            statuses += [client.get(f"{node.url}/keyed/status/404", headers={"apikey": intern_key}).status_code]
            statuses += [client.get(f"{node.url}/keyed/status/200", headers={"apikey": intern_key}).status_code]
            assert statuses == [200, 200, 200, 404, 200]

            def by_consumer() -> dict[str, Any]:
                url = f"{base}/api/v1/stats/endpoints/keyed:v1/consumers/?window=5m"
                response = client.get(url, headers=auth)
                if response.status_code == 404:
                    return {}  # no report has reached the control plane yet
                assert response.status_code == 200, response.text
                body = response.json()
                return {row["consumer"]: row["by_class"] for row in body["consumers"]} | {"(other)": body["other"]}

            wanted = {
                "partner": {"2xx": 3, "3xx": 0, "4xx": 0, "5xx": 0},
                "intern": {"2xx": 1, "3xx": 0, "4xx": 1, "5xx": 0},
                "(other)": {"requests": 0, "by_class": {"2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0}, "rate_limited": 0},
            }
            eventually(lambda: by_consumer() == wanted, "both consumers' counts in stats/")
            # Later reports (nothing new) add nothing: each report epoch is counted once.
            reported = DataPlaneNode.objects.get(node_id="e2e-node").last_seen
            eventually(lambda: DataPlaneNode.objects.get(node_id="e2e-node").last_seen > reported, "another report")
            assert by_consumer() == wanted


def test_dataplane_missing_secret(tmp_path: Path) -> None:
    """A snapshot whose JWT secret names an unset variable is refused: the old config keeps serving, and
    the control plane's data-plane API and fleet views show the variable's name."""
    variable = "E2E_UNSET_JWT_SECRET_FOR_THIS_TEST"
    assert variable not in os.environ
    _, secret = dataplane_token_issue(name="edge-1", actor=ACTOR)
    operator = get_user_model().objects.create(username="olga", is_staff=True)
    operator.password = PBKDF2PasswordHasher().encode(PASSWORD, "e2e-salt", iterations=1000)
    operator.save(update_fields=["password"])
    operator.groups.set(Group.objects.filter(name="operator"))
    with upstream(tmp_path, "origin") as origin, control_plane(tmp_path) as (base, _):
        auth = reader_token(base)
        plain = {"name": "plain", "version": "v1", "targets": [{"url": f"{origin.url}/api"}]}
        endpoint_create(data=plain, actor=ACTOR)
        serving = latest_revision()
        assert serving is not None
        with (
            dataplane(tmp_path, None, **node_env(base, secret, tmp_path)) as node,
            httpx.Client(timeout=10) as client,
        ):
            eventually(
                lambda: client.get(f"{node.url}/plain/status/200").status_code == 200, "the first revision served"
            )
            # A long username and issuer put the variable's name well past the first 120 characters.
            username, issuer = "mobile-app-of-the-partner-with-a-rather-long-consumer-name-0001", "issuer-" + "i" * 80
            credential = {"issuer": issuer, "algorithm": "HS256", "secret": {"env": variable}}
            consumer_create(data={"username": username, "jwt": [credential]}, actor=ACTOR)
            endpoint_create(data={**plain, "name": "secured", "plugins": {"jwt": {}}}, actor=ACTOR)

            def node_row() -> DataPlaneNode | None:
                return DataPlaneNode.objects.filter(node_id="e2e-node", result="rejected").first()

            eventually(lambda: node_row() is not None, "the node to report the refused snapshot")
            row = node_row()
            assert row is not None and variable in row.error and row.revision == serving.number, row and row.error
            # The old config keeps serving; the refused one's new endpoint never came.
            assert client.get(f"{node.url}/plain/status/200").status_code == 200
            assert client.get(f"{node.url}/secured/status/200").status_code == 404

            listed = client.get(f"{base}/api/v1/dataplanes/e2e-node/", headers=auth)
            assert listed.status_code == 200, listed.text
            assert listed.json()["result"] == "rejected" and variable in listed.json()["error"]

            with httpx.Client(base_url=base, timeout=30, follow_redirects=True) as browser:
                login = browser.get("/admin/login/")
                csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text)
                assert csrf is not None
                form = {
                    "username": "olga",
                    "password": PASSWORD,
                    "csrfmiddlewaretoken": csrf.group(1),
                    "next": "/admin/",
                }
                landing = browser.post("/admin/login/", data=form, headers={"Referer": f"{base}/admin/login/"})
                assert landing.status_code == 200 and landing.url.path == "/admin/", landing.url
                assert variable in landing.text  # the landing page's fleet table
                fleet = browser.get("/admin/dataplanes/dataplanenode/")
                assert fleet.status_code == 200 and variable in fleet.text
