"""What a large config costs (docs/performance.md, "Large configs"): 10,000 endpoints with 2 targets each against 10.

Starts, only on 127.0.0.1: an nginx upstream; two real control planes (uvicorn + httptools), each on a
PostgreSQL database of its own (`gateway_bench_big10` and `gateway_bench_big<N>`, created and dropped);
and one real data plane (`python -m dataplane`, synced from its control plane, cache on) per control
plane. Every figure is printed beside the same figure at 10 endpoints, measured in the same run:

  write         an API PATCH of one endpoint's description: time to the answer through uvicorn (median
                and p95 of `--writes`), and, in a process of its own on the same database, the SQL
                statements the same PATCH runs (Django's CaptureQueriesContext) and the slowest of them
  snapshot      controlplane.dataplanes.snapshot.load_snapshot (read + build + gzip, median of 5) in the
                process that made the last write (it reuses the document it wrote) and in one that must
                read the document from the database; raw and gzip size
  parse/apply   dataplane.snapshot.load_sync_snapshot (parse, check the hash, validate, compile: what the
                sync client runs in a thread; after one endpoint changed, compiled against the previous
                snapshot as the sync client does), Runtime.prepare (the rest of the apply, in the same
                thread) and Runtime.commit (the swap, on the event loop), for the first apply and for a
                re-apply after one endpoint changed, median of 5, in-process
  stall         the longest event-loop stall in the real data-plane process while it receives and
                applies a snapshot from its control plane under light traffic (wrk, 10 connections): a
                ticker coroutine (sleep 2 ms, record the lateness) runs inside the data plane; the process
                is `python -m dataplane` started through this file (`--dataplane-with-ticker`), which only
                adds the ticker. Cases: growing from 10 to N endpoints (import); one endpoint changed (an
                API PATCH) at 10, at N with the traffic on 10 endpoints, and at N with the traffic spread
                over all N (then the status report sent after each apply covers N endpoints); each beside
                the longest stall in an equal window of the same traffic just before, without a change
  memory        VmRSS of each data plane after applying its config
  throughput    wrk, 50 connections, `--duration` s per run, `--rounds` interleaved rounds, medians, each
                request to a random endpoint (`/svc-NNNNN/x`): of the 10 (the reference), of all N, and of
                the first 10 of the N-endpoint config (the hot path without the per-endpoint bookkeeping
                of N endpoints in use); both data planes pinned to core 0, nginx and wrk on core 1, one
                upstream
  report        dataplane.report.build_counters with every endpoint having traffic (the status report's
                counters, built in a thread after each apply and every DATAPLANE_REPORT_INTERVAL)

    .venv/bin/python bench/large_config.py [--endpoints 10000] [--writes 20] [--rounds 5] [--duration 5]

Needs PostgreSQL on 127.0.0.1:5432 (user postgres), `wrk`, `nginx` and `taskset` on PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml
from common import PASSWORD, bench_database, free_port, nginx_conf, parse_wrk, percentile, started, upstream_block

ROOT = Path(__file__).resolve().parents[1]
DB_PREFIX = "gateway_bench_big"
PROXY_CORE = "0"
LOAD_CORE = "1"
SMALL = 10
JSON = "application/json"
TICK = 0.002  # the ticker's sleep


# --- helpers --------------------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def ratio(big: float, small: float) -> str:
    return f"{big / small:.2f}x" if small else "-"


def bench_document(count: int, upstream: str) -> dict[str, Any]:
    """`count` endpoints `svc-00000:v1`…, each with two targets on the same upstream, two tags and a
    description (so ?tag= and ?search= have something to find)."""
    return {
        "format_version": 1,
        "breaker_policies": [],
        "endpoints": [
            {
                "name": f"svc-{i:05d}",
                "version": "v1",
                "default": True,
                "description": f"bench service number {i}",
                "tags": [f"team-{i % 50:02d}", "even" if i % 2 == 0 else "odd"],
                "targets": [{"url": f"{upstream}/a"}, {"url": f"{upstream}/b"}],
            }
            for i in range(count)
        ],
    }


def write_document(path: Path, document: dict[str, Any]) -> Path:
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    path.write_text(yaml.dump(document, Dumper=dumper, sort_keys=False))
    return path


def run_measured(argv: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Run a child to completion: wall seconds, its own peak RSS (KiB, from wait4), its stdout."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started_at = time.perf_counter()
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=err)  # noqa: S603
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started_at
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if process.returncode != 0:
            raise RuntimeError(f"{argv!r} failed ({process.returncode}):\n{err.read().decode()[-3000:]}")
        return wall, usage.ru_maxrss, out.read().decode()


def proc_status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


# --- wrk and nginx ---------------------------------------------------------------------------------------


def wrk_script(work: Path, count: int) -> Path:
    """A wrk script sending each request to a random one of `count` endpoints."""
    path = work / f"random-{count}.lua"
    path.write_text(
        f"""
