"""The README's run command, as a new user runs it: real processes, real HTTP.

The first test is the only place SQLite appears: it proves the embedded default starts. The second
runs the same path against PostgreSQL.
"""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.db import connection

from tests.e2e.servers import ROOT, clean_env, free_port, running

PASSWORD = "first-admin-password-42"
README = ROOT / "README.md"
README_LISTEN = "127.0.0.1:8000"  # rungateway's default GATEWAY_LISTEN, which the README's commands use
README_PROXY = "127.0.0.1:8080"  # and DATAPLANE_LISTEN
DONE = "@@README-COMMAND-DONE@@"


def readme_block(heading: str) -> str:
    """The first ```sh block under `## heading` in README.md."""
    section = README.read_text(encoding="utf-8").split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```sh\n", 1)[1].split("```", 1)[0]


def readme_commands(block: str) -> list[str]:
    """The block's commands, continuation lines (ending in a backslash) joined as the shell joins them."""
    commands: list[str] = []
    pending = ""
    for line in block.splitlines():
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        commands.append(pending + line)
        pending = ""
    return [command for command in commands if command.strip() and not command.lstrip().startswith("#")]


def readme_admin_password() -> str:
    """The first admin's password as the README's run command sets it."""
    match = re.search(r"GATEWAY_ADMIN_PASSWORD='([^']+)'", README.read_text(encoding="utf-8"))
    assert match, "the README's run command sets GATEWAY_ADMIN_PASSWORD"
    return match.group(1)


def run_readme_block(block: str, *, port: int) -> list[tuple[str, str]]:
    """Each command of the block with what it printed, run in one bash (variables carry over) against
    the control plane on `port` instead of the README's :8000. Bounded: one minute for the whole block."""
    assert README_LISTEN in block, "the README's commands talk to rungateway's default address"
    commands = readme_commands(block.replace(README_LISTEN, f"127.0.0.1:{port}"))
    script = "".join(f"{command}\nprintf '\\n{DONE}\\n'\n" for command in commands)
    finished = subprocess.run(  # noqa: S603 - bash running the README's own lines
        ["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert finished.returncode == 0, finished.stderr
    outputs = [out.strip() for out in finished.stdout.split(f"\n{DONE}\n")]
    assert outputs[-1] == "" and len(outputs) == len(commands) + 1, finished.stdout
    return list(zip(commands, outputs[:-1], strict=True))


def check_readme_session(ran: list[tuple[str, str]]) -> str:
    """Each command printed what its comment says a fresh run prints; returns the created endpoint's key.
    A command this does not know how to check fails the test, so a new README line gets a check."""
    created = ""
    for command, output in ran:
        code, *rest = re.split(r"\s+#\s", command, maxsplit=1)
        comment = rest[0] if rest else ""
        if re.fullmatch(r"[A-Z_]+=.*", code.strip()):
            assert output == "", f"{code!r} printed {output!r}"  # an assignment; the token works below
            continue
        words = shlex.split(code)
        if "-X" in words and "POST" in words and any(w.endswith("/endpoints/") for w in words):
            sent = json.loads(words[words.index("-d") + 1])
            answer = json.loads(output)
            created = f"{sent['name']}:{sent['version']}"
            assert answer.get("key") == created, f"creating {created} answered {output[:300]}"
            said = re.search(r'"key": "([^"]+)"', comment)
            assert said and said.group(1) == created, comment
        elif any(w.endswith("/revisions/") for w in words):
            said = re.search(r'revision (\d+): "([^"]+)"', comment)
            assert said, comment
            newest = json.loads(output)["results"][0]
            assert (newest["number"], newest["summary"]) == (int(said.group(1)), said.group(2)), newest
        elif any("/audit/?object=" in w for w in words):
            said = re.search(r'one event: "([^"]+)" by "([^"]+)"', comment)
            assert said, comment
            events = json.loads(output)["results"]
            assert [(e["action"], e["actor"]) for e in events] == [(said.group(1), said.group(2))], events
        else:
            raise AssertionError(f"no check for the README command {code!r}")
    assert created, "the README session creates an endpoint"
    return created


def walk_through_the_readme(base: str, *, revision: int = 2, password: str = PASSWORD) -> None:
    """Obtain a token, create an endpoint, see the revision and the audit event naming them."""
    with httpx.Client(base_url=base, timeout=10) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").status_code == 200
        tokens = client.post("/api/v1/auth/token/", json={"username": "admin", "password": password})
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
    password = readme_admin_password()
    env = clean_env(
        GATEWAY_VAR_DIR=str(tmp_path / "var"),
        GATEWAY_ADMIN_PASSWORD=password,
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
        # "A first session with the API", every line as written (only the port differs), on this fresh run:
        # revision 2 is the example's import, so the session's endpoint makes revision 3.
        created = check_readme_session(run_readme_block(readme_block("A first session with the API"), port=port))
        # ... and, as the README says next, the data plane routes it to the demo upstream.
        text = README.read_text(encoding="utf-8")
        said = re.search(rf"`curl http://{README_PROXY}(/\S+)` reaches\s+the demo upstream's `(/\S+)`", text)
        assert said, "the README says where the new endpoint's traffic goes"
        routed = eventually(
            lambda: (r := httpx.get(f"http://127.0.0.1:{proxy}{said.group(1)}")).status_code == 200 and r
        )
        assert routed.json()["path"] == said.group(2)
        assert routed.headers["x-endpoint-id"] == created
        # The test's own walk-through makes revision 4.
        walk_through_the_readme(f"http://127.0.0.1:{port}", revision=4, password=password)
        # The new endpoint reaches the data plane through the sync API.
        routed = eventually(lambda: (r := httpx.get(f"http://127.0.0.1:{proxy}/orders/7")).status_code == 200 and r)
        assert routed.json()["path"] == "/orders/7"
        # Worker and beat run the example's health checks (users:v1 has a health path).
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            access = client.post("/api/v1/auth/token/", json={"username": "admin", "password": password}).json()
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
