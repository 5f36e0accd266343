"""50 config changes published through the control plane while traffic flows: no proxy-made errors.

A real control plane (uvicorn, PostgreSQL), a real data plane following it, a real upstream. While a
client sends requests without pause, 50 API-equivalent service writes change the endpoint (timeouts,
descriptions, an extra route, the weight of a second target) and each reaches the data plane. Every
answer must come from the upstream: a gateway-made error (any JSON `error` body, 404 included) fails
the test. No timing assertions; the loop waits for the node to apply the last revision.
"""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest

from controlplane.core.actors import Actor
from controlplane.core.revisions import latest_revision
from controlplane.dataplanes.models import DataPlaneNode
from controlplane.dataplanes.services import dataplane_token_issue
from controlplane.routing.models import Endpoint
from controlplane.routing.services import endpoint_create, endpoint_update
from tests.conftest import endpoint_body
from tests.dataplane.processes import dataplane, upstream
from tests.e2e.servers import eventually
from tests.e2e.test_sync_longpoll import control_plane

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ACTOR = Actor.command("test")
CHANGES = 50


def test_fifty_published_configs_under_load_make_no_proxy_errors(tmp_path: Path) -> None:
    _, secret = dataplane_token_issue(name="edge-load", actor=ACTOR)
    with (
        upstream(tmp_path, "origin") as origin,
        control_plane(tmp_path) as (base, _),
        dataplane(
            tmp_path,
            None,
            DATAPLANE_CONTROL_PLANE_URL=base,
            DATAPLANE_TOKEN=secret,
            DATAPLANE_CACHE_DIR=str(tmp_path / "cache"),
        ) as node,
    ):
        endpoint_create(data=endpoint_body(targets=[{"url": f"{origin.url}/api"}]), actor=ACTOR)
        eventually(lambda: httpx.get(f"{node.url}/users/1").status_code == 200, "the endpoint to route")

        answers: list[tuple[int, str]] = []
        stop = threading.Event()

        def traffic() -> None:
            with httpx.Client(timeout=30) as client:
                while not stop.is_set():
                    response = client.get(f"{node.url}/users/load")
                    answers.append((response.status_code, response.headers.get("content-type", "")))
                    # A gateway-made answer carries `error`; the upstream's never does.
                    if "error" in response.text[:200] and response.status_code >= 400:
                        answers.append((-1, response.text[:200]))

        sender = threading.Thread(target=traffic)
        sender.start()
        try:
            for change in range(CHANGES):
                endpoint = Endpoint.objects.get(name="users", version="v1")
                data = {
                    "timeout": 10 + change % 20,
                    "description": f"change {change}",
                    "paths": [f"/extra/{change}"],
                    "targets": [{"url": f"{origin.url}/api", "weight": 1 + change}],
                }
                endpoint_update(endpoint=endpoint, data=data, partial=True, actor=ACTOR)
            revision = latest_revision()
            assert revision is not None
            eventually(
                lambda: DataPlaneNode.objects.filter(config_sha256=revision.config_sha256, result="applied").exists(),
                "the node to apply the last revision",
            )
            eventually(lambda: httpx.get(f"{node.url}/extra/{CHANGES - 1}/x").status_code == 200, "the last route")
        finally:
            stop.set()
            sender.join(timeout=60)
    statuses = {status for status, _ in answers}
    assert len(answers) > CHANGES
    assert statuses == {200}, [a for a in answers if a[0] != 200][:5]
