"""Traffic by consumer and secrets by reference end to end (ARCHITECTURE §11): a real control plane
(uvicorn on the test database), a real `python -m dataplane` with a data-plane token, a real upstream,
all on 127.0.0.1; no timing assertions, we poll until a condition holds.

The control plane keeps no consumers yet, so it cannot serve a snapshot that names some. The node's
snapshots come from `SnapshotRelay`, a small HTTP server in this test that serves a snapshot file in
the control plane's sync format (§4: hash checked, long-polled by ETag) and passes every status
report through to the real control plane unchanged, with the node's token. What the tests assert is
what the real control plane stored and shows: its `stats/` and `dataplanes/` APIs and the admin's
fleet views.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.auth.models import Group

from configdoc import validate_document
from configdoc.canonical import config_sha256
from configdoc.consumers import hash_key
from controlplane.core.actors import Actor
from controlplane.dataplanes.models import DataPlaneNode
from controlplane.dataplanes.services import dataplane_token_issue
from tests.conftest import PASSWORD
from tests.dataplane.processes import dataplane, upstream
from tests.e2e.servers import eventually, http_server
from tests.e2e.test_sync_longpoll import control_plane

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ACTOR = Actor.command("test")
PARTNER_KEY = "e2e-partner-key-5Tq"
INTERN_KEY = "e2e-intern-key-8Lm"
CONFIG_PATH = "/api/v1/dataplane/config"
STATUS_PATH = "/api/v1/dataplane/status"


def snapshot(document: dict[str, Any], revision: int) -> bytes:
    """`document` as the control plane's sync answers it (§4), with the hash the node checks."""
    canonical, problems = validate_document(document, max_format_version=2)
    assert problems == [], problems
    body = {
        "format_version": 2, "revision": revision, "config_sha256": config_sha256(canonical), "state_seq": 0,
        "generated_at": "2026-01-01T00:00:00Z", "config": canonical, "state": {},
    }  # fmt: skip
    return json.dumps(body).encode()