math.randomseed(42)
request = function()
  return wrk.format("GET", string.format("/svc-%05d/x", math.random(0, {count - 1})))
end
"""
    )
    return path


def wrk_argv(url: str, connections: int, duration: float, script: Path | None = None) -> list[str]:
    argv = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency"]
    return argv + (["-s", str(script)] if script else []) + [url]


# --- the control plane --------------------------------------------------------------------------------------


class ControlPlane:
    """A control plane on a database of its own: migrated, an admin user, a data-plane token, uvicorn."""

    def __init__(self, database: str, work: Path) -> None:
        self.database = database
        self.work = work
        self.env: dict[str, str] = {}  # set by running()
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.token = ""
        self.access = ""

    def manage(self, *args: str) -> tuple[float, int, str]:
        return run_measured([sys.executable, "manage.py", *args], self.env)

    @contextmanager
    def running(self) -> Iterator[ControlPlane]:
        with bench_database(self.database, {"JWT_ACCESS_TOKEN_SECONDS": "7200"}) as self.env:
            self.token = self.manage("issue_dataplane_token", f"node-{self.database}")[2].strip().splitlines()[-1]
            argv = [sys.executable, "-m", "uvicorn", "config.asgi:application", "--http", "httptools"]
            argv += ["--host", "127.0.0.1", "--port", str(self.port), "--no-access-log"]
            argv += ["--timeout-graceful-shutdown", "1"]
            with started(argv, self.work / f"{self.database}.log", f"{self.base}/healthz", env=self.env):
                answer = httpx.post(f"{self.base}/api/v1/auth/token/", json={"username": "bench", "password": PASSWORD})
                self.access = answer.raise_for_status().json()["access"]
                yield self

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, headers={"Authorization": f"Bearer {self.access}"}, timeout=300)

    def import_file(self, path: Path) -> tuple[float, int]:
        """`manage.py import_config FILE`: wall seconds and the peak RSS (KiB) of that process."""
        wall, peak, _ = self.manage("import_config", str(path))
        return wall, peak


def patch_times(cp: ControlPlane, count: int, *, pause: float = 0.3) -> list[float]:
    """`count` API PATCHes of one endpoint's description, one at a time: seconds to each answer."""
    times = []
    with cp.client() as client:
        for number in range(count):
            started_at = time.perf_counter()
            client.patch("/api/v1/endpoints/svc-00003:v1/", json={"description": f"w{number}"}).raise_for_status()
            times.append(time.perf_counter() - started_at)
            time.sleep(pause)  # let the data plane fetch and apply; it shares these cores
    return times


# --- in-process measurements (a child process per database) -------------------------------------------------


