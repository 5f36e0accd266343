"""Management commands as an operator runs them."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from controlplane.accounts.roles import CONFIG_WRITE, USERS_MANAGE, has_gateway_perm
from controlplane.core.models import AuditEvent

pytestmark = pytest.mark.django_db


def test_createadmin_takes_the_password_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_ADMIN_PASSWORD", "a-long-enough-password-123")
    out = StringIO()
    call_command("createadmin", "root-admin", stdout=out)
    assert "admin root-admin created" in out.getvalue()
    user = get_user_model().objects.get(username="root-admin")
    assert user.check_password("a-long-enough-password-123")
    assert has_gateway_perm(user, USERS_MANAGE) and has_gateway_perm(user, CONFIG_WRITE)
    assert list(user.groups.values_list("name", flat=True)) == ["admin"]
    assert AuditEvent.objects.filter(action="user.create", object_key="root-admin").exists()


def test_createadmin_without_a_password_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_ADMIN_PASSWORD", raising=False)
    with pytest.raises(CommandError, match="GATEWAY_ADMIN_PASSWORD"):
        call_command("createadmin", "root-admin")


def test_createadmin_refuses_a_weak_password_and_an_existing_name(make_user: Any) -> None:
    with pytest.raises(CommandError, match="password refused"):
        call_command("createadmin", "root-admin", password="123")
    make_user("taken")
    with pytest.raises(CommandError, match="already exists"):
        call_command("createadmin", "taken", password="a-long-enough-password-123")
