"""Every admin page with a form, driven as a browser drives it: GET the page, read the form it rendered,
POST that back. An unchanged save must succeed and change nothing (no revision, no audit event); an
edit made through the rendered form must land on the object, in one revision with its audit event;
pages a user may only read must refuse the post and keep the object as it was."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client
from rest_framework_simplejwt.token_blacklist.models import OutstandingToken

from controlplane.accounts.services import user_create, user_view
from controlplane.breakers.models import BreakerOverride, BreakerPolicy
from controlplane.breakers.services import breaker_policy_create
from controlplane.core.actors import Actor
from controlplane.core.models import AuditEvent, ConfigRevision
from controlplane.dataplanes.models import DataPlaneNode, DataPlaneToken
from controlplane.dataplanes.services import dataplane_token_issue, node_status_record
from controlplane.health.models import TargetHealth
from controlplane.health.services import health_rows_ensure
from controlplane.routing.models import Endpoint
from controlplane.routing.services import endpoint_create
from controlplane.snapshots.models import GlobalPlugins
from controlplane.snapshots.services import plugins_update
from tests.conftest import endpoint_body
from tests.controlplane.admin_forms import form_data_from
from tests.controlplane.test_breaker_overrides import report
from tests.controlplane.test_consumers_admin import rich as rich_consumer

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system("test")


def browser(user: Any) -> Client:
    # CSRF enforced, as in a browser: the token posted back is the one the page rendered.
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def _strict_policy() -> BreakerPolicy:
    return breaker_policy_create(
        data={
            "name": "strict",
            "failure_threshold": 3,
            "failure_rate_threshold": 12.5,
            "failure_statuses": [500, 502, 503],
            "fallback_strategy": "default_response",
            "fallback": {"status": 200, "body": '{"cached": false}\nsecond line'},
            "cache": {"max_age": 60},
        },
        actor=SYSTEM,
    )


def _endpoint(name: str = "accounts", **fields: Any) -> Endpoint:
    return endpoint_create(data=endpoint_body(name, **fields), actor=SYSTEM)


def rich_endpoint() -> Endpoint:
    _strict_policy()
    return _endpoint(
        description="Accounts & <billing>",
        tags=["team:accounts", "tier/1"],
        breaker_policy="strict",
        methods=["GET", "POST", "DELETE"],
        paths=["/accounts", "/billing"],
        strip_path=False,
        timeout=12.5,
        max_body_bytes=1024,
        auth_type="bearer",
        retries={"attempts": 3, "on": ["connect_error", 503]},
        outlier={"consecutive_failures": 7},
        tls={"verify": False},
        health_check={"path": "/healthz", "interval": 10},
        targets=[
            {"url": "http://127.0.0.1:8010/api"},
            {"url": "http://127.0.0.1:8011/api", "weight": 50, "enabled": False},
        ],
    )


def plain_endpoint() -> Endpoint:
    return _endpoint()


def free_text_endpoint() -> Endpoint:
    """Values the API takes that a comma-separated or single-line input would mangle."""
    return _endpoint(
        description="  Accounts,\nbilling and more  ",
        paths=["/a,b", "/c;v=1"],
        timeout=45,
        connect_timeout=0.25,
        retries={"per_try_timeout": 2},
    )


def second_version() -> Endpoint:
    """Not the default version: an unchanged save must not take the default from v1."""
    _endpoint()
    return _endpoint(version="v2", enabled=False)


PLUGINS_SET = {
    "cors": {"origins": ["https://app.example.com"], "credentials": True, "max_age": 0},
    "ip_restriction": {"allow": ["10.0.0.0/8", "2001:db8::/32"], "mode": "report"},
    "request_headers": {"set": {"X-Env": 'prod, "eu"'}, "remove": ["X-Debug"]},
    "response_headers": {"set": {"X-Frame-Options": "DENY", "X-Note": "caf\u00e9  <b>&amp;</b>"}},
}


def plugins_endpoint() -> Endpoint:
    """Every plugin set, a Latin-1 header value, quotes and markup: the JSON area must round-trip them."""
    return _endpoint(plugins=PLUGINS_SET, preserve_host=True)


def global_plugins() -> GlobalPlugins:
    plugins_update(
        data={"cors": {"origins": ["https://a.example.com"]}, "response_headers": {"remove": ["Server"]}}, actor=SYSTEM
    )
    return GlobalPlugins.objects.get(pk=1)


def no_global_plugins() -> GlobalPlugins:
    return GlobalPlugins(pk=1)


def global_plugins_state(row: GlobalPlugins) -> Any:
    stored = GlobalPlugins.objects.filter(pk=1).values_list("plugins", "plugins_canonical").first()
    return stored or ({}, "")


def default_policy() -> BreakerPolicy:
    return BreakerPolicy.objects.get(name="default")


def operator_user() -> Any:
    return user_create(
        username="olga",
        password="long-enough-pw-4242",
        email="olga@example.com",
        is_active=True,
        roles=["operator", "readonly"],
        by=None,
        actor=SYSTEM,
    )


def inactive_user() -> Any:
    return user_create(
        username="ivan", password="long-enough-pw-4242", email="", is_active=False, roles=[], by=None, actor=SYSTEM
    )


def endpoint_state(endpoint: Endpoint) -> Any:
    endpoint.refresh_from_db()
    targets = sorted(endpoint.targets.values_list("pk", "url", "weight", "enabled"))
    columns = (endpoint.name, endpoint.version, endpoint.is_default, endpoint.enabled, endpoint.description)
    # The canonical text too: the same document must keep the same bytes (and so the same ETag).
    return endpoint.canonical, endpoint.document, columns, endpoint.tags, endpoint.breaker_policy.name, targets


def policy_state(policy: BreakerPolicy) -> Any:
    policy.refresh_from_db()
    return policy.name, policy.canonical, policy.document


def user_state(user: Any) -> Any:
    user.refresh_from_db()
    return user_view(user), user.password


def consumer_state(consumer: Any) -> Any:
    from controlplane.consumers.models import Consumer

    return Consumer.objects.get(pk=consumer.pk).document


@dataclass(frozen=True)
class Editable:
    path: str  # the model's admin path
    make: Callable[[], Any]
    state: Callable[[Any], Any]


EDITABLE = {
    "endpoint with everything set": Editable("routing/endpoint", rich_endpoint, endpoint_state),
    "endpoint with defaults": Editable("routing/endpoint", plain_endpoint, endpoint_state),
    "endpoint with a comma in a path and a multi-line description": Editable(
        "routing/endpoint", free_text_endpoint, endpoint_state
    ),
    "endpoint, not the default version": Editable("routing/endpoint", second_version, endpoint_state),
    "endpoint with every plugin and preserve_host": Editable("routing/endpoint", plugins_endpoint, endpoint_state),
    "global plugins": Editable("snapshots/globalplugins", global_plugins, global_plugins_state),
    "global plugins, none set yet": Editable("snapshots/globalplugins", no_global_plugins, global_plugins_state),
    "breaker policy with everything set": Editable("breakers/breakerpolicy", _strict_policy, policy_state),
    "the default breaker policy": Editable("breakers/breakerpolicy", default_policy, policy_state),
    "consumer with every credential kind": Editable("consumers/consumer", rich_consumer, consumer_state),
    "user with roles": Editable("auth/user", operator_user, user_state),
    "inactive user without roles": Editable("auth/user", inactive_user, user_state),
}


def change_url(case: Editable, obj: Any) -> str:
    return f"/admin/{case.path}/{obj.pk}/change/"


def history() -> tuple[int, int]:
    return ConfigRevision.objects.count(), AuditEvent.objects.count()


@pytest.mark.parametrize("case", EDITABLE.values(), ids=EDITABLE.keys())
def test_saving_a_change_page_as_rendered_changes_nothing(case: Editable, make_user: Callable[..., Any]) -> None:
    obj = case.make()
    before, counts = case.state(obj), history()
    client = browser(make_user("alice", "admin"))
    page = client.get(change_url(case, obj))
    assert page.status_code == 200
    data = form_data_from(page.content)
    assert "_save" not in data
    response = client.post(change_url(case, obj), data)
    assert response.status_code == 302, _errors(client, response)
    assert response["Location"] == f"/admin/{case.path}/", _errors(client, response)  # not back with an error
    assert case.state(obj) == before
    assert history() == counts  # a write that leaves the document as it was makes no revision


def _errors(client: Client, response: Any) -> str:
    """What the page said instead of saving: the refused save's message or the form's errors."""
    html = (client.get(response["Location"]) if response.status_code == 302 else response).content.decode()
    said = [
        html[i : i + 600] for marker in ('class="messagelist"', 'class="errorlist') if (i := html.find(marker)) >= 0
    ]
    return "\n".join(said) or html[:3000]


def test_the_change_page_shows_the_documents_values(make_user: Callable[..., Any]) -> None:
    """What the operator reads in the inputs is the document, not the model's columns."""
    endpoint = rich_endpoint()
    page = browser(make_user("alice", "admin")).get(f"/admin/routing/endpoint/{endpoint.pk}/change/")
    data = form_data_from(page.content)
    assert data["tags"] == ["team:accounts, tier/1"]
    assert data["breaker_policy"] == ["strict"]
    assert data["description"] == ["Accounts & <billing>"]
    assert data["methods"] == ["DELETE, GET, POST"]  # the canonical order
    assert data["auth_type"] == ["bearer"]
    assert data["paths"] == ["/accounts\r\n/billing"]  # one per line: a comma is legal in a path
    assert "strip_path" not in data and "default" in data and "enabled" in data
    assert data["targets-TOTAL_FORMS"] == ["3"] and data["targets-INITIAL_FORMS"] == ["2"]
    assert data["targets-1-url"] == ["http://127.0.0.1:8011/api"] and "targets-1-enabled" not in data


