"""Breaker overrides across a fleet (ARCHITECTURE §4, §6; "force a breaker and watch both nodes obey"):
a real uvicorn control plane on the test PostgreSQL database, two real `python -m dataplane` nodes following
it by long-poll, and a real upstream, all on 127.0.0.1.

Asserted, through the management API as an operator would: force open → both nodes answer 503
`circuit_open` and `breakers/` shows open on both; force closed while the upstream fails → traffic still
reaches the upstream; lifted, failures trip each node's breaker by itself and `breakers/` shows it with the
transition history; reset → both nodes closed again. No timing assertions: we poll until a condition holds.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.auth.models import Group

from controlplane.breakers.services import breaker_policy_create
from controlplane.core.actors import Actor
from controlplane.dataplanes.services import dataplane_token_issue
from controlplane.routing.services import endpoint_create
from tests.conftest import PASSWORD, endpoint_body
from tests.dataplane.processes import DataPlane, dataplane, upstream
from tests.e2e.servers import eventually
from tests.e2e.test_sync_longpoll import control_plane

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ACTOR = Actor.command("test")
NODES = ("edge-a", "edge-b")
# Long enough that the test never sees an upstream's circuit turn half-open by itself; the sync wait
# bounds how long a node takes to hear of a change (one long-poll), plus start-up on a busy machine.
POLICY = {"name": "e2e", "failure_threshold": 3, "reset_timeout": 3600}
WAIT = 90.0


class Operator:
    """The management API as an operator uses it: a JWT from `auth/token/`, then JSON calls."""

    def __init__(self, base: str) -> None:
        # Hashed with a hasher the server's settings know (the test settings use a fast one it does not).
        hashed = PBKDF2PasswordHasher().encode(PASSWORD, "e2e-salt", iterations=1000)
        user = get_user_model().objects.create(username="olga", password=hashed)
        user.groups.add(Group.objects.get(name="operator"))
        token = httpx.post(f"{base}/api/v1/auth/token/", json={"username": "olga", "password": PASSWORD})
        assert token.status_code == 200, token.text
        self.client = httpx.Client(
            base_url=f"{base}/api/v1", headers={"Authorization": f"Bearer {token.json()['access']}"}, timeout=30
        )

    def breaker(self) -> dict[str, Any]:
        response = self.client.get("/breakers/users:v1/")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def node_states(self) -> dict[str, tuple[str, str | None]]:
        return {n["node_id"]: (n["state"], n["forced"]) for n in self.breaker()["nodes"]}

    def force(self, state: str | None) -> None:
        response = self.client.post("/breakers/users:v1/force/", json={"state": state, "seconds": None})
        assert response.status_code == 200, response.text

    def reset(self) -> None:
        assert self.client.post("/breakers/users:v1/reset/").status_code == 200


def circuit_open(node: DataPlane) -> bool:
    response = httpx.get(f"{node.url}/users/1", timeout=10)
    return (
        response.status_code == 503
        and response.json()["error"] == "circuit_open"
        and response.headers.get("x-circuit-breaker") == "open"
    )


def failing(node: DataPlane) -> httpx.Response:
    """One request the upstream answers 500 (a failure under the default `failure_statuses`)."""
    return httpx.get(f"{node.url}/users/status/500", timeout=10)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[Operator, list[DataPlane]]]:
    _, secret = dataplane_token_issue(name="edge", actor=ACTOR)
    with ExitStack() as stack:
        origin = stack.enter_context(upstream(tmp_path, "origin"))
        base, _ = stack.enter_context(control_plane(tmp_path))
        breaker_policy_create(data=POLICY, actor=ACTOR)
        endpoint_create(data=endpoint_body(targets=[{"url": f"{origin.url}/api"}], breaker_policy="e2e"), actor=ACTOR)
        nodes = []
        for node_id in NODES:
            (tmp_path / node_id).mkdir()
            env = {
                "DATAPLANE_NODE_ID": node_id,
                "DATAPLANE_CONTROL_PLANE_URL": base,
                "DATAPLANE_TOKEN": secret,
                "DATAPLANE_CACHE_DIR": str(tmp_path / node_id / "cache"),
                # Reports carry breaker states that traffic changed; report often so the API sees them soon.
                "DATAPLANE_REPORT_INTERVAL": "1",
            }
            nodes.append(stack.enter_context(dataplane(tmp_path / node_id, None, **env)))
        for node in nodes:
            eventually(lambda node=node: httpx.get(f"{node.url}/users/1").status_code == 200, "routing", WAIT)
        operator = Operator(base)
        stack.callback(operator.client.close)
        yield operator, nodes


def test_a_forced_breaker_is_obeyed_by_both_nodes_and_the_fleet_view_follows(
    fleet: tuple[Operator, list[DataPlane]],
) -> None:
    operator, nodes = fleet
    eventually(lambda: set(operator.node_states()) == set(NODES), "both nodes' reports", WAIT)
    assert operator.breaker()["aggregate"] == "closed"

    # Force open: both nodes answer with the fallback, and say so in their reports.
    operator.force("open")
    for node in nodes:
        eventually(lambda node=node: circuit_open(node), f"{node.port} to obey the force", WAIT)
    eventually(
        lambda: operator.node_states() == {n: ("open", "open") for n in NODES}, "the forced state in reports", WAIT
    )
    view = operator.breaker()
    assert view["aggregate"] == "open" and view["override"]["force"] == "open"

    # Force closed while the upstream fails: every request still reaches it, past the failure threshold.
    operator.force("closed")
    for node in nodes:
        eventually(lambda node=node: failing(node).status_code == 500, "forced closed to reach the upstream", WAIT)
        answers = [failing(node) for _ in range(POLICY["failure_threshold"] * 2)]
        assert {(a.status_code, a.text) for a in answers} == {(500, "status 500 from origin")}
    eventually(lambda: operator.node_states() == {n: ("closed", "closed") for n in NODES}, "forced closed", WAIT)

    # Lift the force: the failures now trip each node's breaker by itself.
    operator.force(None)
    eventually(lambda: operator.node_states() == {n: ("closed", None) for n in NODES}, "the lifted force", WAIT)
    for node in nodes:
        eventually(lambda node=node: failing(node).status_code == 503, f"{node.port} to trip", WAIT)
        assert circuit_open(node)
    eventually(lambda: operator.node_states() == {n: ("open", None) for n in NODES}, "the natural trip", WAIT)
    listed = operator.client.get("/breakers/", params={"state": "open"}).json()["results"]
    assert [row["key"] for row in listed] == ["users:v1"]

    # The reports' transition history: each node went closed → open (the force made no transition).
    eventually(
        lambda: {(t["node_id"], t["from"], t["to"]) for t in operator.breaker()["transitions"]}
        >= {(n, "closed", "open") for n in NODES},
        "the transitions in the history",
        WAIT,
    )

    # Reset: both nodes close once and route again.
    operator.reset()
    for node in nodes:
        eventually(lambda node=node: httpx.get(f"{node.url}/users/1").status_code == 200, "the reset", WAIT)
    eventually(lambda: operator.node_states() == {n: ("closed", None) for n in NODES}, "closed after reset", WAIT)
    assert operator.breaker()["aggregate"] == "closed"
    assert operator.breaker()["override"]["reset_generation"] == 1
