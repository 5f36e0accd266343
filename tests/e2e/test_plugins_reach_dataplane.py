"""A plugin set in the admin reaches a running data plane (ARCHITECTURE §11, §4): a real uvicorn control
plane on the test database, a real `python -m dataplane` following it, a real upstream, all on 127.0.0.1.

An operator signs in through the login form, opens an endpoint's change page, adds
`response_headers: {set: {X-Frame-Options: DENY}}` to its plugins JSON and posts back what the browser
would; the document becomes format 2, the node (which reads format 2) is offered it, applies it, and its
answers for that endpoint carry the header, while another endpoint's answers do not. No timing
assertions: we poll until a condition holds.
"""

from __future__ import annotations

import json
import re
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.auth.models import Group

from controlplane.core.actors import Actor
from controlplane.core.revisions import latest_revision
from controlplane.dataplanes.models import DataPlaneNode
from controlplane.dataplanes.services import dataplane_token_issue
from controlplane.routing.services import endpoint_create
from tests.conftest import PASSWORD, endpoint_body
from tests.controlplane.admin_forms import form_data_from
from tests.dataplane.processes import dataplane, upstream
from tests.e2e.servers import eventually
from tests.e2e.test_sync_longpoll import control_plane

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ACTOR = Actor.command("test")


def _sign_in(browser: httpx.Client, base: str, username: str) -> None:
    login = browser.get("/admin/login/")
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text)
    assert csrf is not None
    form = {"username": username, "password": PASSWORD, "csrfmiddlewaretoken": csrf.group(1), "next": "/admin/"}
    page = browser.post("/admin/login/", data=form, headers={"Referer": f"{base}/admin/login/"})
    assert page.status_code == 200 and page.url.path == "/admin/", page.url


def _node_took(sha: str) -> bool:
    """The node reported on the new document: applied it, or refused it (then the test fails saying why)."""
    node = DataPlaneNode.objects.filter(node_id="e2e-node").first()
    if node is None:
        return False
    if node.result == "rejected":
        raise AssertionError(f"the node was offered the new revision and refused it: {node.error}")
    return node.result == "applied" and node.config_sha256 == sha


def test_a_response_header_set_in_the_admin_is_on_the_running_data_planes_answers(tmp_path: Path) -> None:
    _, secret = dataplane_token_issue(name="edge-1", actor=ACTOR)
    operator = get_user_model().objects.create_user(username="olga", is_staff=True)
    # Hashed the way the control plane process checks it (the tests' own settings use a fast hasher).
    hasher = PBKDF2PasswordHasher()
    operator.password = hasher.encode(PASSWORD, hasher.salt())
    operator.save(update_fields=["password"])
    operator.groups.set(Group.objects.filter(name="operator"))
    with ExitStack() as stack:
        origin = stack.enter_context(upstream(tmp_path, "origin"))
        users = endpoint_create(data=endpoint_body(targets=[{"url": f"{origin.url}/api"}]), actor=ACTOR)
        endpoint_create(data=endpoint_body("orders", targets=[{"url": f"{origin.url}/api"}]), actor=ACTOR)
        base, _ = stack.enter_context(control_plane(tmp_path))
        env = {"DATAPLANE_CONTROL_PLANE_URL": base, "DATAPLANE_TOKEN": secret, "DATAPLANE_CACHE_DIR": str(tmp_path)}
        node = stack.enter_context(dataplane(tmp_path, None, **env))
        eventually(lambda: httpx.get(f"{node.url}/users/1").status_code == 200, "users:v1 routed by the node")
        assert "x-frame-options" not in httpx.get(f"{node.url}/users/1").headers
        before = latest_revision()
        assert before is not None

        # The operator adds the plugin on the endpoint's change page, as a browser posts it.
        with httpx.Client(base_url=base, timeout=30, follow_redirects=True) as browser:
            _sign_in(browser, base, "olga")
            url = f"/admin/routing/endpoint/{users.pk}/change/"
            page = browser.get(url)
            assert page.status_code == 200
            data = form_data_from(page.text)
            assert data["plugins"] == [""]  # none yet
            data["plugins"] = [json.dumps({"response_headers": {"set": {"X-Frame-Options": "DENY"}}}, indent=2)]
            saved = browser.post(url, data=data, headers={"Referer": f"{base}{url}"})
            assert saved.status_code == 200 and saved.url.path == "/admin/routing/endpoint/", saved.url
            assert "errorlist" not in saved.text and "Not saved" not in saved.text

        users.refresh_from_db()
        assert users.plugins == {"response_headers": {"set": {"X-Frame-Options": "DENY"}}}
        revision = latest_revision()
        assert revision is not None and revision.number == before.number + 1
        # What a node is offered: format 2 now, so a format-1 node is refused it and a format-2 one gets it.
        config = f"{base}/api/v1/dataplane/config"

        def offered(format_: str) -> httpx.Response:
            return httpx.get(config, headers={"Authorization": f"Bearer {secret}", "X-Gateway-Format": format_})

        eventually(lambda: offered("1").status_code == 409, "format-1 nodes refused the format-2 document")
        assert offered("1").json()["error"] == "format_unsupported"
        snapshot = offered("2").json()
        assert (snapshot["revision"], snapshot["format_version"]) == (revision.number, 2)

        eventually(lambda: _node_took(revision.config_sha256), "the node applying the new revision")
        answer = httpx.get(f"{node.url}/users/1")
        assert answer.status_code == 200 and answer.headers["x-frame-options"] == "DENY"
        assert answer.headers.get_list("x-frame-options") == ["DENY"]
        other = httpx.get(f"{node.url}/orders/1")
        assert other.status_code == 200 and "x-frame-options" not in other.headers