def test_an_edit_through_the_rendered_endpoint_form_is_one_revision(make_user: Callable[..., Any]) -> None:
    endpoint = rich_endpoint()
    url = f"/admin/routing/endpoint/{endpoint.pk}/change/"
    before_document, (revisions, events) = dict(endpoint.document), history()
    client = browser(make_user("oscar", "operator"))
    data = form_data_from(client.get(url).content)
    data["description"] = ["Accounts only"]
    data["tags"] = ["team:accounts, tier/2, new"]
    data["paths"] = [data["paths"][0] + "\r\n/invoices,2026\r\n"]
    data["targets-2-url"] = ["http://127.0.0.1:8012/api"]  # the blank extra row the page offers
    data["targets-2-weight"] = ["7"]
    response = client.post(url, data)
    assert response.status_code == 302, _errors(client, response)
    endpoint.refresh_from_db()
    assert endpoint.description == "Accounts only" == endpoint.document["description"]
    assert endpoint.tags == ["new", "team:accounts", "tier/2"] == endpoint.document["tags"]
    assert endpoint.breaker_policy.name == "strict"
    assert sorted(endpoint.targets.values_list("url", "weight")) == [
        ("http://127.0.0.1:8010/api", 100),
        ("http://127.0.0.1:8011/api", 50),
        ("http://127.0.0.1:8012/api", 7),
    ]
    assert endpoint.document["paths"] == ["/accounts", "/billing", "/invoices,2026"]
    unchanged = {k: v for k, v in before_document.items() if k not in ("description", "tags", "paths", "targets")}
    assert {k: v for k, v in endpoint.document.items() if k in unchanged} == unchanged
    assert ConfigRevision.objects.count() == revisions + 1
    event = AuditEvent.objects.get(action="endpoint.update", object_key="accounts:v1")
    assert event.revision_number == revisions + 1 and event.actor_label == "user:oscar"
    assert event.before["tags"] == ["team:accounts", "tier/1"]
    assert event.after["tags"] == ["new", "team:accounts", "tier/2"]
    assert AuditEvent.objects.count() == events + 1


