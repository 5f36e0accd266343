"""Breaker overrides and the fleet's breakers (ARCHITECTURE §2, §4, §6): force / lift / reset through the
services and the API, what the snapshot carries, the per-node view from the reports, the transition history.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from controlplane.breakers import services
from controlplane.breakers.models import BreakerOverride, BreakerTransition
from controlplane.core.actors import Actor
from controlplane.core.models import AuditEvent, ConfigRevision, StateCounter
from controlplane.dataplanes.models import DataPlaneNode
from controlplane.dataplanes.services import node_status_record
from controlplane.dataplanes.snapshot import load_snapshot, read_state
from controlplane.routing.models import Endpoint
from controlplane.routing.services import endpoint_create
from tests.conftest import endpoint_body

pytestmark = pytest.mark.django_db
API = "/api/v1/breakers"
T0 = time.time() - 3600  # an hour ago: well within the history's retention
ACTOR = Actor.command("test")


@pytest.fixture
def users() -> Endpoint:
    return endpoint_create(data=endpoint_body("users"), actor=ACTOR)


@pytest.fixture
def orders() -> Endpoint:
    return endpoint_create(data=endpoint_body("orders"), actor=ACTOR)


def state_seq() -> int:
    return StateCounter.objects.get(pk=1).state_seq


def report(node_id: str, breakers: dict[str, Any] | None = None, boot_id: str = "boot-1") -> dict[str, Any]:
    return {
        "node_id": node_id,
        "boot_id": boot_id,
        "hostname": "host",
        "version": "1.0",
        "revision": 1,
        "config_sha256": None,
        "state_seq": 0,
        "result": "applied",
        "error": None,
        "breakers": breakers or {},
        "counters": {},
    }


def transition(source: str, target: str, at: float) -> dict[str, Any]:
    return {"from": source, "to": target, "at": at}


# --- services ------------------------------------------------------------------------------------


def test_forcing_is_audited_bumps_state_seq_and_makes_no_revision(users: Endpoint) -> None:
    revisions, seq = ConfigRevision.objects.count(), state_seq()
    services.breaker_force(endpoint=users, state="open", seconds=None, actor=ACTOR, request_id="req-1")
    assert state_seq() == seq + 1
    assert ConfigRevision.objects.count() == revisions
    event = AuditEvent.objects.get(action="breaker.force")
    assert (event.object_type, event.object_key, event.actor_label, event.request_id) == (
        "breaker",
        "users:v1",
        "command:test",
        "req-1",
    )
    assert event.before == {"force": None, "until": None, "reset_generation": 0}
    assert event.after == {"force": "open", "until": None, "reset_generation": 0}


def test_lifting_a_force_is_audited_as_a_lift_with_the_old_force_before(users: Endpoint) -> None:
    services.breaker_force(endpoint=users, state="closed", seconds=None, actor=ACTOR)
    seq = state_seq()
    services.breaker_force(endpoint=users, state=None, seconds=None, actor=ACTOR)
    assert state_seq() == seq + 1
    event = AuditEvent.objects.get(action="breaker.lift")
    assert event.before["force"] == "closed" and event.after["force"] is None
    assert read_state()["breakers"] == {}


def test_each_reset_grows_the_generation_by_one_keeps_the_force_and_is_audited(users: Endpoint) -> None:
    services.breaker_force(endpoint=users, state="open", seconds=None, actor=ACTOR)
    revisions, seq = ConfigRevision.objects.count(), state_seq()
    services.breaker_reset(endpoint=users, actor=ACTOR)
    services.breaker_reset(endpoint=users, actor=ACTOR)
    assert state_seq() == seq + 2 and ConfigRevision.objects.count() == revisions
    override = BreakerOverride.objects.get(endpoint=users)
    assert (override.reset_generation, override.force) == (2, "open")
    generations = [
        (e.before["reset_generation"], e.after["reset_generation"])
        for e in AuditEvent.objects.filter(action="breaker.reset").order_by("id")
    ]
    assert generations == [(0, 1), (1, 2)]


@pytest.mark.parametrize(
    ("state", "seconds", "field"),
    [("ajar", None, "state"), ("open", 0, "seconds"), ("open", 10**9, "seconds"), (None, 60, "seconds")],
)
def test_a_bad_force_is_refused_naming_the_field_and_changes_nothing(
    users: Endpoint, state: Any, seconds: Any, field: str
) -> None:
    from controlplane.core.errors import ConfigValidationError

    seq = state_seq()
    with pytest.raises(ConfigValidationError) as refused:
        services.breaker_force(endpoint=users, state=state, seconds=seconds, actor=ACTOR)
    assert field in refused.value.fields()
    assert state_seq() == seq and not AuditEvent.objects.filter(object_type="breaker").exists()


# --- the snapshot's state.breakers -----------------------------------------------------------------------


def test_the_snapshot_carries_forces_with_their_expiry_and_resets_and_nothing_for_untouched_endpoints(
    users: Endpoint, orders: Endpoint
) -> None:
    endpoint_create(data=endpoint_body("quiet"), actor=ACTOR)
    before = timezone.now().timestamp()
    services.breaker_force(endpoint=users, state="open", seconds=300, actor=ACTOR)
    services.breaker_reset(endpoint=orders, actor=ACTOR)
    breakers = json.loads(load_snapshot().body)["state"]["breakers"]
    assert set(breakers) == {"users:v1", "orders:v1"}
    assert breakers["orders:v1"] == {"force": None, "until": None, "reset_generation": 1}
    forced = breakers["users:v1"]
    assert forced["force"] == "open" and forced["reset_generation"] == 0
    assert isinstance(forced["until"], int) and before + 300 <= forced["until"] <= before + 302


def test_an_expired_force_leaves_the_snapshot_and_shows_as_expired(users: Endpoint, operator_client: APIClient) -> None:
    services.breaker_force(endpoint=users, state="closed", seconds=60, actor=ACTOR)
    assert read_state()["breakers"]["users:v1"]["force"] == "closed"
    BreakerOverride.objects.filter(endpoint=users).update(until=timezone.now() - timedelta(seconds=1))
    assert read_state()["breakers"] == {}
    override = operator_client.get(f"{API}/users:v1/").json()["override"]
    assert override["force"] is None and override["expired"] is True


def test_an_expired_force_still_carries_the_reset_generation(users: Endpoint) -> None:
    services.breaker_reset(endpoint=users, actor=ACTOR)
    services.breaker_force(endpoint=users, state="open", seconds=60, actor=ACTOR)
    BreakerOverride.objects.filter(endpoint=users).update(until=timezone.now() - timedelta(seconds=1))
    assert read_state()["breakers"] == {"users:v1": {"force": None, "until": None, "reset_generation": 1}}


def test_deleting_an_endpoint_deletes_its_override(users: Endpoint) -> None:
    from controlplane.routing.services import endpoint_delete

    services.breaker_force(endpoint=users, state="open", seconds=None, actor=ACTOR)
    endpoint_delete(endpoint=users, actor=ACTOR)
    assert not BreakerOverride.objects.exists() and read_state()["breakers"] == {}


# --- transitions from the reports ------------------------------------------------------------------


def test_reported_transitions_are_stored_once_however_often_the_node_repeats_them(users: Endpoint) -> None:
    entry = {"state": "open", "forced": None, "reset_generation": 0, "transitions": [transition("closed", "open", T0)]}
    node_status_record(report=report("edge-1", {"users:v1": entry}))
    node_status_record(report=report("edge-1", {"users:v1": entry}))
    entry["transitions"].append(transition("open", "half_open", T0 + 30))
    node_status_record(report=report("edge-1", {"users:v1": entry}))
    stored = list(BreakerTransition.objects.order_by("at").values_list("node_id", "from_state", "to_state"))
    assert stored == [("edge-1", "closed", "open"), ("edge-1", "open", "half_open")]


def test_the_same_moment_on_another_boot_or_node_is_another_transition(users: Endpoint) -> None:
    entry = {"state": "open", "forced": None, "transitions": [transition("closed", "open", T0)]}
    node_status_record(report=report("edge-1", {"users:v1": entry}))
    node_status_record(report=report("edge-1", {"users:v1": entry}, boot_id="boot-2"))
    node_status_record(report=report("edge-2", {"users:v1": entry}))
    assert BreakerTransition.objects.count() == 3


def test_a_report_without_transitions_or_with_bad_ones_or_unknown_endpoints_stores_none(users: Endpoint) -> None:
    breakers = {
        "users:v1": {"state": "open", "forced": None},
        "gone:v1": {"state": "open", "transitions": [transition("closed", "open", T0)]},
        "orders:v1": {"state": "open", "transitions": [transition("closed", "ajar", T0), {"at": "x"}, "junk"]},
    }
    node = node_status_record(report=report("edge-1", breakers))
    assert node.breakers == breakers
    assert not BreakerTransition.objects.exists()


def test_the_history_keeps_at_most_the_bound_per_endpoint_and_drops_old_ones(
    users: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services, "TRANSITIONS_KEPT", 3)
    now = timezone.now().timestamp()
    old = now - 40 * 24 * 3600
    moves = [transition("closed", "open", old)] + [transition("closed", "open", now - 100 + i) for i in range(5)]
    node_status_record(report=report("edge-1", {"users:v1": {"state": "open", "transitions": moves}}))
    kept = sorted(t.at.timestamp() for t in BreakerTransition.objects.all())
    assert kept == pytest.approx([now - 98, now - 97, now - 96])


# --- the API -------------------------------------------------------------------------------------------


def live(node_id: str, breakers: dict[str, Any]) -> DataPlaneNode:
    return node_status_record(report=report(node_id, breakers))


def test_without_live_nodes_every_breaker_is_unknown(users: Endpoint, operator_client: APIClient) -> None:
    live("edge-old", {"users:v1": {"state": "open", "forced": None}})
    DataPlaneNode.objects.update(last_seen=timezone.now() - timedelta(hours=1))
    rows = operator_client.get(f"{API}/").json()["results"]
    assert [(r["key"], r["aggregate"], r["nodes"]) for r in rows] == [("users:v1", "unknown", [])]


def test_the_list_shows_each_live_nodes_state_and_the_aggregate(
    users: Endpoint, orders: Endpoint, readonly_client: APIClient
) -> None:
    live("edge-1", {"users:v1": {"state": "open", "forced": "open", "reset_generation": 2}})
    live("edge-2", {"users:v1": {"state": "open", "forced": None}, "orders:v1": {"state": "half_open"}})
    response = readonly_client.get(f"{API}/")
    assert response.status_code == 200
    rows = {r["key"]: r for r in response.json()["results"]}
    assert rows["users:v1"]["aggregate"] == "open"
    assert [(n["node_id"], n["state"], n["forced"]) for n in rows["users:v1"]["nodes"]] == [
        ("edge-1", "open", "open"),
        ("edge-2", "open", None),
    ]
    # orders:v1 is absent from edge-1's report: closed there.
    assert rows["orders:v1"]["aggregate"] == "mixed"
    assert [n["state"] for n in rows["orders:v1"]["nodes"]] == ["closed", "half_open"]
    assert rows["orders:v1"]["override"] == {
        "force": None,
        "until": None,
        "expired": False,
        "reset_generation": 0,
        "updated_by": "",
        "updated_at": None,
    }


def test_the_state_filter_finds_endpoints_open_anywhere(
    users: Endpoint, orders: Endpoint, operator_client: APIClient
) -> None:
    endpoint_create(data=endpoint_body("quiet"), actor=ACTOR)
    live("edge-1", {"users:v1": {"state": "open"}})
    live("edge-2", {"users:v1": {"state": "open"}, "orders:v1": {"state": "open"}})
    keys = [r["key"] for r in operator_client.get(f"{API}/?state=open").json()["results"]]
    assert keys == ["orders:v1", "users:v1"]
    assert [r["key"] for r in operator_client.get(f"{API}/?state=mixed").json()["results"]] == ["orders:v1"]
    bad = operator_client.get(f"{API}/?state=ajar")
    assert bad.status_code == 400 and bad.json()["error"] == "validation_error" and "state" in bad.json()["fields"]


def test_the_detail_adds_the_recent_transitions_newest_first(users: Endpoint, operator_client: APIClient) -> None:
    moves = [transition("closed", "open", T0), transition("open", "half_open", T0 + 30)]
    live("edge-1", {"users:v1": {"state": "half_open", "forced": None, "transitions": moves}})
    body = operator_client.get(f"{API}/users:v1/").json()
    assert body["aggregate"] == "half_open"
    assert [(t["node_id"], t["from"], t["to"]) for t in body["transitions"]] == [
        ("edge-1", "open", "half_open"),
        ("edge-1", "closed", "open"),
    ]


def test_forcing_through_the_api_answers_the_override_and_records_the_user(
    users: Endpoint, make_user: Callable[..., Any]
) -> None:
    from tests.conftest import client_for

    client = client_for(make_user("olga", "operator"))
    response = client.post(f"{API}/users:v1/force/", {"state": "open", "seconds": 120}, format="json")
    assert response.status_code == 200, response.content
    override = response.json()["override"]
    assert override["force"] == "open" and override["until"] and override["updated_by"] == "user:olga"
    assert AuditEvent.objects.get(action="breaker.force").actor_label == "user:olga"
    lifted = client.post(f"{API}/users:v1/force/", {"state": None}, format="json").json()["override"]
    assert lifted["force"] is None and lifted["until"] is None and lifted["expired"] is False


def test_resetting_through_the_api_grows_the_generation(users: Endpoint, operator_client: APIClient) -> None:
    assert operator_client.post(f"{API}/users:v1/reset/").json()["override"]["reset_generation"] == 1
    assert operator_client.post(f"{API}/users:v1/reset/").json()["override"]["reset_generation"] == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [({"state": "ajar"}, "state"), ({}, "state"), ({"state": "open", "seconds": 0}, "seconds"),
     ({"state": "open", "seconds": "soon"}, "seconds"), ({"state": None, "seconds": 5}, "seconds")],
)  # fmt: skip
def test_a_bad_force_body_is_400_naming_the_field(
    users: Endpoint, operator_client: APIClient, body: dict[str, Any], field: str
) -> None:
    response = operator_client.post(f"{API}/users:v1/force/", body, format="json")
    assert response.status_code == 400
    assert response.json()["error"] == "validation_error" and field in response.json()["fields"]
    assert not BreakerOverride.objects.exists()


@pytest.mark.parametrize("path", ["nope:v1/", "nope:v1/force/", "nope:v1/reset/"])
def test_an_unknown_endpoint_is_404(operator_client: APIClient, path: str) -> None:
    url = f"{API}/{path}"
    response = operator_client.get(url) if path.endswith(":v1/") else operator_client.post(url, {"state": "open"})
    assert response.status_code == 404 and response.json()["error"] == "not_found"


def test_readonly_users_cannot_force_or_reset(users: Endpoint, readonly_client: APIClient) -> None:
    assert readonly_client.post(f"{API}/users:v1/force/", {"state": "open"}, format="json").status_code == 403
    assert readonly_client.post(f"{API}/users:v1/reset/").status_code == 403
    assert not BreakerOverride.objects.exists()


def test_the_retention_task_drops_transitions_older_than_30_days(users: Endpoint) -> None:
    from controlplane.breakers.tasks import purge_breaker_transitions

    now = timezone.now()
    for days in (31, 29):
        BreakerTransition.objects.create(
            endpoint=users,
            node_id="edge-1",
            boot_id="b",
            from_state="closed",
            to_state="open",
            at=now - timedelta(days=days),
        )
    assert purge_breaker_transitions() == 1
    assert [round((now - t.at).days) for t in BreakerTransition.objects.all()] == [29]


def test_beat_runs_the_transition_retention_task() -> None:
    from config.celery import app

    app.loader.import_default_modules()
    tasks = {entry["task"] for entry in app.conf.beat_schedule.values()}
    assert "controlplane.breakers.tasks.purge_breaker_transitions" in tasks
    assert "controlplane.breakers.tasks.purge_breaker_transitions" in app.tasks