def inprocess(database: str, access: str) -> dict[str, Any]:
    """Statements of one PATCH, snapshot build, data-plane parse/validate/compile and apply, on `database`."""
    os.environ.update(
        {
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{database}",
            "DJANGO_SETTINGS_MODULE": "config.settings.local",
            "DJANGO_DEBUG": "false",
        }
    )
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from controlplane.dataplanes.snapshot import load_snapshot
    from dataplane.runtime import Runtime
    from dataplane.settings import Settings
    from dataplane.snapshot import load_sync_snapshot

    out: dict[str, Any] = {}
    client = Client(SERVER_NAME="127.0.0.1", HTTP_AUTHORIZATION=f"Bearer {access}")
    counts, sql_times, slowest = [], [], []
    for number in range(5):
        with CaptureQueriesContext(connection) as captured:
            response = client.patch(
                "/api/v1/endpoints/svc-00004:v1/",
                {"description": f"inprocess {number}"},
                content_type=JSON,
            )
        assert response.status_code == 200, response.content
        counts.append(len(captured.captured_queries))
        times = [(float(q["time"]), q["sql"]) for q in captured.captured_queries]
        sql_times.append(sum(t for t, _ in times))
        slowest.append(max(times))
    out["patch_statements"] = counts[-1]
    out["patch_sql_seconds"] = statistics.median(sql_times)
    top = max(slowest)
    out["patch_slowest_statement"] = {"seconds": statistics.median(t for t, _ in slowest), "sql": top[1][:160]}

    # The same PATCH when this process does not hold the live document (cold, or another process wrote
    # last): it reads the whole document, as every write did before core/revisions.py remembered it.
    from controlplane.core import revisions

    cold_times, cold_sql = [], []
    for number in range(5):
        revisions._last = None
        with CaptureQueriesContext(connection) as captured:
            started_at = time.perf_counter()
            client.patch("/api/v1/endpoints/svc-00004:v1/", {"description": f"c{number}"}, content_type=JSON)
            cold_times.append(time.perf_counter() - started_at)
        cold_sql.append(sum(float(q["time"]) for q in captured.captured_queries))
    out["patch_cold_seconds"] = statistics.median(cold_times)
    out["patch_cold_sql_seconds"] = statistics.median(cold_sql)
    warm_times = []
    for number in range(5):
        started_at = time.perf_counter()
        client.patch("/api/v1/endpoints/svc-00004:v1/", {"description": f"w{number}"}, content_type=JSON)
        warm_times.append(time.perf_counter() - started_at)
    out["patch_warm_seconds"] = statistics.median(warm_times)
    # What each snapshot's health state cost before controlplane/health/selectors.py asked only for the
    # endpoints with a known status: every endpoint's check plan.
    from controlplane.health.services import check_plans

    started_at = time.perf_counter()
    check_plans()
    out["all_check_plans_seconds"] = time.perf_counter() - started_at

    builds, cold = [], []
    for _ in range(5):
        started_at = time.perf_counter()
        snapshot = load_snapshot()  # this process wrote last: the document it remembers is the live one
        builds.append(time.perf_counter() - started_at)
        revisions._last = None  # as in a process that did not write: the document is read from the database
        started_at = time.perf_counter()
        load_snapshot()
        cold.append(time.perf_counter() - started_at)
    out["snapshot_build_seconds"] = statistics.median(builds)
    out["snapshot_build_cold_seconds"] = statistics.median(cold)
    out["snapshot_raw_bytes"] = len(snapshot.body)
    out["snapshot_gzip_bytes"] = len(snapshot.gzipped)

    # The data plane's side, as dataplane/sync.py runs it: load_sync_snapshot and prepare (in a thread there), commit.
    client.patch("/api/v1/endpoints/svc-00005:v1/", {"description": "one change"}, content_type=JSON)
    changed = load_snapshot().body
    timings: dict[str, list[float]] = {}

    def timed(name: str, step: Any, *args: Any, **kwargs: Any) -> Any:
        started_at = time.perf_counter()
        result = step(*args, **kwargs)
        timings.setdefault(name, []).append(time.perf_counter() - started_at)
        return result

    settings = Settings.from_env({"DATAPLANE_LISTEN": "127.0.0.1:1", "DATAPLANE_ADMIN_LISTEN": "127.0.0.1:2"})
    for _ in range(5):
        runtime = Runtime(settings)
        compiled = timed("parse_validate_compile_seconds", load_sync_snapshot, snapshot.body)
        prepared = timed("prepare_first_seconds", runtime.prepare, compiled)
        timed("apply_first_seconds", runtime.commit, prepared)
        second = timed("parse_again_seconds", load_sync_snapshot, changed, previous=compiled)
        prepared = timed("prepare_again_seconds", runtime.prepare, second)
        timed("apply_again_seconds", runtime.commit, prepared)
    out.update({name: statistics.median(values) for name, values in timings.items()})
    # The status report the sync client sends after every apply and every DATAPLANE_REPORT_INTERVAL: its
    # counters are built in a thread, per endpoint with traffic. One request on every endpoint:
    from dataplane.report import build_counters

    for key in compiled.endpoints:
        runtime.metrics.observe_request(key, "GET", 200, None, 0.001)
        runtime.metrics.observe_upstream(key, 0.001)
    started_at = time.perf_counter()
    build_counters(runtime.metrics)
    out["report_build_seconds"] = time.perf_counter() - started_at
    return out


