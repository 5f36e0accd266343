"""Propagation to a fleet: a committed API change → every data plane *serving* it.

Starts a real control plane (uvicorn config.asgi:application with httptools, as `rungateway` runs it)
on a PostgreSQL database of its own, then for each fleet size in `--fleets` (default 1 and 50):

- `min(size, --real)` real `python -m dataplane` processes (default at most 3), each with its own
  data-plane token (`manage.py issue_dataplane_token`), node id and cache dir, following the control
  plane. One counts as *serving* a change when its ops listener's `/-/readyz` answers the new
  `config_sha256` (polled every `--poll-ms`, default 5 ms): parsed, validated and swapped in.
- the rest simulated: long-poll loops as a data plane runs them (`If-None-Match`, `?wait=30`,
  `X-Gateway-Format: 1`, gzip), each with its own node id, that count a change when its 200 arrives
  and then post a status report (`result: applied`) as a real node does after every apply, so the
  rollout wait below counts them as live nodes.

Then `--changes` endpoint changes (PATCH through the API, one at a time, 0.2-0.6 s apart so they fall
at random points of the sync watcher's 200 ms poll). Each latency runs from sending the PATCH (its
commit included) to that data plane serving the change. Also timed, per change: the last data plane
(the whole fleet serving it), and `GET revisions/{n}/wait/?share=1` sent as a deploy script would,
right after the PATCH answered (its answer time, again from sending the PATCH). The reference,
measured in the same run, is one plain snapshot GET (no waiting).

    .venv/bin/python bench/propagation_fleet.py [--fleets 1 50] [--real 3] [--changes 20]

Needs PostgreSQL on 127.0.0.1:5432 (user postgres); creates and drops the database
`gateway_bench_fleet`. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from common import PASSWORD, bench_database, free_port, manage, percentile

ROOT = Path(__file__).resolve().parents[1]
DATABASE = "gateway_bench_fleet"
ENDPOINT = "/api/v1/endpoints/bench:v1/"


def spread(values: list[float]) -> str:
    if not values:
        return "no samples"
    p50, p95, p99 = (percentile(values, s) * 1000 for s in (0.5, 0.95, 0.99))
    return f"p50 {p50:.0f} ms, p95 {p95:.0f} ms, p99 {p99:.0f} ms, max {max(values) * 1000:.0f} ms (n={len(values)})"


def sha_of(etag: str) -> str:
    return etag.strip('"').partition(".")[0]


def wait_until(check, what: str, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"gave up waiting for {what}")


def start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(  # noqa: S603 - our own argv
            argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@dataclass
class RealPlane:
    name: str
    admin: str
    process: subprocess.Popen[bytes]


@dataclass
class Simulated:
    """A long-poll loop standing in for a data plane; `seen[sha]` is when it first held that config."""

    node_id: str
    seen: dict[str, float] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    errors: int = 0


async def simulate(client: httpx.AsyncClient, token: str, node: Simulated, etag: str) -> None:
    boot_id = os.urandom(6).hex()
    headers = {"Authorization": f"Bearer {token}", "X-Gateway-Format": "1", "Accept-Encoding": "gzip"}
    while True:
        try:
            response = await client.get(
                f"/api/v1/dataplane/config?wait={30 + random.random() * 3:.2f}",  # noqa: S311 - jitter
                headers={**headers, "If-None-Match": etag},
            )
        except httpx.TransportError:
            node.errors += 1
            await asyncio.sleep(0.5)
            continue
        if response.status_code == 304:
            continue
        if response.status_code != 200:
            node.errors += 1
            await asyncio.sleep(0.5)
            continue
        arrived = time.perf_counter()
        etag = response.headers["ETag"]
        snapshot = response.json()  # parsed (and so gunzipped) as a node would
        node.seen.setdefault(snapshot["config_sha256"], arrived)
        node.changed.set()
        report = {
            "node_id": node.node_id,
            "boot_id": boot_id,
            "hostname": "bench",
            "version": "bench",
            "revision": snapshot["revision"],
            "config_sha256": snapshot["config_sha256"],
            "state_seq": snapshot["state_seq"],
            "result": "applied",
        }
        answer = await client.post("/api/v1/dataplane/status", json=report, headers=headers)
        if answer.status_code != 204:
            node.errors += 1


async def serving(client: httpx.AsyncClient, plane: RealPlane, old_sha: str, poll: float) -> tuple[float, str]:
    """When `plane`'s /-/readyz first answers a config other than `old_sha`, and that config."""
    while True:
        try:
            response = await client.get(f"{plane.admin}/-/readyz")
            if response.status_code == 200:
                sha = response.json().get("config_sha256")
                if sha and sha != old_sha:
                    return time.perf_counter(), sha
        except httpx.TransportError:
            pass
        await asyncio.sleep(poll)


