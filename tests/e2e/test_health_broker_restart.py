"""A broker restart (ARCHITECTURE §7: "a broker restart loses no health state, and checks resume on
their own"): a Redis server of this test's own on a free port (no persistence, so the restart loses every
queued message), a real Celery worker and beat, a real upstream on 127.0.0.1, the test PostgreSQL database.

The Redis server is killed (SIGKILL) while targets are being checked, stays down for several intervals and
is started again on the same port. Asserted: the worker and beat are still the same processes (nobody
restarted them); the checks resume by themselves; the health counters and history written before the
outage are still there and keep counting; status transitions after the restart are still exact.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
import redis

from controlplane.core.actors import Actor
from controlplane.dataplanes.snapshot import load_snapshot
from controlplane.health.models import HealthResult, HealthRollup, TargetHealth
from controlplane.health.selectors import target_health_summary
from controlplane.routing.services import endpoint_create
from tests.conftest import endpoint_body
from tests.controlplane.health_upstream import Upstream, upstream
from tests.e2e.servers import clean_env, eventually, free_port, running
from tests.e2e.test_health_celery import CELERY, INTERVAL, celery_env, process, status_of, worker_argv

# Needs `redis-server` on PATH (.ci/run installs it): without it this test fails, it is not skipped.
pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

OUTAGE_INTERVALS = 3  # the broker stays down this many check intervals


def redis_up(port: int) -> bool:
    try:
        return bool(redis.Redis(host="127.0.0.1", port=port, socket_timeout=1).ping())
    except redis.ConnectionError:
        return False


@contextmanager
def redis_server(port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A Redis server on 127.0.0.1:`port` that keeps nothing on disk: what a restart loses, it loses."""
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    argv += ["--dir", str(log.parent)]
    with running(argv, env=clean_env(), ready_url=None, log=log) as server:
        eventually(lambda: redis_up(port), f"redis-server on port {port} to answer", 20)
        yield server


def successes(url: str) -> int:
    row = TargetHealth.objects.filter(target__url=url).values_list("consecutive_successes", flat=True).first()
    return row or 0


def probes_of(server: Upstream, path: str) -> list[int]:
    return [status for _, p, status in server.log if p == path]


def test_checks_resume_by_themselves_after_the_broker_is_killed_and_restarted(tmp_path: Path) -> None:
    port = free_port()
    env = celery_env(tmp_path) | {"CELERY_BROKER_URL": f"redis://127.0.0.1:{port}/0"}
    with upstream() as server, ExitStack() as stack:
        urls = [f"{server.base}/t{i}" for i in range(2)]
        check = {"path": "/health", "interval": INTERVAL, "timeout": 1}
        check |= {"unhealthy_threshold": 3, "healthy_threshold": 2}
        endpoint_create(
            data=endpoint_body(targets=[{"url": url} for url in urls], health_check=check), actor=Actor.command("test")
        )
        watched, path = urls[0], "/t0/health"
        broker = stack.enter_context(redis_server(port, tmp_path / "redis-1.log"))
        worker = stack.enter_context(process(worker_argv("survivor"), env=env, log=tmp_path / "worker.log"))
        beat = stack.enter_context(
            process([*CELERY, "beat", "-s", str(tmp_path / "beat-schedule")], env=env, log=tmp_path / "beat.log")
        )

        # Checked before the outage: healthy, and a third success counted on top.
        eventually(lambda: successes(watched) >= 3, "three successful probes", 60)
        assert status_of(watched) == "healthy"

        # What the database holds when the broker dies: the health state the outage must not lose.
        before = {row.target.url: row for row in TargetHealth.objects.select_related("target")}
        probed_at_kill = len(probes_of(server, path))
        os.kill(broker.pid, signal.SIGKILL)  # without a word; whatever it held is gone with it
        broker.wait()
        killed_at = time.monotonic()
        assert not redis_up(port)
        eventually(lambda: time.monotonic() - killed_at > OUTAGE_INTERVALS * INTERVAL, "the outage to last", 60)

        assert worker.poll() is None and beat.poll() is None, "worker and beat must ride out the outage"
        # No tick reached the worker while the broker was down: at most the task it already held ran.
        probed_before = len(probes_of(server, path))
        assert probed_before - probed_at_kill <= 1
        # The health state written before the outage is all there, and every probe is in the history.
        for url, row in before.items():
            kept = TargetHealth.objects.get(target__url=url)
            assert kept.status == row.status == "healthy"
            assert kept.consecutive_successes >= row.consecutive_successes >= 2
            assert kept.last_checked_at >= row.last_checked_at
        eventually(lambda: not TargetHealth.objects.exclude(lease_until=None).exists(), "leases released", 30)
        assert HealthResult.objects.filter(target__url=watched).count() == probed_before

        # The same port again, an empty Redis: worker and beat reconnect and the checks resume on their own.
        stack.enter_context(redis_server(port, tmp_path / "redis-2.log"))
        eventually(lambda: len(probes_of(server, path)) >= probed_before + 2, "the checks to resume", 90)
        # The upstream sees a probe before the worker has written its result: wait for the writes too.
        # The counters carry on from where they were (the state was not reset by the restart): a reset
        # would start again from 1 and stay below this for the probes seen.
        counted = before[watched].consecutive_successes + 2
        eventually(
            lambda: TargetHealth.objects.get(target__url=watched).consecutive_successes >= counted,
            "two more successes counted on top of the ones before the outage",
            30,
        )
        resumed = TargetHealth.objects.get(target__url=watched)
        assert resumed.status == "healthy"

        # Status transitions are still exact: unhealthy after exactly unhealthy_threshold failures.
        server.status = 500
        flipped = len(probes_of(server, path))
        eventually(lambda: status_of(watched) == "unhealthy", "the target to turn unhealthy", 60)
        assert probes_of(server, path)[flipped:] == [500, 500, 500]
        state = json.loads(load_snapshot().body)["state"]["targets"]
        assert state["users:v1"][watched] == "unhealthy"
        server.status = 200
        recovered_from = len(probes_of(server, path))
        eventually(lambda: status_of(watched) == "healthy", "the target to recover", 60)
        assert probes_of(server, path)[recovered_from:] == [200, 200]

        # The very processes started at the beginning did all of it.
        assert worker.poll() is None and beat.poll() is None

    # Every probe, before and after the outage, is in the history and counted in the roll-ups.
    for url in urls:
        probe_path = url.removeprefix(server.base) + "/health"
        probes = len(probes_of(server, probe_path))
        assert HealthResult.objects.filter(target__url=url).count() == probes
        assert sum(HealthRollup.objects.filter(target__url=url).values_list("checks", flat=True)) == probes
        times = [t for t, p, _ in server.log if p == probe_path]
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert min(gaps) > INTERVAL - 1, (probe_path, gaps)
    # Uptime as the API reports it matches the sequence the upstream answered, across the outage.
    statuses = probes_of(server, path)
    summary = target_health_summary(target_id=TargetHealth.objects.get(target__url=watched).target_id)
    for window in ("last_100", "24h"):
        assert summary[window]["checks"] == len(statuses)
        assert summary[window]["uptime"] == statuses.count(200) / len(statuses)
