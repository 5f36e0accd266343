"""The README's run command, as a new user runs it: real processes, real HTTP.

The first test is the only place SQLite appears: it proves the embedded default starts. The second
runs the same path against PostgreSQL.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.db import connection

from tests.e2e.servers import clean_env, free_port, running

PASSWORD = "first-admin-password-42"


def walk_through_the_readme(base: str) -> None:
    """Obtain a token, create an endpoint, see the revision and the audit event naming them."""
    with httpx.Client(base_url=base, timeout=10) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").status_code == 200
        tokens = client.post("/api/v1/auth/token/", json={"username": "admin", "password": PASSWORD})
        assert tokens.status_code == 200, tokens.text
        auth = {"Authorization": f"Bearer {tokens.json()['access']}"}
        body = {"name": "users", "version": "v1", "targets": [{"url": "http://127.0.0.1:8010/api"}]}
        created = client.post("/api/v1/endpoints/", json=body, headers=auth)
        assert created.status_code == 201, created.text
        assert created.json()["key"] == "users:v1"
        revision = client.get("/api/v1/revisions/", headers=auth).json()["results"][0]
        assert (revision["number"], revision["actor"]) == (2, "user:admin")
        assert revision["changes"] == [{"kind": "endpoint", "key": "users:v1", "action": "create"}]
        events = client.get("/api/v1/audit/", params={"object": "users:v1"}, headers=auth).json()["results"]
        assert [(e["actor"], e["action"]) for e in events] == [("user:admin", "endpoint.create")]
        assert client.post("/api/v1/endpoints/", json=body).status_code == 401


def test_the_embedded_default_starts_migrates_and_serves_the_api(tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(
        GATEWAY_VAR_DIR=str(tmp_path / "var"),
        GATEWAY_ADMIN_PASSWORD=PASSWORD,
        GATEWAY_LISTEN=f"127.0.0.1:{port}",
    )
    argv = [sys.executable, "manage.py", "rungateway"]
    with running(argv, env=env, ready_url=f"http://127.0.0.1:{port}/healthz", log=tmp_path / "run.log") as process:
        walk_through_the_readme(f"http://127.0.0.1:{port}")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=40) == 0
    assert (tmp_path / "var" / "gateway.sqlite3").exists()
    assert "admin admin created" in (tmp_path / "run.log").read_text()


@pytest.mark.django_db(transaction=True)
def test_the_control_plane_on_postgresql_serves_the_same_walk_through(tmp_path: Path, settings: Any) -> None:
    port = free_port()
    database = connection.settings_dict
    env = clean_env(
        DATABASE_URL=f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
        GATEWAY_VAR_DIR=str(tmp_path / "var"),
        GATEWAY_ADMIN_PASSWORD=PASSWORD,
        GATEWAY_LISTEN=f"127.0.0.1:{port}",
    )
    argv = [sys.executable, "manage.py", "rungateway"]
    with running(argv, env=env, ready_url=f"http://127.0.0.1:{port}/healthz", log=tmp_path / "run.log"):
        walk_through_the_readme(f"http://127.0.0.1:{port}")