@contextmanager
def snapshot_relay(control_plane: str, snapshot_file: Path) -> Iterator[str]:
    """Serves `snapshot_file` at the sync path (re-read on every request, so a test swaps it) and passes
    status reports through to `control_plane`. Yields the base URL to give the node."""

    def etag() -> str:
        data = json.loads(snapshot_file.read_bytes())
        return f'"{data["config_sha256"]}.{data["state_seq"]}"'

    class Relay(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if not self.path.startswith(CONFIG_PATH):
                self._answer(404)
                return
            seen = self.headers.get("If-None-Match")
            deadline = time.monotonic() + 2.0  # a short long-poll: the node asks again at once
            while seen == etag() and time.monotonic() < deadline:
                time.sleep(0.05)
            current = etag()
            if seen == current:
                self._answer(304, headers={"ETag": current})
                return
            self._answer(200, snapshot_file.read_bytes(), {"ETag": current, "Content-Type": "application/json"})

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            passed = {
                name: value
                for name in ("Authorization", "Content-Type", "Content-Encoding", "User-Agent")
                if (value := self.headers.get(name)) is not None
            }
            answer = httpx.post(f"{control_plane}{STATUS_PATH}", content=body, headers=passed, timeout=30)
            self._answer(answer.status_code, answer.content, {"Content-Type": "application/json"})

    with http_server(Relay) as port:
        yield f"http://127.0.0.1:{port}"


def reader_token(base: str) -> dict[str, str]:
    """A readonly user's JWT from the control plane's `auth/token/`, as an API client gets one."""
    hashed = PBKDF2PasswordHasher().encode(PASSWORD, "e2e-salt", iterations=1000)
    get_user_model().objects.create(username="reader", password=hashed).groups.add(Group.objects.get(name="readonly"))
    token = httpx.post(f"{base}/api/v1/auth/token/", json={"username": "reader", "password": PASSWORD}, timeout=30)
    assert token.status_code == 200, token.text
    return {"Authorization": f"Bearer {token.json()['access']}"}


def node_env(relay: str, secret: str, tmp_path: Path) -> dict[str, str]:
    return {
        "DATAPLANE_CONTROL_PLANE_URL": relay,
        "DATAPLANE_TOKEN": secret,
        "DATAPLANE_CACHE_DIR": str(tmp_path / "cache"),
        "DATAPLANE_REPORT_INTERVAL": "0.5",
    }


def test_two_consumers_traffic_through_a_data_plane_shows_in_the_stats_api_by_consumer(tmp_path: Path) -> None:
    _, secret = dataplane_token_issue(name="edge-1", actor=ACTOR)
    with upstream(tmp_path, "origin") as origin, control_plane(tmp_path) as (base, _):
        auth = reader_token(base)
        document = {
            "format_version": 2,
            "consumers": [
                {"username": "partner", "key_auth": [{"key_sha256": hash_key(PARTNER_KEY), "label": "p1"}]},
                {"username": "intern", "key_auth": [{"key_sha256": hash_key(INTERN_KEY), "label": "i1"}]},
            ],
            "endpoints": [
                {"name": "keyed", "version": "v1", "targets": [{"url": f"{origin.url}/api"}],
                 "plugins": {"key_auth": {"key_names": ["apikey"]}}},
            ],
        }  # fmt: skip
        snapshot_file = tmp_path / "snapshot.json"
        snapshot_file.write_bytes(snapshot(document, 1))
        with (
            snapshot_relay(base, snapshot_file) as relay,
            dataplane(tmp_path, None, **node_env(relay, secret, tmp_path)) as node,
            httpx.Client(timeout=10) as client,
        ):
            # Routed once a request without a key meets the gate (401) rather than no route (404).
            eventually(lambda: client.get(f"{node.url}/keyed/status/200").status_code == 401, "the endpoint to route")
            statuses = [client.get(f"{node.url}/keyed/status/200", headers={"apikey": PARTNER_KEY}).status_code
                        for _ in range(3)]  # fmt: skip
            statuses += [client.get(f"{node.url}/keyed/status/404", headers={"apikey": INTERN_KEY}).status_code]
            statuses += [client.get(f"{node.url}/keyed/status/200", headers={"apikey": INTERN_KEY}).status_code]
            assert statuses == [200, 200, 200, 404, 200]

            def by_consumer() -> dict[str, Any]:
                url = f"{base}/api/v1/stats/endpoints/keyed:v1/consumers/?window=5m"
                response = client.get(url, headers=auth)
                if response.status_code == 404:
                    return {}  # no report has reached the control plane yet
                assert response.status_code == 200, response.text
                body = response.json()
                return {row["consumer"]: row["by_class"] for row in body["consumers"]} | {"(other)": body["other"]}

            wanted = {
                "partner": {"2xx": 3, "3xx": 0, "4xx": 0, "5xx": 0},
                "intern": {"2xx": 1, "3xx": 0, "4xx": 1, "5xx": 0},
                "(other)": {"requests": 0, "by_class": {"2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0}, "rate_limited": 0},
            }
            eventually(lambda: by_consumer() == wanted, "both consumers' counts in stats/")
            # Later reports (nothing new) add nothing: each report epoch is counted once.
            reported = DataPlaneNode.objects.get(node_id="e2e-node").last_seen
            eventually(lambda: DataPlaneNode.objects.get(node_id="e2e-node").last_seen > reported, "another report")
            assert by_consumer() == wanted


def test_dataplane_missing_secret(tmp_path: Path) -> None:
    """A snapshot whose JWT secret names an unset variable is refused: the old config keeps serving, and
    the control plane's data-plane API and fleet views show the variable's name."""
    variable = "E2E_UNSET_JWT_SECRET_FOR_THIS_TEST"
    assert variable not in os.environ
    _, secret = dataplane_token_issue(name="edge-1", actor=ACTOR)
    operator = get_user_model().objects.create(username="olga", is_staff=True)
    operator.password = PBKDF2PasswordHasher().encode(PASSWORD, "e2e-salt", iterations=1000)
    operator.save(update_fields=["password"])
    operator.groups.set(Group.objects.filter(name="operator"))
    with upstream(tmp_path, "origin") as origin, control_plane(tmp_path) as (base, _):
        auth = reader_token(base)
        plain = {"name": "plain", "version": "v1", "targets": [{"url": f"{origin.url}/api"}]}
        snapshot_file = tmp_path / "snapshot.json"
        snapshot_file.write_bytes(snapshot({"format_version": 2, "endpoints": [plain]}, 1))
        with (
            snapshot_relay(base, snapshot_file) as relay,
            dataplane(tmp_path, None, **node_env(relay, secret, tmp_path)) as node,
            httpx.Client(timeout=10) as client,
        ):
            eventually(lambda: client.get(f"{node.url}/plain/status/200").status_code == 200, "revision 1 served")
            # A long username and issuer put the variable's name well past the first 120 characters.
            username, issuer = "mobile-app-of-the-partner-with-a-rather-long-consumer-name-0001", "issuer-" + "i" * 80
            secured = {**plain, "name": "secured", "plugins": {"jwt": {}}}
            refused = {
                "format_version": 2,
                "consumers": [{"username": username, "jwt": [{"issuer": issuer, "algorithm": "HS256",
                                                              "secret": {"env": variable}}]}],
                "endpoints": [plain, secured],
            }  # fmt: skip
            snapshot_file.write_bytes(snapshot(refused, 2))

            def node_row() -> DataPlaneNode | None:
                return DataPlaneNode.objects.filter(node_id="e2e-node", result="rejected").first()

            eventually(lambda: node_row() is not None, "the node to report the refused snapshot")
            row = node_row()
            assert row is not None and variable in row.error and row.revision == 1, row and row.error
            # The old config keeps serving; the refused one's new endpoint never came.
            assert client.get(f"{node.url}/plain/status/200").status_code == 200
            assert client.get(f"{node.url}/secured/status/200").status_code == 404

            listed = client.get(f"{base}/api/v1/dataplanes/e2e-node/", headers=auth)
            assert listed.status_code == 200, listed.text
            assert listed.json()["result"] == "rejected" and variable in listed.json()["error"]

            with httpx.Client(base_url=base, timeout=30, follow_redirects=True) as browser:
                login = browser.get("/admin/login/")
                csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text)
                assert csrf is not None
                form = {
                    "username": "olga",
                    "password": PASSWORD,
                    "csrfmiddlewaretoken": csrf.group(1),
                    "next": "/admin/",
                }
                landing = browser.post("/admin/login/", data=form, headers={"Referer": f"{base}/admin/login/"})
                assert landing.status_code == 200 and landing.url.path == "/admin/", landing.url
                assert variable in landing.text  # the landing page's fleet table
                fleet = browser.get("/admin/dataplanes/dataplanenode/")
                assert fleet.status_code == 200 and variable in fleet.text
