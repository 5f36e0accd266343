"""Brute-force protection on every password check: the token endpoint, the admin login, the password change.

Driven through the real interfaces: the API with DRF's client, the admin login page with Django's test
client posting back the form it rendered. Client addresses are set as the connection's peer
(REMOTE_ADDR); time is moved with time-machine, never slept.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from io import StringIO
from typing import Any

import pytest
import time_machine
from django.core.management import call_command
from django.test import Client
from rest_framework.test import APIClient

from tests.conftest import PASSWORD, client_for

pytestmark = pytest.mark.django_db
API = "/api/v1"
TOKEN = f"{API}/auth/token/"
# The documented defaults (docs/settings.md), set here so the tests do not hang on the environment's.
LIMIT, ADDRESS_LIMIT, COOLOFF = 5, 20, 900
ATTACKER, OWNER, BYSTANDER = "198.51.100.66", "203.0.113.10", "203.0.113.20"
NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _limits(settings: Any) -> None:
    settings.AXES_FAILURE_LIMIT = LIMIT
    settings.GATEWAY_LOGIN_ADDRESS_FAILURE_LIMIT = ADDRESS_LIMIT
    settings.AXES_COOLOFF_TIME = timedelta(seconds=COOLOFF)
    settings.GATEWAY_TRUSTED_PROXIES = []


def token(username: str, password: str, address: str = ATTACKER, **headers: str) -> Any:
    return APIClient().post(
        TOKEN, {"username": username, "password": password}, format="json", REMOTE_ADDR=address, **headers
    )


def fail(username: str, times: int, address: str = ATTACKER, **headers: str) -> list[int]:
    return [token(username, f"wrong-guess-{i}", address, **headers).status_code for i in range(times)]


def assert_locked_out(response: Any) -> None:
    assert response.status_code == 429, response.content
    body = response.json()
    assert body["error"] == "too_many_attempts"
    assert "try again" in body["message"]
    assert body["request_id"] == response["X-Request-ID"]
    assert "access" not in body
    assert response["Retry-After"] == str(COOLOFF)


def test_wrong_passwords_on_the_token_endpoint_end_in_429_with_retry_after(make_user: Callable[..., Any]) -> None:
    make_user("alice", "admin")
    assert fail("alice", LIMIT - 1) == [401] * (LIMIT - 1)
    assert_locked_out(token("alice", "wrong-once-more"))


def test_the_right_password_is_refused_while_locked_out(make_user: Callable[..., Any]) -> None:
    make_user("alice", "admin")
    fail("alice", LIMIT)
    assert_locked_out(token("alice", PASSWORD))


def test_after_the_cool_off_the_right_password_works(make_user: Callable[..., Any]) -> None:
    make_user("alice", "admin")
    with time_machine.travel(NOW, tick=False) as clock:
        fail("alice", LIMIT)
        clock.shift(timedelta(seconds=COOLOFF - 1))
        assert_locked_out(token("alice", PASSWORD))  # and that refused attempt starts the cool-off again
        clock.shift(timedelta(seconds=COOLOFF - 1))
        assert_locked_out(token("alice", PASSWORD))
        clock.shift(timedelta(seconds=COOLOFF + 1))
        response = token("alice", PASSWORD)
    assert response.status_code == 200
    assert set(response.json()) == {"access", "refresh"}


def test_a_lockout_from_one_address_leaves_the_user_and_others_elsewhere_alone(make_user: Callable[..., Any]) -> None:
    make_user("alice", "admin")
    make_user("rita", "readonly")
    fail("alice", LIMIT + 3)
    assert_locked_out(token("alice", PASSWORD))
    assert token("alice", PASSWORD, OWNER).status_code == 200
    assert token("rita", PASSWORD, BYSTANDER).status_code == 200


def test_a_success_clears_the_pairs_failures(make_user: Callable[..., Any]) -> None:
    make_user("alice", "admin")
    fail("alice", LIMIT - 1)
    assert token("alice", PASSWORD).status_code == 200
    assert fail("alice", LIMIT - 1) == [401] * (LIMIT - 1)


def test_logging_in_to_your_own_account_does_not_clear_guesses_at_another(make_user: Callable[..., Any]) -> None:
    make_user("alice", "admin")
    make_user("mallory", "readonly")
    fail("alice", LIMIT - 1)
    assert token("mallory", PASSWORD).status_code == 200
    assert_locked_out(token("alice", "one-more-guess"))


def test_spraying_many_usernames_from_one_address_locks_the_address(make_user: Callable[..., Any]) -> None:
    make_user("rita", "readonly")
    statuses = [token(f"user{i}", "Winter2026!") for i in range(ADDRESS_LIMIT)]
    assert [r.status_code for r in statuses[:-1]] == [401] * (ADDRESS_LIMIT - 1)
    assert_locked_out(statuses[-1])
    assert_locked_out(token("rita", PASSWORD))
    assert token("rita", PASSWORD, BYSTANDER).status_code == 200


def test_x_forwarded_for_neither_evades_nor_frames(make_user: Callable[..., Any]) -> None:
    make_user("alice", "admin")
    # A new forwarded address on every guess: still the same peer, still locked.
    statuses = [token("alice", f"guess-{i}", HTTP_X_FORWARDED_FOR=f"192.0.2.{i}").status_code for i in range(LIMIT)]
    assert statuses == [401] * (LIMIT - 1) + [429]
    # The attacker names the owner's address: the owner is not the one locked out.
    fail("alice", LIMIT, address=BYSTANDER, HTTP_X_FORWARDED_FOR=OWNER)
    assert token("alice", PASSWORD, OWNER).status_code == 200


@pytest.mark.parametrize("forwarded", ["203.0.113.7", "10.9.9.9, 203.0.113.7", "not-an-address, 203.0.113.7"])
def test_behind_a_trusted_proxy_the_client_is_the_address_the_proxy_appended(
    make_user: Callable[..., Any], settings: Any, forwarded: str
) -> None:
    settings.GATEWAY_TRUSTED_PROXIES = ["10.0.0.0/24"]
    make_user("alice", "admin")
    proxy = "10.0.0.5"
    fail("alice", LIMIT, address=proxy, HTTP_X_FORWARDED_FOR=forwarded)
    assert_locked_out(token("alice", PASSWORD, proxy, HTTP_X_FORWARDED_FOR="203.0.113.7"))
    # Another client through the same proxy (or two trusted proxies) is someone else.
    assert token("alice", PASSWORD, proxy, HTTP_X_FORWARDED_FOR="203.0.113.8, 10.0.0.6").status_code == 200
    # The proxy's own address is never what is locked, and a client that is not the proxy is not believed.
    assert token("alice", PASSWORD, "203.0.113.9", HTTP_X_FORWARDED_FOR="203.0.113.7").status_code == 200


def test_an_overlong_username_is_counted_not_a_500(make_user: Callable[..., Any]) -> None:
    make_user("alice", "admin")
    assert fail("x" * 5000, LIMIT - 1) == [401] * (LIMIT - 1)
    assert_locked_out(token("x" * 5000, "again"))


def test_the_password_change_api_is_behind_the_same_lockout(make_user: Callable[..., Any]) -> None:
    client = client_for(make_user("oscar", "operator"))
    statuses = []
    for i in range(LIMIT):
        body = {"old_password": f"guess-{i}", "new_password": "a-brand-new-long-password-77"}
        statuses.append(client.post(f"{API}/auth/password/", body, format="json", REMOTE_ADDR=ATTACKER))
    assert [r.status_code for r in statuses[:-1]] == [400] * (LIMIT - 1)
    assert statuses[0].json()["fields"] == {"old_password": ["is not your current password"]}
    assert_locked_out(statuses[-1])
    body = {"old_password": PASSWORD, "new_password": "a-brand-new-long-password-77"}
    assert_locked_out(client.post(f"{API}/auth/password/", body, format="json", REMOTE_ADDR=ATTACKER))
    assert token("oscar", PASSWORD, OWNER).status_code == 200  # unchanged


class _Form(HTMLParser):
    """The fields of the page's login form, as a browser would post them back."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: dict[str, str] = {}
        self.action = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "form" and found.get("id") == "login-form":
            self.action = found.get("action") or ""
        if tag == "input" and found.get("name"):
            self.fields[found["name"] or ""] = found.get("value") or ""


