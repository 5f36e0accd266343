"""Concurrent writers on one object, through the API against real PostgreSQL.

Each race fires two real requests at the same moment (threads behind a barrier, each with its own API
client and database connection) and is run for several rounds, because one round may happen to
serialise. The loser of a race on a vanished object answers 404, never a 500; the history holds
exactly what the winners did; the last-admin rule holds when two admins remove each other.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connection
from rest_framework.test import APIClient

from controlplane.breakers.services import breaker_policy_create
from controlplane.core.actors import Actor
from controlplane.core.models import AuditEvent, ConfigRevision
from controlplane.routing.services import endpoint_create
from tests.conftest import PASSWORD, client_for, endpoint_body

pytestmark = pytest.mark.django_db(transaction=True)
API = "/api/v1"
ACTOR = Actor.command("test")
ROUNDS = 10


@dataclass
class Answer:
    status: int
    body: dict[str, Any]


def _client(user: Any) -> APIClient:
    client = client_for(user)
    client.raise_request_exception = False  # an unhandled error is a 500 here, as a client would see it
    return client


def race(*requests: tuple[APIClient, str, str, dict[str, Any] | None]) -> list[Answer]:
    """Send every (client, method, url, body) at the same moment, one thread each; the answers in order."""
    barrier = threading.Barrier(len(requests))
    answers: list[Answer | None] = [None] * len(requests)
    errors: list[BaseException] = []

    def send(index: int, client: APIClient, method: str, url: str, body: dict[str, Any] | None) -> None:
        try:
            barrier.wait(timeout=30)
            response = getattr(client, method)(url, body, format="json")
            json_body = response.get("Content-Type", "").startswith("application/json")
            body = response.json() if json_body else {"text": response.content.decode()[:200]}
            answers[index] = Answer(response.status_code, body)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(i, *request)) for i, request in enumerate(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert all(answer is not None for answer in answers)
    return [answer for answer in answers if answer is not None]


def _user(username: str, *roles: str) -> Any:
    user = get_user_model().objects.create_user(username=username, password=PASSWORD, is_staff=bool(roles))
    user.groups.set(Group.objects.filter(name__in=roles))
    return user


def _revisions() -> int:
    return ConfigRevision.objects.count()


def _events(action: str, key: str) -> int:
    return AuditEvent.objects.filter(action=action, object_key=key).count()


def _assert_not_found(answer: Answer) -> None:
    assert answer.status == 404, answer
    assert answer.body["error"] == "not_found"
    assert answer.body["request_id"]


# --- endpoints ---------------------------------------------------------------------------------------


def test_two_deletes_of_one_endpoint_delete_it_once_and_the_loser_gets_404() -> None:
    first, second = _client(_user("alice", "admin")), _client(_user("oscar", "operator"))
    for round_ in range(ROUNDS):
        key = f"race{round_}:v1"
        endpoint_create(data=endpoint_body(f"race{round_}"), actor=ACTOR)
        revisions = _revisions()
        answers = race(
            (first, "delete", f"{API}/endpoints/{key}/", None), (second, "delete", f"{API}/endpoints/{key}/", None)
        )
        assert sorted(a.status for a in answers) == [204, 404], (round_, answers)
        _assert_not_found(next(a for a in answers if a.status == 404))
        assert _events("endpoint.delete", key) == 1
        assert _revisions() == revisions + 1


def test_a_delete_racing_a_patch_of_one_endpoint_never_fails_and_history_holds_what_was_done() -> None:
    deleter, patcher = _client(_user("alice", "admin")), _client(_user("oscar", "operator"))
    for round_ in range(ROUNDS):
        key = f"race{round_}:v1"
        endpoint_create(data=endpoint_body(f"race{round_}"), actor=ACTOR)
        revisions = _revisions()
        deleted, patched = race(
            (deleter, "delete", f"{API}/endpoints/{key}/", None),
            (patcher, "patch", f"{API}/endpoints/{key}/", {"description": f"round {round_}"}),
        )
        assert deleted.status == 204, (round_, deleted)
        assert patched.status in (200, 404), (round_, patched)
        if patched.status == 404:
            _assert_not_found(patched)
        assert _events("endpoint.delete", key) == 1
        assert _events("endpoint.update", key) == (patched.status == 200)
        assert _revisions() == revisions + 1 + (patched.status == 200)


def test_a_delete_racing_a_rename_never_deletes_the_renamed_endpoint() -> None:
    deleter, renamer = _client(_user("alice", "admin")), _client(_user("oscar", "operator"))
    for round_ in range(ROUNDS):
        name = f"race{round_}"
        endpoint_create(data=endpoint_body(name), actor=ACTOR)
        deleted, renamed = race(
            (deleter, "delete", f"{API}/endpoints/{name}:v1/", None),
            (renamer, "patch", f"{API}/endpoints/{name}:v1/", {"version": "v2"}),
        )
        assert sorted([deleted.status, renamed.status]) in ([200, 404], [204, 404]), (round_, deleted, renamed)
        # What the client asked to delete was name:v1; the endpoint now called name:v2 survives its rename.
        if renamed.status == 200:
            _assert_not_found(deleted)
            assert renamed.body["key"] == f"{name}:v2"
            assert deleter.get(f"{API}/endpoints/{name}:v2/").status_code == 200
        else:
            _assert_not_found(renamed)
            assert deleter.get(f"{API}/endpoints/{name}:v2/").status_code == 404
        assert _events("endpoint.delete", f"{name}:v1") == 1  # the rename also closes name:v1's history


def test_forcing_a_breaker_while_its_endpoint_is_deleted_never_fails() -> None:
    deleter, forcer = _client(_user("alice", "admin")), _client(_user("oscar", "operator"))
    for round_ in range(ROUNDS):
        key = f"race{round_}:v1"
        endpoint_create(data=endpoint_body(f"race{round_}"), actor=ACTOR)
        deleted, forced = race(
            (deleter, "delete", f"{API}/endpoints/{key}/", None),
            (forcer, "post", f"{API}/breakers/{key}/force/", {"state": "open"}),
        )
        assert deleted.status == 204, (round_, deleted)
        assert forced.status in (200, 404), (round_, forced)
        if forced.status == 404:
            _assert_not_found(forced)
        else:
            assert forced.body["override"]["force"] == "open"
        assert _events("breaker.force", key) == (forced.status == 200)


def _versions(name: str, *versions: str) -> None:
    for version in versions:
        endpoint_create(data=endpoint_body(name, version), actor=ACTOR)


def _defaults(name: str) -> list[str]:
    from controlplane.routing.models import Endpoint

    return list(Endpoint.objects.filter(name=name, is_default=True).values_list("version", flat=True))


def test_two_default_moves_on_one_name_at_once_leave_exactly_one_default() -> None:
    first, second = _client(_user("alice", "admin")), _client(_user("oscar", "operator"))
    for round_ in range(ROUNDS):
        name = f"race{round_}"
        _versions(name, "v1", "v2", "v3")
        answers = race(
            (first, "patch", f"{API}/endpoints/{name}:v2/", {"default": True}),
            (second, "patch", f"{API}/endpoints/{name}:v3/", {"default": True}),
        )
        assert [a.status for a in answers] == [200, 200], (round_, answers)
        assert len(_defaults(name)) == 1 and _defaults(name)[0] in ("v2", "v3")


def test_deleting_the_default_while_another_version_takes_it_leaves_exactly_one_default() -> None:
    deleter, mover = _client(_user("alice", "admin")), _client(_user("oscar", "operator"))
    for round_ in range(ROUNDS):
        name = f"race{round_}"
        _versions(name, "v1", "v2", "v3")
        deleted, moved = race(
            (deleter, "delete", f"{API}/endpoints/{name}:v1/", None),
            (mover, "patch", f"{API}/endpoints/{name}:v2/", {"default": True}),
        )
        assert (deleted.status, moved.status) == (204, 200), (round_, deleted, moved)
        # Whichever ran first, v2 was asked to be the default last or v1's deletion promoted v3 and the
        # move then took it: either way one default, and v2 holds it.
        assert _defaults(name) == ["v2"]


def test_two_renames_to_one_key_at_once_make_one_endpoint_and_the_loser_gets_409() -> None:
    first, second = _client(_user("alice", "admin")), _client(_user("oscar", "operator"))
    for round_ in range(ROUNDS):
        name = f"race{round_}"
        _versions(name, "v1", "v2")
        answers = race(
            (first, "patch", f"{API}/endpoints/{name}:v1/", {"version": "v9"}),
            (second, "patch", f"{API}/endpoints/{name}:v2/", {"version": "v9"}),
        )
        assert sorted(a.status for a in answers) == [200, 409], (round_, answers)
        assert next(a for a in answers if a.status == 409).body["error"] == "conflict"
        assert _events("endpoint.create", f"{name}:v9") == 1


# --- breaker policies --------------------------------------------------------------------------------


def _policy(name: str) -> None:
    breaker_policy_create(data={"name": name, "failure_threshold": 3}, actor=ACTOR)


def test_two_deletes_of_one_breaker_policy_delete_it_once_and_the_loser_gets_404() -> None:
    first, second = _client(_user("alice", "admin")), _client(_user("oscar", "operator"))
    for round_ in range(ROUNDS):
        name = f"race{round_}"
        _policy(name)
        revisions = _revisions()
        url = f"{API}/breaker-policies/{name}/"
        answers = race((first, "delete", url, None), (second, "delete", url, None))
        assert sorted(a.status for a in answers) == [204, 404], (round_, answers)
        _assert_not_found(next(a for a in answers if a.status == 404))
        assert _events("breaker_policy.delete", name) == 1
        assert _revisions() == revisions + 1


def test_a_delete_racing_a_patch_of_one_breaker_policy_never_fails() -> None:
    deleter, patcher = _client(_user("alice", "admin")), _client(_user("oscar", "operator"))
    for round_ in range(ROUNDS):
        name = f"race{round_}"
        _policy(name)
        revisions = _revisions()
        url = f"{API}/breaker-policies/{name}/"
        deleted, patched = race((deleter, "delete", url, None), (patcher, "patch", url, {"failure_threshold": 7}))
        assert deleted.status == 204, (round_, deleted)
        assert patched.status in (200, 404), (round_, patched)
        if patched.status == 404:
            _assert_not_found(patched)
        assert _events("breaker_policy.delete", name) == 1
        assert _events("breaker_policy.update", name) == (patched.status == 200)
        assert _revisions() == revisions + 1 + (patched.status == 200)


# --- users -------------------------------------------------------------------------------------------


def test_two_deletes_of_one_user_delete_it_once_and_the_loser_gets_404() -> None:
    first, second = _client(_user("alice", "admin")), _client(_user("adam", "admin"))
    for round_ in range(ROUNDS):
        username = f"victim{round_}"
        _user(username, "operator")
        url = f"{API}/users/{username}/"
        answers = race((first, "delete", url, None), (second, "delete", url, None))
        assert sorted(a.status for a in answers) == [204, 404], (round_, answers)
        _assert_not_found(next(a for a in answers if a.status == 404))
        assert _events("user.delete", username) == 1


def test_a_delete_racing_a_patch_of_one_user_never_fails() -> None:
    deleter, patcher = _client(_user("alice", "admin")), _client(_user("adam", "admin"))
    for round_ in range(ROUNDS):
        username = f"victim{round_}"
        _user(username, "operator")
        url = f"{API}/users/{username}/"
        deleted, patched = race((deleter, "delete", url, None), (patcher, "patch", url, {"email": "v@example.test"}))
        assert deleted.status == 204, (round_, deleted)
        assert patched.status in (200, 404), (round_, patched)
        if patched.status == 404:
            _assert_not_found(patched)
        assert _events("user.delete", username) == 1
        assert _events("user.update", username) == (patched.status == 200)


def test_two_creates_of_one_username_make_one_user_and_the_loser_gets_409() -> None:
    first, second = _client(_user("alice", "admin")), _client(_user("adam", "admin"))
    for round_ in range(ROUNDS):
        body = {"username": f"new{round_}", "password": PASSWORD, "roles": ["readonly"]}
        answers = race((first, "post", f"{API}/users/", body), (second, "post", f"{API}/users/", body))
        assert sorted(a.status for a in answers) == [201, 409], (round_, answers)
        assert next(a for a in answers if a.status == 409).body["error"] == "conflict"
        assert _events("user.create", f"new{round_}") == 1


def _active_admins() -> list[str]:
    return sorted(
        get_user_model().objects.filter(is_active=True, groups__name="admin").values_list("username", flat=True)
    )


def _two_lone_admins(round_: int) -> tuple[Any, Any]:
    """Two admins and nobody else holding the role (earlier rounds' survivors step down)."""
    Group.objects.get(name="admin").user_set.clear()
    return _user(f"ann{round_}", "admin"), _user(f"bob{round_}", "admin")


def _assert_one_won(answers: list[Answer], round_: int) -> None:
    """Exactly one of two mutual removals went through; the other was refused with a clear error.

    The loser's answer depends on how far its request got before the winner committed: already past
    the permission check, the last-admin rule refuses it (409 `conflict`); arriving after, it is no
    longer an admin (403), or, deactivated or deleted, no longer a user at all (401)."""
    statuses = sorted(a.status for a in answers)
    winners = [a for a in answers if a.status in (200, 204)]
    losers = [a for a in answers if a.status not in (200, 204)]
    assert len(winners) == 1 and len(losers) == 1, (round_, answers)
    loser = losers[0]
    assert (loser.status, loser.body.get("error")) in {
        (409, "conflict"),
        (403, "permission_denied"),
        (401, "authentication_failed"),
    }, (round_, statuses, loser)
    if loser.status == 409:
        assert "last active admin" in loser.body["message"]
    assert len(_active_admins()) == 1, (round_, answers)


def test_two_admins_demoting_each_other_at_once_leave_one_admin() -> None:
    for round_ in range(ROUNDS):
        ann, bob = _two_lone_admins(round_)
        answers = race(
            (_client(ann), "patch", f"{API}/users/{bob.username}/", {"roles": ["operator"]}),
            (_client(bob), "patch", f"{API}/users/{ann.username}/", {"roles": ["operator"]}),
        )
        _assert_one_won(answers, round_)


def test_two_admins_deactivating_each_other_at_once_leave_one_admin() -> None:
    for round_ in range(ROUNDS):
        ann, bob = _two_lone_admins(round_)
        answers = race(
            (_client(ann), "patch", f"{API}/users/{bob.username}/", {"is_active": False}),
            (_client(bob), "patch", f"{API}/users/{ann.username}/", {"is_active": False}),
        )
        _assert_one_won(answers, round_)


def test_two_admins_deleting_each_other_at_once_leave_one_admin() -> None:
    for round_ in range(ROUNDS):
        ann, bob = _two_lone_admins(round_)
        answers = race(
            (_client(ann), "delete", f"{API}/users/{bob.username}/", None),
            (_client(bob), "delete", f"{API}/users/{ann.username}/", None),
        )
        _assert_one_won(answers, round_)
        assert AuditEvent.objects.filter(action="user.delete", object_key__in=[ann.username, bob.username]).count() == 1


# --- the document's global plugins ------------------------------------------------------------------


def test_concurrent_patches_of_global_plugins_all_apply_and_each_is_audited() -> None:
    """Two PATCHes naming different plugins at once: both answer 200 (never a 500), neither change is
    lost, and each one that changed the plugins has its own `plugins.update` event and revision."""
    alice, bob = _client(_user("alice", "operator")), _client(_user("bob", "operator"))
    frame = {"set": {"X-Frame-Options": "DENY"}}
    for round_ in range(ROUNDS):
        events, revisions = _events("plugins.update", "plugins"), _revisions()
        answers = race(
            (alice, "patch", f"{API}/plugins/", {"cors": {"max_age": 100 + round_}}),
            (bob, "patch", f"{API}/plugins/", {"response_headers": {**frame, "remove": [f"X-R{round_}"]}}),
        )
        assert [a.status for a in answers] == [200, 200], answers
        final = alice.get(f"{API}/plugins/").json()
        assert final["cors"]["max_age"] == 100 + round_
        assert final["response_headers"]["remove"] == [f"X-R{round_}"]
        assert _events("plugins.update", "plugins") == events + 2
        assert _revisions() == revisions + 2
