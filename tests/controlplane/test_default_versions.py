"""Default-version rules (ARCHITECTURE §2)."""

from __future__ import annotations

import pytest

from controlplane.core.actors import Actor
from controlplane.core.errors import ConfigValidationError
from controlplane.routing.models import Endpoint, RouteKey
from controlplane.routing.services import endpoint_create, endpoint_delete, endpoint_update
from tests.conftest import endpoint_body

ACTOR = Actor.command("test")
pytestmark = pytest.mark.django_db


def defaults() -> dict[str, bool]:
    return dict((e.key, e.is_default) for e in Endpoint.objects.order_by("name", "version"))


def test_the_first_version_of_a_name_is_its_default_even_when_it_says_otherwise() -> None:
    endpoint_create(data=endpoint_body(default=False), actor=ACTOR)
    endpoint_create(data=endpoint_body(version="v2"), actor=ACTOR)
    assert defaults() == {"users:v1": True, "users:v2": False}
    assert Endpoint.objects.get(version="v1").document["default"] is True


def test_default_true_on_another_version_moves_the_default_and_its_route() -> None:
    endpoint_create(data=endpoint_body(), actor=ACTOR)
    endpoint_create(data=endpoint_body(version="v2", default=True), actor=ACTOR)
    assert defaults() == {"users:v1": False, "users:v2": True}
    assert RouteKey.objects.get(key="/users").endpoint.key == "users:v2"
    assert Endpoint.objects.get(version="v1").document["default"] is False


def test_an_update_setting_default_moves_it() -> None:
    endpoint_create(data=endpoint_body(), actor=ACTOR)
    v2 = endpoint_create(data=endpoint_body(version="v2"), actor=ACTOR)
    endpoint_update(endpoint=v2, data={"default": True}, partial=True, actor=ACTOR)
    assert defaults() == {"users:v1": False, "users:v2": True}


def test_deleting_the_default_promotes_the_highest_remaining_version_numerically() -> None:
    v1 = endpoint_create(data=endpoint_body(), actor=ACTOR)
    for version in ("v2", "v10", "v9.1"):
        endpoint_create(data=endpoint_body(version=version), actor=ACTOR)
    endpoint_delete(endpoint=v1, actor=ACTOR)
    assert defaults() == {"users:v10": True, "users:v2": False, "users:v9.1": False}
    assert RouteKey.objects.get(key="/users").endpoint.key == "users:v10"


def test_clearing_the_default_without_naming_another_is_refused() -> None:
    v1 = endpoint_create(data=endpoint_body(), actor=ACTOR)
    endpoint_create(data=endpoint_body(version="v2"), actor=ACTOR)
    with pytest.raises(ConfigValidationError) as caught:
        endpoint_update(endpoint=v1, data={"default": False}, partial=True, actor=ACTOR)
    assert list(caught.value.fields()) == ["default"]
    assert defaults() == {"users:v1": True, "users:v2": False}


def test_a_put_without_default_keeps_the_default() -> None:
    v1 = endpoint_create(data=endpoint_body(), actor=ACTOR)
    endpoint_create(data=endpoint_body(version="v2"), actor=ACTOR)
    endpoint_update(endpoint=v1, data=endpoint_body(timeout=10), actor=ACTOR)
    assert defaults() == {"users:v1": True, "users:v2": False}


def test_renaming_the_default_promotes_a_successor_and_keeps_the_targets() -> None:
    v1 = endpoint_create(data=endpoint_body(), actor=ACTOR)
    endpoint_create(data=endpoint_body(version="v2"), actor=ACTOR)
    target_id = v1.targets.get().pk
    renamed = endpoint_update(endpoint=v1, data=endpoint_body(name="people"), actor=ACTOR)
    assert defaults() == {"people:v1": True, "users:v2": True}
    assert renamed.pk == v1.pk and renamed.targets.get().pk == target_id
    assert sorted(RouteKey.objects.values_list("key", flat=True)) == ["/people", "/users", "/v1/people", "/v2/users"]


def test_the_database_refuses_two_defaults_for_one_name() -> None:
    from django.db import IntegrityError, transaction

    endpoint_create(data=endpoint_body(), actor=ACTOR)
    endpoint_create(data=endpoint_body(version="v2"), actor=ACTOR)
    with pytest.raises(IntegrityError), transaction.atomic():
        Endpoint.objects.filter(version="v2").update(is_default=True)
