"""Users and roles through the API, and the escalation rules of ARCHITECTURE §8."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from rest_framework.test import APIClient

from controlplane.core.models import AuditEvent
from tests.conftest import PASSWORD, client_for

pytestmark = pytest.mark.django_db
API = "/api/v1"


def test_an_admin_creates_a_user_with_roles_and_the_password_is_never_shown(admin_client: APIClient) -> None:
    body = {"username": "olga", "password": PASSWORD, "email": "olga@example.test", "roles": ["operator"]}
    response = admin_client.post(f"{API}/users/", body, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["roles"] == ["operator"]
    assert response.json()["is_staff"] is True
    assert "password" not in response.json()
    event = AuditEvent.objects.get(action="user.create", object_key="olga")
    assert event.after == {"username": "olga", "email": "olga@example.test", "is_active": True, "roles": ["operator"]}
    tokens = APIClient().post(f"{API}/auth/token/", {"username": "olga", "password": PASSWORD}, format="json")
    assert tokens.status_code == 200


def test_a_weak_password_is_refused_naming_the_field(admin_client: APIClient) -> None:
    response = admin_client.post(f"{API}/users/", {"username": "weak", "password": "123"}, format="json")
    assert response.status_code == 400
    assert "password" in response.json()["fields"]


def test_an_unknown_role_is_refused(admin_client: APIClient) -> None:
    response = admin_client.post(
        f"{API}/users/", {"username": "x", "password": PASSWORD, "roles": ["god"]}, format="json"
    )
    assert response.status_code == 400
    assert "unknown role 'god'" in response.json()["fields"]["roles"][0]


def test_the_dataplane_role_cannot_be_granted_through_the_api(admin_client: APIClient) -> None:
    body = {"username": "sneaky", "password": PASSWORD, "roles": ["dataplane"]}
    response = admin_client.post(f"{API}/users/", body, format="json")
    assert response.status_code == 403
    assert "issue_dataplane_token" in response.json()["message"]
    assert not get_user_model().objects.filter(username="sneaky").exists()


def test_nobody_edits_their_own_roles(make_user: Callable[..., Any]) -> None:
    make_user("other-admin", "admin")
    client = client_for(make_user("alice", "admin"))
    response = client.patch(f"{API}/users/alice/", {"roles": ["admin", "operator"]}, format="json")
    assert response.status_code == 403
    assert "own roles" in response.json()["message"]


def test_a_role_is_granted_only_by_someone_holding_all_its_permissions(make_user: Callable[..., Any]) -> None:
    # A user manager without audit:read (a custom role) cannot hand out operator, which carries it.
    managers = Group.objects.create(name="user-managers")
    managers.permissions.add(
        Permission.objects.get(codename="users_manage"), Permission.objects.get(codename="config_read")
    )
    make_user("target", "readonly")
    client = client_for(make_user("manny", "user-managers"))
    response = client.patch(f"{API}/users/target/", {"roles": ["operator"]}, format="json")
    assert response.status_code == 403
    assert "audit:read" in response.json()["message"]
    assert (
        client.patch(f"{API}/users/target/", {"roles": ["readonly", "user-managers"]}, format="json").status_code == 200
    )


def test_the_last_admin_cannot_be_demoted_deactivated_or_deleted(make_user: Callable[..., Any]) -> None:
    make_user("root", "admin")
    manager = Group.objects.create(name="user-managers")
    manager.permissions.set(
        Permission.objects.filter(codename__in=["users_manage", "config_read", "config_write", "audit_read"])
    )
    client = client_for(make_user("manny", "user-managers"))
    for change in ({"roles": ["operator"]}, {"is_active": False}):
        response = client.patch(f"{API}/users/root/", change, format="json")
        assert response.status_code == 409, change
        assert "last active admin" in response.json()["message"]
    assert client.delete(f"{API}/users/root/").status_code == 409
    make_user("second", "admin")
    assert client.patch(f"{API}/users/root/", {"is_active": False}, format="json").status_code == 200


def test_an_admin_demotes_another_admin_and_the_demotion_applies_at_once(make_user: Callable[..., Any]) -> None:
    victim = make_user("bob", "admin")
    victim_client = client_for(victim)
    admin = client_for(make_user("alice", "admin"))
    assert victim_client.get(f"{API}/users/").status_code == 200
    assert admin.patch(f"{API}/users/bob/", {"roles": ["readonly"]}, format="json").status_code == 200
    assert victim_client.get(f"{API}/users/").status_code == 403
    event = AuditEvent.objects.get(action="user.update", object_key="bob")
    assert (event.before["roles"], event.after["roles"]) == (["admin"], ["readonly"])


def test_an_admin_setting_a_password_revokes_the_users_tokens(
    admin_client: APIClient, make_user: Callable[..., Any]
) -> None:
    user_client = client_for(make_user("olga", "operator"))
    assert user_client.get(f"{API}/endpoints/").status_code == 200
    assert (
        admin_client.patch(f"{API}/users/olga/", {"password": "fresh-long-password-31"}, format="json").status_code
        == 200
    )
    assert user_client.get(f"{API}/endpoints/").status_code == 401
    assert AuditEvent.objects.filter(action="user.password_change", object_key="olga").exists()


def test_a_new_password_set_with_other_fields_is_audited_as_its_own_event(
    admin_client: APIClient, make_user: Callable[..., Any]
) -> None:
    user_client = client_for(make_user("olga", "operator"))
    new_password = "fresh-long-password-31"
    response = admin_client.patch(
        f"{API}/users/olga/", {"email": "olga@example.test", "password": new_password}, format="json"
    )
    assert response.status_code == 200
    assert user_client.get(f"{API}/endpoints/").status_code == 401
    events = AuditEvent.objects.filter(object_type="user", object_key="olga").order_by("id")
    assert [e.action for e in events] == ["user.update", "user.password_change"]
    update, password_change = events
    assert (update.before["email"], update.after["email"]) == ("", "olga@example.test")
    assert password_change.actor_label == "user:alice"
    for event in events:
        stored = json.dumps([event.before, event.after])
        assert new_password not in stored
        assert "password" not in stored


def test_a_password_alone_is_audited_as_a_password_change_only(
    admin_client: APIClient, make_user: Callable[..., Any]
) -> None:
    make_user("olga", "operator")
    response = admin_client.patch(f"{API}/users/olga/", {"password": "fresh-long-password-31"}, format="json")
    assert response.status_code == 200
    actions = list(AuditEvent.objects.filter(object_key="olga").values_list("action", flat=True))
    assert actions == ["user.password_change"]


def test_data_plane_service_users_are_not_managed_through_the_users_api(
    admin_client: APIClient, make_user: Callable[..., Any]
) -> None:
    make_user("dp-1", "dataplane")
    response = admin_client.patch(f"{API}/users/dp-1/", {"roles": ["admin"]}, format="json")
    assert response.status_code == 403


def test_roles_list_their_permission_strings(readonly_client: APIClient) -> None:
    roles = {
        r["name"]: [p["name"] for p in r["permissions"]] for r in readonly_client.get(f"{API}/roles/").json()["results"]
    }
    assert roles["admin"] == ["audit:read", "config:read", "config:write", "users:manage"]
    assert roles["operator"] == ["audit:read", "config:read", "config:write"]
    assert roles["readonly"] == ["config:read"]
    assert roles["dataplane"] == ["dataplane:sync"]
