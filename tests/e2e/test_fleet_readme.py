"""The README's fleet, as a user runs it: `manage.py rungateway --dataplanes 2` on PostgreSQL with the
demo upstream, then only HTTP — the management API, the two proxies, and the admin pages.

A user sees which node runs which revision, which breakers are open where after making an upstream
fail, traffic counted from both nodes, can force a breaker and watch both nodes obey, and finds it all
on the admin's landing page. No timing assertions: we poll until a condition holds.
"""

from __future__ import annotations

import re
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.db import connection

from tests.e2e.servers import clean_env, eventually, free_port, free_ports, running

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PASSWORD = "fleet-admin-password-42"
WAIT = 90.0


def get(client: httpx.Client, path: str, **params: Any) -> Any:
    response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_two_data_planes_from_the_readme_command_are_seen_and_steered_from_the_control_plane(tmp_path: Path) -> None:
    port, proxy, ops = free_port(), free_ports(2), free_ports(2)
    proxies = [f"http://127.0.0.1:{proxy}", f"http://127.0.0.1:{proxy + 1}"]
    database = connection.settings_dict
    env = clean_env(
        DATABASE_URL=f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
        GATEWAY_VAR_DIR=str(tmp_path / "var"),
        GATEWAY_ADMIN_PASSWORD=PASSWORD,
        GATEWAY_LISTEN=f"127.0.0.1:{port}",
        GATEWAY_DEMO="1",
        DATAPLANE_LISTEN=f"127.0.0.1:{proxy}",
        DATAPLANE_ADMIN_LISTEN=f"127.0.0.1:{ops}",
    )
    env.pop("CELERY_BROKER_URL", None)  # the embedded filesystem broker, as the README runs it
    base = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "manage.py", "rungateway", "--dataplanes", "2"]
    with (
        running(argv, env=env, ready_url=f"{base}/healthz", log=tmp_path / "run.log") as process,
        httpx.Client(base_url=f"{base}/api/v1", timeout=30) as api,
    ):
        tokens = api.post("/auth/token/", json={"username": "admin", "password": PASSWORD})
        assert tokens.status_code == 200, tokens.text
        api.headers["Authorization"] = f"Bearer {tokens.json()['access']}"

        # Both nodes report in and run the latest revision (2: the example's import).
        def nodes() -> dict[str, dict[str, Any]]:
            return {n["node_id"]: n for n in get(api, "/dataplanes/", state="live")["results"]}

        eventually(lambda: {n: (r["revision"], r["lag"]) for n, r in nodes().items()} == {
            "local": (2, 0), "local-2": (2, 0)}, "both nodes live on revision 2", WAIT)  # fmt: skip

        # A new endpoint whose only target is down (a port nothing listens on), with a strict breaker.
        dead = free_port()
        policy = {"name": "strict", "failure_threshold": 2, "reset_timeout": 3600}
        assert api.post("/breaker-policies/", json=policy).status_code == 201
        broken = {"name": "ledger", "version": "v1", "breaker_policy": "strict", "retries": {"attempts": 1},
                  "targets": [{"url": f"http://127.0.0.1:{dead}/ledger"}]}  # fmt: skip
        assert api.post("/endpoints/", json=broken).status_code == 201
        latest = get(api, "/revisions/")["results"][0]["number"]
        # A deploy script's wait: answers once every live node applied it.
        waited = api.get(f"/revisions/{latest}/wait/", params={"share": 1, "timeout": 60}, timeout=70)
        assert waited.status_code == 200, waited.text
        assert (waited.json()["done"], waited.json()["applied"]) == (True, 2)

        # Traffic through both nodes: the demo answers users:v1, the ledger fails until each node trips.
        for url in proxies:
            for i in range(10):
                assert httpx.get(f"{url}/users/{i}").status_code == 200
            answers = [httpx.get(f"{url}/ledger/1").status_code for _ in range(4)]
            assert answers[:2] == [502, 502] and answers[2:] == [503, 503], answers

        def ledger_open_on_both() -> bool:
            rows = get(api, "/breakers/", state="open")
            rows = rows["results"] if isinstance(rows, dict) else rows
            row = next((r for r in rows if r["key"] == "ledger:v1"), None)
            return row is not None and {n["node_id"]: n["state"] for n in row["nodes"]} == {
                "local": "open", "local-2": "open"}  # fmt: skip

        eventually(ledger_open_on_both, "ledger:v1's breaker shown open on both nodes", WAIT)
        history = get(api, "/breakers/ledger:v1/")["transitions"]
        assert {(t["node_id"], t["from"], t["to"]) for t in history} >= {
            ("local", "closed", "open"), ("local-2", "closed", "open")}  # fmt: skip

        # The statistics count both nodes' traffic exactly.
        def counted() -> dict[str, Any] | None:
            endpoints = get(api, "/stats/", window="1h")["endpoints"]
            users, ledger = endpoints.get("users:v1"), endpoints.get("ledger:v1")
            done = users and ledger and users["requests"] == 20 and ledger["requests"] == 8
            return {"users": users, "ledger": ledger} if done else None

        eventually(lambda: counted() is not None, "20 + 8 requests in stats/", WAIT)
        stats = counted()
        assert stats is not None
        assert stats["users"]["by_class"]["2xx"] == 20
        assert stats["ledger"]["by_class"]["5xx"] == 8
        assert stats["ledger"]["errors"] == {"upstream_unavailable": 4, "circuit_open": 4}
        summary = get(api, "/stats/summary/")
        assert summary["status"] == "degraded" and "ledger:v1" in summary["open_breakers"], summary

        # Force users:v1 open: both nodes obey within a long-poll; lift it: both route again.
        assert api.post("/breakers/users:v1/force/", json={"state": "open", "seconds": None}).status_code == 200

        def answers(code: int) -> bool:
            return all(httpx.get(f"{url}/users/1").status_code == code for url in proxies)

        eventually(lambda: answers(503), "both nodes answering 503 circuit_open for users:v1", WAIT)
        assert httpx.get(f"{proxies[1]}/users/1").json()["error"] == "circuit_open"
        assert api.post("/breakers/users:v1/force/", json={"state": None, "seconds": None}).status_code == 200
        eventually(lambda: answers(200), "both nodes routing users:v1 again", WAIT)

        # The admin's landing page shows the nodes, the open breaker and the traffic charts.
        with httpx.Client(base_url=base, timeout=30, follow_redirects=True) as browser:
            login = browser.get("/admin/login/")
            csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text)
            assert csrf is not None
            form = {"username": "admin", "password": PASSWORD, "csrfmiddlewaretoken": csrf.group(1), "next": "/admin/"}
            page = browser.post("/admin/login/", data=form, headers={"Referer": f"{base}/admin/login/"})
            assert page.status_code == 200 and page.url.path == "/admin/", page.url
            assert "local-2" in page.text and "ledger:v1" in page.text
            assert 'data-chart="request-rate"' in page.text and 'data-chart="error-rate"' in page.text

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
