"""The password policy, wherever a password is set: users API (create, PATCH), the password change API,
the admin's user form, `createadmin` and `rungateway`'s first admin."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from html.parser import HTMLParser
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client
from rest_framework.test import APIClient

from controlplane.core.models import AuditEvent
from tests.conftest import PASSWORD, client_for
from tests.e2e.servers import ROOT, clean_env

pytestmark = pytest.mark.django_db
API = "/api/v1"
README_PASSWORD = "choose-a-long-password"

WEAK = {
    "one character": "aaaaaaaaaaaa",
    "a repeated word": "abcabcabcabc",
    "a repeated longer word": "abcdefabcdef",
    "a run": "abcdefghijkl",
    "too short": "short-pw-1",
    "numeric": "839274610593",
    "common": "password1234",
    "like the username": "margaret.hamilton1",
}
weak = pytest.mark.parametrize("password", list(WEAK.values()), ids=list(WEAK))


def User() -> Any:
    return get_user_model()


def assert_refused_naming(response: Any, field: str) -> None:
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == "validation_error"
    assert list(body["fields"]) == [field]
    assert body["fields"][field] and body["request_id"]


@pytest.mark.parametrize("password", [PASSWORD, README_PASSWORD, "long-enough-pw-4242", "Tr0ub4dor&3-horse"])
def test_the_passwords_the_readme_and_tests_use_pass_the_policy(admin_client: APIClient, password: str) -> None:
    response = admin_client.post(f"{API}/users/", {"username": "olga", "password": password}, format="json")
    assert response.status_code == 201, response.content


@weak
def test_a_weak_password_is_refused_when_creating_a_user(admin_client: APIClient, password: str) -> None:
    body = {"username": "margaret.hamilton", "password": password, "roles": ["readonly"]}
    assert_refused_naming(admin_client.post(f"{API}/users/", body, format="json"), "password")
    assert not User().objects.filter(username="margaret.hamilton").exists()
    assert not AuditEvent.objects.filter(object_key="margaret.hamilton").exists()


@weak
def test_a_weak_password_is_refused_when_patching_a_user(
    admin_client: APIClient, make_user: Callable[..., Any], password: str
) -> None:
    make_user("margaret.hamilton", "readonly")
    response = admin_client.patch(f"{API}/users/margaret.hamilton/", {"password": password}, format="json")
    assert_refused_naming(response, "password")
    assert User().objects.get(username="margaret.hamilton").check_password(PASSWORD)


@weak
def test_a_weak_new_password_is_refused_by_the_password_change(make_user: Callable[..., Any], password: str) -> None:
    client = client_for(make_user("margaret.hamilton", "operator"))
    body = {"old_password": PASSWORD, "new_password": password}
    assert_refused_naming(client.post(f"{API}/auth/password/", body, format="json"), "new_password")
    assert User().objects.get(username="margaret.hamilton").check_password(PASSWORD)


class _Fields(HTMLParser):
    """The inputs of a rendered form, as a browser would post them back."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: dict[str, Any] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        name = found.get("name")
        if tag != "input" or not name or found.get("type") == "submit":
            return
        if found.get("type") == "checkbox":
            if "checked" in found:
                self.fields.setdefault(name, []).append(found.get("value") or "on")
            return
        self.fields[name] = found.get("value") or ""


@pytest.mark.parametrize("password", ["aaaaaaaaaaaa", "abcabcabcabc"])
def test_the_admins_user_form_refuses_a_weak_password(make_user: Callable[..., Any], password: str) -> None:
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(make_user("alice", "admin", is_staff=True))
    page = browser.get("/admin/auth/user/add/")
    assert page.status_code == 200
    parsed = _Fields()
    parsed.feed(page.content.decode())
    form = {**parsed.fields, "username": "olga", "is_active": "on", "roles": ["readonly"], "new_password": password}
    response = browser.post("/admin/auth/user/add/", form, follow=True)
    assert response.status_code == 200
    assert "Not saved: password:" in response.content.decode()
    assert not User().objects.filter(username="olga").exists()


@weak
def test_createadmin_refuses_a_weak_password_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, password: str
) -> None:
    monkeypatch.setenv("GATEWAY_ADMIN_PASSWORD", password)
    with pytest.raises(CommandError, match=r"^password refused: Th.* password .*\.$"):
        call_command("createadmin", "margaret.hamilton", stdout=StringIO())
    assert not User().objects.filter(username="margaret.hamilton").exists()


@pytest.mark.e2e
def test_the_commands_exit_non_zero_on_a_weak_password_on_the_embedded_defaults(tmp_path: Path) -> None:
    """As the README runs them: SQLite under a fresh var dir, the password in GATEWAY_ADMIN_PASSWORD."""
    env = clean_env(GATEWAY_VAR_DIR=str(tmp_path / "var"), GATEWAY_ADMIN_PASSWORD="aaaaaaaaaaaa", GATEWAY_DEMO="0")
    env.pop("CELERY_BROKER_URL", None)

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603 - our own argv
            [sys.executable, "manage.py", *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )

    first = run("rungateway", "--no-dataplane")
    assert first.returncode != 0
    assert "GATEWAY_ADMIN_PASSWORD refused: This password has too few different characters" in first.stderr
    assert "admin admin created" not in first.stdout
    second = run("createadmin", "root-admin")
    assert second.returncode != 0
    assert "password refused: This password has too few different characters" in second.stderr
    env["GATEWAY_ADMIN_PASSWORD"] = README_PASSWORD
    third = run("createadmin", "root-admin")
    assert third.returncode == 0, third.stderr
    assert "admin root-admin created" in third.stdout


def own_password_change(browser: Client, old: str, new: str, **extra: Any) -> Any:
    page = browser.get("/admin/password_change/", **extra)
    assert page.status_code == 200
    parsed = _Fields()
    parsed.feed(page.content.decode())
    assert {"old_password", "new_password1", "new_password2"} <= set(parsed.fields)
    form = {**parsed.fields, "old_password": old, "new_password1": new, "new_password2": new}
    return browser.post("/admin/password_change/", form, **extra)


def test_the_admins_own_password_change_page_refuses_a_weak_password(make_user: Callable[..., Any]) -> None:
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(make_user("alice", "admin", is_staff=True))
    response = own_password_change(browser, PASSWORD, "abcabcabcabc")
    assert response.status_code == 200
    assert "too few different characters" in response.content.decode()
    assert User().objects.get(username="alice").check_password(PASSWORD)


def test_the_admins_own_password_change_is_audited_and_revokes_tokens(make_user: Callable[..., Any]) -> None:
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(make_user("alice", "admin", is_staff=True))
    tokens = APIClient().post(f"{API}/auth/token/", {"username": "alice", "password": PASSWORD}, format="json").json()
    response = own_password_change(browser, PASSWORD, README_PASSWORD)
    assert response.status_code == 302 and response["Location"] == "/admin/password_change/done/"
    assert User().objects.get(username="alice").check_password(README_PASSWORD)
    assert AuditEvent.objects.filter(action="user.password_change", object_key="alice").exists()
    refreshed = APIClient().post(f"{API}/auth/token/refresh/", {"refresh": tokens["refresh"]}, format="json")
    assert refreshed.status_code == 401
    assert browser.get("/admin/").status_code == 200  # this session stays signed in