async def arrived(node: Simulated, old_sha: str) -> tuple[float, str]:
    while True:
        sha, at = next(reversed(node.seen.items()))  # the newest config it holds
        if sha != old_sha:
            return at, sha
        node.changed.clear()
        await node.changed.wait()


async def measure_fleet(
    base: str, access: str, token: str, planes: list[RealPlane], simulated: int, changes: int, poll: float
) -> dict[str, list[float]]:
    limits = httpx.Limits(max_connections=simulated * 2 + 50, max_keepalive_connections=simulated * 2 + 50)
    api = {"Authorization": f"Bearer {access}"}
    results: dict[str, list[float]] = {"real": [], "simulated": [], "last": [], "wait": [], "patch": []}
    async with (
        httpx.AsyncClient(base_url=base, timeout=90, limits=limits, trust_env=False) as client,
        httpx.AsyncClient(timeout=5, trust_env=False) as probe,
    ):
        first = await client.get("/api/v1/dataplane/config", headers={"Authorization": f"Bearer {token}"})
        etag, sha = first.headers["ETag"], first.json()["config_sha256"]
        nodes = [Simulated(f"bench-sim-{i + 1}") for i in range(simulated)]
        for node in nodes:
            node.seen[sha] = 0.0
        loops = [asyncio.create_task(simulate(client, token, node, etag)) for node in nodes]
        try:
            await asyncio.sleep(1.0 + simulated * 0.01)  # let every loop park
            listing = await client.get("/api/v1/revisions/?limit=1", headers=api)
            listing.raise_for_status()
            number = listing.json()["results"][0]["number"]
            for change in range(changes):
                await asyncio.sleep(0.2 + random.random() * 0.4)  # noqa: S311 - a random phase of the watcher
                watchers = [asyncio.create_task(serving(probe, plane, sha, poll)) for plane in planes]
                waiters = [asyncio.create_task(arrived(node, sha)) for node in nodes]
                description = f"fleet of {len(planes) + simulated}, change {change}"
                sent = time.perf_counter()
                answer = await client.patch(ENDPOINT, json={"description": description}, headers=api)
                results["patch"].append(time.perf_counter() - sent)
                answer.raise_for_status()
                number += 1
                rollout = await client.get(f"/api/v1/revisions/{number}/wait/?share=1&timeout=30", headers=api)
                results["wait"].append(time.perf_counter() - sent)
                if rollout.status_code != 200:
                    print(f"  change {change}: rollout wait answered {rollout.status_code} {rollout.text}")
                real = await asyncio.wait_for(asyncio.gather(*watchers), 30)
                sims = await asyncio.wait_for(asyncio.gather(*waiters), 30)
                new_shas = {s for _, s in real} | {s for _, s in sims}
                if len(new_shas) != 1:
                    print(f"  change {change}: data planes hold different configs {new_shas}")
                results["real"].extend(at - sent for at, _ in real)
                results["simulated"].extend(at - sent for at, _ in sims)
                results["last"].append(max(at for at, _ in [*real, *sims]) - sent)
                sha = new_shas.pop()
        finally:
            for loop in loops:
                loop.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
        errors = sum(node.errors for node in nodes)
        if errors:
            print(f"  simulated clients saw {errors} errors")
    return results