def admin_login(client: Client, username: str, password: str, address: str = ATTACKER) -> Any:
    page = client.get("/admin/login/?next=/admin/", REMOTE_ADDR=address)
    assert page.status_code == 200
    form = _Form()
    form.feed(page.content.decode())
    assert {"username", "password", "csrfmiddlewaretoken"} <= set(form.fields)
    data = {**form.fields, "username": username, "password": password}
    return client.post(form.action or "/admin/login/?next=/admin/", data, REMOTE_ADDR=address)


def test_the_admin_login_shows_a_429_page_and_refuses_the_right_password(make_user: Callable[..., Any]) -> None:
    make_user("alice", "admin", is_staff=True)
    browser = Client(enforce_csrf_checks=True)
    with time_machine.travel(NOW, tick=False) as clock:
        statuses = [admin_login(browser, "alice", f"guess-{i}").status_code for i in range(LIMIT - 1)]
        assert statuses == [200] * (LIMIT - 1)  # the form again, with its error
        locked = admin_login(browser, "alice", "guess-again")
        assert locked.status_code == 429
        assert locked["Retry-After"] == str(COOLOFF)
        assert "Too many failed logins" in locked.content.decode()
        refused = admin_login(browser, "alice", PASSWORD)
        assert refused.status_code == 429
        assert "_auth_user_id" not in browser.session
        # The same user from another address, and after the cool-off from this one, gets in.
        assert admin_login(Client(enforce_csrf_checks=True), "alice", PASSWORD, OWNER).status_code == 302
        clock.shift(timedelta(seconds=COOLOFF + 1))
        assert admin_login(browser, "alice", PASSWORD).status_code == 302
    assert browser.get("/admin/", REMOTE_ADDR=ATTACKER).status_code == 200


