"""Data-plane tokens, the snapshot, and the sync API (ARCHITECTURE §2, §4), in process.

The ASGI app is driven through httpx.ASGITransport inside `async_to_sync`, so its thread-sensitive
database calls run on the test's thread and see the test's transaction. The real-server long-poll
tests are in tests/e2e/test_sync_longpoll.py.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Awaitable, Callable
from io import StringIO
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from configdoc import canonical_json, validate_document
from configdoc.reports import BUCKET_COUNT
from controlplane.breakers.services import breaker_policy_create
from controlplane.core.actors import Actor
from controlplane.core.models import AuditEvent, ConfigRevision, StateCounter
from controlplane.core.revisions import latest_revision
from controlplane.core.state import bump_state_seq
from controlplane.dataplanes.models import DataPlaneNode, DataPlaneToken
from controlplane.dataplanes.services import dataplane_token_issue, hash_secret
from controlplane.dataplanes.snapshot import build_snapshot_bytes, document_format_version, load_snapshot, make_etag
from controlplane.dataplanes.sync import (
    CONFIG_PATH,
    MAX_STATUS_BYTES,
    MAX_STATUS_DECODED_BYTES,
    STATUS_PATH,
    DataPlaneSyncApp,
    normalize_etag,
)
from controlplane.routing.services import endpoint_create
from dataplane.app import build
from dataplane.settings import Settings
from dataplane.sync import Sync, encode_report
from tests.conftest import client_for

ACTOR = Actor.command("test")
GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "snapshot-golden.json"
pytestmark = pytest.mark.django_db


# --- helpers -------------------------------------------------------------------------------------


async def _django_stub(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 299, "headers": [(b"x-from", b"django")]})
    await send({"type": "http.response.body", "body": b"django"})


def with_app(body: Callable[[httpx.AsyncClient, DataPlaneSyncApp], Awaitable[Any]]) -> Any:
    """Run `body` against a fresh sync app (fast watcher) and stop its watcher afterwards."""

    async def run() -> Any:
        app = DataPlaneSyncApp(_django_stub, poll_interval=0.02)
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                return await body(client, app)
        finally:
            await app.aclose()

    return async_to_sync(run)()


def get(path: str = CONFIG_PATH, **headers: str) -> httpx.Response:
    return with_app(lambda client, _: client.get(path, headers=headers))


@pytest.fixture
def secret() -> str:
    return dataplane_token_issue(name="edge-1", actor=ACTOR)[1]


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def report(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "node_id": "edge-1-w0",
        "boot_id": "b0a7e2",
        "hostname": "edge-1.local",
        "version": "0.1.0",
        "revision": 1,
        "config_sha256": "a" * 64,
        "state_seq": 0,
        "result": "applied",
        "error": None,
        "breakers": {"users:v1": {"state": "open", "forced": None, "reset_generation": 0, "transitions": []}},
        "counters": {},
    }
    body.update(fields)
    return body


def make_golden_document() -> None:
    """A small document: a non-default policy, two endpoints, two targets on one of them."""
    breaker_policy_create(
        data={
            "name": "strict",
            "failure_threshold": 3,
            "reset_timeout": 20,
            "fallback_strategy": "default_response",
            "fallback": {"status": 200, "content_type": "application/json", "body": '{"items": []}'},
        },
        actor=ACTOR,
    )
    endpoint_create(
        data={
            "name": "users",
            "version": "v1",
            "methods": ["GET", "POST"],
            "breaker_policy": "strict",
            "targets": [{"url": "http://127.0.0.1:8010/api"}, {"url": "http://127.0.0.1:8011/api", "weight": 50}],
            "health_check": {"path": "/health", "interval": 10},
        },
        actor=ACTOR,
    )
    endpoint_create(
        data={
            "name": "orders",
            "version": "v2",
            "paths": ["/api/orders"],
            "targets": [{"url": "http://127.0.0.1:8020"}],
        },
        actor=ACTOR,
    )


# --- tokens --------------------------------------------------------------------------------------


def test_issuing_a_token_prints_it_alone_on_the_last_line_and_stores_only_its_hash() -> None:
    out = StringIO()
    call_command("issue_dataplane_token", "edge-1", stdout=out)
    secret = out.getvalue().rstrip("\n").splitlines()[-1]
    assert secret.startswith("gwdp_") and len(secret) > 40
    token = DataPlaneToken.objects.get(name="edge-1")
    assert token.secret_sha256 == hash_secret(secret)
    assert secret.startswith(token.prefix) and token.prefix != secret
    stored = [str(v) for v in DataPlaneToken.objects.values_list().get()]
    assert not any(secret in value for value in stored)


def test_the_service_user_holds_only_the_dataplane_role_is_never_staff_and_has_no_password() -> None:
    token, _ = dataplane_token_issue(name="edge-1", actor=ACTOR)
    user = get_user_model().objects.get(pk=token.user_id)
    assert list(user.groups.values_list("name", flat=True)) == ["dataplane"]
    assert not user.is_staff and not user.is_superuser
    assert not user.has_usable_password()


def test_issuing_is_audited_and_makes_no_revision() -> None:
    revisions = ConfigRevision.objects.count()
    token, secret = dataplane_token_issue(name="edge-1", actor=ACTOR)
    event = AuditEvent.objects.get(action="dataplane_token.issue")
    assert (event.actor_label, event.object_key) == ("command:test", "edge-1")
    assert secret not in json.dumps(event.after)
    assert ConfigRevision.objects.count() == revisions


def test_a_taken_or_malformed_name_is_refused() -> None:
    call_command("issue_dataplane_token", "edge-1", stdout=StringIO())
    with pytest.raises(CommandError, match="already exists"):
        call_command("issue_dataplane_token", "edge-1", stdout=StringIO())
    with pytest.raises(CommandError, match="must be"):
        call_command("issue_dataplane_token", "no spaces", stdout=StringIO())


def test_revoking_deletes_the_token_and_its_user_and_is_audited(secret: str) -> None:
    out = StringIO()
    call_command("issue_dataplane_token", "edge-1", "--revoke", stdout=out)
    assert "revoked" in out.getvalue()
    assert not DataPlaneToken.objects.exists()
    assert not get_user_model().objects.filter(username="dataplane-edge-1").exists()
    assert AuditEvent.objects.filter(action="dataplane_token.revoke", object_key="edge-1").exists()
    assert get(**bearer(secret)).status_code == 401


def test_revoking_an_unknown_token_is_a_clear_error() -> None:
    with pytest.raises(CommandError, match="no data-plane token named 'ghost'"):
        call_command("issue_dataplane_token", "ghost", "--revoke")


# --- state_seq and the snapshot ------------------------------------------------------------------


def test_bump_state_seq_advances_by_one_even_when_the_row_was_flushed() -> None:
    start = StateCounter.objects.get(pk=1).state_seq
    assert bump_state_seq() == start + 1
    StateCounter.objects.all().delete()
    assert bump_state_seq() == 1


def test_the_snapshot_matches_the_golden_fixture_byte_for_byte_except_generated_at() -> None:
    make_golden_document()
    golden = GOLDEN.read_bytes().rstrip(b"\n")
    generated_at = json.loads(golden)["generated_at"]
    built = load_snapshot().body
    built = built.replace(json.dumps(json.loads(built)["generated_at"]).encode(), json.dumps(generated_at).encode())
    assert built == golden


def test_the_golden_fixture_is_canonical_and_its_etag_parts_hash_its_config() -> None:
    golden = json.loads(GOLDEN.read_bytes())
    assert canonical_json(golden) == GOLDEN.read_bytes().rstrip(b"\n")
    assert golden["format_version"] == 1
    assert golden["state"] == {"breakers": {}, "targets": {}}
    assert len(golden["config"]["endpoints"]) == 2
    assert golden["config"]["breaker_policies"][1]["name"] == "strict"


def test_the_spliced_snapshot_bytes_equal_canonical_json_of_the_same_value() -> None:
    make_golden_document()
    revision = latest_revision()
    assert revision is not None
    from controlplane.core.revisions import current_document_bytes

    document = current_document_bytes()
    built = build_snapshot_bytes(
        document=document,
        revision=revision.number,
        config_sha256=revision.config_sha256,
        state_seq=7,
        generated_at="2026-01-01T00:00:00Z",
    )
    assert built == canonical_json(json.loads(built))
    with pytest.raises(ValueError, match="does not match"):
        build_snapshot_bytes(
            document=document + b" ", revision=1, config_sha256=revision.config_sha256, state_seq=0, generated_at=""
        )


def test_the_etag_is_the_config_sha256_and_state_seq_and_compares_without_weak_marker_or_quotes() -> None:
    assert make_etag("ab" * 32, 4) == f"{'ab' * 32}.4"
    assert normalize_etag(' W/"abc.4" ') == "abc.4"
    assert normalize_etag('"abc.4"') == "abc.4"


# --- GET /api/v1/dataplane/config ---------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Basic Z3dkcDp4", "Bearer gwdp_not-a-real-token", "Bearer not-even-the-prefix"],
)
def test_a_missing_or_bad_token_is_401(secret: str, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = get(**headers)
    assert response.status_code == 401
    body = response.json()
    assert body["error"] == "not_authenticated" and body["request_id"]
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_a_persons_jwt_is_not_a_data_plane_token(make_user: Any) -> None:
    client = client_for(make_user("alice", "admin"))
    authorization = client._credentials["HTTP_AUTHORIZATION"]
    assert get(Authorization=authorization).status_code == 401


def test_without_if_none_match_the_snapshot_is_answered_at_once_with_its_etag(secret: str) -> None:
    response = get(**bearer(secret))
    assert response.status_code == 200
    snapshot = response.json()
    revision = latest_revision()
    assert revision is not None
    assert snapshot["revision"] == revision.number
    assert snapshot["config_sha256"] == revision.config_sha256
    assert response.headers["etag"] == f'"{revision.config_sha256}.{snapshot["state_seq"]}"'
    assert DataPlaneToken.objects.get().last_used_at is not None


def test_the_snapshot_is_gzipped_for_clients_that_accept_it(secret: str) -> None:
    async def fetch(client: httpx.AsyncClient, _: DataPlaneSyncApp) -> tuple[httpx.Response, httpx.Response]:
        plain = await client.get(CONFIG_PATH, headers={**bearer(secret), "Accept-Encoding": "identity"})
        zipped = await client.get(CONFIG_PATH, headers={**bearer(secret), "Accept-Encoding": "gzip"})
        return plain, zipped

    plain, zipped = with_app(fetch)
    assert "content-encoding" not in plain.headers
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.content == plain.content  # httpx decodes it
    assert gzip.decompress(gzip.compress(plain.content)) == plain.content


@pytest.mark.parametrize("form", ['"{}"', 'W/"{}"', "{}"])
def test_a_current_if_none_match_without_wait_is_304(secret: str, form: str) -> None:
    etag = get(**bearer(secret)).headers["etag"].strip('"')
    response = get(**bearer(secret), **{"If-None-Match": form.format(etag)})
    assert response.status_code == 304
    assert response.headers["etag"] == f'"{etag}"'


def test_a_stale_if_none_match_gets_the_snapshot_at_once(secret: str) -> None:
    response = get(f"{CONFIG_PATH}?wait=60", **bearer(secret), **{"If-None-Match": '"0000.0"'})
    assert response.status_code == 200


def test_a_long_poll_with_nothing_changing_answers_304_when_wait_passes(secret: str) -> None:
    etag = get(**bearer(secret)).headers["etag"]
    response = get(f"{CONFIG_PATH}?wait=0.01", **bearer(secret), **{"If-None-Match": etag})  # clamped to 1 s
    assert response.status_code == 304


def test_a_waiting_long_poll_wakes_with_the_new_etag_when_state_seq_is_bumped(secret: str) -> None:
    async def poll(client: httpx.AsyncClient, app: DataPlaneSyncApp) -> tuple[str, httpx.Response]:
        import asyncio

        etag = (await client.get(CONFIG_PATH, headers=bearer(secret))).headers["etag"]
        waiting = asyncio.ensure_future(
            client.get(f"{CONFIG_PATH}?wait=60", headers={**bearer(secret), "If-None-Match": etag})
        )
        await asyncio.sleep(0.2)
        assert not waiting.done()
        await sync_to_async(bump_state_seq)()
        return etag, await waiting

    before, response = with_app(poll)
    assert response.status_code == 200
    sha, seq = before.strip('"').split(".")
    assert response.headers["etag"] == f'"{sha}.{int(seq) + 1}"'
    assert response.json()["state_seq"] == int(seq) + 1


@pytest.mark.parametrize("value", ["0", "-1", "one", ""])
def test_a_format_below_1_or_unparsable_is_409_format_unsupported(secret: str, value: str) -> None:
    response = get(**bearer(secret), **{"X-Gateway-Format": value})
    assert response.status_code == 409
    assert set(response.json()) == {"error", "message", "request_id"}
    assert response.json()["error"] == "format_unsupported"


def test_a_node_that_reads_newer_formats_gets_format_1(secret: str) -> None:
    response = get(**bearer(secret), **{"X-Gateway-Format": "3"})
    assert response.status_code == 200 and response.json()["format_version"] == 1


def format_2_document() -> bytes:
    """A canonical format-2 document: one endpoint with an IP allow-list, CORS for every endpoint."""
    canonical, problems = validate_document(
        {
            "format_version": 2,
            "plugins": {"cors": {"origins": ["https://app.example.com"]}},
            "endpoints": [
                {
                    "name": "orders",
                    "version": "v1",
                    "targets": [{"url": "http://127.0.0.1:8010"}],
                    "plugins": {"ip_restriction": {"allow": ["10.0.0.0/8"]}},
                }
            ],
        },
        max_format_version=2,
    )
    assert problems == []
    return canonical_json(canonical)


@pytest.fixture
def format_2_live() -> bytes:
    """Make the live document a format-2 one, stored as an operator would: imported."""
    from controlplane.core.revisions import current_document_bytes
    from controlplane.snapshots.services import config_import

    body = format_2_document()
    config_import(document=json.loads(body), actor=ACTOR, prune=True)
    assert current_document_bytes() == body
    return body


def test_a_documents_format_is_read_from_its_bytes_and_look_alike_text_is_not_a_key() -> None:
    assert document_format_version(format_2_document()) == 2
    canonical, problems = validate_document(
        {
            "format_version": 1,
            "endpoints": [
                {
                    "name": "a",
                    "version": "v1",
                    "description": '"plugins": {"cors": {}}, "preserve_host": true',
                    "tags": ["plugins", "preserve_host"],
                    "targets": [{"url": "http://127.0.0.1:8010"}],
                }
            ],
        }
    )
    assert problems == []
    assert document_format_version(canonical_json(canonical)) == 1


@pytest.mark.parametrize("headers", [{}, {"X-Gateway-Format": "1"}], ids=["absent", "1"])
def test_a_format_2_document_is_409_format_unsupported_to_a_node_that_reads_format_1(
    secret: str, format_2_live: bytes, headers: dict[str, str]
) -> None:
    response = get(**bearer(secret), **headers)
    assert response.status_code == 409
    assert response.json()["error"] == "format_unsupported"
    assert "format 2" in response.json()["message"] and "format 1 at most" in response.json()["message"]
    assert b"ip_restriction" not in response.content  # nothing of the document leaks into the refusal


@pytest.mark.parametrize("value", ["2", "3"])
def test_a_node_that_reads_format_2_gets_the_format_2_snapshot(secret: str, format_2_live: bytes, value: str) -> None:
    response = get(**bearer(secret), **{"X-Gateway-Format": value})
    assert response.status_code == 200
    snapshot = response.json()
    assert snapshot["format_version"] == 2 and snapshot["config"]["format_version"] == 2
    assert canonical_json(snapshot["config"]) == format_2_live
    assert snapshot["config"]["plugins"] == {"cors": {"origins": ["https://app.example.com"]}}


def test_a_format_1_node_refused_a_format_2_document_keeps_its_config_and_the_node_view_says_why(
    secret: str, format_2_live: bytes, tmp_path: Path, admin_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataplane.sync

    monkeypatch.setattr(dataplane.sync, "FORMAT", "1")  # a node of the release before plugins
    settings = Settings(
        control_plane_url="http://testserver", token=secret, cache_dir=tmp_path / "cache", node_id="edge-1"
    )
    runtime, _, _ = build(settings)

    async def node(client: httpx.AsyncClient, app: DataPlaneSyncApp) -> tuple[float, bool]:
        # The real data-plane sync loop (X-Gateway-Format: 1) against the real sync app.
        sync = Sync(runtime, transport=httpx.ASGITransport(app=app))
        async with sync._client() as sync_client:
            sync.client = sync_client
            delay = await sync.poll_once()
            return delay, await sync.report()

    delay, reported = with_app(node)
    assert delay > 0 and reported
    assert runtime.snapshot is None  # nothing half-applied: it runs what it had (here: nothing)
    nodes = admin_client.get("/api/v1/dataplanes/").json()
    shown = nodes["results"] if isinstance(nodes, dict) else nodes
    assert [(n["node_id"], n["result"]) for n in shown] == [("edge-1", "rejected")]
    assert shown[0]["error"].startswith("format_unsupported: the current config is format 2")
    assert "format 1 at most" in shown[0]["error"]


def test_other_paths_and_methods_go_where_they_belong(secret: str) -> None:
    assert get("/api/v1/endpoints/").headers["x-from"] == "django"
    assert get(f"{CONFIG_PATH}/").headers["x-from"] == "django"
    response = with_app(lambda client, _: client.post(CONFIG_PATH, headers=bearer(secret)))
    assert response.status_code == 405


# --- POST /api/v1/dataplane/status ---------------------------------------------------------------


def post_status(secret: str, body: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return with_app(lambda client, _: client.post(STATUS_PATH, content=content, headers=bearer(secret)))


def test_a_status_report_is_stored_and_updated_by_the_next_one(secret: str) -> None:
    assert post_status(secret, report()).status_code == 204
    node = DataPlaneNode.objects.get(node_id="edge-1-w0")
    assert (node.result, node.revision, node.breakers["users:v1"]["state"]) == ("applied", 1, "open")
    rejected = report(result="rejected", error="endpoints[0].url: bad", revision=2)
    assert post_status(secret, rejected).status_code == 204
    node.refresh_from_db()
    assert (node.result, node.error, node.revision) == ("rejected", "endpoints[0].url: bad", 2)
    assert DataPlaneNode.objects.count() == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (report(result="maybe"), "result"),
        (report(revision=-1), "revision"),
        (report(revision="3"), "revision"),
        (report(node_id="bad id with spaces"), "node_id"),
        (report(config_sha256="xyz"), "config_sha256"),
        (report(breakers=[]), "breakers"),
        (report(surprise=1), "surprise"),
        ({k: v for k, v in report().items() if k != "hostname"}, "hostname"),
        (b"{not json", "non_field_errors"),
        (b"[]", "non_field_errors"),
    ],
)
def test_a_malformed_status_report_is_400_naming_the_field_and_nothing_is_stored(
    secret: str, body: Any, field: str
) -> None:
    response = post_status(secret, body)
    assert response.status_code == 400
    assert response.json()["error"] == "validation_error"
    assert field in response.json()["fields"]
    assert not DataPlaneNode.objects.exists()


def post_encoded(secret: str, content: bytes, encoding: str) -> httpx.Response:
    headers = {**bearer(secret), "Content-Type": "application/json", "Content-Encoding": encoding}
    return with_app(lambda client, _: client.post(STATUS_PATH, content=content, headers=headers))


def test_a_node_with_traffic_on_10000_endpoints_sends_its_report_gzipped_and_it_is_stored(secret: str) -> None:
    """~2.8 MB of counters: the data plane's own encoder gzips them to a fraction, and the control
    plane decodes them and stores every endpoint's counters."""
    counters = {
        f"svc-{index:05d}:v1": {
            "requests": {"2xx": 100 + index, "3xx": 0, "4xx": 1, "5xx": 2},
            "errors": {"upstream_timeout": 2},
            "retries": 1,
            "breaker_trips": 0,
            "duration": {"buckets": [index % 7] * BUCKET_COUNT, "sum": 1.25},
            "upstream_duration": {"buckets": [index % 5] * BUCKET_COUNT, "sum": 1.0},
        }
        for index in range(10_000)
    }
    body, headers = encode_report(report(breakers={}, counters=counters))
    assert headers["Content-Encoding"] == "gzip"
    decoded = len(gzip.decompress(body))
    assert decoded > 2_000_000 and len(body) * 5 < decoded
    assert post_encoded(secret, body, "gzip").status_code == 204
    node = DataPlaneNode.objects.get(node_id="edge-1-w0")
    assert len(node.counters) == 10_000
    assert node.counters["svc-09999:v1"]["requests"]["2xx"] == 10_099