def test_moving_an_endpoint_to_another_policy_through_the_rendered_form(make_user: Callable[..., Any]) -> None:
    endpoint = plain_endpoint()
    _strict_policy()
    url = f"/admin/routing/endpoint/{endpoint.pk}/change/"
    client = browser(make_user("oscar", "operator"))
    data = form_data_from(client.get(url).content)
    assert data["breaker_policy"] == ["default"]
    data["breaker_policy"] = ["strict"]
    assert client.post(url, data).status_code == 302
    endpoint.refresh_from_db()
    assert endpoint.breaker_policy.name == "strict" == endpoint.document["breaker_policy"]
    data = form_data_from(client.get(url).content)
    assert data["breaker_policy"] == ["strict"]


def test_an_edit_through_the_rendered_policy_form_is_one_revision(make_user: Callable[..., Any]) -> None:
    policy = _strict_policy()
    url = f"/admin/breakers/breakerpolicy/{policy.pk}/change/"
    revisions = ConfigRevision.objects.count()
    client = browser(make_user("oscar", "operator"))
    data = form_data_from(client.get(url).content)
    data["failure_threshold"] = ["9"]
    assert client.post(url, data).status_code == 302
    policy.refresh_from_db()
    assert policy.document["failure_threshold"] == 9
    assert policy.document["fallback"] == {"status": 200, "body": '{"cached": false}\nsecond line'}
    assert ConfigRevision.objects.count() == revisions + 1
    event = AuditEvent.objects.get(action="breaker_policy.update", object_key="strict")
    assert (event.before["failure_threshold"], event.after["failure_threshold"]) == (3, 9)


