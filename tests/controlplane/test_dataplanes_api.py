"""The nodes API (`dataplanes/`), revisions' rollout counts, `revisions/{n}/wait/` in process, the purge
task, the nodes in the admin, and the control plane's gateway_cp_* gauges.

The wait is an ASGI app in front of Django (controlplane/dataplanes/rollout.py); here it is driven through
httpx.ASGITransport inside `async_to_sync`, so its thread-sensitive database calls see the test's
transaction. tests/e2e/test_rollout_wait.py waits against a real uvicorn server and real nodes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from config.celery import app as celery_app
from controlplane.core.actors import Actor
from controlplane.core.models import ConfigRevision
from controlplane.dataplanes.models import DataPlaneNode
from controlplane.dataplanes.rollout import REJECTION_GRACE_SECONDS, RolloutWaitApp
from controlplane.dataplanes.services import dataplane_token_issue
from controlplane.dataplanes.sync import STATUS_PATH, DataPlaneSyncApp
from controlplane.dataplanes.tasks import purge_silent_nodes
from controlplane.routing.services import endpoint_create
from tests.conftest import PASSWORD, endpoint_body

pytestmark = pytest.mark.django_db
ACTOR = Actor.command("test")
API = "/api/v1"
OPEN: dict[str, Any] = {"state": "open", "forced": None, "reset_generation": 0, "transitions": []}


def make_node(node_id: str, *, ago: float = 0.0, **fields: Any) -> DataPlaneNode:
    values: dict[str, Any] = {
        "boot_id": "boot-1",
        "hostname": f"{node_id}.local",
        "version": "0.1.0",
        "revision": 1,
        "config_sha256": "a" * 64,
        "state_seq": 0,
        "result": "applied",
        "error": "",
        "last_seen": timezone.now() - timedelta(seconds=ago),
    }
    values.update(fields)
    return DataPlaneNode.objects.create(node_id=node_id, **values)


def new_revision(name: str) -> ConfigRevision:
    """A new config revision (an endpoint created), created a while ago so reports can come after its grace."""
    endpoint_create(data=endpoint_body(name), actor=ACTOR)
    revision = ConfigRevision.objects.order_by("-number").first()
    assert revision is not None
    ConfigRevision.objects.filter(pk=revision.pk).update(created_at=timezone.now() - timedelta(seconds=30))
    revision.refresh_from_db()
    return revision


# --- dataplanes/ ----------------------------------------------------------------------------------


def test_the_node_list_shows_each_nodes_revision_lag_state_and_open_breakers(readonly_client: APIClient) -> None:
    first = new_revision("users")
    latest = new_revision("orders")
    make_node("edge-1", revision=latest.number, breakers={"users:v1": OPEN, "orders:v1": {**OPEN, "state": "closed"}})
    make_node("edge-2", ago=300, revision=first.number, result="rejected", error="bad regex")

    response = readonly_client.get(f"{API}/dataplanes/")

    assert response.status_code == 200
    rows = {row["node_id"]: row for row in response.json()["results"]}
    assert rows["edge-1"]["state"] == "live" and rows["edge-1"]["lag"] == 0 and rows["edge-1"]["open_breakers"] == 1
    assert rows["edge-2"]["state"] == "stale" and rows["edge-2"]["lag"] == latest.number - first.number
    assert rows["edge-2"]["result"] == "rejected" and rows["edge-2"]["error"] == "bad regex"
    assert set(rows["edge-1"]) >= {"boot_id", "hostname", "version", "config_sha256", "state_seq", "last_seen"}


def test_a_node_running_no_revision_has_no_lag(readonly_client: APIClient) -> None:
    make_node("seeded", revision=None, config_sha256="")

    assert readonly_client.get(f"{API}/dataplanes/seeded/").json()["lag"] is None


@pytest.mark.parametrize(("state", "expected"), [("live", ["fresh"]), ("stale", ["silent"]), ("gone", ["away"])])
def test_the_node_list_filters_by_state(readonly_client: APIClient, state: str, expected: list[str]) -> None:
    make_node("fresh", ago=5)
    make_node("silent", ago=61)
    make_node("away", ago=601)

    response = readonly_client.get(f"{API}/dataplanes/?state={state}")

    assert [row["node_id"] for row in response.json()["results"]] == expected


def test_an_unknown_state_filter_is_a_validation_error_naming_the_field(readonly_client: APIClient) -> None:
    response = readonly_client.get(f"{API}/dataplanes/?state=dead")

    assert response.status_code == 400
    assert response.json()["error"] == "validation_error" and "state" in response.json()["fields"]


def test_a_node_is_found_by_its_node_id_and_an_unknown_one_is_404(readonly_client: APIClient) -> None:
    make_node("edge-1-w0")

    assert readonly_client.get(f"{API}/dataplanes/edge-1-w0/").json()["node_id"] == "edge-1-w0"
    missing = readonly_client.get(f"{API}/dataplanes/edge-9/")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"


def test_nodes_cannot_be_written_through_the_api(admin_client: APIClient) -> None:
    make_node("edge-1")

    assert admin_client.delete(f"{API}/dataplanes/edge-1/").status_code == 405
    assert DataPlaneNode.objects.filter(node_id="edge-1").exists()


# --- the fleet's status with silent nodes; retiring a node ------------------------------------------------


def summary(client: APIClient) -> dict[str, Any]:
    response = client.get(f"{API}/stats/summary/")
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def test_a_node_silent_past_the_grace_is_gone_and_no_longer_degrades_the_system(
    readonly_client: APIClient, settings: Any
) -> None:
    settings.GATEWAY_NODE_GONE_SECONDS = 600
    make_node("edge-1")
    make_node("stopped", ago=300)

    during_grace = summary(readonly_client)
    assert during_grace["status"] == "degraded" and during_grace["reasons"] == ["1 stale node(s)"]
    assert during_grace["nodes"] == {"live": 1, "stale": 1, "gone": 0}

    DataPlaneNode.objects.filter(node_id="stopped").update(last_seen=timezone.now() - timedelta(seconds=601))

    after_grace = summary(readonly_client)
    assert after_grace["status"] == "healthy" and after_grace["reasons"] == []
    assert after_grace["nodes"] == {"live": 1, "stale": 0, "gone": 1}
    row = readonly_client.get(f"{API}/dataplanes/stopped/").json()
    assert row["state"] == "gone"  # still listed until purged or retired


def test_with_every_node_gone_the_system_is_still_unhealthy_until_they_are_retired(
    readonly_client: APIClient, operator_client: APIClient
) -> None:
    make_node("edge-1", ago=3600)

    assert summary(readonly_client)["status"] == "unhealthy"
    assert operator_client.post(f"{API}/dataplanes/edge-1/retire/").status_code == 204
    assert summary(readonly_client)["status"] == "healthy"


def test_retiring_a_node_forgets_it_at_once_audited_and_it_reappears_when_it_reports_again(
    readonly_client: APIClient, operator_client: APIClient
) -> None:
    from controlplane.core.models import AuditEvent

    _, secret = dataplane_token_issue(name="edge-token", actor=ACTOR)
    assert post_report(secret, node_id="edge-1") == 204
    assert post_report(secret, node_id="stopped") == 204
    DataPlaneNode.objects.filter(node_id="stopped").update(last_seen=timezone.now() - timedelta(seconds=120))
    assert summary(readonly_client)["status"] == "degraded"

    response = operator_client.post(f"{API}/dataplanes/stopped/retire/", HTTP_X_REQUEST_ID="retire-1")

    assert response.status_code == 204
    assert [row["node_id"] for row in readonly_client.get(f"{API}/dataplanes/").json()["results"]] == ["edge-1"]
    assert readonly_client.get(f"{API}/dataplanes/stopped/").status_code == 404
    assert summary(readonly_client)["status"] == "healthy"
    event = AuditEvent.objects.get(action="dataplane_node.retire")
    assert (event.object_type, event.object_key, event.request_id) == ("dataplane_node", "stopped", "retire-1")
    assert event.actor_label == "user:oscar" and event.before["token_name"] == "edge-token"  # conftest's operator
    audit = operator_client.get(f"{API}/audit/", {"object": "stopped"}).json()["results"]
    assert [row["action"] for row in audit] == ["dataplane_node.retire"]

    assert post_report(secret, node_id="stopped") == 204
    back = readonly_client.get(f"{API}/dataplanes/stopped/").json()
    assert back["state"] == "live" and back["token_name"] == "edge-token"


def test_retiring_needs_config_write_and_an_existing_node(
    readonly_client: APIClient, operator_client: APIClient
) -> None:
    make_node("edge-1", ago=3600)

    refused = readonly_client.post(f"{API}/dataplanes/edge-1/retire/")
    assert refused.status_code == 403 and refused.json()["error"] == "permission_denied"
    assert DataPlaneNode.objects.filter(node_id="edge-1").exists()
    missing = operator_client.post(f"{API}/dataplanes/edge-9/retire/")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert operator_client.get(f"{API}/dataplanes/edge-1/retire/").status_code == 405


def test_the_node_shows_the_name_of_the_token_it_reports_with(readonly_client: APIClient) -> None:
    _, first = dataplane_token_issue(name="region-a", actor=ACTOR)
    _, second = dataplane_token_issue(name="region-b", actor=ACTOR)
    assert post_report(first, node_id="edge-1") == 204
    assert post_report(second, node_id="edge-2") == 204

    rows = {row["node_id"]: row for row in readonly_client.get(f"{API}/dataplanes/").json()["results"]}
    assert rows["edge-1"]["token_name"] == "region-a" and rows["edge-2"]["token_name"] == "region-b"
    only_b = readonly_client.get(f"{API}/dataplanes/?token_name=region-b").json()["results"]
    assert [row["node_id"] for row in only_b] == ["edge-2"]

    # A node moved to another token shows the new one from its next report.
    assert post_report(second, node_id="edge-1") == 204
    assert readonly_client.get(f"{API}/dataplanes/edge-1/").json()["token_name"] == "region-b"


# --- revisions: rollout counts --------------------------------------------------------------------------


def test_each_revision_counts_the_live_nodes_that_applied_and_rejected_it(readonly_client: APIClient) -> None:
    older = new_revision("users")
    latest = new_revision("orders")
    make_node("runs-latest", revision=latest.number)
    make_node("runs-older-rejected", revision=older.number, result="rejected", error="boom")
    make_node("stale-latest", ago=600, revision=latest.number)

    rows = {row["number"]: row["nodes"] for row in readonly_client.get(f"{API}/revisions/").json()["results"]}

    assert rows[latest.number] == {"applied": 1, "rejected": 1, "live": 2}
    assert rows[older.number] == {"applied": 2, "rejected": 0, "live": 2}
    assert readonly_client.get(f"{API}/revisions/{latest.number}/").json()["nodes"] == rows[latest.number]


def test_a_node_on_a_later_revision_applied_the_earlier_ones_even_after_rejecting_a_newer_one(
    readonly_client: APIClient,
) -> None:
    first = new_revision("users")
    second = new_revision("orders")
    new_revision("billing")
    make_node("edge-1", revision=second.number, result="rejected", error="bad")

    rows = {row["number"]: row["nodes"] for row in readonly_client.get(f"{API}/revisions/").json()["results"]}

    assert rows[first.number] == rows[second.number] == {"applied": 1, "rejected": 0, "live": 1}
    assert rows[second.number + 1] == {"applied": 0, "rejected": 1, "live": 1}


def test_a_rejection_reported_just_after_a_revision_was_made_is_not_counted_against_it(
    readonly_client: APIClient,
) -> None:
    # The node still reports the refusal of an earlier revision; it has not fetched the new one yet.
    endpoint_create(data=endpoint_body("users"), actor=ACTOR)
    latest = ConfigRevision.objects.order_by("-number").first()
    assert latest is not None
    make_node("edge-1", revision=latest.number - 1, result="rejected", error="old refusal")
    DataPlaneNode.objects.update(last_seen=latest.created_at + timedelta(seconds=REJECTION_GRACE_SECONDS / 2))

    nodes = readonly_client.get(f"{API}/revisions/{latest.number}/").json()["nodes"]

    assert nodes == {"applied": 0, "rejected": 0, "live": 1}


# --- revisions/{n}/wait/, in process ------------------------------------------------------------------------


async def _django_stub(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 299, "headers": []})
    await send({"type": "http.response.body", "body": b"django"})


def with_wait_app(body: Callable[[httpx.AsyncClient], Awaitable[Any]]) -> Any:
    async def run() -> Any:
        transport = httpx.ASGITransport(app=RolloutWaitApp(_django_stub, poll_interval=0.02))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30) as client:
            return await body(client)

    return async_to_sync(run)()


def token_of(user: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {RefreshToken.for_user(user).access_token}"}


def wait(path: str, headers: dict[str, str], method: str = "GET") -> httpx.Response:
    return with_wait_app(lambda client: client.request(method, f"{API}/{path}", headers=headers))  # type: ignore[no-any-return]


@pytest.fixture
def reader(make_user: Callable[..., Any]) -> dict[str, str]:
    return token_of(make_user("rita", "readonly"))


def test_wait_answers_at_once_when_the_share_of_live_nodes_already_applied(reader: dict[str, str]) -> None:
    latest = new_revision("users")
    make_node("a", revision=latest.number)
    make_node("b", revision=latest.number - 1)
    make_node("gone", ago=600, revision=latest.number - 1)

    response = wait(f"revisions/{latest.number}/wait/?share=0.5&timeout=1", reader)

    assert response.status_code == 200
    assert response.json() == {
        "revision": latest.number,
        "share": 0.5,
        "applied": 1,
        "rejected": 0,
        "live": 2,
        "done": True,
    }


def test_wait_answers_once_the_last_node_applies_while_it_waits(reader: dict[str, str]) -> None:
    latest = new_revision("users")
    make_node("a", revision=latest.number)
    make_node("b", revision=latest.number - 1)

    async def body(client: httpx.AsyncClient) -> httpx.Response:
        import asyncio

        waiting = asyncio.ensure_future(client.get(f"{API}/revisions/{latest.number}/wait/?timeout=30", headers=reader))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        await sync_to_async(DataPlaneNode.objects.filter(node_id="b").update)(revision=latest.number)
        return await waiting

    response = with_wait_app(body)

    assert response.status_code == 200 and response.json()["applied"] == 2 and response.json()["done"] is True


def test_wait_fails_at_once_when_a_live_node_rejected_the_revision(reader: dict[str, str]) -> None:
    latest = new_revision("users")
    make_node("a", revision=latest.number)
    make_node("b", revision=latest.number - 1, result="rejected", error="route regex does not compile")

    response = wait(f"revisions/{latest.number}/wait/?timeout=60", reader)

    assert response.status_code == 409
    body = response.json()
    assert body["error"] == "rollout_failed" and body["request_id"]
    assert (body["applied"], body["rejected"], body["live"]) == (1, 1, 2)
    assert body["nodes"] == [{"node_id": "b", "error": "route regex does not compile"}]


def test_wait_gives_up_after_the_timeout_with_the_counts(reader: dict[str, str]) -> None:
    latest = new_revision("users")
    make_node("a", revision=latest.number - 1)

    response = wait(f"revisions/{latest.number}/wait/?timeout=1", reader)

    assert response.status_code == 409
    assert response.json()["error"] == "rollout_incomplete"
    assert (response.json()["applied"], response.json()["live"]) == (0, 1)


def test_wait_without_live_nodes_answers_no_live_nodes_at_once(reader: dict[str, str]) -> None:
    latest = new_revision("users")
    make_node("gone", ago=600, revision=latest.number)

    response = wait(f"revisions/{latest.number}/wait/?timeout=60", reader)

    assert response.status_code == 409 and response.json()["error"] == "no_live_nodes"
    assert response.json()["live"] == 0


def test_a_new_wait_sees_reports_made_before_it_even_when_another_wait_read_the_nodes_just_before(
    reader: dict[str, str],
) -> None:
    latest = new_revision("users")
    make_node("a", revision=latest.number - 1, result="rejected", error="bad")
    path = f"{API}/revisions/{latest.number}/wait/?timeout=1"

    async def body(client: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response]:
        first = await client.get(path, headers=reader)
        await sync_to_async(DataPlaneNode.objects.filter(node_id="a").update)(revision=latest.number, result="applied")
        return first, await client.get(path, headers=reader)

    async def run() -> tuple[httpx.Response, httpx.Response]:
        # A long tick: waiters share reads within it, but a new request must not get one older than itself.
        transport = httpx.ASGITransport(app=RolloutWaitApp(_django_stub, poll_interval=30))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30) as client:
            return await body(client)

    first, second = async_to_sync(run)()

    assert first.status_code == 409 and first.json()["error"] == "rollout_failed"
    assert second.status_code == 200 and second.json()["applied"] == 1


def test_wait_for_an_unknown_revision_is_404(reader: dict[str, str]) -> None:
    response = wait("revisions/999/wait/", reader)

    assert response.status_code == 404 and response.json()["error"] == "not_found"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("share=0", "share"),
        ("share=1.5", "share"),
        ("share=half", "share"),
        ("share=nan", "share"),
        ("timeout=0.5", "timeout"),
        ("timeout=61", "timeout"),
        ("timeout=soon", "timeout"),
    ],
)
def test_wait_rejects_a_bad_share_or_timeout_naming_the_field(reader: dict[str, str], query: str, field: str) -> None:
    latest = new_revision("users")

    response = wait(f"revisions/{latest.number}/wait/?{query}", reader)

    assert response.status_code == 400
    assert response.json()["error"] == "validation_error" and list(response.json()["fields"]) == [field]


def test_wait_refuses_a_bad_token() -> None:
    response = wait("revisions/1/wait/", {"Authorization": "Bearer not-a-jwt"})

    assert response.status_code == 401 and response.json()["error"] == "authentication_failed"


def test_other_paths_go_on_to_django() -> None:
    response = with_wait_app(lambda client: client.get(f"{API}/revisions/1/"))

    assert response.status_code == 299


# --- purge ------------------------------------------------------------------------------------------------


def test_the_purge_task_deletes_only_nodes_silent_past_the_purge_time(settings: Any) -> None:
    settings.GATEWAY_NODE_PURGE_SECONDS = 3600
    make_node("recent", ago=3500)
    make_node("ancient", ago=3700)

    assert purge_silent_nodes() == 1

    assert list(DataPlaneNode.objects.values_list("node_id", flat=True)) == ["recent"]


def test_beat_runs_the_purge() -> None:
    tasks = {entry["task"] for entry in celery_app.conf.beat_schedule.values()}

    assert "controlplane.dataplanes.tasks.purge_silent_nodes" in tasks


# --- the admin ------------------------------------------------------------------------------------------


def admin_browser(make_user: Callable[..., Any], role: str) -> Client:
    make_user(f"{role}-person", role, is_staff=True)
    browser = Client()
    # Signed in through the admin's login form, as a person is (the login lockout sees the request).
    answer = browser.post("/admin/login/", {"username": f"{role}-person", "password": PASSWORD, "next": "/admin/"})
    assert answer.status_code == 302, answer.content
    return browser


def test_a_readonly_user_sees_the_nodes_with_lag_and_state_in_the_admin(make_user: Callable[..., Any]) -> None:
    latest = new_revision("users")
    make_node("edge-behind", revision=latest.number - 1)
    make_node("edge-silent", ago=300, revision=latest.number)
    make_node("edge-gone", ago=3600, revision=latest.number)
    browser = admin_browser(make_user, "readonly")

    page = browser.get("/admin/dataplanes/dataplanenode/")

    assert page.status_code == 200
    text = page.content.decode()
    assert "edge-behind" in text and "edge-silent" in text and "edge-gone" in text
    assert '<td class="field-lag">1 behind</td>' in text and '<td class="field-lag">current</td>' in text
    for state in ("live", "stale", "gone"):
        assert f'<td class="field-state">{state}</td>' in text
    stale_only = browser.get("/admin/dataplanes/dataplanenode/?state=stale").content.decode()
    assert "edge-silent" in stale_only and "edge-behind" not in stale_only and "edge-gone" not in stale_only
    gone_only = browser.get("/admin/dataplanes/dataplanenode/?state=gone").content.decode()
    assert "edge-gone" in gone_only and "edge-silent" not in gone_only
    assert browser.get("/admin/dataplanes/dataplanenode/add/").status_code == 403
    assert 'value="retire_selected"' not in text  # readonly: no retire action
    detail = browser.get(f"/admin/dataplanes/dataplanenode/{DataPlaneNode.objects.get(node_id='edge-gone').pk}/change/")
    assert detail.status_code == 200 and b'name="_save"' not in detail.content


def test_an_operator_retires_nodes_from_the_admin_list_and_sees_their_token(make_user: Callable[..., Any]) -> None:
    from controlplane.core.models import AuditEvent

    _, secret = dataplane_token_issue(name="edge-token", actor=ACTOR)
    assert post_report(secret, node_id="edge-1") == 204
    stopped = make_node("stopped", ago=3600, token_name="old-token")
    browser = admin_browser(make_user, "operator")

    page = browser.get("/admin/dataplanes/dataplanenode/")
    text = page.content.decode()
    assert '<td class="field-token_name">edge-token</td>' in text
    assert '<td class="field-token_name">old-token</td>' in text
    assert 'value="retire_selected"' in text
    # What the page rendered, posted back: the action and the selected row.
    response = browser.post(
        "/admin/dataplanes/dataplanenode/",
        {"action": "retire_selected", "_selected_action": [str(stopped.pk)], "index": "0"},
        follow=True,
    )

    assert response.status_code == 200
    assert "Retired 1 node(s): stopped." in response.content.decode()
    assert list(DataPlaneNode.objects.values_list("node_id", flat=True)) == ["edge-1"]
    assert AuditEvent.objects.filter(action="dataplane_node.retire", object_key="stopped").count() == 1


def test_a_readonly_user_cannot_retire_through_a_forged_admin_post(make_user: Callable[..., Any]) -> None:
    node = make_node("stopped", ago=3600)
    browser = admin_browser(make_user, "readonly")

    browser.post("/admin/dataplanes/dataplanenode/", {"action": "retire_selected", "_selected_action": [str(node.pk)]})

    assert DataPlaneNode.objects.filter(pk=node.pk).exists()


def test_not_even_an_admin_can_add_edit_or_delete_nodes_in_the_admin(make_user: Callable[..., Any]) -> None:
    node = make_node("edge-1")
    browser = admin_browser(make_user, "admin")

    assert browser.get("/admin/dataplanes/dataplanenode/add/").status_code == 403
    assert b'name="_save"' not in browser.get(f"/admin/dataplanes/dataplanenode/{node.pk}/change/").content
    assert browser.post(f"/admin/dataplanes/dataplanenode/{node.pk}/delete/", {"post": "yes"}).status_code == 403
    assert DataPlaneNode.objects.filter(pk=node.pk).exists()


# --- /metrics ---------------------------------------------------------------------------------------------


def post_report(secret: str, **fields: Any) -> int:
    report = {
        "node_id": "edge-1",
        "boot_id": "boot-1",
        "hostname": "edge.local",
        "version": "0.1.0",
        "revision": 1,
        "config_sha256": "a" * 64,
        "state_seq": 0,
        "result": "applied",
        "error": None,
        "breakers": {},
        "counters": {},
        **fields,
    }

    async def run() -> int:
        app = DataPlaneSyncApp(_django_stub, poll_interval=0.02)
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://cp") as client:
                response = await client.post(STATUS_PATH, json=report, headers={"Authorization": f"Bearer {secret}"})
                return response.status_code
        finally:
            await app.aclose()

    return async_to_sync(run)()  # type: ignore[no-any-return]


def gauge(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


def test_metrics_count_the_nodes_that_reported_through_the_status_api() -> None:
    _, secret = dataplane_token_issue(name="edge", actor=ACTOR)
    endpoint_create(data=endpoint_body("users"), actor=ACTOR)
    latest = ConfigRevision.objects.order_by("-number").values_list("number", flat=True).first()
    make_node("silent", ago=300)
    make_node("long-gone", ago=3600)

    assert post_report(secret, node_id="edge-1", breakers={"users:v1": OPEN}) == 204
    assert post_report(secret, node_id="edge-2", breakers={"users:v1": {**OPEN, "state": "half_open"}}) == 204
    text = Client().get("/metrics").content.decode()

    assert gauge(text, 'gateway_cp_nodes{state="live"}') == 2
    assert gauge(text, 'gateway_cp_nodes{state="stale"}') == 1
    assert gauge(text, 'gateway_cp_nodes{state="gone"}') == 1
    assert gauge(text, "gateway_cp_revision") == latest
    assert gauge(text, "gateway_cp_open_breakers") == 1  # one endpoint, open on one node and half-open on another
    assert gauge(text, "gateway_cp_unhealthy_targets") == 0
    assert gauge(text, "gateway_cp_nodes_rejected") == 0
    assert "django_http_requests_total_by_method_total" in text  # django-prometheus's own are still there


def test_unhealthy_targets_are_counted_on_metrics() -> None:
    from controlplane.health.models import HealthStatus, TargetHealth
    from controlplane.routing.models import Target

    endpoint_create(
        data=endpoint_body("users", targets=[{"url": "http://127.0.0.1:9/a"}, {"url": "http://127.0.0.1:9/b"}]),
        actor=ACTOR,
    )
    first = Target.objects.order_by("url").first()
    assert first is not None
    TargetHealth.objects.update_or_create(target=first, defaults={"status": HealthStatus.UNHEALTHY})

    assert gauge(Client().get("/metrics").content.decode(), "gateway_cp_unhealthy_targets") == 1