# --- the data plane with a ticker ----------------------------------------------------------------------------


def dataplane_with_ticker(ticks: str) -> int:
    """`python -m dataplane` as shipped, plus one coroutine on its event loop that sleeps TICK and appends
    `<wall time at the end of the stall> <lateness>` to `ticks` whenever it woke more than 1 ms late."""
    import asyncio

    sys.path.insert(0, str(ROOT))
    import dataplane.__main__ as entry

    original = entry.serve

    async def ticker() -> None:
        loop = asyncio.get_running_loop()
        with open(ticks, "a", buffering=1) as out:  # noqa: PTH123 - line-buffered on purpose
            while True:
                due = loop.time() + TICK
                await asyncio.sleep(TICK)
                late = loop.time() - due
                if late > 0.001:
                    out.write(f"{time.time():.6f} {late:.6f}\n")

    async def serve(settings: Any, **kwargs: Any) -> None:
        task = asyncio.get_running_loop().create_task(ticker())
        try:
            await original(settings, **kwargs)
        finally:
            task.cancel()

    entry.serve = serve  # type: ignore[assignment]
    return entry.main([])


class DataPlane:
    def __init__(self, cp: ControlPlane, work: Path, name: str) -> None:
        self.cp, self.work, self.name = cp, work, name
        self.port, self.admin = free_port(), free_port()
        self.log = work / f"{name}.log"
        self.ticks = work / f"{name}.ticks"
        self.process: subprocess.Popen[bytes] | None = None
        self._read_to, self._tail, self._applied = 0, b"", 0

    @contextmanager
    def running(self) -> Iterator[DataPlane]:
        (self.work / f"{self.name}-cache").mkdir()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(ROOT),
            "DATAPLANE_LISTEN": f"127.0.0.1:{self.port}",
            "DATAPLANE_ADMIN_LISTEN": f"127.0.0.1:{self.admin}",
            "DATAPLANE_CONTROL_PLANE_URL": self.cp.base,
            "DATAPLANE_TOKEN": self.cp.token,
            "DATAPLANE_CACHE_DIR": str(self.work / f"{self.name}-cache"),
            "DATAPLANE_NODE_ID": self.name,
        }
        argv = ["taskset", "-c", PROXY_CORE, sys.executable, __file__, "--dataplane-with-ticker", str(self.ticks)]
        with started(argv, self.log, f"http://127.0.0.1:{self.admin}/-/readyz", env=env) as process:
            self.process = process
            yield self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def applied(self) -> int:
        """How many snapshots the data plane has applied (its log says so), reading only what is new: the
        access log makes the file large, and this runs every 20 ms on the same cores."""
        with self.log.open("rb") as log:
            log.seek(self._read_to)
            data = log.read()
        self._read_to += len(data)
        *lines, self._tail = (self._tail + data).split(b"\n")
        self._applied += sum(1 for line in lines if b"applied config" in line)
        return self._applied

    def wait_applied(self, before: int, timeout: float = 300) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.applied() > before:
                return time.time()
            time.sleep(0.02)
        raise RuntimeError(f"{self.name} applied nothing in {timeout} s")

    def stalls(self, since: float, until: float) -> float:
        """The longest stall that ended in [since, until] (seconds; 0 when none over 1 ms)."""
        longest = 0.0
        for line in self.ticks.read_text().splitlines():
            ended, late = (float(x) for x in line.split())
            if since <= ended <= until:
                longest = max(longest, late)
        return longest

    def rss_kib(self) -> int:
        assert self.process is not None
        return proc_status(self.process.pid, "VmRSS")  # taskset execs python in place: the pid is the data plane's