def test_a_small_report_goes_plain_json(secret: str) -> None:
    body, headers = encode_report(report())
    assert "Content-Encoding" not in headers
    assert json.loads(body) == report()
    assert post_encoded(secret, body, "identity").status_code == 204


@pytest.mark.parametrize(
    ("content", "encoding", "status", "code"),
    [
        (b" " * (MAX_STATUS_BYTES + 1), "identity", 413, "body_too_large"),
        (gzip.compress(b" " * (MAX_STATUS_DECODED_BYTES + 1)), "gzip", 413, "body_too_large"),
        (b"\x1f\x8b not really gzip", "gzip", 400, "bad_request"),
        (gzip.compress(json.dumps(report()).encode())[:-12], "gzip", 400, "bad_request"),
        (json.dumps(report()).encode(), "br", 415, "unsupported_media_type"),
    ],
    ids=["too-large", "bomb", "garbage", "truncated", "brotli"],
)
def test_a_report_that_does_not_decode_is_refused_and_nothing_is_stored(
    secret: str, content: bytes, encoding: str, status: int, code: str
) -> None:
    response = post_encoded(secret, content, encoding)
    assert (response.status_code, response.json()["error"]) == (status, code)
    assert not DataPlaneNode.objects.exists()


def test_a_status_report_without_a_token_is_401_and_not_stored() -> None:
    response = with_app(lambda client, _: client.post(STATUS_PATH, json=report()))
    assert response.status_code == 401
    assert not DataPlaneNode.objects.exists()


