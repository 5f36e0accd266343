"""Health checks end to end (ARCHITECTURE §7): real Redis broker, two real Celery workers and two beats
(a duplicate beat must be harmless), a real upstream on 127.0.0.1, the test PostgreSQL database.

Asserted: a target that starts failing becomes unhealthy after exactly `unhealthy_threshold` probes and
leaves the data planes' snapshot as unhealthy; it recovers after exactly `healthy_threshold` successes;
no target is ever probed twice within one interval; a worker killed mid-probe loses nothing and the
checks resume by themselves once its lease runs out.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path

import pytest
from django.db import connection

from controlplane.core.actors import Actor
from controlplane.dataplanes.snapshot import load_snapshot
from controlplane.health.models import HealthResult, TargetHealth
from controlplane.routing.services import endpoint_create
from tests.conftest import endpoint_body
from tests.controlplane.health_upstream import upstream
from tests.e2e.servers import clean_env, eventually, running
from tests.redis_databases import redis_url_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

BROKER = redis_url_for("health_celery")  # a Redis database of this test's own (GATEWAY_TEST_REDIS_URL)
INTERVAL = 5  # the schema's minimum
TARGETS = 3


def process(argv: list[str], *, env: dict[str, str], log: Path) -> AbstractContextManager[subprocess.Popen[bytes]]:
    """Run a worker or beat (from the repo root) until the block ends; show its log when the test fails."""
    return running(argv, env=env, ready_url=None, log=log)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    eventually(condition, what, timeout)


def status_of(url: str) -> str:
    return TargetHealth.objects.filter(target__url=url).values_list("status", flat=True).first() or "none"


def celery_env(tmp_path: Path) -> dict[str, str]:
    database = connection.settings_dict
    return clean_env(
        DATABASE_URL=f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
        CELERY_BROKER_URL=BROKER,
        GATEWAY_VAR_DIR=str(tmp_path / "var"),
    )


CELERY = [sys.executable, "-m", "celery", "-A", "config"]


def worker_argv(name: str) -> list[str]:
    return [*CELERY, "worker", "--pool=solo", "-n", f"{name}@%h", "--without-mingle", "--without-gossip"]


def test_workers_and_beat_turn_a_failing_target_unhealthy_after_exactly_the_threshold(tmp_path: Path) -> None:
    env = celery_env(tmp_path)
    with upstream() as server, ExitStack() as stack:
        urls = [f"{server.base}/t{i}" for i in range(TARGETS)]
        check = {
            "path": "/health",
            "interval": INTERVAL,
            "timeout": 1,
            "unhealthy_threshold": 3,
            "healthy_threshold": 2,
        }
        endpoint_create(
            data=endpoint_body(targets=[{"url": url} for url in urls], health_check=check), actor=Actor.command("test")
        )
        watched = urls[0]
        for i in range(2):
            stack.enter_context(process(worker_argv(f"health{i}"), env=env, log=tmp_path / f"worker{i}.log"))
            beat = [*CELERY, "beat", "-s", str(tmp_path / f"beat{i}-schedule")]
            stack.enter_context(process(beat, env=env, log=tmp_path / f"beat{i}.log"))

        # Healthy first: exactly healthy_threshold probes, the first counted too.
        wait_until(lambda: status_of(watched) == "healthy", 60, "the target to turn healthy")
        assert [s for _, p, s in server.log if p == "/t0/health"] == [200, 200]

        # Then it starts failing: unhealthy after exactly unhealthy_threshold probes, none fewer.
        server.status = 500
        flipped = len([e for e in server.log if e[1] == "/t0/health"])
        # Polled every 0.1 s against a 5 s interval: the probe count when the status turns is exact.
        wait_until(lambda: status_of(watched) == "unhealthy", 60, "the target to turn unhealthy")
        failing = [s for _, p, s in server.log if p == "/t0/health"][flipped:]
        assert failing == [500, 500, 500]
        health = TargetHealth.objects.get(target__url=watched)
        assert (health.consecutive_failures, health.last_error) == (3, "HTTP 500")
        state = json.loads(load_snapshot().body)["state"]["targets"]
        assert state["users:v1"][watched] == "unhealthy"

        # And it recovers after exactly healthy_threshold successes.
        server.status = 200
        recovered_from = len([e for e in server.log if e[1] == "/t0/health"])
        wait_until(lambda: status_of(watched) == "healthy", 60, "the target to recover")
        assert [s for _, p, s in server.log if p == "/t0/health"][recovered_from:] == [200, 200]

    # Two workers and two beats, yet every target was probed at most once per interval.
    for url in urls:
        path = url.removeprefix(server.base) + "/health"
        times = [t for t, p, _ in server.log if p == path]
        assert len(times) >= 5
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert min(gaps) > INTERVAL - 1, (path, gaps)
    assert HealthResult.objects.filter(target__url=watched).count() == len(
        [e for e in server.log if e[1] == "/t0/health"]
    )


def test_a_worker_killed_mid_probe_loses_nothing_and_its_target_is_checked_again(tmp_path: Path) -> None:
    env = celery_env(tmp_path)
    with upstream() as server, ExitStack() as stack:
        server.delay = 2.0
        check = {"path": "/health", "interval": INTERVAL, "timeout": 4, "healthy_threshold": 1}
        endpoint_create(
            data=endpoint_body(targets=[{"url": server.base}], health_check=check), actor=Actor.command("test")
        )
        stack.enter_context(
            process([*CELERY, "beat", "-s", str(tmp_path / "beat")], env=env, log=tmp_path / "beat.log")
        )
        with process(worker_argv("doomed"), env=env, log=tmp_path / "doomed.log") as doomed:
            wait_until(lambda: len(server.log) == 1, 60, "the first probe to arrive")
            os.killpg(doomed.pid, signal.SIGKILL)  # mid-probe: its result is never written
            doomed.wait()
        killed_at = time.monotonic()
        held = TargetHealth.objects.get()
        assert held.lease_owner and held.lease_until is not None and held.last_checked_at is None
        server.delay = 0.0
        stack.enter_context(process(worker_argv("heir"), env=env, log=tmp_path / "heir.log"))
        # The lease (timeout 4 s + 15 s) keeps the target from a second probe while the first may still
        # be running; once it runs out, the checks resume by themselves.
        wait_until(lambda: TargetHealth.objects.get().status == "healthy", 60, "the checks to resume")
        assert len(server.log) == 2
        assert server.log[1][0] - server.log[0][0] > 15
        assert time.monotonic() - killed_at < 40
        health = TargetHealth.objects.get()
        assert (health.lease_owner, health.lease_until) == ("", None)
