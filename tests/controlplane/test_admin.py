"""The Django admin as the operator's tool: role-based access, and saves through the services."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from controlplane.core.actors import Actor
from controlplane.core.models import AuditEvent, ConfigRevision
from controlplane.routing.models import Endpoint
from controlplane.routing.services import endpoint_create
from tests.conftest import endpoint_body

pytestmark = pytest.mark.django_db


def browser(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def endpoint_form(**fields: Any) -> dict[str, Any]:
    data = {
        "name": "users", "version": "v1", "enabled": "on", "strip_path": "on", "description": "",
        "tags": "", "methods": "GET, POST", "paths": "", "timeout": "30", "connect_timeout": "5",
        "read_idle_timeout": "60", "max_body_bytes": "10485760", "auth_type": "none", "breaker_policy": "default",
        "protocol": "http",
        "retries": "", "outlier": "", "tls": "", "health_check": '{"path": "/health"}',
        "targets-TOTAL_FORMS": "2", "targets-INITIAL_FORMS": "0", "targets-MIN_NUM_FORMS": "1",
        "targets-MAX_NUM_FORMS": "1000",
        "targets-0-url": "http://127.0.0.1:8010/api", "targets-0-weight": "100", "targets-0-enabled": "on",
        "targets-1-url": "http://127.0.0.1:8011/api", "targets-1-weight": "50", "targets-1-enabled": "on",
    }  # fmt: skip
    data.update(fields)
    return data


def test_an_admin_sees_every_section_of_the_admin(make_user: Callable[..., Any]) -> None:
    page = browser(make_user("alice", "admin")).get("/admin/")
    assert page.status_code == 200
    for section in (b"Endpoints", b"Breaker policies", b"Users", b"Groups", b"Config revisions", b"Audit events"):
        assert section in page.content, section


def test_saving_an_endpoint_with_inline_targets_is_one_service_call_and_one_revision(
    make_user: Callable[..., Any],
) -> None:
    before = ConfigRevision.objects.count()
    response = browser(make_user("oscar", "operator")).post("/admin/routing/endpoint/add/", endpoint_form())
    assert response.status_code == 302, response.content.decode()[:3000]
    endpoint = Endpoint.objects.get(name="users", version="v1")
    assert sorted(endpoint.targets.values_list("url", "weight")) == [
        ("http://127.0.0.1:8010/api", 100),
        ("http://127.0.0.1:8011/api", 50),
    ]
    assert endpoint.document["methods"] == ["GET", "POST"]
    assert endpoint.document["health_check"] == {"path": "/health"}
    assert ConfigRevision.objects.count() == before + 1
    assert (
        AuditEvent.objects.filter(action="endpoint.create", object_key="users:v1", actor_label="user:oscar").count()
        == 1
    )


def test_an_invalid_admin_save_shows_the_reason_and_changes_nothing(make_user: Callable[..., Any]) -> None:
    client = browser(make_user("oscar", "operator"))
    before = ConfigRevision.objects.count()
    response = client.post("/admin/routing/endpoint/add/", endpoint_form(timeout="0"), follow=True)
    assert b"timeout: must be at least 1" in response.content
    assert not Endpoint.objects.exists()
    assert ConfigRevision.objects.count() == before
    bad_target = endpoint_form(**{"targets-0-url": "http://169.254.169.254/"})
    response = client.post("/admin/routing/endpoint/add/", bad_target, follow=True)
    assert b"link-local" in response.content
    assert not Endpoint.objects.exists()


def test_the_disable_action_on_many_endpoints_is_one_revision(make_user: Callable[..., Any]) -> None:
    for name in ("a", "b", "c"):
        endpoint_create(data=endpoint_body(name), actor=Actor.system("test"))
    before = ConfigRevision.objects.count()
    ids = list(Endpoint.objects.values_list("pk", flat=True))
    response = browser(make_user("oscar", "operator")).post(
        "/admin/routing/endpoint/", {"action": "disable_selected", "_selected_action": ids}
    )
    assert response.status_code == 302
    assert not Endpoint.objects.filter(enabled=True).exists()
    assert ConfigRevision.objects.count() == before + 1
    assert AuditEvent.objects.filter(action="endpoint.update", revision_number=before + 1).count() == 3


def test_a_readonly_user_sees_the_admin_read_only(make_user: Callable[..., Any]) -> None:
    endpoint_create(data=endpoint_body(), actor=Actor.system("test"))
    pk = Endpoint.objects.get().pk
    client = browser(make_user("rita", "readonly"))
    page = client.get(f"/admin/routing/endpoint/{pk}/change/")
    assert page.status_code == 200
    assert b'name="_save"' not in page.content
    assert b"http://127.0.0.1:8010/api" in page.content
    assert client.get("/admin/routing/endpoint/add/").status_code == 403
    assert client.post(f"/admin/routing/endpoint/{pk}/change/", endpoint_form()).status_code == 403
    assert client.get("/admin/auth/user/").status_code == 403
    assert client.get("/admin/core/auditevent/").status_code == 403


def test_a_dataplane_user_cannot_use_the_admin(make_user: Callable[..., Any]) -> None:
    response = browser(make_user("dp", "dataplane", is_staff=True)).get("/admin/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_an_admin_creates_a_user_through_the_admin_with_the_same_rules(make_user: Callable[..., Any]) -> None:
    client = browser(make_user("alice", "admin"))
    form = {
        "username": "olga",
        "email": "",
        "is_active": "on",
        "roles": ["operator"],
        "new_password": "long-enough-pw-4242",
    }
    assert client.post("/admin/auth/user/add/", form).status_code == 302
    assert AuditEvent.objects.filter(action="user.create", object_key="olga").exists()
    own = client.post(
        f"/admin/auth/user/{make_user('x').pk}/change/",
        {"email": "", "is_active": "on", "roles": ["admin"], "new_password": ""},
    )
    assert own.status_code == 302
    alice = Client()
    alice.force_login(make_user("bob", "admin"))
    me = alice.get("/admin/").wsgi_request.user
    response = alice.post(
        f"/admin/auth/user/{me.pk}/change/", {"email": "", "is_active": "on", "roles": ["readonly"]}, follow=True
    )
    assert b"own roles" in response.content


def test_an_operator_reads_a_revisions_diff_and_rolls_back_from_the_admin(make_user: Callable[..., Any]) -> None:
    endpoint_create(data=endpoint_body(timeout=30), actor=Actor.system("test"))
    created = ConfigRevision.objects.order_by("-number").first()
    assert created is not None
    endpoint_create(data=endpoint_body("orders"), actor=Actor.system("test"))
    client = browser(make_user("oscar", "operator"))
    page = client.get(f"/admin/core/configrevision/{created.pk}/change/")
    assert b"+ endpoint users:v1" in page.content
    confirm = client.get(f"/admin/core/configrevision/{created.number}/rollback/")
    assert b"- endpoint orders:v1" in confirm.content
    assert client.post(f"/admin/core/configrevision/{created.number}/rollback/").status_code == 302
    assert list(Endpoint.objects.values_list("name", flat=True)) == ["users"]
    assert AuditEvent.objects.filter(action="config.rollback", object_key=str(created.number)).exists()
    readonly = browser(make_user("rita", "readonly"))
    assert readonly.post(f"/admin/core/configrevision/{created.number}/rollback/").status_code == 403


def test_an_admin_issues_a_data_plane_token_in_the_admin_and_sees_it_once(make_user: Callable[..., Any]) -> None:
    from controlplane.dataplanes.models import DataPlaneToken
    from controlplane.dataplanes.services import dataplane_token_authenticate

    client = browser(make_user("alice", "admin"))
    page = client.post("/admin/dataplanes/dataplanetoken/add/", {"name": "edge-1"})
    assert page.status_code == 200
    secret = page.content.decode().split('<pre id="dataplane-token">')[1].split("</pre>")[0]
    assert secret.startswith("gwdp_")
    token = DataPlaneToken.objects.get(name="edge-1")
    assert secret not in token.secret_sha256
    assert dataplane_token_authenticate(secret=secret) is not None
    assert secret.encode() not in client.get(f"/admin/dataplanes/dataplanetoken/{token.pk}/change/").content
    assert AuditEvent.objects.filter(action="dataplane_token.issue", object_key="edge-1").exists()
    operator = browser(make_user("oscar", "operator"))
    assert operator.get("/admin/dataplanes/dataplanetoken/add/").status_code == 403
    assert operator.get("/admin/dataplanes/dataplanenode/").status_code == 200
