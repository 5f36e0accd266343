"""A key issued in the admin opens a key_auth endpoint on a running data plane (ARCHITECTURE §11): a real
uvicorn control plane on the test database, a real `python -m dataplane` following it, a real upstream,
all on 127.0.0.1.

An operator signs in through the login form, adds a consumer on the admin's add page and issues it a key
on its keys page, posting back what the browser would; the endpoint gets `key_auth` through the API with
the operator's JWT. The node applies the new document: without the key 401, with it 200, and the upstream
sees X-Consumer-Username. Neither process's log, nor the export, nor the audit log holds the key. No timing
assertions: we poll until a condition holds.
"""

from __future__ import annotations

import json
import re
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.auth.models import Group

from configdoc.consumers import hash_key
from controlplane.consumers.models import Consumer
from controlplane.core.actors import Actor
from controlplane.core.models import AuditEvent
from controlplane.core.revisions import latest_revision
from controlplane.dataplanes.services import dataplane_token_issue
from controlplane.routing.services import endpoint_create
from tests.conftest import PASSWORD, endpoint_body
from tests.controlplane.admin_forms import form_data_from
from tests.dataplane.processes import dataplane, upstream
from tests.e2e.servers import eventually
from tests.e2e.test_plugins_reach_dataplane import _node_took, _sign_in
from tests.e2e.test_sync_longpoll import control_plane

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ACTOR = Actor.command("test")


def _seen_headers(answer: httpx.Response) -> dict[str, str]:
    body: dict[str, Any] = answer.json()
    return {name.lower(): value for name, value in body["headers"]}


def test_a_key_issued_in_the_admin_opens_a_key_auth_endpoint_on_a_running_data_plane(tmp_path: Path) -> None:
    _, secret = dataplane_token_issue(name="edge-1", actor=ACTOR)
    operator = get_user_model().objects.create_user(username="olga", is_staff=True)
    # Hashed the way the control plane process checks it (the tests' own settings use a fast hasher).
    hasher = PBKDF2PasswordHasher()
    operator.password = hasher.encode(PASSWORD, hasher.salt())
    operator.save(update_fields=["password"])
    operator.groups.set(Group.objects.filter(name="operator"))
    with ExitStack() as stack:
        origin = stack.enter_context(upstream(tmp_path, "origin"))
        endpoint_create(data=endpoint_body(targets=[{"url": f"{origin.url}/api"}]), actor=ACTOR)
        base, _ = stack.enter_context(control_plane(tmp_path))
        env = {"DATAPLANE_CONTROL_PLANE_URL": base, "DATAPLANE_TOKEN": secret, "DATAPLANE_CACHE_DIR": str(tmp_path)}
        node = stack.enter_context(dataplane(tmp_path, None, **env))
        eventually(lambda: httpx.get(f"{node.url}/users/echo").status_code == 200, "users:v1 routed by the node")

        with httpx.Client(base_url=base, timeout=30, follow_redirects=True) as browser:
            _sign_in(browser, base, "olga")
            # The consumer, on the admin's add page.
            add = "/admin/consumers/consumer/add/"
            data = form_data_from(browser.get(add).text)
            data.update(username=["mobile-app"], groups=["partners"], custom_id=["crm-1042"], _save=["Save"])
            saved = browser.post(add, data=data, headers={"Referer": f"{base}{add}"})
            assert saved.status_code == 200 and saved.url.path == "/admin/consumers/consumer/", saved.url
            assert "errorlist" not in saved.text and "Not saved" not in saved.text
            consumer = Consumer.objects.get(username="mobile-app")
            # A key, on its keys page: shown this once.
            keys = f"/admin/consumers/consumer/{consumer.pk}/keys/"
            data = form_data_from(browser.get(keys).text, form_id="issue-key", press="Issue a key")
            data["label"] = ["2026-q4"]
            issued = browser.post(keys, data=data, headers={"Referer": f"{base}{keys}"})
            found = re.search(r'id="new-key" readonly size="60" value="([^"]+)"', issued.text)
            assert issued.status_code == 200 and found is not None, issued.text[:2000]
            key = found.group(1)
            assert key not in browser.get(keys).text

        # key_auth on the endpoint, through the API with the operator's JWT.
        token = httpx.post(f"{base}/api/v1/auth/token/", json={"username": "olga", "password": PASSWORD})
        assert token.status_code == 200, token.text
        api = {"Authorization": f"Bearer {token.json()['access']}"}
        patched = httpx.patch(
            f"{base}/api/v1/endpoints/users:v1/",
            json={"plugins": {"key_auth": {"key_names": ["apikey"], "hide_credentials": True}}},
            headers=api,
        )
        assert patched.status_code == 200, patched.text
        revision = latest_revision()
        assert revision is not None
        eventually(lambda: _node_took(revision.config_sha256), "the node applying the consumer and key_auth")

        refused = httpx.get(f"{node.url}/users/echo")
        assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"
        wrong = httpx.get(f"{node.url}/users/echo", headers={"apikey": key[:-1] + ("A" if key[-1] != "A" else "B")})
        assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_credentials"
        answer = httpx.get(f"{node.url}/users/echo", headers={"apikey": key, "X-Consumer-Username": "forged"})
        assert answer.status_code == 200, answer.text
        seen = _seen_headers(answer)
        assert seen["x-consumer-username"] == "mobile-app" and seen["x-consumer-custom-id"] == "crm-1042"
        assert seen["x-credential-identifier"] == "2026-q4" and "apikey" not in seen  # hide_credentials

        # The key is nowhere but in the client's hands: not in the export, the audit log or a log line.
        export = httpx.get(f"{base}/api/v1/config/export/", headers=api).text
        assert key not in export and hash_key(key) in export
        audit = json.dumps(list(AuditEvent.objects.values("before", "after")))
        assert key not in audit and hash_key(key) not in audit
    for log in tmp_path.glob("*.log"):
        assert key not in log.read_text(errors="replace"), log.name