def stall_during(dp: DataPlane, change: Any, script: Path) -> dict[str, float]:
    """Longest stall while `change()` reaches `dp` under wrk -c10 traffic, beside a quiet window of the same
    length just before it (same traffic, no change), and the time from the change's start to the apply."""
    before = dp.applied()
    load = subprocess.Popen(wrk_argv(dp.url, 10, 600, script), stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # noqa: S603
    try:
        time.sleep(1.0)
        quiet_from = time.time()
        time.sleep(2.0)
        begun = time.time()
        change()
        applied = dp.wait_applied(before)
        time.sleep(0.5)  # a stall ending after the log line (the swap's tail, the cache write) still counts
        ended = time.time()
    finally:
        load.send_signal(signal.SIGINT)
        output = load.communicate(timeout=30)[0].decode()
    window = ended - begun
    quiet = dp.stalls(max(quiet_from, begun - window), begun)
    return {
        "stall": dp.stalls(begun, ended),
        "quiet_stall": quiet,
        "to_applied": applied - begun,
        "errors": parse_wrk(output)[3] if "Requests/sec" in output else -1,
    }


# --- main -------------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoints", type=int, default=10_000, help="endpoints of the large config (default 10000)")
    parser.add_argument("--writes", type=int, default=20, help="API PATCHes timed per size (default 20)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved wrk rounds (default 5)")
    parser.add_argument("--duration", type=float, default=5, help="seconds per wrk run (default 5)")
    parser.add_argument("--stall-repeats", type=int, default=3, help="one-endpoint changes per size (default 3)")
    args = parser.parse_args()
    for tool in ("wrk", "nginx", "taskset", "createdb"):
        if shutil.which(tool) is None:
            print(f"bench/large_config.py: {tool} not found", file=sys.stderr)
            return 2
    big = args.endpoints
    sizes = (SMALL, big)
    results: dict[int, dict[str, Any]] = {size: {} for size in sizes}
    log = sys.stderr

    with tempfile.TemporaryDirectory(prefix="bench-big-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        upstream_port = free_port()
        upstream = f"http://127.0.0.1:{upstream_port}"
        conf = nginx_conf(work, "nginx", upstream_port, upstream_block(upstream_port))
        nginx = shutil.which("nginx") or "nginx"
        stack.enter_context(started(["taskset", "-c", LOAD_CORE, nginx, "-c", str(conf)], work / "up.log", upstream))
        files = {size: write_document(work / f"config-{size}.yaml", bench_document(size, upstream)) for size in sizes}
        cps = {size: stack.enter_context(ControlPlane(f"{DB_PREFIX}{size}", work).running()) for size in sizes}
        # Both start at 10 endpoints; the large one grows to N while its data plane serves.
        for size in sizes:
            cps[size].import_file(files[SMALL])
        dps = {size: stack.enter_context(DataPlane(cps[size], work, f"dp-{size}").running()) for size in sizes}
        rss_at_10 = {size: dps[size].rss_kib() for size in sizes}
        scripts = {size: wrk_script(work, size) for size in sizes}
        print(f"both data planes serving 10 endpoints; growing the large one to {big}", file=log, flush=True)

        box: dict[str, tuple[float, int]] = {}
        grow = stall_during(dps[big], lambda: box.update(imported=cps[big].import_file(files[big])), scripts[SMALL])
        print(f"grown: import {box['imported'][0]:.1f} s, stall {ms(grow['stall'])}", file=log, flush=True)

        for size in sizes:
            results[size]["write_seconds"] = patch_times(cps[size], args.writes)
        print("writes timed", file=log, flush=True)

        # One endpoint changed under traffic: at 10; at N with the traffic on 10 of its endpoints (the
        # status report stays small); at N with the traffic spread over all N (the report covers them all,
        # from then on: its counters are cumulative since boot, so this case comes last).
        stall_variants = [("10", SMALL, SMALL), (f"{big}, traffic on 10", big, SMALL), (f"{big}", big, big)]
        stalls: dict[str, list[dict[str, float]]] = {}
        for label, size, spread in stall_variants:
            for number in range(args.stall_repeats):
                with cps[size].client() as client:

                    def change(client: httpx.Client = client, number: int = number, label: str = label) -> None:
                        client.patch("/api/v1/endpoints/svc-00007:v1/", json={"description": f"{label} {number}"})

                    stalls.setdefault(label, []).append(stall_during(dps[size], change, scripts[spread]))
            if size == SMALL or spread == big:
                results[size]["rss_kib"] = dps[size].rss_kib()
        results[big]["stall_variants"] = stalls
        print("stalls measured", file=log, flush=True)

        # (label, data plane, endpoints the requests spread over): the large config is measured twice, with
        # requests over all its endpoints and over 10 of them (the hot path alone, see the README).
        variants = [("10", SMALL, SMALL), (f"{big}", big, big), (f"{big}, 10 in use", big, SMALL)]
        for _, size, spread in variants:  # correctness and warm-up: each endpoint's metric children exist after
            response = httpx.get(f"{dps[size].url}/svc-00001/x")
            assert response.status_code == 200, (size, response.status_code, response.text)
            subprocess.run(wrk_argv(dps[size].url, 50, 2, scripts[spread]), capture_output=True, check=True)  # noqa: S603
        samples: dict[str, list[tuple[float, float, float, int]]] = {label: [] for label, _, _ in variants}
        for number in range(args.rounds):
            for label, size, spread in variants if number % 2 == 0 else list(reversed(variants)):
                argv = wrk_argv(dps[size].url, 50, args.duration, scripts[spread])
                run = subprocess.run(argv, capture_output=True, text=True, check=True)  # noqa: S603
                samples[label].append(parse_wrk(run.stdout))
            print(f"throughput round {number + 1}/{args.rounds}", file=log, flush=True)
        results[big]["wrk_variants"] = samples
        for size in sizes:
            results[size]["rss_after_traffic_kib"] = dps[size].rss_kib()

        for size in sizes:
            child = [sys.executable, __file__, "--inprocess", cps[size].database, cps[size].access]
            results[size].update(json.loads(run_measured(child, dict(os.environ))[2]))
        print("in-process figures measured", file=log, flush=True)

    report(results, sizes, grow, box["imported"], rss_at_10, args)
    return 0


def report(
    results: dict[int, dict[str, Any]],
    sizes: tuple[int, int],
    grow: dict[str, float],
    imported: tuple[float, int],
    rss_at_10: dict[int, int],
    args: argparse.Namespace,
) -> None:
    small, big = sizes
    s, b = results[small], results[big]
    print(f"\nlarge config: {big} endpoints x 2 targets against {small} (the reference), same run")
    print(f"{'figure':<44} {small:>14} {big:>14} {'ratio':>8}")

    def row(name: str, a: float, c: float, fmt: Any = ms) -> None:
        print(f"{name:<44} {fmt(a):>14} {fmt(c):>14} {ratio(c, a):>8}")

    def kib(value: float) -> str:
        return f"{value / 1024:.1f} MiB"

    def size_text(value: float) -> str:
        return f"{value / 1024:.0f} KiB" if value < 10 * 1024 * 1024 else f"{value / 1048576:.1f} MiB"

    row("write: PATCH answer, median", statistics.median(s["write_seconds"]), statistics.median(b["write_seconds"]))
    row("write: PATCH answer, p95", percentile(s["write_seconds"], 0.95), percentile(b["write_seconds"], 0.95))
    row("write: SQL statements", s["patch_statements"], b["patch_statements"], lambda v: f"{v:.0f}")
    row("write: SQL time (in-process)", s["patch_sql_seconds"], b["patch_sql_seconds"])
    row("write: in-process, document remembered", s["patch_warm_seconds"], b["patch_warm_seconds"])
    row("write: in-process, document read whole", s["patch_cold_seconds"], b["patch_cold_seconds"])
    row("write: SQL time, document read whole", s["patch_cold_sql_seconds"], b["patch_cold_sql_seconds"])
    slow_s, slow_b = s["patch_slowest_statement"], b["patch_slowest_statement"]
    row("write: slowest statement", slow_s["seconds"], slow_b["seconds"])
    row("snapshot: load_snapshot, in the writer", s["snapshot_build_seconds"], b["snapshot_build_seconds"])
    row("snapshot: load_snapshot, document read", s["snapshot_build_cold_seconds"], b["snapshot_build_cold_seconds"])
    row("snapshot: every endpoint's check plan", s["all_check_plans_seconds"], b["all_check_plans_seconds"])
    row("snapshot: raw size", s["snapshot_raw_bytes"], b["snapshot_raw_bytes"], size_text)
    row("snapshot: gzip size", s["snapshot_gzip_bytes"], b["snapshot_gzip_bytes"], size_text)
    row("data plane: parse+validate+compile", s["parse_validate_compile_seconds"], b["parse_validate_compile_seconds"])
    row("data plane: prepare (thread), first", s["prepare_first_seconds"], b["prepare_first_seconds"])
    row("data plane: commit (event loop), first", s["apply_first_seconds"], b["apply_first_seconds"])
    row("data plane: parse+compile, one change", s["parse_again_seconds"], b["parse_again_seconds"])
    row("data plane: prepare (thread), one change", s["prepare_again_seconds"], b["prepare_again_seconds"])
    row("data plane: commit (event loop), one change", s["apply_again_seconds"], b["apply_again_seconds"])
    row("data plane RSS, config applied", s["rss_kib"], b["rss_kib"], kib)
    row("data plane RSS, after the wrk rounds", s["rss_after_traffic_kib"], b["rss_after_traffic_kib"], kib)
    print("\none endpoint changed (API PATCH) under wrk -c10 traffic, the data plane's longest event-loop stall:")
    print(f"{'case':<28} {'stall, max':>11} {'no change, max':>15} {'PATCH -> applied, median':>25}")
    for label, cases in b["stall_variants"].items():
        print(
            f"{label:<28} {ms(max(c['stall'] for c in cases)):>11} {ms(max(c['quiet_stall'] for c in cases)):>15}"
            f" {ms(statistics.median(c['to_applied'] for c in cases)):>25}"
        )
    variants = b["wrk_variants"]
    reference = statistics.median(x[0] for x in variants[str(small)])
    print(f"\nproxy, wrk @50 connections, {args.rounds} interleaved rounds of {args.duration:g} s, medians:")
    print(f"{'config (requests spread over)':<32} {'rps':>9} {'ratio':>7} {'p50':>9} {'p99':>9} {'errors':>7}")
    for label, runs in variants.items():
        rps = statistics.median(x[0] for x in runs)
        print(
            f"{label:<32} {rps:>9,.0f} {rps / reference:>6.2f}x {statistics.median(x[1] for x in runs):>7.2f}ms"
            f" {statistics.median(x[2] for x in runs):>7.2f}ms {sum(x[3] for x in runs):>7}"
        )
    report_s, report_b = s["report_build_seconds"], b["report_build_seconds"]
    print(
        f"status report counters (dataplane/report.py build_counters, every endpoint with traffic, in a thread):"
        f" {ms(report_s)} at {small}, {ms(report_b)} at {big} ({ratio(report_b, report_s)})"
    )
    print(
        f"growing 10 -> {big} while serving: import_config {imported[0]:.1f} s (peak RSS {imported[1] / 1024:.0f} MiB),"
        f" import start -> applied {grow['to_applied']:.1f} s, longest stall {ms(grow['stall'])}"
        f" (quiet window {ms(grow['quiet_stall'])}); data plane RSS at 10 endpoints {rss_at_10[big] / 1024:.1f} MiB"
    )
    print(f"slowest write statement at {big}: {slow_b['sql']}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--dataplane-with-ticker":
        raise SystemExit(dataplane_with_ticker(sys.argv[2]))
    if len(sys.argv) == 4 and sys.argv[1] == "--inprocess":
        print(json.dumps(inprocess(sys.argv[2], sys.argv[3])))
        raise SystemExit(0)
    raise SystemExit(main())
