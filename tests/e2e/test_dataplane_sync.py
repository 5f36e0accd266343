"""The data plane following a real control plane (ARCHITECTURE §4): a real uvicorn control plane on the
test PostgreSQL database, a real `python -m dataplane` and a real upstream, all on 127.0.0.1.

Asserted: an endpoint created through the control plane's services becomes routable on the data plane;
the node reports `applied`; killing the control plane loses no request; a data plane restarted while
the control plane is down serves from its cache. No timing assertions: we poll until a condition holds.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from controlplane.core.actors import Actor
from controlplane.core.revisions import latest_revision
from controlplane.dataplanes.models import DataPlaneNode
from controlplane.dataplanes.services import dataplane_token_issue
from controlplane.routing.services import endpoint_create
from tests.conftest import endpoint_body
from tests.dataplane.processes import dataplane, upstream
from tests.e2e.servers import eventually
from tests.e2e.test_sync_longpoll import control_plane

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ACTOR = Actor.command("test")


def test_the_data_plane_follows_the_control_plane_and_survives_it_going_away(tmp_path: Path) -> None:
    _, secret = dataplane_token_issue(name="edge-1", actor=ACTOR)
    cache_dir = tmp_path / "cache"
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    with ExitStack() as outer:
        origin = outer.enter_context(upstream(tmp_path, "origin"))
        cp_stack = outer.enter_context(ExitStack())
        base, cp_pid = cp_stack.enter_context(control_plane(tmp_path))
        sync_env = {
            "DATAPLANE_CONTROL_PLANE_URL": base,
            "DATAPLANE_TOKEN": secret,
            "DATAPLANE_CACHE_DIR": str(cache_dir),
        }
        with dataplane(tmp_path / "first", None, **sync_env) as node:
            # The control plane has no endpoint yet: its (empty) snapshot makes the node ready.
            eventually(lambda: httpx.get(f"{node.admin}/-/readyz").status_code == 200, "readyz after the first sync")
            assert httpx.get(f"{node.url}/users/1").status_code == 404

            endpoint_create(data=endpoint_body(targets=[{"url": f"{origin.url}/api"}]), actor=ACTOR)
            eventually(lambda: httpx.get(f"{node.url}/users/1").status_code == 200, "the new endpoint to route")
            assert httpx.get(f"{node.url}/users/1").json()["raw_path"] == "/api/1"

            revision = latest_revision()
            assert revision is not None
            eventually(
                lambda: DataPlaneNode.objects.filter(
                    node_id="e2e-node", result="applied", config_sha256=revision.config_sha256
                ).exists(),
                "the node's applied status report",
            )
            node_row = DataPlaneNode.objects.get(node_id="e2e-node")
            assert node_row.revision == revision.number and node_row.error == ""

            # Kill the control plane under steady traffic: no request fails.
            statuses: list[int] = []
            stop = threading.Event()

            def traffic() -> None:
                with httpx.Client(timeout=10) as client:
                    while not stop.is_set():
                        statuses.append(client.get(f"{node.url}/users/2").status_code)

            sender = threading.Thread(target=traffic)
            sender.start()
            try:
                time.sleep(0.5)
                os.killpg(cp_pid, signal.SIGKILL)
                cp_stack.close()
                eventually(
                    lambda: "gateway_control_plane_connected 0.0" in httpx.get(f"{node.admin}/-/metrics").text,
                    "the metric to say the control plane is gone",
                )
                time.sleep(0.5)
            finally:
                stop.set()
                sender.join(timeout=30)
            assert statuses and set(statuses) == {200}
            assert httpx.get(f"{node.admin}/-/readyz").status_code == 200

        # Restart the data plane while the control plane is down: it serves from its cache.
        assert list(cache_dir.glob("snapshot-*.json"))
        with dataplane(tmp_path / "second", None, **sync_env) as node:
            ready = httpx.get(f"{node.admin}/-/readyz")
            assert ready.status_code == 200 and ready.json()["config_sha256"] == revision.config_sha256
            assert {httpx.get(f"{node.url}/users/{i}").status_code for i in range(20)} == {200}


def test_each_worker_follows_the_control_plane_as_its_own_node(tmp_path: Path) -> None:
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
        ) as node:
            eventually(lambda: httpx.get(f"{node.admin}/-/readyz").status_code == 200, "readyz")
            eventually(
                lambda: set(DataPlaneNode.objects.filter(result="applied").values_list("node_id", flat=True))
                == {"edge-w0", "edge-w1"},
                "both workers' status reports",
            )
            with httpx.Client() as client:
                assert client.get(f"{node.url}/users/1").status_code == 200
