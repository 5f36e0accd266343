"""How many health checks the Celery workers keep up with (ARCHITECTURE §7; docs/health.md, "Scale").

1,000 targets (20 endpoints × 50) on a local test server, 10 % of them blackholed (the connection is
accepted and never answered, so each of those probes runs into `health_check.timeout`), every target on
a 10 s interval. Real Redis broker (a database of its own: tests/redis_databases.py), real
`celery worker --pool=solo` and one beat, a PostgreSQL database of its own. Run once with one worker,
then with two. Reported per run:

- achieved check rate: targets / the mean gap between a target's consecutive probes in the steady-state
  window (after `--warmup`), against the 100/s the schedule asks; the raw count of checks in the window
  divided by its length beside it (it depends on where the window cuts the batches);
- lag behind schedule: sampled every second, how long the most overdue unleased target has been due
  (p50 / p95 / max of the samples), and the mean gap between a target's consecutive probes minus the interval
  (and the smallest and largest gap minus the interval: scheduling from the due time lets a probe that
  followed a late one come early, never more than 10 % of the interval);
- database growth per day: bytes per stored result and per hourly roll-up row (measured), times the
  rows a day adds (roll-ups: 24 per target) and the bounded size of the last-100 results.

    .venv/bin/python bench/health_scale.py [--targets 1000] [--duration 90] [--warmup 20] [--workers 1 2]

Needs PostgreSQL on 127.0.0.1:5432 (user postgres) and Redis on 127.0.0.1:6379; creates and drops the
database `gateway_health_bench` and flushes its Redis database (the fourth of `GATEWAY_TEST_REDIS_URL`,
default `redis://127.0.0.1:6379/15`). Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATABASE = "gateway_health_bench"
DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{DATABASE}"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from tests.redis_databases import redis_url_for  # noqa: E402

BROKER = redis_url_for("health_bench")  # GATEWAY_TEST_REDIS_URL's fourth database (default 15)
INTERVAL = 10
TIMEOUT = 2.0
PER_ENDPOINT = 50


def env() -> dict[str, str]:
    variables = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "CELERY_", "GATEWAY_"))}
    variables.update(
        DATABASE_URL=DATABASE_URL,
        CELERY_BROKER_URL=BROKER,
        GATEWAY_VAR_DIR=str(ROOT / "var" / "health-bench"),
        DJANGO_SETTINGS_MODULE="config.settings.local",
    )
    return variables


def recreate_database() -> None:
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DATABASE}")
    subprocess.run(  # noqa: S603 - our own argv
        [sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env(), check=True, capture_output=True
    )


def drop_database() -> None:
    import psycopg
    from django.db import connections

    connections.close_all()
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")


class Servers:
    """Two listeners in one asyncio loop on a thread: `healthy` answers 200 at once; `blackhole` accepts
    and never answers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.healthy_port = 0
        self.blackhole_port = 0
        self.answered = 0
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    async def _healthy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    break
                self.answered += 1
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _blackhole(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read()  # until the prober gives up and closes
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _start(self) -> None:
        healthy = await asyncio.start_server(self._healthy, "127.0.0.1", 0, backlog=1024)
        blackhole = await asyncio.start_server(self._blackhole, "127.0.0.1", 0, backlog=1024)
        self.healthy_port = healthy.sockets[0].getsockname()[1]
        self.blackhole_port = blackhole.sockets[0].getsockname()[1]
        self.ready.set()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self.loop.run_forever()

    def start(self) -> None:
        self.thread.start()
        self.ready.wait(10)


def create_targets(servers: Servers, count: int) -> None:
    from controlplane.core.actors import Actor
    from controlplane.routing.services import endpoint_create

    actor = Actor.command("bench")
    check = {
        "path": "/health",
        "interval": INTERVAL,
        "timeout": TIMEOUT,
        "unhealthy_threshold": 3,
        "healthy_threshold": 2,
    }
    for e in range(count // PER_ENDPOINT):
        targets = []
        for t in range(PER_ENDPOINT):
            n = e * PER_ENDPOINT + t
            port = servers.blackhole_port if n % 10 == 9 else servers.healthy_port
            targets.append({"url": f"http://127.0.0.1:{port}/e{e}/t{t}"})
        body = {"name": f"bench{e}", "version": "v1", "targets": targets, "health_check": check}
        endpoint_create(data=body, actor=actor)


@contextmanager
def process(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: S603 - our own argv
            argv, cwd=ROOT, env=env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


def reset_health() -> None:
    from controlplane.health.models import HealthResult, HealthRollup, TargetHealth

    HealthResult.objects.all().delete()
    HealthRollup.objects.all().delete()
    TargetHealth.objects.all().delete()
    from django.db import connection

    # Give the space back, so the next run's bytes per row are not inflated by the last run's dead rows.
    with connection.cursor() as cursor:
        cursor.execute("VACUUM FULL health_healthresult, health_healthrollup, health_targethealth")


def overdue_seconds() -> float:
    """How long the most overdue unleased target has been due (0 when none is)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT COALESCE(EXTRACT(EPOCH FROM statement_timestamp() - MIN(next_check_at)), 0) "
            "FROM health_targethealth WHERE next_check_at <= statement_timestamp() "
            "AND (lease_until IS NULL OR lease_until <= statement_timestamp())"
        )
        return max(0.0, float(cursor.fetchone()[0]))


def run(workers: int, duration: float, warmup: float, logs: Path, targets: int) -> dict[str, float]:
    import redis
    from django.db import connection
    from django.utils import timezone

    from controlplane.health.models import HealthResult, HealthRollup

    redis.Redis.from_url(BROKER).flushdb()
    reset_health()
    celery = [sys.executable, "-m", "celery", "-A", "config"]
    samples: list[float] = []
    with ExitStack() as stack:
        for i in range(workers):
            argv = [*celery, "worker", "--pool=solo", "-n", f"bench{i}@%h", "--without-mingle", "--without-gossip"]
            stack.enter_context(process(argv, logs / f"worker{workers}-{i}.log"))
        stack.enter_context(process([*celery, "beat", "-s", str(logs / f"beat{workers}")], logs / f"beat{workers}.log"))
        started = time.monotonic()
        window_start = None
        while time.monotonic() - started < duration:
            time.sleep(1.0)
            if time.monotonic() - started >= warmup:
                if window_start is None:
                    window_start = timezone.now()
                samples.append(overdue_seconds())
        window_end = timezone.now()
    assert window_start is not None
    window = (window_end - window_start).total_seconds()
    in_window = HealthResult.objects.filter(checked_at__gte=window_start, checked_at__lt=window_end)
    checks = in_window.count()
    failures = in_window.filter(ok=False).count()
    gaps: list[float] = []
    by_target: dict[int, list[Any]] = {}
    for target_id, checked_at in in_window.order_by("checked_at").values_list("target_id", "checked_at"):
        by_target.setdefault(target_id, []).append(checked_at)
    for times in by_target.values():
        gaps += [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]
    samples.sort()
    with connection.cursor() as cursor:
        # Compacted first: every check rewrites its roll-up row, so right after a run the small roll-up
        # table is mostly dead row versions that autovacuum has not reclaimed yet; that space is reused,
        # it does not grow with the days.
        cursor.execute("VACUUM FULL health_healthresult, health_healthrollup")
        cursor.execute(
            "SELECT pg_total_relation_size('health_healthresult'), pg_total_relation_size('health_healthrollup')"
        )
        result_bytes, rollup_bytes = cursor.fetchone()
    results_stored = HealthResult.objects.count()
    rollups_stored = HealthRollup.objects.count()
    per_result = result_bytes / max(1, results_stored)
    per_rollup = rollup_bytes / max(1, rollups_stored)
    return {
        "workers": workers,
        # Targets / mean gap between a target's probes: the sustained rate. Checks counted in the window
        # depend on where the window cuts the (synchronised) batches; shown too, as a cross-check.
        "rate": len(by_target) / statistics.fmean(gaps) if gaps else float("nan"),
        "window_rate": checks / window,
        "failures_share": failures / max(1, checks),
        "lag_p50": samples[len(samples) // 2],
        "lag_p95": samples[min(len(samples) - 1, int(0.95 * len(samples)))],
        "lag_max": samples[-1],
        "gap_mean_over": (statistics.fmean(gaps) - INTERVAL) if gaps else float("nan"),
        "gap_max_over": (max(gaps) - INTERVAL) if gaps else float("nan"),
        "gap_min_over": (min(gaps) - INTERVAL) if gaps else float("nan"),
        "per_result": per_result,
        "per_rollup": per_rollup,
        "rollups_per_day_bytes": per_rollup * 24 * targets,
        "results_bounded_bytes": per_result * 100 * targets,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=90.0)
    parser.add_argument("--warmup", type=float, default=20.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    os.environ.update(env())
    sys.path.insert(0, str(ROOT))
    recreate_database()
    import django

    django.setup()
    servers = Servers()
    servers.start()
    logs = ROOT / "var" / "health-bench"
    logs.mkdir(parents=True, exist_ok=True)
    create_targets(servers, args.targets)
    print(
        f"{args.targets} targets ({args.targets // 10} blackholed, timeout {TIMEOUT:g} s), interval {INTERVAL} s: "
        f"the schedule asks {args.targets / INTERVAL:.0f} checks/s. {args.duration:g} s per run, "
        f"the first {args.warmup:g} s not counted."
    )
    print(
        f"{'workers':>7} {'checks/s':>9} {'(window)':>9} {'failed':>7} {'lag p50':>8} {'lag p95':>8} {'lag max':>8} "
        f"{'gap-int':>8} {'gap min':>8} {'gap max':>8} "
        f"{'B/result':>9} {'B/rollup':>9} {'rollups/day':>12} {'results cap':>12}"
    )
    try:
        for workers in args.workers:
            r = run(workers, args.duration, args.warmup, logs, args.targets)
            print(
                f"{workers:>7} {r['rate']:>9.1f} {r['window_rate']:>9.1f} {r['failures_share'] * 100:>6.1f}% "
                f"{r['lag_p50']:>7.2f}s "
                f"{r['lag_p95']:>7.2f}s {r['lag_max']:>7.2f}s {r['gap_mean_over']:>7.2f}s {r['gap_min_over']:>7.2f}s "
                f"{r['gap_max_over']:>7.2f}s "
                f"{r['per_result']:>9.0f} {r['per_rollup']:>9.0f} {r['rollups_per_day_bytes'] / 1e6:>9.1f} MB "
                f"{r['results_bounded_bytes'] / 1e6:>9.1f} MB"
            )
    finally:
        drop_database()


if __name__ == "__main__":
    main()
