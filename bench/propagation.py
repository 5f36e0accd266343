"""How fast a committed API change reaches waiting data planes (ARCHITECTURE §4).

Starts a real control plane (uvicorn + httptools) on a PostgreSQL database of its own, parks
`--clients` long-polls on /api/v1/dataplane/config, then makes `--changes` endpoint changes through
the API one at a time. For each change it records, per client, the time from the API's answer (the
commit) to that client holding the new ETag. The reference, measured in the same run, is one plain
snapshot GET (no waiting), so the figures read as "propagation costs N round trips".

    .venv/bin/python bench/propagation.py [--clients 50] [--changes 20]

Needs PostgreSQL on 127.0.0.1:5432 (user postgres); creates and drops the database `gateway_bench`.
Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from common import PASSWORD, bench_database, free_port, manage, percentile, started

DATABASE = "gateway_bench"


async def wait_for_change(
    client: httpx.AsyncClient, token: str, etag: str, committed: asyncio.Event, box: dict[str, float]
) -> str:
    headers = {"Authorization": f"Bearer {token}", "If-None-Match": etag}
    while True:
        response = await client.get("/api/v1/dataplane/config?wait=30", headers=headers)
        if response.status_code == 200:
            arrived = time.perf_counter()
            await committed.wait()
            box.setdefault("latencies", [])
            box["latencies"].append(arrived - box["committed_at"])  # type: ignore[attr-defined]
            return response.headers["ETag"]


async def run(base: str, token: str, access: str, clients: int, changes: int) -> None:
    limits = httpx.Limits(max_connections=clients + 10)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        auth = {"Authorization": f"Bearer {token}"}
        reference = []
        for _ in range(20):
            started = time.perf_counter()
            response = await client.get("/api/v1/dataplane/config", headers=auth)
            reference.append(time.perf_counter() - started)
        etag = response.headers["ETag"]
        api = {"Authorization": f"Bearer {access}"}
        all_latencies: list[float] = []
        for change in range(changes):
            committed = asyncio.Event()
            box: dict[str, object] = {}
            waiters = [
                asyncio.create_task(wait_for_change(client, token, etag, committed, box))  # type: ignore[arg-type]
                for _ in range(clients)
            ]
            await asyncio.sleep(0.5)  # let every client park
            answer = await client.patch(
                "/api/v1/endpoints/bench:v1/", json={"description": f"change {change}"}, headers=api
            )
            box["committed_at"] = time.perf_counter()
            committed.set()
            answer.raise_for_status()
            etags = await asyncio.gather(*waiters)
            etag = etags[0]
            all_latencies.extend(box["latencies"])  # type: ignore[arg-type]
    ref = statistics.median(reference)
    print(f"clients={clients} changes={changes} samples={len(all_latencies)}")
    print(f"reference: one snapshot GET, median {ref * 1000:.2f} ms")
    for name, share in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        value = percentile(all_latencies, share)
        print(f"propagation {name}: {value * 1000:.1f} ms = {value / ref:.1f}x the reference")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50, help="waiting long-poll clients (default 50)")
    parser.add_argument("--changes", type=int, default=20, help="API changes to propagate (default 20)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gw-propagation-bench-") as work, bench_database(DATABASE) as env:
        token = manage("issue_dataplane_token", "bench-node", env=env).strip().splitlines()[-1]
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        argv = [sys.executable, "-m", "uvicorn", "config.asgi:application", "--http", "httptools"]
        argv += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--timeout-graceful-shutdown", "1"]
        with started(argv, Path(work) / "control-plane.log", f"{base}/healthz", env=env):
            access = httpx.post(f"{base}/api/v1/auth/token/", json={"username": "bench", "password": PASSWORD}).json()
            body = {"name": "bench", "version": "v1", "targets": [{"url": "http://127.0.0.1:9/"}]}
            httpx.post(
                f"{base}/api/v1/endpoints/", json=body, headers={"Authorization": f"Bearer {access['access']}"}
            ).raise_for_status()
            asyncio.run(run(base, token, access["access"], options.clients, options.changes))


if __name__ == "__main__":
    main()
