"""Shared fixtures: users in each role and API clients holding their JWTs."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import Group
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

PASSWORD = "correct-horse-battery-staple-42"
BASELINE_MIGRATIONS = [
    ("controlplane.accounts.migrations.0002_roles", "create_roles"),
    ("controlplane.core.migrations.0002_counter_and_append_only_audit", "create_counter"),
    ("controlplane.breakers.migrations.0002_default_policy", "create_default"),
]


@pytest.fixture(autouse=True)
def _baseline(request: pytest.FixtureRequest) -> None:
    """Put back what the data migrations made (roles, the revision counter, the default policy,
    revision 1) after a transactional test's flush emptied every table."""
    if request.node.get_closest_marker("django_db") is None and not {"db", "transactional_db"} & set(
        request.fixturenames
    ):
        return
    request.getfixturevalue("_django_db_helper")
    from django.apps import apps
    from django.contrib.auth.models import Group
    from django.db import transaction

    from controlplane.core.models import RevisionCounter

    if RevisionCounter.objects.exists() and Group.objects.filter(name="admin").exists():
        return
    with transaction.atomic():
        for module, function in BASELINE_MIGRATIONS:
            getattr(importlib.import_module(module), function)(apps, None)


@pytest.fixture
def make_user(db: Any) -> Callable[..., Any]:
    from django.contrib.auth import get_user_model

    def make(username: str, *roles: str, **fields: Any) -> Any:
        user = get_user_model().objects.create_user(username=username, password=PASSWORD, **fields)
        for role in roles:
            user.groups.add(Group.objects.get(name=role))
        return user

    return make


def client_for(user: Any) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(user).access_token}")
    return client


@pytest.fixture
def admin_client(make_user: Callable[..., Any]) -> APIClient:
    return client_for(make_user("alice", "admin"))


@pytest.fixture
def operator_client(make_user: Callable[..., Any]) -> APIClient:
    return client_for(make_user("oscar", "operator"))


@pytest.fixture
def readonly_client(make_user: Callable[..., Any]) -> APIClient:
    return client_for(make_user("rita", "readonly"))


def endpoint_body(name: str = "users", version: str = "v1", **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "version": version, "targets": [{"url": "http://127.0.0.1:8010/api"}]}
    body.update(fields)
    return body