def test_an_edit_through_the_rendered_user_form_is_audited(make_user: Callable[..., Any]) -> None:
    user = operator_user()
    url = f"/admin/auth/user/{user.pk}/change/"
    client = browser(make_user("alice", "admin"))
    data = form_data_from(client.get(url).content)
    assert sorted(data["roles"]) == ["operator", "readonly"]
    data["email"] = ["olga@example.org"]
    data["roles"] = ["readonly"]
    assert client.post(url, data).status_code == 302
    assert user_view(get_user_model().objects.get(pk=user.pk))["roles"] == ["readonly"]
    event = AuditEvent.objects.get(action="user.update", object_key="olga")
    assert event.before["email"] == "olga@example.com" and event.after["email"] == "olga@example.org"


ADD_PAGES = {
    "endpoint": (
        "routing/endpoint",
        {"name": "orders", "version": "v1", "targets-0-url": "http://127.0.0.1:8010"},
        lambda: Endpoint.objects.get(name="orders"),
        lambda endpoint: (endpoint.document, endpoint.tags, endpoint.breaker_policy.name),
        (
            {"name": "orders", "version": "v1", "default": True, "targets": [{"url": "http://127.0.0.1:8010"}]},
            [],
            "default",
        ),
        1,
    ),
    "breaker policy": (
        "breakers/breakerpolicy",
        {"name": "lenient"},
        lambda: BreakerPolicy.objects.get(name="lenient"),
        lambda policy: policy.document,
        {"name": "lenient"},
        1,
    ),
    "user": (
        "auth/user",
        {"username": "nina", "new_password": "long-enough-pw-4242"},
        lambda: get_user_model().objects.get(username="nina"),
        user_view,
        {"username": "nina", "email": "", "is_active": True, "roles": []},
        0,
    ),
}


