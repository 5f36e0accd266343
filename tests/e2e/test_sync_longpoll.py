"""The sync long-poll against a real uvicorn control plane on PostgreSQL (ARCHITECTURE §4).

Asserted: a waiting client wakes with the new ETag when a change commits (not how fast), and 200
waiting clients leave the server's thread count and its PostgreSQL connections where they were.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.db import connection

from controlplane.core.actors import Actor
from controlplane.core.revisions import latest_revision
from controlplane.core.state import bump_state_seq
from controlplane.dataplanes.services import dataplane_token_issue
from controlplane.routing.services import endpoint_create
from tests.conftest import endpoint_body
from tests.e2e.servers import clean_env, free_port, running

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ACTOR = Actor.command("test")
CONFIG = "/api/v1/dataplane/config"
WAITERS = 200


@contextmanager
def control_plane(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """`uvicorn config.asgi:application --http httptools` on the test database; yields (base URL, pid)."""
    port = free_port()
    database = connection.settings_dict
    env = clean_env(
        DATABASE_URL=f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
        GATEWAY_VAR_DIR=str(tmp_path / "var"),
    )
    argv = [sys.executable, "-m", "uvicorn", "config.asgi:application", "--http", "httptools"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--lifespan", "off", "--no-access-log"]
    base = f"http://127.0.0.1:{port}"
    with running(argv, env=env, ready_url=f"{base}/healthz", log=tmp_path / "uvicorn.log") as process:
        yield base, process.pid


def expected_etag() -> str:
    revision = latest_revision()
    assert revision is not None
    from controlplane.core.models import StateCounter

    seq = StateCounter.objects.filter(pk=1).values_list("state_seq", flat=True).first() or 0
    return f'"{revision.config_sha256}.{seq}"'


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


def sockets_of(pid: int) -> int:
    fds = Path(f"/proc/{pid}/fd")
    return sum(1 for fd in fds.iterdir() if fd.readlink().name.startswith("socket:"))


def connections_to_test_database() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        return int(cursor.fetchone()[0])


def test_a_waiting_long_poll_wakes_with_the_new_etag_when_an_endpoint_change_commits(tmp_path: Path) -> None:
    _, secret = dataplane_token_issue(name="edge-1", actor=ACTOR)
    auth = {"Authorization": f"Bearer {secret}"}
    with control_plane(tmp_path) as (base, _):
        first = httpx.get(base + CONFIG, headers=auth, timeout=10)
        assert first.status_code == 200 and first.headers["etag"] == expected_etag()
        with ThreadPoolExecutor(max_workers=1) as pool:
            waiting = pool.submit(
                httpx.get,
                f"{base}{CONFIG}?wait=60",
                headers={**auth, "If-None-Match": first.headers["etag"]},
                timeout=90,
            )
            time.sleep(1)  # let it park; not an assertion on speed
            assert not waiting.done()
            endpoint_create(data=endpoint_body(), actor=ACTOR)  # commits: transaction=True
            response = waiting.result(timeout=90)
    assert response.status_code == 200
    assert response.headers["etag"] == expected_etag() != first.headers["etag"]
    snapshot = response.json()
    assert [e["name"] for e in snapshot["config"]["endpoints"]] == ["users"]


def test_a_waiting_long_poll_wakes_on_a_state_seq_bump(tmp_path: Path) -> None:
    _, secret = dataplane_token_issue(name="edge-1", actor=ACTOR)
    auth = {"Authorization": f"Bearer {secret}"}
    with control_plane(tmp_path) as (base, _):
        etag = httpx.get(base + CONFIG, headers=auth, timeout=10).headers["etag"]
        with ThreadPoolExecutor(max_workers=1) as pool:
            waiting = pool.submit(
                httpx.get, f"{base}{CONFIG}?wait=60", headers={**auth, "If-None-Match": etag}, timeout=90
            )
            time.sleep(1)
            assert not waiting.done()
            bump_state_seq()
            response = waiting.result(timeout=90)
    assert response.status_code == 200
    assert response.headers["etag"] == expected_etag() != etag


def test_many_waiting_clients_leave_threads_and_database_connections_flat(tmp_path: Path) -> None:
    _, secret = dataplane_token_issue(name="edge-1", actor=ACTOR)
    auth = {"Authorization": f"Bearer {secret}"}
    with control_plane(tmp_path) as (base, pid):
        etag = httpx.get(base + CONFIG, headers=auth, timeout=10).headers["etag"]
        time.sleep(0.5)
        threads_before, connections_before = threads_of(pid), connections_to_test_database()
        results: list[Any] = []
        parked = threading.Event()

        async def wait_all() -> None:
            limits = httpx.Limits(max_connections=WAITERS + 10, max_keepalive_connections=WAITERS + 10)
            async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as client:
                headers = {**auth, "If-None-Match": etag}
                tasks = [asyncio.create_task(client.get(f"{CONFIG}?wait=60", headers=headers)) for _ in range(WAITERS)]
                await asyncio.sleep(3)  # let every request reach the server and park
                parked.set()
                results.extend(await asyncio.gather(*tasks))

        runner = threading.Thread(target=asyncio.run, args=(wait_all(),))
        runner.start()
        try:
            assert parked.wait(timeout=60)
            threads_during, connections_during = threads_of(pid), connections_to_test_database()
            # The clients really are connected and waiting while we count.
            assert sockets_of(pid) >= WAITERS and not results
        finally:
            endpoint_create(data=endpoint_body(), actor=ACTOR)  # wake them all
            runner.join(timeout=120)
    assert not runner.is_alive()
    assert len(results) == WAITERS
    new_etag = expected_etag()
    assert {(r.status_code, r.headers["etag"]) for r in results} == {(200, new_etag)}
    assert threads_during <= threads_before
    assert connections_during <= connections_before
