"""Concurrent writers on consumers: each race ends in one clean winner and clean 4xx for the others,
never a 500, and the database holds what one serial order of the writes would leave."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group

from configdoc.consumers import hash_key
from controlplane.consumers.models import Consumer, ConsumerIdentity
from controlplane.core.models import ConfigRevision
from tests.controlplane.test_write_races import _client, _user, race

pytestmark = pytest.mark.django_db(transaction=True)
API = "/api/v1"
ROUNDS = 5


@pytest.fixture
def clients() -> list[Any]:
    assert Group.objects.filter(name="operator").exists()
    return [_client(_user(f"op{n}", "operator")) for n in range(2)]


def test_two_concurrent_creates_of_one_username_make_one_consumer(clients: list[Any]) -> None:
    for n in range(ROUNDS):
        body = {"username": f"c{n}"}
        answers = race((clients[0], "post", f"{API}/consumers/", body), (clients[1], "post", f"{API}/consumers/", body))
        assert sorted(a.status for a in answers) == [201, 409], answers
    assert Consumer.objects.count() == ROUNDS


def test_two_concurrent_creates_claiming_one_basic_username_make_one_holder(clients: list[Any]) -> None:
    for n in range(ROUNDS):
        bodies = [
            {"username": f"a{n}", "basic_auth": [{"username": f"shared{n}", "password": "pw-123456"}]},
            {"username": f"b{n}", "basic_auth": [{"username": f"shared{n}", "password": "pw-654321"}]},
        ]
        requests = [(client, "post", f"{API}/consumers/", body) for client, body in zip(clients, bodies, strict=True)]
        answers = race(*requests)
        statuses = sorted(a.status for a in answers)
        assert statuses == [201, 400], answers
        loser = next(a for a in answers if a.status == 400)
        assert "basic_auth[0].username" in loser.body["fields"]
    assert ConsumerIdentity.objects.filter(kind="basic_username").count() == ROUNDS


def test_two_concurrent_deletes_make_one_204_and_one_404(clients: list[Any]) -> None:
    for n in range(ROUNDS):
        clients[0].post(f"{API}/consumers/", {"username": f"d{n}"}, format="json")
        url = f"{API}/consumers/d{n}/"
        answers = race((clients[0], "delete", url, None), (clients[1], "delete", url, None))
        assert sorted(a.status for a in answers) == [204, 404], answers
    assert not Consumer.objects.exists()


def test_two_concurrent_keys_with_one_label_make_one_key(clients: list[Any]) -> None:
    clients[0].post(f"{API}/consumers/", {"username": "k"}, format="json")
    for n in range(ROUNDS):
        url, body = f"{API}/consumers/k/keys/", {"label": f"l{n}"}
        answers = race((clients[0], "post", url, body), (clients[1], "post", url, body))
        assert sorted(a.status for a in answers) == [201, 409], answers
        winner = next(a for a in answers if a.status == 201)
        assert hash_key(winner.body["key"]) in {c["key_sha256"] for c in Consumer.objects.get().document["key_auth"]}
    assert len(Consumer.objects.get().document["key_auth"]) == ROUNDS


def test_two_concurrent_key_deletes_make_one_204_and_one_404(clients: list[Any]) -> None:
    clients[0].post(f"{API}/consumers/", {"username": "k"}, format="json")
    for n in range(ROUNDS):
        clients[0].post(f"{API}/consumers/k/keys/", {"label": f"l{n}"}, format="json")
        url = f"{API}/consumers/k/keys/l{n}/"
        answers = race((clients[0], "delete", url, None), (clients[1], "delete", url, None))
        assert sorted(a.status for a in answers) == [204, 404], answers
    assert "key_auth" not in Consumer.objects.get().document


def test_a_key_issued_while_its_consumer_is_deleted_never_outlives_it(clients: list[Any]) -> None:
    for n in range(ROUNDS):
        clients[0].post(f"{API}/consumers/", {"username": f"x{n}"}, format="json")
        answers = race(
            (clients[0], "post", f"{API}/consumers/x{n}/keys/", {}),
            (clients[1], "delete", f"{API}/consumers/x{n}/", None),
        )
        assert answers[1].status == 204 and answers[0].status in (201, 404), answers
    assert not Consumer.objects.exists() and not ConsumerIdentity.objects.exists()
    numbers = list(ConfigRevision.objects.order_by("number").values_list("number", flat=True))
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
