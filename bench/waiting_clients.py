"""What `--clients` waiting long-polls cost one control-plane web process (ARCHITECTURE §4).

Starts one control-plane web process as `rungateway` runs it (uvicorn config.asgi:application with
httptools, no access log) on a PostgreSQL database of its own, parks `--clients` (default 1,000)
concurrent long-polls on GET /api/v1/dataplane/config?wait=60 (each its own TCP connection, the
current ETag in If-None-Match, a data-plane token), and reads, before and with them all waiting:

- the web process's threads (`Threads:` in /proc/<pid>/status) and open file descriptors;
- the database connections to its database (pg_stat_activity, asked from another database);
- its RSS (`VmRSS:`), and so the memory per waiting client.

Threads and database connections are also sampled every 0.1 s while the clients arrive (the peak is
printed). Then one API change (PATCH of an endpoint) is made and the time from sending it to each
client holding the new snapshot is taken: the last one is "a change still reaches all of them". Each
client then asks again at once with the new ETag, as a data plane does, which costs one token lookup
each on the web process's one database thread; a second change is made the moment the last client got
the first, and timed the same way (the worst case: a change while all of them are re-parking).

The file-descriptor limit: 1,000 clients need 1,000 sockets in this process and 1,000 in the server,
above the usual soft limit of 1,024. The bench raises its own soft RLIMIT_NOFILE to `--nofile`
(default 8,192, at most the hard limit) with resource.setrlimit, and the web process's the same way
(preexec_fn), and prints both.

Last, `--reports` status reports (POST /api/v1/dataplane/status, 200 nodes, 20 in flight, counters
for one endpoint): the reports one web process stores per second, for sizing (a node sends one every
DATAPLANE_REPORT_INTERVAL, 10 s).

    .venv/bin/python bench/waiting_clients.py [--clients 1000] [--reports 2000] [--nofile 8192]

Needs PostgreSQL on 127.0.0.1:5432 (user postgres); creates and drops the database
`gateway_bench_fleet_wait`. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import psycopg
from common import PASSWORD, bench_database, free_port, manage

ROOT = Path(__file__).resolve().parents[1]
DATABASE = "gateway_bench_fleet_wait"
CONFIG = "/api/v1/dataplane/config"


def raise_nofile(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def proc_status(pid: int) -> dict[str, int]:
    """Threads, RSS (kB) and open descriptors of `pid`."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Threads", "VmRSS"):
            found[key] = int(value.split()[0])
    found["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return found


def thread_names(pid: int) -> str:
    names: dict[str, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
        except OSError:
            continue
        names[name] = names.get(name, 0) + 1
    return ", ".join(f"{name} ×{n}" if n > 1 else name for name, n in sorted(names.items()))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class DatabaseConnections:
    """Connections to `DATABASE` in pg_stat_activity, by state, asked over a connection to another database."""

    def __init__(self) -> None:
        self._connection = psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True)

    def count(self) -> dict[str, int]:
        rows = self._connection.execute(
            "SELECT coalesce(state, '?'), count(*) FROM pg_stat_activity WHERE datname = %s GROUP BY 1", (DATABASE,)
        ).fetchall()
        return {state: int(n) for state, n in rows}

    def close(self) -> None:
        self._connection.close()


class Sampler(threading.Thread):
    """Peak threads and database connections of the web process while it runs."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.threads = 0
        self.connections = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        database = DatabaseConnections()
        try:
            while not self._stop_event.is_set():
                self.threads = max(self.threads, proc_status(self.pid)["Threads"])
                self.connections = max(self.connections, sum(database.count().values()))
                self._stop_event.wait(0.1)
        finally:
            database.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)


def describe(pid: int, database: DatabaseConnections) -> str:
    status = proc_status(pid)
    connections = database.count()
    states = ", ".join(f"{n} {state}" for state, n in sorted(connections.items())) or "none"
    return (
        f"threads {status['Threads']}, database connections {sum(connections.values())} ({states}), "
        f"RSS {status['VmRSS'] / 1024:.1f} MiB, open fds {status['fds']}"
    )


class Answers:
    """Each round's answers (when complete, status), and an event per round set when all are in."""

    def __init__(self, clients: int, rounds: int) -> None:
        self.clients = clients
        self.rounds: list[list[tuple[float, int]]] = [[] for _ in range(rounds)]
        self.complete = [asyncio.Event() for _ in range(rounds)]

    def add(self, round_: int, status: int) -> None:
        self.rounds[round_].append((time.perf_counter(), status))
        if len(self.rounds[round_]) == self.clients:
            self.complete[round_].set()


async def long_poll(port: int, token: str, etag: str, parked: asyncio.Event, answers: Answers) -> None:
    """One waiting client on its own keep-alive connection, as a data plane polls: after each answer it
    asks again at once with the ETag it got."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for round_ in range(len(answers.rounds)):
            request = (
                f"GET {CONFIG}?wait=60 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
                f'If-None-Match: "{etag}"\r\nX-Gateway-Format: 1\r\nAccept-Encoding: gzip\r\n\r\n'
            )
            writer.write(request.encode())
            await writer.drain()
            parked.set()
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
                elif name.strip().lower() == b"etag":
                    etag = value.strip().decode().strip('"')
            await reader.readexactly(length)
            answers.add(round_, status)
    finally:
        writer.close()


def timeline(answers: list[tuple[float, int]], sent: float) -> tuple[str, list[int]]:
    times = sorted(at - sent for at, status in answers if status == 200)
    others = sorted({status for _, status in answers if status != 200})
    if not times:
        return "none got it", others
    text = (
        f"{len(times)} of {len(answers)} got the new snapshot (200); from sending the PATCH: first "
        f"{times[0] * 1000:.0f} ms, median {statistics.median(times) * 1000:.0f} ms, last {times[-1] * 1000:.0f} ms"
    )
    return text, others


async def measure(port: int, token: str, access: str, clients: int, pid: int, reports: int) -> None:
    database = DatabaseConnections()
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base, timeout=30, trust_env=False) as client:
        auth = {"Authorization": f"Bearer {token}"}
        etag = (await client.get(CONFIG, headers=auth)).headers["ETag"].strip('"')
        await asyncio.sleep(1.0)
        before = proc_status(pid)
        print(f"before (one snapshot served, nobody waiting): {describe(pid, database)}")
        print(f"  its threads: {thread_names(pid)}")
        sampler = Sampler(pid)
        sampler.start()
        started = time.perf_counter()
        tasks = []
        answers = Answers(clients, rounds=2)
        for i in range(clients):
            parked = asyncio.Event()
            tasks.append(asyncio.create_task(long_poll(port, token, etag, parked, answers)))
            await parked.wait()  # sent; the server may still be looking the token up
            if i % 100 == 99:
                await asyncio.sleep(0)
        # Settled = the server's CPU time stopped growing (every token looked up, every request parked).
        last = cpu_seconds(pid)
        for _ in range(40):  # at most 20 s: the clients asked to wait 60 s
            await asyncio.sleep(0.5)
            now = cpu_seconds(pid)
            if now - last < 0.01:
                break
            last = now
        ramp = time.perf_counter() - started
        answered = len(answers.rounds[0])
        with_waiting = proc_status(pid)
        print(f"with {clients} waiting (all sent and settled after {ramp:.1f} s; answered early: {answered}):")
        print(f"  {describe(pid, database)}")
        print(f"  its threads: {thread_names(pid)}")
        print(f"  peak while they arrived: threads {sampler.threads}, database connections {sampler.connections}")
        grown = (with_waiting["VmRSS"] - before["VmRSS"]) * 1024
        print(f"  RSS grew {grown / 2**20:.1f} MiB = {grown / clients / 1024:.1f} KiB per waiting client")
        print(f"  threads grew by {with_waiting['Threads'] - before['Threads']}")
        login = {"Authorization": f"Bearer {access}"}
        sent = time.perf_counter()
        answer = await client.patch("/api/v1/endpoints/bench:v1/", json={"description": "change 1"}, headers=login)
        answer.raise_for_status()
        await asyncio.wait_for(answers.complete[0].wait(), 60)
        text, others = timeline(answers.rounds[0], sent)
        print(f"change 1 (PATCH answered in {answer.elapsed.total_seconds() * 1000:.0f} ms): {text}")
        if others:
            print(f"  other answers: {others}")
        # Each client asks again at once (as data planes do): a token lookup each on the one database
        # thread. A second change made the moment the last of them got the first: time to reach them all.
        sent = time.perf_counter()
        answer = await client.patch("/api/v1/endpoints/bench:v1/", json={"description": "change 2"}, headers=login)
        answer.raise_for_status()
        await asyncio.wait_for(answers.complete[1].wait(), 60)
        text, others = timeline(answers.rounds[1], sent)
        print(f"change 2, sent as the last client got change 1 and they all asked again: {text}")
        if others:
            print(f"  other answers: {others}")
        await asyncio.gather(*tasks)
        sampler.stop()
        print(
            f"  peak from the first client to the last answer: threads {sampler.threads}, "
            f"database connections {sampler.connections} (each PATCH is a Django request with its own)"
        )
        await asyncio.sleep(1.0)
        print(f"after they all left: {describe(pid, database)}")
        if reports:
            await status_reports(client, token, access, reports, pid, database)
    database.close()


def counters(requests: int) -> dict[str, object]:
    histogram = {"buckets": [0] * 5 + [requests] + [0] * 10, "sum": requests * 0.02}
    return {
        "requests": {"2xx": requests, "3xx": 0, "4xx": 0, "5xx": 0},
        "errors": {},
        "retries": 0,
        "breaker_trips": 0,
        "duration": histogram,
        "upstream_duration": histogram,
    }


async def status_reports(
    client: httpx.AsyncClient, token: str, access: str, total: int, pid: int, database: object
) -> None:
    """`total` status reports from (at most) 200 nodes, 20 at a time, each with one endpoint's counters growing:
    what one web process stores per second (they share its one database thread with the token lookups and
    the ETag watcher). One second in, a change is made while 10 clients wait: how late it reaches them."""
    response = await client.get(CONFIG, headers={"Authorization": f"Bearer {token}"})
    snapshot = response.json()
    port = client.base_url.port
    assert port is not None
    waiting = Answers(10, rounds=1)
    polls = []
    for _ in range(10):
        parked = asyncio.Event()
        polls.append(asyncio.create_task(long_poll(port, token, response.headers["ETag"].strip('"'), parked, waiting)))
        await parked.wait()
    await asyncio.sleep(0.5)
    headers = {"Authorization": f"Bearer {token}"}
    latencies: list[float] = []
    queue = list(range(total))

    async def sender() -> None:
        while queue:
            i = queue.pop()
            report = {
                "node_id": f"bench-node-{i % 200}",
                "boot_id": "bench",
                "hostname": "bench",
                "version": "bench",
                "revision": snapshot["revision"],
                "config_sha256": snapshot["config_sha256"],
                "state_seq": snapshot["state_seq"],
                "result": "applied",
                "counters": {"bench:v1": counters(total - i)},
            }
            started = time.perf_counter()
            answer = await client.post("/api/v1/dataplane/status", json=report, headers=headers)
            latencies.append(time.perf_counter() - started)
            if answer.status_code != 204:
                raise RuntimeError(f"status report answered {answer.status_code}: {answer.text}")

    async def change() -> tuple[str, list[int]]:
        await asyncio.sleep(1.0)
        sent = time.perf_counter()
        login = {"Authorization": f"Bearer {access}"}
        answer = await client.patch("/api/v1/endpoints/bench:v1/", json={"description": "change 3"}, headers=login)
        answer.raise_for_status()
        await asyncio.wait_for(waiting.complete[0].wait(), 60)
        return timeline(waiting.rounds[0], sent)

    started = time.perf_counter()
    changed = asyncio.create_task(change())
    await asyncio.gather(*(sender() for _ in range(20)))
    elapsed = time.perf_counter() - started
    text, others = await changed
    await asyncio.gather(*polls)
    ordered = sorted(latencies)
    print(
        f"status reports: {total} from {min(total, 200)} nodes, 20 in flight: {total / elapsed:.0f} reports/s, "
        f"p50 {ordered[len(ordered) // 2] * 1000:.1f} ms, p95 {ordered[int(len(ordered) * 0.95)] * 1000:.1f} ms; "
        f"then {describe(pid, database)}"  # type: ignore[arg-type]
    )
    print(f"  a change made 1 s into the reports, to 10 waiting clients: {text}{f' (also {others})' if others else ''}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000, help="concurrent waiting long-polls (default 1000)")
    parser.add_argument("--reports", type=int, default=2000, help="status reports to time afterwards (2000; 0: none)")
    parser.add_argument("--nofile", type=int, default=8192, help="RLIMIT_NOFILE soft limit to raise to (8192)")
    options = parser.parse_args()
    was = resource.getrlimit(resource.RLIMIT_NOFILE)
    now = raise_nofile(options.nofile)
    print(f"bench RLIMIT_NOFILE: soft {was[0]}, hard {was[1]}; soft now {now} (resource.setrlimit when below --nofile)")
    cleanup = ExitStack()  # the database, dropped when the bench ends
    env = cleanup.enter_context(bench_database(DATABASE))
    token = manage("issue_dataplane_token", "bench", env=env).strip().splitlines()[-1]
    port = free_port()
    work = Path(tempfile.mkdtemp(prefix="gw-waiting-bench-"))
    argv = [sys.executable, "-m", "uvicorn", "config.asgi:application", "--http", "httptools", "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--no-access-log", "--timeout-graceful-shutdown", "1"]
    with (work / "web.log").open("wb") as log:
        server = subprocess.Popen(  # noqa: S603 - our own argv
            argv,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: raise_nofile(options.nofile),  # noqa: PLW1509 - only setrlimit, before exec
        )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        limit = next(
            line for line in Path(f"/proc/{server.pid}/limits").read_text().splitlines() if "open files" in line
        )
        print(f"web process (uvicorn, httptools) pid {server.pid}, {' '.join(limit.split())}")
        access = httpx.post(f"{base}/api/v1/auth/token/", json={"username": "bench", "password": PASSWORD}).json()
        body = {"name": "bench", "version": "v1", "targets": [{"url": "http://127.0.0.1:9/"}]}
        headers = {"Authorization": f"Bearer {access['access']}"}
        httpx.post(f"{base}/api/v1/endpoints/", json=body, headers=headers).raise_for_status()
        asyncio.run(measure(port, token, access["access"], options.clients, server.pid, options.reports))
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
        shutil.rmtree(work, ignore_errors=True)
        cleanup.close()


if __name__ == "__main__":
    main()
