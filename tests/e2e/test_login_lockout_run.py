"""The login lockout as the README runs the gateway: `manage.py rungateway` on the embedded defaults
(SQLite, no Redis, no cache), real uvicorn, real PBKDF2, the admin's login under ASGI.

Two clients on loopback with different source addresses (127.0.0.1 and 127.0.0.2) stand for an attacker
and the account's owner.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.servers import clean_env, free_port, running

pytestmark = pytest.mark.e2e
PASSWORD = "first-admin-password-42"
LIMIT = 3
ATTACKER, OWNER = "127.0.0.1", "127.0.0.2"


def client(base: str, source: str) -> httpx.Client:
    return httpx.Client(base_url=base, timeout=30, transport=httpx.HTTPTransport(local_address=source))


def admin_login(browser: httpx.Client, password: str) -> httpx.Response:
    page = browser.get("/admin/login/?next=/admin/")
    assert page.status_code == 200
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert csrf is not None
    form = {"username": "admin", "password": password, "csrfmiddlewaretoken": csrf.group(1), "next": "/admin/"}
    return browser.post("/admin/login/?next=/admin/", data=form)


def test_rungateway_locks_out_guessing_on_the_api_and_the_admin_whatever_x_forwarded_for_says(tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(
        GATEWAY_VAR_DIR=str(tmp_path / "var"),
        GATEWAY_ADMIN_PASSWORD=PASSWORD,
        GATEWAY_LISTEN=f"127.0.0.1:{port}",
        GATEWAY_DEMO="0",
        GATEWAY_LOGIN_FAILURE_LIMIT=str(LIMIT),
    )
    env.pop("CELERY_BROKER_URL", None)
    argv = [sys.executable, "manage.py", "rungateway", "--no-dataplane"]
    base = f"http://127.0.0.1:{port}"
    with (
        running(argv, env=env, ready_url=f"{base}/healthz", log=tmp_path / "run.log"),
        client(base, ATTACKER) as attacker,
        client(base, OWNER) as owner,
    ):
        statuses = []
        for i in range(LIMIT):
            # A different X-Forwarded-For on each guess, and the owner's address on the last.
            forwarded = OWNER if i == LIMIT - 1 else f"192.0.2.{i}"
            answer = attacker.post(
                "/api/v1/auth/token/",
                json={"username": "admin", "password": f"guess-{i}"},
                headers={"X-Forwarded-For": forwarded},
            )
            statuses.append(answer.status_code)
        assert statuses == [401] * (LIMIT - 1) + [429]
        body = answer.json()
        assert (body["error"], body["request_id"]) == ("too_many_attempts", answer.headers["x-request-id"])
        assert answer.headers["retry-after"] == "900"

        right = attacker.post("/api/v1/auth/token/", json={"username": "admin", "password": PASSWORD})
        assert right.status_code == 429 and "access" not in right.json()
        locked_page = admin_login(attacker, PASSWORD)
        assert locked_page.status_code == 429
        assert locked_page.headers["retry-after"] == "900"
        assert "Too many failed logins" in locked_page.text

        # The owner, elsewhere, is not locked out: neither by the API nor on the admin.
        assert owner.post("/api/v1/auth/token/", json={"username": "admin", "password": PASSWORD}).status_code == 200
        logged_in = admin_login(owner, PASSWORD)
        assert logged_in.status_code == 302 and logged_in.headers["location"] == "/admin/"
