"""Health checks steering real traffic (ARCHITECTURE §4, §7): a real control plane (uvicorn), a real
Celery worker and beat on a real Redis broker, a real `python -m dataplane` syncing from the control
plane, and two real upstream targets on 127.0.0.1.

Asserted: when one target's health path starts failing, it turns unhealthy and the data plane then
sends every request to the other target; when it recovers, traffic reaches both again. No timing
assertions: every wait is bounded polling for a condition.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest

from controlplane.core.actors import Actor
from controlplane.dataplanes.services import dataplane_token_issue
from controlplane.health.models import TargetHealth
from controlplane.routing.services import endpoint_create
from tests.conftest import endpoint_body
from tests.dataplane.processes import dataplane
from tests.e2e import servers
from tests.e2e.test_health_celery import CELERY, celery_env, process, worker_argv
from tests.e2e.test_sync_longpoll import control_plane
from tests.redis_databases import redis_url_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ACTOR = Actor.command("test")
BROKER = redis_url_for("health_routing")  # a Redis database of this test's own (GATEWAY_TEST_REDIS_URL)


@dataclass
class Target:
    """A real HTTP upstream that names itself in every answer; its health path's status can be flipped."""

    name: str
    health_status: int = 200
    port: int = 0
    served: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def target(name: str) -> Iterator[Target]:
    state = Target(name)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            status = state.health_status if self.path.endswith("/health") else 200
            if not self.path.endswith("/health"):
                state.served.append(self.path)
            body = state.name.encode()
            try:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("X-Upstream", state.name)
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
            pass

    with servers.http_server(Handler) as port:
        state.port = port
        yield state


def eventually(condition: Callable[[], bool], what: str, timeout: float = 90.0) -> None:
    servers.eventually(condition, what, timeout)


def answered_by(node_url: str, requests: int = 30) -> set[str]:
    """Which upstreams answered `requests` requests through the data plane (every one must be a 200)."""
    names = set()
    with httpx.Client(timeout=10) as client:
        for i in range(requests):
            response = client.get(f"{node_url}/users/{i}")
            assert response.status_code == 200, response.text
            names.add(response.text)
    return names


def status_of(url: str) -> str:
    return TargetHealth.objects.filter(target__url=url).values_list("status", flat=True).first() or "none"


def flush_broker() -> None:
    """Start from an empty queue: tasks left in this test's own Redis database by an earlier run go."""
    import redis

    redis.Redis.from_url(BROKER).flushdb()


def test_the_data_plane_stops_routing_to_an_unhealthy_target_and_returns_when_it_recovers(tmp_path: Path) -> None:
    flush_broker()
    _, secret = dataplane_token_issue(name="edge-1", actor=ACTOR)
    env = {**celery_env(tmp_path), "CELERY_BROKER_URL": BROKER}
    with ExitStack() as stack:
        blue = stack.enter_context(target("blue"))
        green = stack.enter_context(target("green"))
        check = {"path": "/health", "interval": 5, "timeout": 2, "unhealthy_threshold": 2, "healthy_threshold": 1}
        urls = {"blue": f"{blue.base}/blue", "green": f"{green.base}/green"}
        body = endpoint_body(targets=[{"url": url} for url in urls.values()], health_check=check)
        endpoint_create(data=body, actor=ACTOR)

        base, _ = stack.enter_context(control_plane(tmp_path))
        stack.enter_context(process(worker_argv("routing"), env=env, log=tmp_path / "worker.log"))
        stack.enter_context(
            process([*CELERY, "beat", "-s", str(tmp_path / "beat")], env=env, log=tmp_path / "beat.log")
        )
        (tmp_path / "dp").mkdir()
        node = stack.enter_context(
            dataplane(
                tmp_path / "dp",
                None,
                DATAPLANE_CONTROL_PLANE_URL=base,
                DATAPLANE_TOKEN=secret,
                DATAPLANE_CACHE_DIR=str(tmp_path / "cache"),
            )
        )
        eventually(lambda: httpx.get(f"{node.admin}/-/readyz").status_code == 200, "the data plane to be ready")

        # Both targets healthy: traffic reaches both.
        eventually(lambda: {status_of(url) for url in urls.values()} == {"healthy"}, "both targets healthy")
        eventually(lambda: answered_by(node.url) == {"blue", "green"}, "traffic to reach both targets")

        # Blue's health path fails: once it is unhealthy, every request goes to green.
        blue.health_status = 503
        eventually(lambda: status_of(urls["blue"]) == "unhealthy", "blue to turn unhealthy")
        eventually(lambda: answered_by(node.url) == {"green"}, "the data plane to stop routing to blue")
        served_before = len(blue.served)
        assert answered_by(node.url, requests=60) == {"green"}
        assert len(blue.served) == served_before
        health = TargetHealth.objects.get(target__url=urls["blue"])
        assert health.last_error == "HTTP 503"
        assert status_of(urls["green"]) == "healthy"

        # Blue recovers: traffic returns to both.
        blue.health_status = 200
        eventually(lambda: status_of(urls["blue"]) == "healthy", "blue to recover")
        eventually(lambda: answered_by(node.url) == {"blue", "green"}, "traffic to return to blue")