@pytest.mark.parametrize(
    ("path", "typed", "fetch", "view", "expected", "revisions"), ADD_PAGES.values(), ids=ADD_PAGES.keys()
)
def test_an_add_page_filled_in_by_hand_saves(
    path: str,
    typed: dict[str, str],
    fetch: Callable[[], Any],
    view: Callable[[Any], Any],
    expected: Any,
    revisions: int,
    make_user: Callable[..., Any],
) -> None:
    """Only the required inputs typed in; every other input keeps what the page rendered (the defaults)."""
    client = browser(make_user("alice", "admin"))
    page = client.get(f"/admin/{path}/add/")
    assert page.status_code == 200
    data = {**form_data_from(page.content), **typed}
    before = ConfigRevision.objects.count()
    response = client.post(f"/admin/{path}/add/", data)
    assert response.status_code == 302, _errors(client, response)
    assert view(fetch()) == expected
    assert ConfigRevision.objects.count() == before + revisions


def test_the_endpoint_list_disables_through_its_rendered_action_form(make_user: Callable[..., Any]) -> None:
    for name in ("accounts", "orders"):
        _endpoint(name)
    revisions = ConfigRevision.objects.count()
    client = browser(make_user("oscar", "operator"))
    page = client.get("/admin/routing/endpoint/")
    data = form_data_from(page.content, form_id="changelist-form")
    assert "_selected_action" not in data  # no row ticked yet
    data["action"] = ["disable_selected"]
    data["_selected_action"] = [str(pk) for pk in Endpoint.objects.values_list("pk", flat=True)]
    assert client.post("/admin/routing/endpoint/", data).status_code == 302
    assert not Endpoint.objects.filter(enabled=True).exists()
    assert ConfigRevision.objects.count() == revisions + 1


def test_the_data_plane_token_page_issues_a_token_from_the_rendered_form(make_user: Callable[..., Any]) -> None:
    client = browser(make_user("alice", "admin"))
    page = client.get("/admin/dataplanes/dataplanetoken/add/")
    data = form_data_from(page.content)
    assert data["name"] == [""]
    refused = client.post("/admin/dataplanes/dataplanetoken/add/", data)
    assert b"This field is required" in refused.content and not DataPlaneToken.objects.exists()
    data["name"] = ["edge-1"]
    issued = client.post("/admin/dataplanes/dataplanetoken/add/", data)
    assert issued.status_code == 200 and b'id="dataplane-token"' in issued.content
    assert DataPlaneToken.objects.filter(name="edge-1").exists()


def test_the_breakers_page_buttons_post_what_they_render(make_user: Callable[..., Any]) -> None:
    _endpoint()
    client = browser(make_user("oscar", "operator"))
    act = "/admin/breakers/breakeroverride/accounts:v1/act/"
    page = client.get("/admin/breakers/breakeroverride/")
    with pytest.raises(AssertionError):
        form_data_from(page.content, action=act, press="lift")  # disabled: nothing to lift
    data = form_data_from(page.content, action=act, press="closed")
    data["minutes"] = ["5"]
    assert client.post(act, data).status_code == 302
    override = BreakerOverride.objects.get(endpoint__name="accounts")
    assert override.force == "closed" and override.until is not None
    page = client.get("/admin/breakers/breakeroverride/")
    assert client.post(act, form_data_from(page.content, action=act, press="lift")).status_code == 302
    assert BreakerOverride.objects.get(pk=override.pk).force == ""


def test_the_rollback_page_rolls_back_from_its_rendered_form(make_user: Callable[..., Any]) -> None:
    _endpoint()
    number = ConfigRevision.objects.order_by("-number").values_list("number", flat=True).first()
    _endpoint("orders")
    client = browser(make_user("oscar", "operator"))
    url = f"/admin/core/configrevision/{number}/rollback/"
    response = client.post(url, form_data_from(client.get(url).content))
    assert response.status_code == 302
    assert list(Endpoint.objects.values_list("name", flat=True)) == ["accounts"]


# --- read-only pages ---------------------------------------------------------------------------------


def _token() -> DataPlaneToken:
    return dataplane_token_issue(name="edge-1", actor=SYSTEM)[0]


def _node() -> DataPlaneNode:
    node_status_record(report=report("edge-1"))
    return DataPlaneNode.objects.get()


