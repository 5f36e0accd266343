"""Slow readers (slowhttptest's slow-read mode) against the data plane and nginx, with a normal client
measured meanwhile. One command, only 127.0.0.1:

    .venv/bin/python bench/slowread.py [--connections 500] [--duration 30] [--send-timeout 30] [--read-interval 1]

Needs `slowhttptest` and `nginx` on PATH (`apt-get install -y slowhttptest nginx`); installs nothing.
Starts, in a temporary directory: an nginx upstream serving a 1 MiB file and a small one; then, one
after the other, each target in front of it:

  nginx      nginx as reverse proxy (upstream keep-alive), `send_timeout` = --send-timeout
  dataplane  `python -m dataplane` as shipped, DATAPLANE_SEND_TIMEOUT = --send-timeout

For each: `slowhttptest -X` opens --connections connections asking for the 1 MiB file three times per
connection (`-k 3`), advertising a 512-1024 byte window and reading 32 bytes every --read-interval seconds; meanwhile a
normal client asks for the small file on a new connection every 50 ms. Printed: the normal client's
p50/p99/max latency and errors, the connections the target holds established (`ss`, sampled each
second: the most, and the last count before slowhttptest ends), and its peak RSS (VmHWM, with its workers).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import free_port, nginx_conf, percentile, started  # noqa: E402

LARGE = 1 << 20


def upstream_block(port: int, root: Path) -> str:
    return f"""
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ }}
    }}"""


def reverse_proxy_block(port: int, upstream_port: int, send_timeout: float) -> str:
    return f"""
    upstream origin {{ server 127.0.0.1:{upstream_port}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{port};
        send_timeout {send_timeout:g}s;
        location /files/ {{
            proxy_pass http://origin/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}"""


def peak_rss_kib(pid: int) -> int:
    """VmHWM of the process and its children (nginx's worker, the data plane's workers)."""
    pids = [pid]
    try:
        pids += [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    total = 0
    for each in pids:
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def held(port: int) -> int:
    """Connections the target on `port` holds established (its side: slowhttptest's own count misses
    a reset until its next read, and sometimes altogether)."""
    argv = ["ss", "-Htn", "state", "established", f"( sport = :{port} )"]
    result = subprocess.run(argv, capture_output=True, text=True, check=True)  # noqa: S603, S607
    return len(result.stdout.splitlines())


def normal_client(url: str, stop: threading.Event, latencies: list[float], errors: list[str]) -> None:
    """A new connection every 50 ms (as a browser's first request would be), each answer read whole."""
    while not stop.is_set():
        began = time.perf_counter()
        try:
            response = httpx.get(url, timeout=30)
            if response.status_code != 200:
                errors.append(str(response.status_code))
        except httpx.HTTPError as exc:
            errors.append(type(exc).__name__)
        latencies.append(time.perf_counter() - began)
        stop.wait(0.05)


def attack(
    target: str, port: int, large_url: str, small_url: str, args: argparse.Namespace, work: Path, pid: int
) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    stop = threading.Event()
    argv = [
        "slowhttptest", "-X", "-c", str(args.connections), "-r", "200", "-l", str(args.duration),
        "-k", "3", "-n", str(args.read_interval), "-z", "32", "-w", "512", "-y", "1024", "-p", "5",
        "-u", large_url,
    ]  # fmt: skip
    probe = threading.Thread(target=normal_client, args=(small_url, stop, latencies, errors), daemon=True)
    with (work / f"{target}-slowhttptest.log").open("w") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
        time.sleep(3)  # let the slow connections open first
        probe.start()
        counts = [0]
        while process.poll() is None:
            # Less the normal client's connection (at most one at a time); a sample taken after
            # slowhttptest exited (closing its own connections) is not counted.
            count = max(0, held(port) - 1)
            if process.poll() is None:
                counts.append(count)
            time.sleep(1)
    stop.set()
    probe.join()
    return {
        "requests": len(latencies),
        "p50": percentile(latencies, 0.50) * 1000,
        "p99": percentile(latencies, 0.99) * 1000,
        "max": max(latencies) * 1000,
        "errors": len(errors),
        "held_max": max(counts),
        "held_end": counts[-1],
        "rss_mib": peak_rss_kib(pid) / 1024,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--duration", type=int, default=30, help="seconds of slowhttptest per target")
    parser.add_argument("--send-timeout", type=float, default=30.0, help="nginx send_timeout, DATAPLANE_SEND_TIMEOUT")
    parser.add_argument("--read-interval", type=int, default=1, help="seconds between a slow reader's reads")
    parser.add_argument("--only", choices=("nginx", "dataplane"), help="one target only")
    args = parser.parse_args()
    for tool in ("slowhttptest", "nginx"):
        if shutil.which(tool) is None:
            print(f"bench/slowread.py: {tool} not found (apt-get install -y slowhttptest nginx)", file=sys.stderr)
            return 2
    nginx = shutil.which("nginx") or "nginx"
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-slowread-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        work.chmod(0o755)  # nginx's worker runs as another user and serves files from here
        files = work / "files"
        files.mkdir(mode=0o755)
        (files / "large.bin").write_bytes(b"L" * LARGE)
        (files / "small.txt").write_text("small\n")
        up_port = free_port()
        conf = nginx_conf(work, "upstream", up_port, upstream_block(up_port, files))
        stack.enter_context(
            started([nginx, "-c", str(conf)], work / "upstream.log", f"http://127.0.0.1:{up_port}/small.txt")
        )
        for target in ("nginx", "dataplane"):
            if args.only and target != args.only:
                continue
            with ExitStack() as running:
                port = free_port()
                if target == "nginx":
                    conf = nginx_conf(work, "proxy", port, reverse_proxy_block(port, up_port, args.send_timeout))
                    process = running.enter_context(
                        started(
                            [nginx, "-c", str(conf)], work / "nginx.log", f"http://127.0.0.1:{port}/files/small.txt"
                        )
                    )
                else:
                    seed = work / "seed.yaml"
                    endpoint = {"name": "files", "version": "v1", "targets": [{"url": f"http://127.0.0.1:{up_port}"}]}
                    document = {"format_version": 1, "breaker_policies": [], "endpoints": [endpoint]}
                    seed.write_text(yaml.safe_dump(document))
                    admin = free_port()
                    env = {
                        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                        "PYTHONPATH": str(ROOT),
                        "DATAPLANE_LISTEN": f"127.0.0.1:{port}",
                        "DATAPLANE_ADMIN_LISTEN": f"127.0.0.1:{admin}",
                        "DATAPLANE_SEED": str(seed),
                        "DATAPLANE_NODE_ID": "bench-slowread",
                        "DATAPLANE_SEND_TIMEOUT": f"{args.send_timeout:g}",
                    }
                    process = running.enter_context(
                        started(
                            [sys.executable, "-m", "dataplane"],
                            work / "dataplane.log",
                            f"http://127.0.0.1:{admin}/-/readyz",
                            env=env,
                        )
                    )
                base = f"http://127.0.0.1:{port}/files"
                assert len(httpx.get(f"{base}/large.bin").content) == LARGE
                urls = f"{base}/large.bin", f"{base}/small.txt"
                results[target] = attack(target, port, *urls, args, work, process.pid)
                print(f"{target} done", file=sys.stderr, flush=True)
    print(
        f"slowhttptest -X: {args.connections} connections, -k 3 x 1 MiB, window 512-1024 B,"
        f" 32 B read every {args.read_interval} s;"
        f" {args.duration} s; send timeout {args.send_timeout:g} s"
    )
    print("| target | normal requests | p50 | p99 | max | errors | connections held: most, at the end | peak RSS |")
    print("|---|---|---|---|---|---|---|---|")
    for target, r in results.items():
        print(
            f"| {target} | {r['requests']} | {r['p50']:.1f} ms | {r['p99']:.1f} ms | {r['max']:.1f} ms | {r['errors']}"
            f" | {r['held_max']}, {r['held_end']} | {r['rss_mib']:.1f} MiB |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