async def reference(base: str, token: str) -> float:
    async with httpx.AsyncClient(base_url=base, timeout=10, trust_env=False) as client:
        auth = {"Authorization": f"Bearer {token}", "Accept-Encoding": "gzip"}
        times = []
        for _ in range(21):
            started = time.perf_counter()
            (await client.get("/api/v1/dataplane/config", headers=auth)).raise_for_status()
            times.append(time.perf_counter() - started)
        return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fleets", type=int, nargs="+", default=[1, 50], help="data planes per run (default 1 50)")
    parser.add_argument("--real", type=int, default=3, help="real data-plane processes at most (default 3)")
    parser.add_argument("--changes", type=int, default=20, help="API changes per fleet size (default 20)")
    parser.add_argument("--poll-ms", type=float, default=5.0, help="readyz poll of the real data planes (default 5)")
    options = parser.parse_args()
    cleanup = ExitStack()  # the database, dropped when the bench ends
    env = cleanup.enter_context(bench_database(DATABASE))
    most = min(options.real, max(options.fleets))
    tokens = [manage("issue_dataplane_token", f"bench-{i}", env=env).strip().splitlines()[-1] for i in range(most + 1)]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    work = Path(tempfile.mkdtemp(prefix="gw-fleet-bench-"))
    uvicorn = [sys.executable, "-m", "uvicorn", "config.asgi:application", "--http", "httptools"]
    server = start(
        [*uvicorn, "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--timeout-graceful-shutdown", "1"],
        env,
        work / "web.log",
    )
    planes: list[RealPlane] = []
    try:
        wait_until(lambda: httpx.get(f"{base}/healthz", timeout=1).status_code == 200, "the control plane")
        login = {"username": "bench", "password": PASSWORD}
        access = httpx.post(f"{base}/api/v1/auth/token/", json=login).json()["access"]
        body = {"name": "bench", "version": "v1", "targets": [{"url": "http://127.0.0.1:9/"}]}
        httpx.post(
            f"{base}/api/v1/endpoints/", json=body, headers={"Authorization": f"Bearer {access}"}
        ).raise_for_status()
        ref = asyncio.run(reference(base, tokens[0]))
        print(f"reference: one snapshot GET, median of 20: {ref * 1000:.2f} ms")
        for size in options.fleets:
            real = min(size, options.real)
            while len(planes) < real:
                i = len(planes) + 1
                admin_port = free_port()
                plane_env = {
                    **env,
                    "DATAPLANE_CONTROL_PLANE_URL": base,
                    "DATAPLANE_TOKEN": tokens[i],
                    "DATAPLANE_LISTEN": f"127.0.0.1:{free_port()}",
                    "DATAPLANE_ADMIN_LISTEN": f"127.0.0.1:{admin_port}",
                    "DATAPLANE_CACHE_DIR": str(work / f"dp-{i}"),
                    "DATAPLANE_NODE_ID": f"bench-dp-{i}",
                    "DATAPLANE_LOG_LEVEL": "WARNING",
                }
                process = start([sys.executable, "-m", "dataplane"], plane_env, work / f"dp-{i}.log")
                plane = RealPlane(f"dp-{i}", f"http://127.0.0.1:{admin_port}", process)
                planes.append(plane)
                wait_until(
                    lambda plane=plane: httpx.get(f"{plane.admin}/-/readyz", timeout=1).status_code == 200,
                    f"data plane {plane.name} ready",
                )
            simulated = size - real
            print(f"\n{size} data plane(s): {real} real process(es), {simulated} simulated long-poll clients")
            found = asyncio.run(
                measure_fleet(base, access, tokens[0], planes, simulated, options.changes, options.poll_ms / 1000)
            )
            everyone = found["real"] + found["simulated"]
            print(f"  PATCH round trip: median {statistics.median(found['patch']) * 1000:.1f} ms")
            print(f"  every data plane serving it, all samples: {spread(everyone)}")
            print(f"    real data planes (/-/readyz shows the new config_sha256): {spread(found['real'])}")
            if found["simulated"]:
                print(f"    simulated (200 with the new snapshot): {spread(found['simulated'])}")
            print(f"  the last data plane of the fleet, per change: {spread(found['last'])}")
            print(f"  revisions/{{n}}/wait/?share=1 answered 200, per change: {spread(found['wait'])}")
            p95 = percentile(everyone, 0.95)
            verdict = "met" if p95 < 1.0 else "NOT met"
            print(f"  p95 {p95 * 1000:.0f} ms = {p95 / ref:.0f}x the reference; target p95 < 1 s: {verdict}")
    finally:
        for plane in planes:
            stop(plane.process)
        stop(server)
        shutil.rmtree(work, ignore_errors=True)
        cleanup.close()


if __name__ == "__main__":
    main()
