"""The README's run command, as a new user runs it: real processes, real HTTP.

The first test is the only place SQLite appears: it proves the embedded default starts. The second
runs the same path against PostgreSQL.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.db import connection

from tests.e2e.servers import clean_env, free_port, running

PASSWORD = "first-admin-password-42"


def walk_through_the_readme(base: str, *, revision: int = 2) -> None:
    """Obtain a token, create an endpoint, see the revision and the audit event naming them."""
    with httpx.Client(base_url=base, timeout=10) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").status_code == 200
        tokens = client.post("/api/v1/auth/token/", json={"username": "admin", "password": PASSWORD})
        assert tokens.status_code == 200, tokens.text
        auth = {"Authorization": f"Bearer {tokens.json()['access']}"}
        body = {"name": "orders", "version": "v1", "targets": [{"url": "http://127.0.0.1:8010/orders"}]}
        created = client.post("/api/v1/endpoints/", json=body, headers=auth)
        assert created.status_code == 201, created.text
        assert created.json()["key"] == "orders:v1"
        latest = client.get("/api/v1/revisions/", headers=auth).json()["results"][0]
        assert (latest["number"], latest["actor"]) == (revision, "user:admin")
        assert latest["changes"] == [{"kind": "endpoint", "key": "orders:v1", "action": "create"}]
        events = client.get("/api/v1/audit/", params={"object": "orders:v1"}, headers=auth).json()["results"]
        assert [(e["actor"], e["action"]) for e in events] == [("user:admin", "endpoint.create")]
        assert client.post("/api/v1/endpoints/", json=body).status_code == 401


def eventually(check: Callable[[], Any], *, within: float = 60.0) -> Any:
    """Poll `check` until it returns something truthy (a bound on waiting, not a timing assertion)."""
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except httpx.TransportError as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.5)
    raise AssertionError(f"gave up waiting; last answer: {last!r}")


def test_the_readme_command_runs_the_whole_gateway_on_the_embedded_defaults(tmp_path: Path) -> None:
    """SQLite, the filesystem broker, worker, beat, the data plane and the demo upstream: one command."""
    port, proxy, ops = free_port(), free_port(), free_port()
    env = clean_env(
        GATEWAY_VAR_DIR=str(tmp_path / "var"),
        GATEWAY_ADMIN_PASSWORD=PASSWORD,
        GATEWAY_LISTEN=f"127.0.0.1:{port}",
        DATAPLANE_LISTEN=f"127.0.0.1:{proxy}",
        DATAPLANE_ADMIN_LISTEN=f"127.0.0.1:{ops}",
    )
    env.pop("CELERY_BROKER_URL", None)
    argv = [sys.executable, "manage.py", "rungateway"]
    with running(argv, env=env, ready_url=f"http://127.0.0.1:{port}/healthz", log=tmp_path / "run.log") as process:
        # The example config points at the demo upstream: traffic flows through the data plane.
        eventually(lambda: httpx.get(f"http://127.0.0.1:{ops}/-/readyz").status_code == 200)
        answer = eventually(lambda: (r := httpx.get(f"http://127.0.0.1:{proxy}/users/42?a=1")).status_code == 200 and r)
        assert answer.json()["path"] == "/api/42"
        assert answer.headers["x-endpoint-id"] == "users:v1"
        # Revision 2 is the example's import; the walk-through makes revision 3.
        walk_through_the_readme(f"http://127.0.0.1:{port}", revision=3)
        # The new endpoint reaches the data plane through the sync API.
        routed = eventually(lambda: (r := httpx.get(f"http://127.0.0.1:{proxy}/orders/7")).status_code == 200 and r)
        assert routed.json()["path"] == "/orders/7"
        # Worker and beat run the example's health checks (users:v1 has a health path).
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            access = client.post("/api/v1/auth/token/", json={"username": "admin", "password": PASSWORD}).json()
            auth = {"Authorization": f"Bearer {access['access']}"}

            def healthy() -> bool:
                rows = client.get("/api/v1/health/", params={"endpoint": "users:v1"}, headers=auth).json()
                return any(row.get("status") == "healthy" for row in rows.get("results", []))

            eventually(healthy, within=90)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    assert (tmp_path / "var" / "gateway.sqlite3").exists()
    log = (tmp_path / "run.log").read_text()
    assert "admin admin created" in log
    assert "stopped" in log


@pytest.mark.django_db(transaction=True)
def test_the_control_plane_on_postgresql_serves_the_same_walk_through(tmp_path: Path, settings: Any) -> None:
    port = free_port()
    database = connection.settings_dict
    env = clean_env(
        DATABASE_URL=f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
        GATEWAY_VAR_DIR=str(tmp_path / "var"),
        GATEWAY_ADMIN_PASSWORD=PASSWORD,
        GATEWAY_LISTEN=f"127.0.0.1:{port}",
        DATAPLANE_LISTEN=f"127.0.0.1:{free_port()}",
        DATAPLANE_ADMIN_LISTEN=f"127.0.0.1:{free_port()}",
        GATEWAY_DEMO="0",
    )
    argv = [sys.executable, "manage.py", "rungateway"]
    with running(argv, env=env, ready_url=f"http://127.0.0.1:{port}/healthz", log=tmp_path / "run.log"):
        walk_through_the_readme(f"http://127.0.0.1:{port}")
