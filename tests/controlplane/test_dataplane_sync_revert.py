"""A config that comes back (A → B → A, e.g. a rollback) is served with the revision that brought it back.

The ETag is `<config_sha256>.<state_seq>` and does not carry the revision, so a snapshot cached under A's
ETag when A was revision n must not be served again once A returns as revision n + 2: the nodes would
report n, and `revisions/{n+2}/wait/` would never see the rollout finish. Found by
bench/propagation_fleet.py.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import httpx
import pytest
from asgiref.sync import async_to_sync, sync_to_async

from controlplane.core.actors import Actor
from controlplane.core.revisions import latest_revision
from controlplane.dataplanes.services import dataplane_token_issue
from controlplane.dataplanes.sync import CONFIG_PATH, DataPlaneSyncApp, SnapshotCache
from controlplane.routing.models import Endpoint
from controlplane.routing.services import endpoint_create, endpoint_delete

ACTOR = Actor.command("test")
pytestmark = pytest.mark.django_db


async def _django_stub(scope: object, receive: object, send: object) -> None:
    raise AssertionError("only the sync paths are requested")


def test_a_config_that_returns_under_a_new_revision_is_served_with_that_revision() -> None:
    secret = dataplane_token_issue(name="edge-1", actor=ACTOR)[1]
    auth = {"Authorization": f"Bearer {secret}"}
    endpoint_create(data={"name": "users", "version": "v1", "targets": [{"url": "http://127.0.0.1:8010"}]}, actor=ACTOR)

    def add_orders() -> None:
        endpoint_create(
            data={"name": "orders", "version": "v1", "targets": [{"url": "http://127.0.0.1:8020"}]}, actor=ACTOR
        )

    def remove_orders() -> None:
        endpoint_delete(endpoint=Endpoint.objects.get(name="orders"), actor=ACTOR)

    async def follow(client: httpx.AsyncClient, etag: str) -> httpx.Response:
        """Long-poll as a node does, until the ETag differs from `etag`."""
        while True:
            response = await client.get(f"{CONFIG_PATH}?wait=5", headers={**auth, "If-None-Match": etag})
            if response.status_code == 200:
                return response

    async def run() -> list[httpx.Response]:
        app = DataPlaneSyncApp(_django_stub, poll_interval=0.02)
        seen = []
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                first = await client.get(CONFIG_PATH, headers=auth)
                seen.append(first)
                for change in (add_orders, remove_orders):
                    waiting = asyncio.ensure_future(follow(client, seen[-1].headers["etag"]))
                    await asyncio.sleep(0.1)
                    await sync_to_async(change)()
                    seen.append(await asyncio.wait_for(waiting, 30))
        finally:
            await app.aclose()
        return seen

    first, added, removed = async_to_sync(run)()
    latest = latest_revision()
    assert latest is not None
    assert removed.headers["etag"] == first.headers["etag"]  # the same config (and state) again...
    assert added.json()["revision"] == first.json()["revision"] + 1
    assert removed.json()["revision"] == latest.number == first.json()["revision"] + 2  # ...as the new revision
    assert removed.json()["config_sha256"] == latest.config_sha256


def test_the_snapshot_cache_rebuilds_an_etag_that_became_current_again_and_keeps_no_overlapping_build() -> None:
    loads: list[int] = []
    gate = asyncio.Event()

    async def load() -> SimpleNamespace:
        loads.append(len(loads) + 1)
        number = loads[-1]
        if number == 3:
            await gate.wait()  # a build still reading while the watcher sees a change
        return SimpleNamespace(etag="A", revision=number)

    async def run() -> list[int]:
        cache = SnapshotCache(load)  # type: ignore[arg-type]
        seen = [(await cache.get("A")).revision, (await cache.get("A")).revision]  # built once, then kept
        cache.forget("A")  # A became current again (A → B → A): what was built for it is stale
        seen.append((await cache.get("A")).revision)
        cache.forget("B")
        cache.forget("A")
        overlapping = asyncio.ensure_future(cache.get("A"))
        await asyncio.sleep(0.01)
        cache.forget("B")  # the ETag moved on while that build read the database
        gate.set()
        seen.append((await overlapping).revision)  # answered...
        seen.append((await cache.get("A")).revision)  # ...but not kept
        return seen

    assert asyncio.run(run()) == [1, 1, 2, 3, 4]