def test_adding_a_plugin_through_the_rendered_endpoint_form_is_one_revision(make_user: Callable[..., Any]) -> None:
    endpoint = plugins_endpoint()
    url = f"/admin/routing/endpoint/{endpoint.pk}/change/"
    revisions = ConfigRevision.objects.count()
    client = browser(make_user("oscar", "operator"))
    data = form_data_from(client.get(url).content)
    shown = json.loads(data["plugins"][0])
    assert shown == endpoint.document["plugins"]  # canonical, as stored
    shown["response_headers"]["set"]["Strict-Transport-Security"] = "max-age=31536000"
    data["plugins"] = [json.dumps(shown, indent=2).replace("\n", "\r\n")]
    del data["preserve_host"]  # unticked
    response = client.post(url, data)
    assert response.status_code == 302, _errors(client, response)
    endpoint.refresh_from_db()
    assert endpoint.document["plugins"]["response_headers"]["set"]["Strict-Transport-Security"] == "max-age=31536000"
    assert endpoint.preserve_host is False and "preserve_host" not in endpoint.document
    assert ConfigRevision.objects.count() == revisions + 1
    event = AuditEvent.objects.filter(action="endpoint.update").latest("pk")
    assert event.before["preserve_host"] is True and "preserve_host" not in event.after


def test_a_bad_plugin_in_the_endpoint_form_is_shown_naming_its_path(make_user: Callable[..., Any]) -> None:
    endpoint = plain_endpoint()
    url = f"/admin/routing/endpoint/{endpoint.pk}/change/"
    before, counts = endpoint_state(endpoint), history()
    client = browser(make_user("oscar", "operator"))
    data = form_data_from(client.get(url).content)
    data["plugins"] = ['{"request_headers": {"set": {"Connection": "close"}}}']
    response = client.post(url, data, follow=True)
    assert "plugins.request_headers.set.Connection" in response.content.decode()
    data["plugins"] = ['{"cors": ']
    response = client.post(url, data)
    assert response.status_code == 200 and "not valid JSON" in response.content.decode()
    assert endpoint_state(endpoint) == before and history() == counts


def test_global_plugins_are_edited_on_their_admin_page(make_user: Callable[..., Any]) -> None:
    client = browser(make_user("oscar", "operator"))
    assert client.get("/admin/snapshots/globalplugins/")["Location"] == "/admin/snapshots/globalplugins/1/change/"
    url = "/admin/snapshots/globalplugins/1/change/"
    data = form_data_from(client.get(url).content)
    assert data["plugins"] == [""]
    data["plugins"] = ['{"response_headers": {"set": {"X-Frame-Options": "DENY"}}}']
    response = client.post(url, data)
    assert response.status_code == 302, _errors(client, response)
    event = AuditEvent.objects.get(action="plugins.update")
    assert event.after == {"response_headers": {"set": {"X-Frame-Options": "DENY"}}}
    assert event.actor_label == "user:oscar"


def _health() -> TargetHealth:
    _endpoint()
    health_rows_ensure()
    return TargetHealth.objects.get()


def _revision() -> ConfigRevision:
    _endpoint()
    return ConfigRevision.objects.order_by("-number").first()  # type: ignore[return-value]


def _audit_event() -> AuditEvent:
    _endpoint()
    return AuditEvent.objects.order_by("-pk").first()  # type: ignore[return-value]


def _state(obj: Any) -> Any:
    obj.refresh_from_db()
    return {f.attname: getattr(obj, f.attname) for f in obj._meta.concrete_fields}


# The admin user holds every role's permissions, so these are read-only for everyone.
READ_ONLY = {
    "role": ("auth/group", lambda: Group.objects.get(name="operator")),
    "config revision": ("core/configrevision", _revision),
    "audit event": ("core/auditevent", _audit_event),
    "data-plane token": ("dataplanes/dataplanetoken", _token),
    "data-plane node": ("dataplanes/dataplanenode", _node),
    # Made and removed with its token only: the services refuse every other change to it.
    "data-plane service user": ("auth/user", lambda: _token().user),
    "target health": ("health/targethealth", _health),
}


