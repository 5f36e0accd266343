"""The ETag watcher does not queue behind the shared database thread (bench/waiting_clients.py).

Token lookups and status reports run one at a time on asgiref's shared thread. With the web process
busy storing status reports, a change used to wait for that queue before the watcher saw it. With
`own_watcher_thread` (as config/asgi.py builds the app) the watcher reads on a thread of its own: a
waiting data plane gets a change while the shared thread is held.
"""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.db import connection

from controlplane.core.actors import Actor
from controlplane.core.state import bump_state_seq
from controlplane.dataplanes.models import DataPlaneToken
from controlplane.dataplanes.services import dataplane_token_issue
from controlplane.dataplanes.snapshot import read_current_etag
from controlplane.dataplanes.sync import CONFIG_PATH, DataPlaneSyncApp

ACTOR = Actor.command("test")
pytestmark = pytest.mark.django_db(transaction=True)  # the watcher's own connection sees only commits


async def _django_stub(scope: object, receive: object, send: object) -> None:
    raise AssertionError("only the sync paths are requested")


def _on_a_fresh_connection(function):  # type: ignore[no-untyped-def]
    def run():  # type: ignore[no-untyped-def]
        try:
            return function()
        finally:
            connection.close()

    return asyncio.to_thread(run)


def test_a_waiting_node_gets_a_change_while_the_shared_database_thread_is_busy() -> None:
    secret = dataplane_token_issue(name="edge-1", actor=ACTOR)[1]
    etag = read_current_etag()
    release = threading.Event()

    def hold_the_shared_thread() -> None:  # a long status report, say
        release.wait(60)

    async def run() -> httpx.Response:
        app = DataPlaneSyncApp(_django_stub, poll_interval=0.02, own_watcher_thread=True)
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=90) as client:
                headers = {"Authorization": f"Bearer {secret}", "If-None-Match": f'"{etag}"'}
                waiting = asyncio.ensure_future(client.get(f"{CONFIG_PATH}?wait=60", headers=headers))
                # Its token lookup (on the shared thread) is done once the token records its use.
                while not await _on_a_fresh_connection(
                    lambda: DataPlaneToken.objects.filter(last_used_at__isnull=False).exists()
                ):
                    await asyncio.sleep(0.02)
                busy = asyncio.ensure_future(sync_to_async(hold_the_shared_thread, thread_sensitive=True)())
                try:
                    await _on_a_fresh_connection(bump_state_seq)
                    return await asyncio.wait_for(waiting, 30)  # answered while the shared thread is held
                finally:
                    release.set()
                    await busy
        finally:
            await app.aclose()

    response = async_to_sync(run)()
    assert response.status_code == 200
    sha, seq = etag.split(".")
    assert response.headers["etag"] == f'"{sha}.{int(seq) + 1}"'
