"""Editing an endpoint leaves its breaker alone unless the edit is about what the breaker judges (its
breaker policy, its targets); a breaker reset by an edit is a transition like any other: counted, logged,
reported, and in the control plane's breaker history (ARCHITECTURE §6, docs/dataplane.md).

A real uvicorn control plane on the test database, a real `python -m dataplane` node following it by
long-poll, a real upstream; the edits go through the management API as an operator makes them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from controlplane.breakers.services import breaker_policy_create
from controlplane.core.actors import Actor
from controlplane.dataplanes.services import dataplane_token_issue
from controlplane.routing.services import endpoint_create
from tests.conftest import endpoint_body
from tests.dataplane.processes import DataPlane, Upstream, dataplane, upstream
from tests.e2e.servers import eventually
from tests.e2e.test_breaker_overrides import Operator
from tests.e2e.test_sync_longpoll import control_plane

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ACTOR = Actor.command("test")
NODE = "edge-edit"
FALLBACK = '{"fallback": true}'
# reset_timeout long enough that the circuit never turns half-open by itself during the test.
POLICY = {
    "name": "edits",
    "failure_threshold": 3,
    "reset_timeout": 3600,
    "fallback_strategy": "default_response",
    "fallback": {"status": 200, "content_type": "application/json", "body": FALLBACK},
}
WAIT = 90.0


@dataclass
class Fleet:
    operator: Operator
    node: DataPlane
    origin: Upstream
    log: Path


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    _, secret = dataplane_token_issue(name="edge", actor=ACTOR)
    with ExitStack() as stack:
        origin = stack.enter_context(upstream(tmp_path, "origin"))
        base, _ = stack.enter_context(control_plane(tmp_path))
        breaker_policy_create(data=POLICY, actor=ACTOR)
        endpoint_create(data=endpoint_body(targets=[{"url": f"{origin.url}/api"}], breaker_policy="edits"), actor=ACTOR)
        (tmp_path / NODE).mkdir()
        env = {
            "DATAPLANE_NODE_ID": NODE,
            "DATAPLANE_CONTROL_PLANE_URL": base,
            "DATAPLANE_TOKEN": secret,
            "DATAPLANE_CACHE_DIR": str(tmp_path / NODE / "cache"),
            "DATAPLANE_REPORT_INTERVAL": "1",
        }
        node = stack.enter_context(dataplane(tmp_path / NODE, None, **env))
        eventually(lambda: httpx.get(f"{node.url}/users/1").status_code == 200, "routing", WAIT)
        operator = Operator(base)
        stack.callback(operator.client.close)
        yield Fleet(operator, node, origin, tmp_path / NODE / "dataplane.log")


def fallback_served(node: DataPlane) -> bool:
    response = httpx.get(f"{node.url}/users/1", timeout=10)
    return response.headers.get("x-gateway-fallback") == "default" and response.text == FALLBACK


def edit(fleet: Fleet, change: dict[str, Any]) -> None:
    """PATCH the endpoint and wait until the node runs the revision the edit made."""
    response = fleet.operator.client.patch("/endpoints/users:v1/", json=change)
    assert response.status_code == 200, response.text
    revision = fleet.operator.client.get("/revisions/").json()["results"][0]["number"]
    eventually(lambda: metric(fleet.node, "gateway_config_revision") == revision, f"the node to run {revision}", WAIT)


def metric(node: DataPlane, name: str, labels: str = "") -> float:
    text = httpx.get(f"{node.admin}/-/metrics").text
    found = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_an_open_breaker_outlives_a_description_edit_and_a_target_edit_resets_it_on_the_record(fleet: Fleet) -> None:
    node = fleet.node
    for _ in range(POLICY["failure_threshold"]):
        httpx.get(f"{node.url}/users/status/500", timeout=10)
    assert fallback_served(node)

    # Only the description: the upstream is as broken as it was, the circuit stays open on the node.
    edit(fleet, {"description": "the people service"})
    assert fallback_served(node)
    assert metric(node, "gateway_circuit_state", '{endpoint="users:v1"}') == 1

    # The targets: the breaker judged the old ones, so it starts afresh, and says so.
    edit(fleet, {"targets": [{"url": f"{fleet.origin.url}/api"}, {"url": f"{fleet.origin.url}/v2"}]})
    response = httpx.get(f"{node.url}/users/1", timeout=10)
    assert response.status_code == 200 and "x-gateway-fallback" not in response.headers
    assert response.json()["name"] == "origin"
    opened_closed = '{endpoint="users:v1",from="open",to="closed"}'
    assert metric(node, "gateway_circuit_transitions_total", opened_closed) == 1
    assert "circuit of users:v1: open -> closed (reset: its targets changed)" in fleet.log.read_text()
    eventually(
        lambda: [(t["node_id"], t["from"], t["to"]) for t in fleet.operator.breaker()["transitions"]][:2]
        == [(NODE, "open", "closed"), (NODE, "closed", "open")],
        "the reset in the control plane's breaker history (newest first)",
        WAIT,
    )