@pytest.mark.parametrize(("path", "make"), READ_ONLY.values(), ids=READ_ONLY.keys())
def test_a_read_only_change_page_refuses_its_form_posted_back(
    path: str, make: Callable[[], Any], make_user: Callable[..., Any]
) -> None:
    obj = make()
    before, counts = _state(obj), history()
    client = browser(make_user("alice", "admin"))
    page = client.get(f"/admin/{path}/{obj.pk}/change/")
    assert page.status_code == 200
    assert b'name="_save"' not in page.content
    data = form_data_from(page.content)
    assert client.post(f"/admin/{path}/{obj.pk}/change/", data).status_code == 403
    if path != "dataplanes/dataplanetoken":  # deleting a token revokes it: tested with the token page
        confirm = {"csrfmiddlewaretoken": data["csrfmiddlewaretoken"], "post": "yes"}
        assert client.post(f"/admin/{path}/{obj.pk}/delete/", confirm).status_code == 403
    assert _state(obj) == before
    assert history() == counts


@pytest.mark.parametrize("case", EDITABLE.values(), ids=EDITABLE.keys())
def test_a_readonly_user_sees_editable_pages_read_only_and_cannot_post_them(
    case: Editable, make_user: Callable[..., Any]
) -> None:
    obj = case.make()
    before, counts = case.state(obj), history()
    reader = make_user("rita", "readonly")
    client = browser(reader)
    page = client.get(change_url(case, obj))
    if case.path == "auth/user":
        assert page.status_code == 403  # users are users:manage only, even to look at
        data = form_data_from(browser(make_user("alice", "admin")).get(change_url(case, obj)).content)
    else:
        assert page.status_code == 200
        assert b'name="_save"' not in page.content
        data = form_data_from(page.content)
        # Nothing to edit: the inline's bookkeeping inputs at most, no document field, no target's url.
        assert not {name for name in data if name != "csrfmiddlewaretoken" and not name.startswith("targets-")}
        assert not {name for name in data if name.endswith(("-url", "-weight", "-enabled"))}
        data = form_data_from(browser(make_user("alice", "admin")).get(change_url(case, obj)).content)
        data["csrfmiddlewaretoken"] = form_data_from(page.content)["csrfmiddlewaretoken"]
    data["description" if "description" in data else "email"] = ["changed by a reader"]
    assert client.post(change_url(case, obj), data).status_code == 403
    assert client.get(f"/admin/{case.path}/add/").status_code == 403
    assert case.state(obj) == before
    assert history() == counts


def test_every_admin_model_is_covered_here() -> None:
    """A model added to the admin must get its form round trip here too."""
    covered = {case.path for case in EDITABLE.values()} | {path for path, _ in READ_ONLY.values()}
    covered |= {"breakers/breakeroverride"}  # the breakers page: its buttons are tested above
    registered = {f"{model._meta.app_label}/{model._meta.model_name}" for model in admin.site._registry}
    assert registered == covered


def test_the_jwt_lists_are_not_in_the_admin_even_for_a_superuser(make_user: Callable[..., Any]) -> None:
    """Refresh tokens are credentials: listed in clear by simplejwt's pages, and its blacklist page would
    revoke or restore tokens past the services' audit log."""
    from rest_framework_simplejwt.tokens import RefreshToken

    root = make_user("root", is_staff=True, is_superuser=True)
    refresh = RefreshToken.for_user(root)
    client = browser(root)
    index = client.get("/admin/")
    assert index.status_code == 200 and b"token_blacklist" not in index.content
    for path in ("token_blacklist/outstandingtoken", "token_blacklist/blacklistedtoken"):
        assert client.get(f"/admin/{path}/").status_code == 404
    token = OutstandingToken.objects.get(jti=refresh["jti"])
    assert client.get(f"/admin/token_blacklist/outstandingtoken/{token.pk}/change/").status_code == 404
