"""`GET /api/v1/revisions/{n}/wait/` against a real uvicorn control plane.

Simulated nodes report through the real `POST /api/v1/dataplane/status` while a client waits; then a real
`python -m dataplane` applies a change published through the API and the wait answers 200. The wait is
answered before Django by an async handler, so the API keeps answering while a client waits.
No timing assertions: we poll until a condition holds, and only the short `timeout=1` case ends by time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.auth.models import Group

from controlplane.core.actors import Actor
from controlplane.core.models import ConfigRevision
from controlplane.dataplanes.rollout import REJECTION_GRACE_SECONDS
from controlplane.dataplanes.services import dataplane_token_issue
from controlplane.routing.services import endpoint_create
from tests.conftest import PASSWORD, endpoint_body
from tests.dataplane.processes import dataplane, upstream
from tests.e2e.servers import eventually
from tests.e2e.test_sync_longpoll import control_plane

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
ACTOR = Actor.command("test")


def latest_number() -> int:
    number = ConfigRevision.objects.order_by("-number").values_list("number", flat=True).first()
    assert number is not None
    return int(number)


def make_person(username: str, role: str) -> None:
    """A user whose password is hashed with a hasher the server's settings know (the test settings' is not)."""
    hashed = PBKDF2PasswordHasher().encode(PASSWORD, "e2e-salt", iterations=1000)
    user = get_user_model().objects.create(username=username, password=hashed)
    user.groups.add(Group.objects.get(name=role))


def login(base: str, username: str) -> dict[str, str]:
    response = httpx.post(f"{base}/api/v1/auth/token/", json={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access']}"}


class Waiter:
    """One `revisions/{n}/wait/` request running in a thread, so the test can act while it waits."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.response: httpx.Response | None = None
        self._thread = threading.Thread(target=self._run, args=(url, headers))
        self._thread.start()

    def _run(self, url: str, headers: dict[str, str]) -> None:
        self.response = httpx.get(url, headers=headers, timeout=90)

    def result(self) -> httpx.Response:
        self._thread.join(timeout=90)
        assert self.response is not None, "the wait did not answer"
        return self.response

    @property
    def pending(self) -> bool:
        return self._thread.is_alive()


def reporter(base: str, secret: str) -> Callable[..., None]:
    def report(node_id: str, revision: int, result: str = "applied", error: str | None = None) -> None:
        body: dict[str, Any] = {
            "node_id": node_id,
            "boot_id": f"{node_id}-boot",
            "hostname": f"{node_id}.local",
            "version": "0.1.0",
            "revision": revision,
            "config_sha256": "a" * 64,
            "state_seq": 0,
            "result": result,
            "error": error,
            "breakers": {},
            "counters": {},
        }
        headers = {"Authorization": f"Bearer {secret}"}
        response = httpx.post(f"{base}/api/v1/dataplane/status", json=body, headers=headers)
        assert response.status_code == 204, response.text

    return report


def test_a_wait_answers_when_both_reporting_nodes_applied_fails_on_a_rejection_and_times_out(
    tmp_path: Path,
) -> None:
    make_person("rita", "readonly")
    _, secret = dataplane_token_issue(name="edge", actor=ACTOR)
    endpoint_create(data=endpoint_body("users"), actor=ACTOR)
    with control_plane(tmp_path) as (base, _):
        headers = login(base, "rita")
        report = reporter(base, secret)
        before = latest_number()
        report("edge-a", before)
        report("edge-b", before)
        endpoint_create(data=endpoint_body("orders"), actor=ACTOR)
        target = latest_number()

        waiter = Waiter(f"{base}/api/v1/revisions/{target}/wait/?share=1&timeout=60", headers)
        report("edge-a", target)
        # Only one of two live nodes applied: the wait goes on, and the rest of the API still answers.
        nodes = httpx.get(f"{base}/api/v1/dataplanes/", headers=headers).json()["results"]
        assert {row["node_id"]: row["lag"] for row in nodes} == {"edge-a": 0, "edge-b": 1}
        assert waiter.pending
        report("edge-b", target)
        answer = waiter.result()
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"revision": target, "share": 1.0, "applied": 2, "rejected": 0, "live": 2, "done": True}

        # A rejection (reported after the revision's grace, see rollout.py) fails the wait at once.
        endpoint_create(data=endpoint_body("billing"), actor=ACTOR)
        bad = latest_number()
        waiter = Waiter(f"{base}/api/v1/revisions/{bad}/wait/?timeout=60", headers)
        time.sleep(REJECTION_GRACE_SECONDS + 0.2)  # the node's report must postdate the revision's grace
        report("edge-a", target, "rejected", "endpoint billing:v1: bad target")
        answer = waiter.result()
        assert answer.status_code == 409, answer.text
        assert answer.json()["error"] == "rollout_failed"
        assert answer.json()["nodes"] == [{"node_id": "edge-a", "error": "endpoint billing:v1: bad target"}]

        revisions = httpx.get(f"{base}/api/v1/revisions/", headers=headers).json()["results"]
        assert {row["number"]: row["nodes"] for row in revisions}[bad] == {"applied": 0, "rejected": 1, "live": 2}

        # Nobody applies it: a short timeout ends with the counts.
        answer = httpx.get(f"{base}/api/v1/revisions/{bad}/wait/?share=0.5&timeout=1", headers=headers, timeout=30)
        assert answer.status_code == 409
        assert answer.json()["error"] == "rollout_failed"
        report("edge-a", target)  # the node recovered and runs the previous revision again, still not `bad`
        answer = httpx.get(f"{base}/api/v1/revisions/{bad}/wait/?share=0.5&timeout=1", headers=headers, timeout=30)
        assert answer.status_code == 409, answer.text
        body = answer.json()
        assert (body["error"], body["applied"], body["rejected"], body["live"]) == ("rollout_incomplete", 0, 0, 2)

        anonymous = httpx.get(f"{base}/api/v1/revisions/{bad}/wait/")
        assert anonymous.status_code == 401 and anonymous.json()["error"] == "not_authenticated"


def test_a_change_published_through_the_api_is_reported_applied_by_a_real_data_plane(
    tmp_path: Path,
) -> None:
    make_person("oscar", "operator")
    _, secret = dataplane_token_issue(name="edge-1", actor=ACTOR)
    with upstream(tmp_path, "origin") as origin, control_plane(tmp_path) as (base, _):
        headers = login(base, "oscar")
        env = {"DATAPLANE_CONTROL_PLANE_URL": base, "DATAPLANE_TOKEN": secret, "DATAPLANE_CACHE_DIR": str(tmp_path)}
        with dataplane(tmp_path, None, **env) as node:
            eventually(
                lambda: [
                    row["state"] for row in httpx.get(f"{base}/api/v1/dataplanes/", headers=headers).json()["results"]
                ]
                == ["live"],
                "the node's first report",
            )
            created = httpx.post(
                f"{base}/api/v1/endpoints/",
                json=endpoint_body("users", targets=[{"url": f"{origin.url}/api"}]),
                headers=headers,
            )
            assert created.status_code == 201, created.text
            target = latest_number()

            answer = httpx.get(f"{base}/api/v1/revisions/{target}/wait/?share=1", headers=headers, timeout=60)

            assert answer.status_code == 200, answer.text
            assert answer.json()["applied"] == answer.json()["live"] == 1
            # Applied means routable on the node.
            assert httpx.get(f"{node.url}/users/1").status_code == 200
            detail = httpx.get(f"{base}/api/v1/dataplanes/e2e-node/", headers=headers).json()
            assert (detail["revision"], detail["lag"], detail["result"]) == (target, 0, "applied")
