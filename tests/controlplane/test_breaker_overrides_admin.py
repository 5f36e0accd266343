"""The breakers page of the admin: the fleet's states per endpoint, and force / lift / reset buttons that
only config:write users see and may use, each one audited service call (POST with a CSRF token)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from controlplane.breakers.models import BreakerOverride
from controlplane.core.actors import Actor
from controlplane.core.models import AuditEvent, ConfigRevision, StateCounter
from controlplane.dataplanes.services import node_status_record
from controlplane.routing.services import endpoint_create
from tests.conftest import endpoint_body
from tests.controlplane.test_breaker_overrides import report

pytestmark = pytest.mark.django_db
PAGE = "/admin/breakers/breakeroverride/"
ACT = PAGE + "users:v1/act/"


@pytest.fixture(autouse=True)
def _endpoints() -> None:
    endpoint_create(data=endpoint_body("users"), actor=Actor.command("test"))
    endpoint_create(data=endpoint_body("orders"), actor=Actor.command("test"))


def browser(user: Any, *, csrf: bool = False) -> Client:
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(user)
    return client


def test_the_page_shows_the_aggregate_and_each_live_nodes_state(make_user: Callable[..., Any]) -> None:
    node_status_record(report=report("edge-1", {"users:v1": {"state": "open", "forced": "open"}}))
    node_status_record(report=report("edge-2", {}))
    page = browser(make_user("rita", "readonly")).get(PAGE)
    assert page.status_code == 200
    html = page.content.decode()
    users = html[html.index('data-key="users:v1"') :]  # the last row: endpoints are listed by key
    assert "<strong>mixed</strong>" in users
    assert re.search(r"edge-1: <strong>open</strong> \(forced open\)", users)
    assert "edge-2: <strong>closed</strong>" in users


def test_readonly_users_see_no_buttons_and_get_403_on_post(make_user: Callable[..., Any]) -> None:
    client = browser(make_user("rita", "readonly"))
    assert "Force open" not in client.get(PAGE).content.decode()
    assert client.post(ACT, {"action": "open"}).status_code == 403
    assert not BreakerOverride.objects.exists()


def test_an_operator_forces_open_for_some_minutes_audited_without_a_revision(make_user: Callable[..., Any]) -> None:
    client = browser(make_user("olga", "operator"), csrf=True)
    page = client.get(PAGE)
    assert "Force open" in page.content.decode()
    token = page.cookies["csrftoken"].value
    revisions, seq = ConfigRevision.objects.count(), StateCounter.objects.get(pk=1).state_seq
    response = client.post(ACT, {"action": "open", "minutes": "15", "csrfmiddlewaretoken": token}, follow=True)
    assert response.status_code == 200 and "Forced users:v1 open for 15 minutes." in response.content.decode()
    override = BreakerOverride.objects.get(endpoint__name="users")
    assert override.force == "open" and override.until is not None and override.updated_by == "user:olga"
    assert AuditEvent.objects.get(action="breaker.force").actor_label == "user:olga"
    assert ConfigRevision.objects.count() == revisions
    assert StateCounter.objects.get(pk=1).state_seq == seq + 1


def test_a_post_without_the_csrf_token_is_refused(make_user: Callable[..., Any]) -> None:
    client = browser(make_user("olga", "operator"), csrf=True)
    assert client.post(ACT, {"action": "open"}).status_code == 403
    assert not BreakerOverride.objects.exists()


def test_lift_and_reset_go_through_the_services(make_user: Callable[..., Any]) -> None:
    client = browser(make_user("olga", "operator"))
    client.post(ACT, {"action": "closed"})
    client.post(ACT, {"action": "lift"})
    client.post(ACT, {"action": "reset"})
    override = BreakerOverride.objects.get(endpoint__name="users")
    assert (override.force, override.until, override.reset_generation) == ("", None, 1)
    actions = list(AuditEvent.objects.filter(object_type="breaker").order_by("id").values_list("action", flat=True))
    assert actions == ["breaker.force", "breaker.lift", "breaker.reset"]


def test_a_bad_button_or_unknown_endpoint_changes_nothing(make_user: Callable[..., Any]) -> None:
    client = browser(make_user("olga", "operator"))
    response = client.post(ACT, {"action": "ajar"}, follow=True)
    assert "Not changed" in response.content.decode()
    assert client.post(PAGE + "nope:v1/act/", {"action": "open"}).status_code == 404
    assert client.get(ACT).status_code == 405
    assert not BreakerOverride.objects.exists()


def test_the_breakers_section_of_the_admin_links_the_page(make_user: Callable[..., Any]) -> None:
    assert PAGE in browser(make_user("rita", "readonly")).get("/admin/breakers/").content.decode()