def test_a_waiting_client_that_disconnects_is_let_go_without_an_answer(secret: str) -> None:
    etag = get(**bearer(secret)).headers["etag"]

    async def run() -> list[Any]:
        import asyncio

        app = DataPlaneSyncApp(_django_stub, poll_interval=0.02)
        sent: list[Any] = []
        messages = [{"type": "http.request", "body": b"", "more_body": False}]

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            await asyncio.sleep(0.2)
            return {"type": "http.disconnect"}

        async def send(message: Any) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": "GET",
            "path": CONFIG_PATH,
            "query_string": b"wait=60",
            "headers": [(b"authorization", f"Bearer {secret}".encode()), (b"if-none-match", etag.encode())],
        }
        try:
            await asyncio.wait_for(app(scope, receive, send), timeout=30)
        finally:
            await app.aclose()
        return sent

    assert async_to_sync(run)() == []


def test_the_asgi_entry_point_puts_the_sync_app_in_front_of_django() -> None:
    from django.core.handlers.asgi import ASGIHandler

    from config.asgi import application
    from controlplane.dataplanes.rollout import RolloutWaitApp

    assert isinstance(application, DataPlaneSyncApp)
    # Between them, the rollout wait (revisions/{n}/wait/), which also waits without a thread.
    assert isinstance(application.fallback, RolloutWaitApp)
    assert isinstance(application.fallback.fallback, ASGIHandler)


def test_the_snapshot_state_carries_target_health_from_the_health_app(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        "controlplane.health.selectors.target_health_state",
        lambda: {"users:v1": {"http://127.0.0.1:8010/api": "unhealthy"}},
    )
    state = json.loads(load_snapshot().body)["state"]
    assert state == {"breakers": {}, "targets": {"users:v1": {"http://127.0.0.1:8010/api": "unhealthy"}}}