def test_failures_on_the_api_and_the_admin_count_together(make_user: Callable[..., Any]) -> None:
    make_user("alice", "admin", is_staff=True)
    fail("alice", LIMIT - 1)
    assert admin_login(Client(enforce_csrf_checks=True), "alice", "guess").status_code == 429
    assert_locked_out(token("alice", PASSWORD))


def test_an_operator_lifts_a_lock_with_the_documented_commands(make_user: Callable[..., Any]) -> None:
    make_user("alice", "admin")
    fail("alice", LIMIT)
    call_command("axes_reset_username", "alice", stdout=StringIO())
    assert token("alice", PASSWORD).status_code == 200
    fail("alice", LIMIT)
    call_command("axes_reset_ip", ATTACKER, stdout=StringIO())
    assert token("alice", PASSWORD).status_code == 200


def test_the_admins_password_change_page_counts_old_password_guesses(make_user: Callable[..., Any]) -> None:
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(make_user("alice", "admin", is_staff=True))

    def change(old: str) -> Any:
        page = browser.get("/admin/password_change/", REMOTE_ADDR=ATTACKER)
        form = _Form()
        form.feed(page.content.decode())
        new = "a-brand-new-long-password-77"
        data = {**form.fields, "old_password": old, "new_password1": new, "new_password2": new}
        return browser.post("/admin/password_change/", data, REMOTE_ADDR=ATTACKER)

    assert [change(f"guess-{i}").status_code for i in range(LIMIT - 1)] == [200] * (LIMIT - 1)
    locked = change("guess-again")
    assert locked.status_code == 429 and locked["Retry-After"] == str(COOLOFF)
    assert change(PASSWORD).status_code == 429
    assert token("alice", PASSWORD, OWNER).status_code == 200  # the password did not change
