"""WebSocket tunnels (ARCHITECTURE §13): messages per second through the data plane against a direct
connection to the same upstream, in one run, and the data plane's memory with many open idle tunnels.
One command, only 127.0.0.1:

    .venv/bin/python bench/websocket.py [--connections 8] [--window 32] [--size 64] [--duration 5] [--idle 10000]

Starts, in a temporary directory: a `websockets` echo server (its own process, no compression, no
pings) and `python -m dataplane` in front of it on a seed with one endpoint (`read_idle_timeout`
3600, DATAPLANE_MAX_CONCURRENCY above --idle). Then:

  throughput  --connections WebSocket clients (the `websockets` library, compression off), each keeping
              --window messages of --size bytes in flight for --duration seconds: echoed messages per
              second, first straight to the upstream, then through the data plane.
  idle        --idle tunnels opened through the data plane with a bare handshake each (raw asyncio
              streams, so the client costs little), left silent: the data plane's RSS before and with
              them open (VmRSS), per tunnel, and `gateway_tunnels_active` as the node reports it.

The file-descriptor limit is raised as far as this process may (each tunnel holds two descriptors in
the data plane; its children inherit the limit); when it is too low for --idle, fewer tunnels are
opened and the count says so.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import re
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import free_port, wait_ready  # noqa: E402

UPSTREAM = textwrap.dedent(
    """
    import asyncio, sys
    from websockets.asyncio.server import serve

    async def echo(connection):
        async for message in connection:
            await connection.send(message)

    async def main():
        async with serve(echo, "127.0.0.1", int(sys.argv[1]), compression=None, ping_interval=None,
                         max_size=None, backlog=4096):
            await asyncio.Future()

    asyncio.run(main())
    """
)


def raise_fd_limit(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for limit in (max(wanted, hard), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
            return limit
        except (ValueError, OSError):
            continue
    return soft


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def throughput(url: str, connections: int, window: int, size: int, duration: float) -> float:
    from websockets.asyncio.client import connect

    payload = os.urandom(size)
    echoed = 0
    stop_at = time.perf_counter() + duration

    async def one() -> None:
        nonlocal echoed
        async with connect(url, compression=None, max_size=None, ping_interval=None) as client:
            for _ in range(window):
                await client.send(payload)
            while time.perf_counter() < stop_at:
                await client.recv()
                echoed += 1
                await client.send(payload)
            for _ in range(window):
                await client.recv()

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(connections)))
    return echoed / (time.perf_counter() - started)


async def open_idle(port: int, count: int) -> list[asyncio.StreamWriter]:
    key = base64.b64encode(os.urandom(16)).decode()
    head = (
        f"GET /chat/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    writers: list[asyncio.StreamWriter] = []
    failed = 0
    limit = asyncio.Semaphore(200)

    async def one() -> None:
        nonlocal failed
        async with limit:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(head)
                answer = await reader.readuntil(b"\r\n\r\n")
            except OSError:
                failed += 1
                return
            if not answer.startswith(b"HTTP/1.1 101 "):
                failed += 1
                writer.close()
                return
            writers.append(writer)

    await asyncio.gather(*(one() for _ in range(count)))
    if failed:
        print(f"  {failed} handshakes failed")
    return writers


def tunnels_active(admin: str) -> float:
    text = httpx.get(f"{admin}/-/metrics", timeout=30).text
    found = re.search(r'^gateway_tunnels_active\{endpoint="chat:v1"\} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--idle", type=int, default=10_000)
    args = parser.parse_args()

    limit = raise_fd_limit(2 * args.idle + 1000)
    idle = min(args.idle, (limit - 500) // 2)
    if idle < args.idle:
        print(f"file-descriptor limit {limit}: {idle} idle tunnels instead of {args.idle}")

    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        upstream_port, port, admin_port = free_port(), free_port(), free_port()
        seed = {
            "format_version": 1,
            "endpoints": [
                {
                    "name": "chat",
                    "version": "v1",
                    "targets": [{"url": f"http://127.0.0.1:{upstream_port}"}],
                    "read_idle_timeout": 3600,
                }
            ],
        }
        (workdir / "seed.yaml").write_text(yaml.safe_dump(seed))
        env = {
            **{key: value for key, value in os.environ.items() if not key.startswith("DATAPLANE_")},
            "DATAPLANE_LISTEN": f"127.0.0.1:{port}",
            "DATAPLANE_ADMIN_LISTEN": f"127.0.0.1:{admin_port}",
            "DATAPLANE_SEED": str(workdir / "seed.yaml"),
            "DATAPLANE_MAX_CONCURRENCY": str(args.idle + 1000),
            "DATAPLANE_DRAIN_DELAY": "0",
            "DATAPLANE_TUNNEL_GRACE": "0",
            "DATAPLANE_LOG_LEVEL": "WARNING",
        }
        with (workdir / "upstream.log").open("wb") as upstream_log, (workdir / "dataplane.log").open("wb") as log:
            upstream = subprocess.Popen(  # noqa: S603 - our own argv
                [sys.executable, "-c", UPSTREAM, str(upstream_port)], stdout=upstream_log, stderr=subprocess.STDOUT
            )
            node = subprocess.Popen(  # noqa: S603
                [sys.executable, "-m", "dataplane"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
            try:
                wait_ready(f"http://127.0.0.1:{admin_port}/-/readyz", node)
                time.sleep(0.5)  # the upstream's listener (no readiness URL of its own)
                direct = asyncio.run(
                    throughput(
                        f"ws://127.0.0.1:{upstream_port}/", args.connections, args.window, args.size, args.duration
                    )
                )
                proxied = asyncio.run(
                    throughput(f"ws://127.0.0.1:{port}/chat/", args.connections, args.window, args.size, args.duration)
                )
                print(
                    f"throughput ({args.connections} connections, window {args.window}, {args.size} B messages, "
                    f"{args.duration:g} s each)"
                )
                print(f"  direct         {direct:10.0f} messages/s")
                print(f"  through node   {proxied:10.0f} messages/s  ({proxied / direct:.0%} of direct)")

                async def hold() -> None:
                    before = rss_kib(node.pid)
                    started = time.perf_counter()
                    writers = await open_idle(port, idle)
                    opened = time.perf_counter() - started
                    await asyncio.sleep(2)
                    after = rss_kib(node.pid)
                    active = await asyncio.to_thread(tunnels_active, f"http://127.0.0.1:{admin_port}")
                    print(f"idle tunnels: {len(writers)} open in {opened:.1f} s, gateway_tunnels_active {active:g}")
                    print(f"  node RSS before  {before / 1024:8.1f} MiB")
                    print(f"  node RSS open    {after / 1024:8.1f} MiB")
                    if writers:
                        print(f"  per tunnel       {(after - before) / len(writers):8.1f} KiB")
                    for writer in writers:
                        writer.close()

                asyncio.run(hold())
            finally:
                node.terminate()
                node.wait(60)
                upstream.terminate()
                upstream.wait(60)


if __name__ == "__main__":
    main()
