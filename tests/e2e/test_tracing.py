"""Tracing of the control plane (docs/tracing.md) against real processes: a uvicorn control plane (and a
Celery worker and beat on a Redis of their own) exporting OTLP/HTTP to a real receiver on 127.0.0.1.

Asserted: an API write is a SERVER span with PostgreSQL child spans, and its revision stores that span;
the data plane's long-poll answer for it is a span LINKED to the write's span and carries the write's
traceparent in `X-Config-Traceparent`; a health-check task run is the child of beat's publish span and
its probe the child of the run; nothing is sent (nor imported) with GATEWAY_OTLP_ENDPOINT unset; a
collector that is down or never answers leaves the API answering; no password, token or API key appears
in anything exported; a hostile traceparent is never a 500.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.auth.models import Group
from django.db import connection

from controlplane.core.actors import Actor
from controlplane.core.models import AuditEvent, ConfigRevision
from controlplane.dataplanes.services import dataplane_token_issue
from controlplane.routing.services import endpoint_create
from tests.conftest import PASSWORD, endpoint_body
from tests.controlplane.health_upstream import upstream
from tests.e2e.otlp import Span, otlp_receiver
from tests.e2e.servers import ROOT, clean_env, eventually, free_port, redis_server, running

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
ACTOR = Actor.command("test")
CONFIG = "/api/v1/dataplane/config"
HOSTILE_TRACEPARENTS = [
    "00-" + "0" * 32 + "-" + "0" * 16 + "-01",  # all-zero ids
    "00-ABCDEF" + "0" * 26 + "-" + "1" * 16 + "-01",  # upper case
    "ff-" + "1" * 32 + "-" + "1" * 16 + "-01",  # the forbidden version
    "00-" + "1" * 32 + "-" + "1" * 16 + "-01-extra",
    "00-zz-yy-xx",
    "x" * 8000,
    "00-\u00e9\u00e9-\u00ff",
]


def database_url() -> str:
    database = connection.settings_dict
    return f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}"


@contextmanager
def control_plane(tmp_path: Path, **env: str) -> Iterator[str]:
    """`uvicorn config.asgi:application` on the test database with `env` added; yields its base URL."""
    port = free_port()
    environ = clean_env(DATABASE_URL=database_url(), GATEWAY_VAR_DIR=str(tmp_path / "var"), **env)
    argv = [sys.executable, "-m", "uvicorn", "config.asgi:application", "--http", "httptools"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--lifespan", "off", "--no-access-log"]
    base = f"http://127.0.0.1:{port}"
    with running(argv, env=environ, ready_url=f"{base}/healthz", log=tmp_path / "uvicorn.log"):
        yield base


def make_admin(username: str = "ada") -> None:
    """An admin whose password is hashed with a hasher the server's settings know (the test settings' is not)."""
    hashed = PBKDF2PasswordHasher().encode(PASSWORD, "e2e-salt", iterations=1000)
    user = get_user_model().objects.create(username=username, password=hashed)
    user.groups.add(Group.objects.get(name="admin"))


def login(base: str, username: str = "ada") -> tuple[str, dict[str, str]]:
    response = httpx.post(f"{base}/api/v1/auth/token/", json={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.text
    access = response.json()["access"]
    return access, {"Authorization": f"Bearer {access}"}


def traceparent_ids(value: str) -> tuple[str, str]:
    version, trace_id, span_id, flags = value.split("-")
    assert (version, len(trace_id), len(span_id), len(flags)) == ("00", 32, 16, 2)
    return trace_id, span_id


class LongPoll:
    """One data-plane long-poll in a thread, so the test can write while it waits."""

    def __init__(self, base: str, headers: dict[str, str]) -> None:
        self.response: httpx.Response | None = None
        self._thread = threading.Thread(target=self._run, args=(base, headers))
        self._thread.start()

    def _run(self, base: str, headers: dict[str, str]) -> None:
        self.response = httpx.get(f"{base}{CONFIG}", params={"wait": "30"}, headers=headers, timeout=60)

    def result(self) -> httpx.Response:
        self._thread.join(timeout=60)
        assert self.response is not None, "the long-poll did not answer"
        return self.response


def test_an_api_write_is_traced_and_the_data_planes_long_poll_answer_links_to_it(tmp_path: Path) -> None:
    make_admin()
    _, dataplane_secret = dataplane_token_issue(name="edge", actor=ACTOR)
    node = {"Authorization": f"Bearer {dataplane_secret}", "X-Gateway-Format": "2"}
    node_trace = "00-" + "a1" * 16 + "-" + "b2" * 8 + "-01"  # the node's own span around its poll
    with otlp_receiver() as receiver, control_plane(tmp_path, GATEWAY_OTLP_ENDPOINT=receiver.endpoint) as base:
        access, admin = login(base)
        first = httpx.get(f"{base}{CONFIG}", headers=node)
        assert first.status_code == 200
        poll = LongPoll(
            base,
            {**node, "If-None-Match": first.headers["etag"], "X-Gateway-Node-ID": "edge-1", "traceparent": node_trace},
        )
        time.sleep(0.5)  # let the poll park (not a timing assertion: an early write just answers at once)
        created = httpx.post(f"{base}/api/v1/endpoints/", json=endpoint_body("accounts"), headers=admin)
        assert created.status_code == 201, created.text
        answer = poll.result()
        assert answer.status_code == 200
        assert answer.json()["config"]["endpoints"][0]["name"] == "accounts"

        # The revision keeps the write's traceparent; the snapshot hands it to the node.
        revision = ConfigRevision.objects.order_by("-number").first()
        assert revision is not None and revision.summary == "create endpoint accounts:v1"
        assert answer.headers["x-config-traceparent"] == revision.traceparent
        write_trace, write_span = traceparent_ids(revision.traceparent)
        # The audit event carries the same trace.
        assert set(AuditEvent.objects.filter(revision_number=revision.number).values_list("trace_id", flat=True)) == {
            write_trace
        }

        # The API shows both: the revision's traceparent, the audit event's trace id.
        shown = httpx.get(f"{base}/api/v1/revisions/{revision.number}/", headers=admin).json()
        assert shown["traceparent"] == revision.traceparent
        audit = httpx.get(f"{base}/api/v1/audit/", params={"object": "accounts:v1"}, headers=admin).json()
        assert [event["trace_id"] for event in audit["results"]] == [write_trace]

        # The write: Django's SERVER span, the one the revision recorded, with PostgreSQL child spans.
        server = receiver.wait_for(lambda s: s.span_id == write_span, "the write's server span")
        assert (server.kind, server.trace_id) == ("server", write_trace)
        assert server.attributes.get("http.request.method", server.attributes.get("http.method")) == "POST"
        assert server.resource["service.name"] == "gateway-controlplane"
        assert server.resource["gateway.process"] == "web"
        assert server.attributes["gateway.config.revision"] == revision.number
        # Polled URLs are not traced.
        assert not [s for s in receiver.snapshot() if "healthz" in s.name]
        database = receiver.wait_for(
            lambda s: s.parent_span_id == write_span and s.kind == "client", "a database span under the write"
        )
        assert "postgresql" in {database.attributes.get("db.system"), database.attributes.get("db.system.name")}
        assert database.trace_id == write_trace

        # The long-poll answer: continues the node's trace, links to the write, names revision, node and ETag.
        sync = receiver.wait_for(
            lambda s: s.name == f"GET {CONFIG}" and s.attributes.get("gateway.dataplane.node_id") == "edge-1",
            "the long-poll answer's span",
        )
        assert sync.kind == "server"
        assert (sync.trace_id, sync.parent_span_id) == traceparent_ids(node_trace)
        assert [(link.trace_id, link.span_id) for link in sync.links] == [(write_trace, write_span)]
        assert sync.attributes["gateway.config.revision"] == revision.number
        assert f'"{sync.attributes["gateway.config.etag"]}"' == answer.headers["etag"]
        assert sync.attributes["gateway.dataplane.token"] == "edge"
        assert sync.attributes["http.response.status_code"] == 200

        # Reads that rebuild old documents (server-side cursors through the instrumented connection) still work.
        diff = httpx.get(f"{base}/api/v1/revisions/diff/", params={"from": 1, "to": revision.number}, headers=admin)
        assert diff.status_code == 200, diff.text
        assert httpx.get(f"{base}/api/v1/config/export/", headers=admin).status_code == 200

        # Secrets issued or sent while traced: a user's password, a consumer's API key, the JWT, the node's token.
        user = httpx.post(
            f"{base}/api/v1/users/",
            json={"username": "olga", "password": "olga-secret-Pa55word-xyz", "roles": ["operator"]},
            headers=admin,
        )
        assert user.status_code == 201, user.text
        # An audit event outside any revision carries its request's trace too.
        user_audit = AuditEvent.objects.get(object_type="user", object_key="olga")
        user_span = receiver.wait_for(lambda s: s.trace_id == user_audit.trace_id, "the user creation's trace")
        assert user_span.trace_id != write_trace
        consumer = httpx.post(f"{base}/api/v1/consumers/", json={"username": "mobile-app"}, headers=admin)
        assert consumer.status_code == 201, consumer.text
        issued = httpx.post(f"{base}/api/v1/consumers/mobile-app/keys/", json={}, headers=admin)
        assert issued.status_code == 201, issued.text
        api_key = issued.json()["key"]
        marker = receiver.wait_for(
            lambda s: s.kind == "server" and "keys" in str(s.attributes.get("http.route", s.name)),
            "the key issue's span",
        )
        receiver.wait_for(lambda s: s.parent_span_id == marker.span_id, "the key issue's database spans")
        # Queries outside any request or task (the sync API's ETag watcher, every 200 ms) start no trace.
        assert not [s for s in receiver.snapshot() if s.kind == "client" and not s.parent_span_id]
        exported = receiver.everything()
        for secret in (PASSWORD, "olga-secret-Pa55word-xyz", api_key, access, dataplane_secret):
            assert secret.encode() not in exported


def test_at_sample_0_only_writes_that_arrive_sampled_are_traced_and_only_they_keep_a_traceparent(
    tmp_path: Path,
) -> None:
    make_admin()
    sampled = "00-" + "c3" * 16 + "-" + "d4" * 8 + "-01"
    unsampled = "00-" + "e5" * 16 + "-" + "f6" * 8 + "-00"
    with (
        otlp_receiver() as receiver,
        control_plane(tmp_path, GATEWAY_OTLP_ENDPOINT=receiver.endpoint, GATEWAY_TRACE_SAMPLE="0") as base,
    ):
        _, admin = login(base)
        for name, traceparent in (("plain", None), ("unsampled", unsampled), ("sampled", sampled)):
            headers = {**admin, **({"traceparent": traceparent} if traceparent else {})}
            created = httpx.post(f"{base}/api/v1/endpoints/", json=endpoint_body(name), headers=headers)
            assert created.status_code == 201, created.text
        stored = dict(ConfigRevision.objects.values_list("summary", "traceparent"))
        assert stored["create endpoint plain:v1"] == stored["create endpoint unsampled:v1"] == ""
        assert traceparent_ids(stored["create endpoint sampled:v1"])[0] == "c3" * 16
        write = receiver.wait_for(lambda s: s.kind == "server", "the sampled write's span")
        assert write.trace_id == "c3" * 16
    assert {span.trace_id for span in receiver.snapshot()} == {"c3" * 16}


def test_a_hostile_traceparent_is_never_a_500_and_starts_a_trace_of_its_own(tmp_path: Path) -> None:
    make_admin()
    _, dataplane_secret = dataplane_token_issue(name="edge", actor=ACTOR)
    node = {"Authorization": f"Bearer {dataplane_secret}", "X-Gateway-Format": "2"}
    with otlp_receiver() as receiver, control_plane(tmp_path, GATEWAY_OTLP_ENDPOINT=receiver.endpoint) as base:
        _, admin = login(base)
        for number, hostile in enumerate(HOSTILE_TRACEPARENTS):
            raw = hostile.encode("latin-1")
            headers = {**admin, "traceparent": raw, "tracestate": raw}  # type: ignore[dict-item]
            created = httpx.post(f"{base}/api/v1/endpoints/", json=endpoint_body(f"e{number}"), headers=headers)
            assert created.status_code == 201, (hostile[:40], created.text)
            listed = httpx.get(f"{base}/api/v1/endpoints/", headers=headers)
            assert listed.status_code == 200
            synced = httpx.get(f"{base}{CONFIG}", headers={**node, "traceparent": raw, "X-Gateway-Node-ID": raw})  # type: ignore[dict-item]
            assert synced.status_code == 200
            stored = ConfigRevision.objects.order_by("-number").first()
            assert stored is not None
            trace_id, _ = traceparent_ids(stored.traceparent)
            assert trace_id != "0" * 32 and trace_id not in hostile.lower()
            # The answer's revision may be the one before (the ETag watcher looks every 200 ms): any write's.
            traceparent_ids(synced.headers["x-config-traceparent"])

        def sync_spans() -> list[Span]:
            return [span for span in receiver.snapshot() if span.name == f"GET {CONFIG}"]

        eventually(lambda: len(sync_spans()) == len(HOSTILE_TRACEPARENTS), "every sync answer's span")
        # A node id that is not one (too long, not ASCII) is left out of the span; well-formed ones are kept.
        node_ids = [span.attributes.get("gateway.dataplane.node_id") for span in sync_spans()]
        assert sorted(value for value in node_ids if value is not None) == sorted(HOSTILE_TRACEPARENTS[:5])


def test_a_health_check_task_is_the_child_of_beats_publish_and_its_probe_the_child_of_the_run(
    tmp_path: Path,
) -> None:
    """The worker as rungateway runs it (threads pool: set up on worker_init) and as a prefork pool would
    (set up in the child on worker_process_init) are both covered: one worker of each, one after the
    other (two at once share the queue as the broker pleases: one may take every task)."""
    check = {"path": "/health", "interval": 5, "timeout": 1, "healthy_threshold": 1}
    with (
        otlp_receiver() as receiver,
        upstream() as server,
        redis_server(tmp_path / "redis.log") as (redis_port, _),
        ExitStack() as stack,
    ):
        endpoint_create(data=endpoint_body(targets=[{"url": server.base}], health_check=check), actor=ACTOR)
        env = clean_env(
            DATABASE_URL=database_url(),
            CELERY_BROKER_URL=f"redis://127.0.0.1:{redis_port}/0",
            GATEWAY_VAR_DIR=str(tmp_path / "var"),
            GATEWAY_OTLP_ENDPOINT=receiver.endpoint,
        )
        celery = [sys.executable, "-m", "celery", "-A", "config"]
        quiet = ["--without-mingle", "--without-gossip", "--loglevel", "WARNING"]
        stack.enter_context(
            running([*celery, "beat", "-s", str(tmp_path / "beat")], env=env, ready_url=None, log=tmp_path / "b.log")
        )

        def worker(pool: str) -> AbstractContextManager[subprocess.Popen[bytes]]:
            argv = [*celery, "worker", f"--pool={pool}", "--concurrency=1", "-n", f"{pool}@%h", *quiet]
            return running(argv, env=env, ready_url=None, log=tmp_path / f"{pool}.log")

        task = "controlplane.health.tasks.dispatch_health_checks"
        threads = stack.enter_context(worker("threads"))
        probe = receiver.wait_for(lambda s: s.name == "health probe", "a health probe's span")
        assert probe.kind == "client"
        assert probe.attributes["server.port"] == server.port
        assert probe.attributes["gateway.health.ok"] is True
        spans = {span.span_id: span for span in receiver.snapshot()}
        run = spans[probe.parent_span_id]
        assert (run.name, run.kind, run.trace_id) == (f"run/{task}", "consumer", probe.trace_id)
        assert run.resource["gateway.process"] == "worker"
        publish = receiver.wait_for(lambda s: s.span_id == run.parent_span_id, "the publish span")
        assert (publish.name, publish.kind, publish.trace_id) == (f"apply_async/{task}", "producer", run.trace_id)
        assert publish.resource["gateway.process"] == "beat"
        assert run.resource["process.pid"] == threads.pid  # the threads pool runs tasks in its own process
        # The prefork pool's child exports its runs too (set up after the fork).
        stack.pop_all().close()  # beat and the threads worker stop
        with (
            running([*celery, "beat", "-s", str(tmp_path / "beat2")], env=env, ready_url=None, log=tmp_path / "b2.log"),
            worker("prefork") as prefork,
        ):
            forked = receiver.wait_for(
                lambda s: s.name == f"run/{task}" and s.resource["process.pid"] not in (threads.pid, prefork.pid),
                "a task run exported by the prefork pool's child",
            )
            assert forked.resource["gateway.process"] == "worker"
            # Its parent is the second beat's publish: each process exports on its own schedule, so the
            # run may arrive before the span it is the child of.
            parent = receiver.wait_for(lambda s: s.span_id == forked.parent_span_id, "the forked run's publish span")
            assert (parent.name, parent.resource["gateway.process"]) == (f"apply_async/{task}", "beat")


def test_a_check_now_from_the_api_is_its_requests_trace_with_a_span_per_probe(tmp_path: Path) -> None:
    make_admin()
    check = {"path": "/health", "interval": 60, "timeout": 1}
    with (
        otlp_receiver() as receiver,
        upstream() as server,
        control_plane(tmp_path, GATEWAY_OTLP_ENDPOINT=receiver.endpoint) as base,
    ):
        endpoint_create(data=endpoint_body(targets=[{"url": server.base}], health_check=check), actor=ACTOR)
        _, admin = login(base)
        server.status = 503
        checked = httpx.post(f"{base}/api/v1/endpoints/users:v1/check/", headers=admin)
        assert checked.status_code == 200, checked.text
        probe = receiver.wait_for(lambda s: s.name == "health probe", "the probe's span")
        assert (probe.attributes["gateway.health.ok"], probe.attributes["http.response.status_code"]) == (False, 503)
        assert probe.attributes["gateway.health.reason"] == "HTTP 503"
        request = receiver.wait_for(lambda s: s.span_id == probe.parent_span_id, "the check request's span")
        assert (request.kind, request.trace_id) == ("server", probe.trace_id)
        assert "check" in request.name


def test_with_no_endpoint_set_nothing_is_sent_and_opentelemetry_is_not_imported(tmp_path: Path) -> None:
    make_admin()
    _, dataplane_secret = dataplane_token_issue(name="edge", actor=ACTOR)
    with otlp_receiver() as receiver:
        # The standard variables alone do not turn tracing on.
        standard = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_TRACES_EXPORTER": "otlp"}
        with control_plane(tmp_path, **standard) as base:
            _, admin = login(base)
            assert httpx.post(f"{base}/api/v1/endpoints/", json=endpoint_body(), headers=admin).status_code == 201
            synced = httpx.get(f"{base}{CONFIG}", headers={"Authorization": f"Bearer {dataplane_secret}"})
            assert synced.status_code == 200
            assert "x-config-traceparent" not in synced.headers
        # The server has stopped (an exporter would have flushed at exit): nothing came.
        assert receiver.requests == 0
    revision = ConfigRevision.objects.order_by("-number").first()
    assert revision is not None and revision.traceparent == ""
    probe = "import sys, config.asgi, config.celery; print(sorted(m for m in sys.modules if 'opentelemetry' in m))"
    env = clean_env(DATABASE_URL=database_url(), GATEWAY_VAR_DIR=str(tmp_path / "var"), **standard)
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, check=True)  # noqa: S603
    assert out.stdout.strip() == "[]", out.stderr


@pytest.mark.parametrize("entry", ["config.asgi", "config.wsgi"])
def test_with_an_endpoint_set_each_entry_point_puts_the_django_instrumentation_first(
    tmp_path: Path, entry: str
) -> None:
    probe = (
        f"import {entry}; from django.conf import settings; from controlplane.core import tracing; "
        "print(tracing.enabled(), settings.MIDDLEWARE[0]); tracing.shutdown()"
    )
    env = clean_env(
        DATABASE_URL=database_url(), GATEWAY_VAR_DIR=str(tmp_path / "var"), GATEWAY_OTLP_ENDPOINT="http://127.0.0.1:9"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, check=True)  # noqa: S603
    assert out.stdout.split() == [
        "True",
        "opentelemetry.instrumentation.django.middleware.otel_middleware._DjangoMiddleware",
    ]
    disabled = subprocess.run(  # noqa: S603
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env={**env, "OTEL_SDK_DISABLED": "true"},
        capture_output=True,
        text=True,
    )
    assert disabled.stdout.split()[0] == "False", disabled.stderr


@pytest.mark.parametrize("collector", ["refusing", "never_answering"])
def test_a_collector_that_is_down_leaves_the_api_answering(tmp_path: Path, collector: str) -> None:
    make_admin()
    _, dataplane_secret = dataplane_token_issue(name="edge", actor=ACTOR)
    with ExitStack() as stack:
        port = free_port()
        if collector == "never_answering":
            # Accepts connections (the kernel's backlog) and never reads nor answers: the exporter waits out
            # its timeout on its own thread.
            sink = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sink.bind(("127.0.0.1", port))
            sink.listen(64)
        base = stack.enter_context(control_plane(tmp_path, GATEWAY_OTLP_ENDPOINT=f"http://127.0.0.1:{port}"))
        _, admin = login(base)
        for number in range(20):
            created = httpx.post(f"{base}/api/v1/endpoints/", json=endpoint_body(f"e{number}"), headers=admin)
            assert created.status_code == 201, created.text
            synced = httpx.get(f"{base}{CONFIG}", headers={"Authorization": f"Bearer {dataplane_secret}"})
            assert synced.status_code == 200
            assert synced.headers["x-config-traceparent"]
        assert httpx.get(f"{base}/api/v1/revisions/", headers=admin, timeout=10).status_code == 200


def test_a_config_change_is_followed_from_the_api_write_to_the_data_plane_that_applied_it(tmp_path: Path) -> None:
    """Both planes pointed at one collector (docs/tracing.md): the node's `config apply` span is a child
    of the API write's span, in the write's trace, and the control plane's answer names the node."""
    from tests.dataplane.processes import dataplane, upstream

    make_admin()
    _, secret = dataplane_token_issue(name="edge", actor=ACTOR)
    with ExitStack() as stack:
        receiver = stack.enter_context(otlp_receiver())
        origin = stack.enter_context(upstream(tmp_path, "origin"))
        base = stack.enter_context(control_plane(tmp_path, GATEWAY_OTLP_ENDPOINT=receiver.endpoint))
        _, admin = login(base)
        node_dir = tmp_path / "node"
        node_dir.mkdir()
        node = stack.enter_context(
            dataplane(
                node_dir,
                None,
                DATAPLANE_CONTROL_PLANE_URL=base,
                DATAPLANE_TOKEN=secret,
                DATAPLANE_NODE_ID="edge-7",
                DATAPLANE_OTLP_ENDPOINT=receiver.endpoint,
                DATAPLANE_TRACE_SAMPLE="0",  # requests untraced: the config change's sampling is the write's
            )
        )
        body = endpoint_body("accounts", targets=[{"url": f"{origin.url}/api"}])
        created = httpx.post(f"{base}/api/v1/endpoints/", json=body, headers=admin)
        assert created.status_code == 201, created.text
        eventually(lambda: httpx.get(f"{node.url}/accounts/1").status_code == 200, "the node serving the change")
        revision = ConfigRevision.objects.order_by("-number").first()
        assert revision is not None and revision.summary == "create endpoint accounts:v1"
        write_trace, write_span = traceparent_ids(revision.traceparent)

        applied = receiver.wait_for(
            lambda s: s.name == "config apply" and s.trace_id == write_trace, "the node's config apply span"
        )
        assert (applied.kind, applied.parent_span_id) == ("consumer", write_span)
        assert applied.resource["service.name"] == "gateway-dataplane"
        assert applied.attributes["gateway.node.id"] == "edge-7"
        assert applied.attributes["gateway.config.result"] == "applied"
        assert applied.attributes["gateway.config.revision"] == revision.number
        # The control plane's answer to that node names it (the node sends X-Gateway-Node-ID).
        receiver.wait_for(
            lambda s: s.attributes.get("gateway.dataplane.node_id") == "edge-7"
            and [(link.trace_id, link.span_id) for link in s.links] == [(write_trace, write_span)],
            "the answer's span naming the node",
        )
        # At sample 0 the proxied request itself left no span.
        assert not [
            s
            for s in receiver.snapshot()
            if s.resource.get("service.name") == "gateway-dataplane" and s.kind == "server"
        ]
