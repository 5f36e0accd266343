"""Consumers in the admin, driven as a browser does: GET a page, post back what it rendered (CSRF
enforced). Credentials are listed by label or username, never by value; a key is shown once."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from configdoc.consumers import CONSUMER_FIELDS, hash_key, password_matches
from controlplane.consumers.models import Consumer
from controlplane.consumers.services import consumer_create, consumer_key_create
from controlplane.core.actors import Actor
from controlplane.core.models import AuditEvent, ConfigRevision
from tests.controlplane.admin_forms import form_data_from

pytestmark = pytest.mark.django_db
ACTOR = Actor.system("test")
LIST = "/admin/consumers/consumer/"


def browser(user: Any) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def errors(client: Client, response: Any) -> str:
    html = (client.get(response["Location"]) if response.status_code == 302 else response).content.decode()
    said = [html[i : i + 600] for m in ('class="messagelist"', 'class="errorlist') if (i := html.find(m)) >= 0]
    return "\n".join(said) or html[:3000]


def rich() -> Consumer:
    consumer = consumer_create(
        data={
            "username": "mobile-app",
            "custom_id": "crm 1042",
            "groups": ["partners", "beta"],
            "jwt": [{"issuer": "mobile", "algorithm": "HS256", "secret": {"env": "MOBILE_JWT_SECRET"}}],
            "basic_auth": [{"username": "mob", "password": "pw-mobile-1"}],
        },
        actor=ACTOR,
    )
    consumer, _, _ = consumer_key_create(consumer=consumer, label="2026-q4", actor=ACTOR)
    return consumer


def test_every_consumer_field_of_the_schema_is_on_the_add_form(make_user: Callable[..., Any]) -> None:
    page = browser(make_user("alice", "admin")).get(f"{LIST}add/")
    assert page.status_code == 200
    html = page.content.decode()
    for name in CONSUMER_FIELDS:
        if name != "key_auth":  # keys are issued on the keys page, never typed
            assert f'name="{name}"' in html, name


def test_adding_a_consumer_through_the_rendered_form(make_user: Callable[..., Any]) -> None:
    client = browser(make_user("oscar", "operator"))
    data = form_data_from(client.get(f"{LIST}add/").content)
    data.update(
        username=["web"],
        groups=["partners, b"],
        basic_auth=['[{"username": "webu", "password": "pw-web-123"}]'],
        _save=["Save"],
    )
    response = client.post(f"{LIST}add/", data)
    assert response.status_code == 302 and response["Location"] == LIST, errors(client, response)
    consumer = Consumer.objects.get()
    assert consumer.document["groups"] == ["b", "partners"]
    assert password_matches("pw-web-123", consumer.document["basic_auth"][0]["password_hash"])
    assert AuditEvent.objects.filter(action="consumer.create").count() == 1


def test_saving_the_change_page_as_rendered_changes_nothing(make_user: Callable[..., Any]) -> None:
    consumer = rich()
    before, revisions = dict(consumer.document), ConfigRevision.objects.count()
    client = browser(make_user("alice", "admin"))
    page = client.get(f"{LIST}{consumer.pk}/change/")
    assert page.status_code == 200
    data = form_data_from(page.content)
    assert data["groups"] == ["beta, partners"] and data["custom_id"] == ["crm 1042"]
    response = client.post(f"{LIST}{consumer.pk}/change/", data)
    assert response.status_code == 302 and response["Location"] == LIST, errors(client, response)
    assert Consumer.objects.get().document == before
    assert ConfigRevision.objects.count() == revisions


def test_an_edit_through_the_rendered_form_is_one_revision(make_user: Callable[..., Any]) -> None:
    consumer = rich()
    revisions = ConfigRevision.objects.count()
    client = browser(make_user("oscar", "operator"))
    data = form_data_from(client.get(f"{LIST}{consumer.pk}/change/").content)
    data["groups"] = ["gold"]
    response = client.post(f"{LIST}{consumer.pk}/change/", data)
    assert response.status_code == 302, errors(client, response)
    document = Consumer.objects.get().document
    assert document["groups"] == ["gold"] and document["key_auth"][0]["label"] == "2026-q4"
    assert password_matches("pw-mobile-1", document["basic_auth"][0]["password_hash"])
    assert ConfigRevision.objects.count() == revisions + 1


def test_a_refused_edit_names_the_field(make_user: Callable[..., Any]) -> None:
    consumer = rich()
    client = browser(make_user("oscar", "operator"))
    data = form_data_from(client.get(f"{LIST}{consumer.pk}/change/").content)
    data["jwt"] = ['[{"issuer": "x", "algorithm": "HS256", "secret": "clear-secret-value"}]']
    response = client.post(f"{LIST}{consumer.pk}/change/", data)
    said = errors(client, response)
    assert "jwt[0].secret" in said and "clear-secret-value" not in said
    data["jwt"] = ["[not json"]
    assert "not valid JSON" in errors(client, client.post(f"{LIST}{consumer.pk}/change/", data))


def test_no_page_shows_a_key_hash_or_password_hash(make_user: Callable[..., Any]) -> None:
    consumer = rich()
    secrets = [consumer.document["key_auth"][0]["key_sha256"], consumer.document["basic_auth"][0]["password_hash"]]
    for role in ("admin", "readonly"):
        client = browser(make_user(f"{role}-user", role))
        for url in (LIST, f"{LIST}{consumer.pk}/change/", f"{LIST}{consumer.pk}/keys/", "/admin/core/auditevent/"):
            page = client.get(url)
            if role == "readonly" and "auditevent" in url:
                assert page.status_code == 403
                continue
            assert page.status_code == 200, (role, url)
            html = page.content.decode()
            assert not any(secret in html for secret in secrets) and "pbkdf2" not in html, (role, url)
        assert "2026-q4" in client.get(f"{LIST}{consumer.pk}/keys/").content.decode()
    for event in AuditEvent.objects.all():
        page = browser(make_user(f"a{event.pk}", "admin")).get(f"/admin/core/auditevent/{event.pk}/change/")
        assert not any(secret in page.content.decode() for secret in secrets)


def test_issuing_a_key_shows_it_once_with_a_copy_button(make_user: Callable[..., Any]) -> None:
    consumer = rich()
    client = browser(make_user("oscar", "operator"))
    url = f"{LIST}{consumer.pk}/keys/"
    data = form_data_from(client.get(url).content, form_id="issue-key", press="Issue a key")
    data["label"] = ["web-1"]
    page = client.post(url, data)
    assert page.status_code == 200 and "no-store" in page["Cache-Control"]
    html = page.content.decode()
    key = re.search(r'id="new-key" readonly size="60" value="([^"]+)"', html)
    assert key is not None and 'id="copy-key"' in html
    stored = {c["label"]: c["key_sha256"] for c in Consumer.objects.get().document["key_auth"]}
    assert stored["web-1"] == hash_key(key.group(1))
    again = client.get(url).content.decode()
    assert key.group(1) not in again and "web-1" in again


def test_deleting_a_key_from_the_keys_page(make_user: Callable[..., Any]) -> None:
    consumer = rich()
    client = browser(make_user("oscar", "operator"))
    url = f"{LIST}{consumer.pk}/keys/"
    data = form_data_from(client.get(url).content, action=f"{url}delete/")
    assert data["label"] == ["2026-q4"]
    response = client.post(f"{url}delete/", data)
    assert response.status_code == 302
    assert "key_auth" not in Consumer.objects.get().document


def test_a_readonly_user_sees_the_keys_page_without_forms_and_cannot_post(make_user: Callable[..., Any]) -> None:
    consumer = rich()
    client = browser(make_user("rita", "readonly"))
    url = f"{LIST}{consumer.pk}/keys/"
    page = client.get(url)
    assert page.status_code == 200 and 'id="issue-key"' not in page.content.decode()
    # CSRF aside, the role is refused: a Client without CSRF checks posts as a forged form would.
    forger = Client()
    forger.force_login(make_user("rita2", "readonly"))
    assert forger.post(url, {"label": "x"}).status_code == 403
    assert forger.post(f"{url}delete/", {"label": "2026-q4"}).status_code == 403
    assert len(Consumer.objects.get().document["key_auth"]) == 1


def test_a_post_without_the_csrf_token_is_refused(make_user: Callable[..., Any]) -> None:
    consumer = rich()
    client = browser(make_user("oscar", "operator"))
    assert client.post(f"{LIST}{consumer.pk}/keys/", {"label": "x"}).status_code == 403
    assert len(Consumer.objects.get().document["key_auth"]) == 1


def test_deleting_a_consumer_through_the_confirmation_page(make_user: Callable[..., Any]) -> None:
    consumer = rich()
    client = browser(make_user("oscar", "operator"))
    url = f"{LIST}{consumer.pk}/delete/"
    data = form_data_from(client.get(url).content)
    response = client.post(url, data)
    assert response.status_code == 302, errors(client, response)
    assert not Consumer.objects.exists()
    assert AuditEvent.objects.filter(action="consumer.delete").count() == 1
