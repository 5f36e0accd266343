"""Proxy throughput and latency (issue 5, "Speed"), with nginx as the reference from the same run.

One command, one run, only 127.0.0.1:

    .venv/bin/python bench/proxy.py [--rounds 5] [--duration 5] [--also-httpx] [--also-aiohttp]

Needs `wrk` and `nginx` on PATH (`apt-get install -y wrk nginx`); installs nothing itself. Starts, in a
temporary directory:

  (a) upstream  nginx answering a small body (the fast local upstream; also measured directly)
  (b) nginx     nginx as reverse proxy in front of (a), upstream keep-alive
  (c) seed      bench/seedproxy.py: a catch-all proxy on httpx like the seed gateway's, under uvicorn
  (d) dataplane `python -m dataplane` as shipped (default settings and transport, access log on)
  (e) dp-httpx  the data plane with DATAPLANE_TRANSPORT=httpx (only with --also-httpx)
  (f) dp-workers2  the data plane as shipped with `--workers 2`, allowed on both cores
  (g) dp-aiohttp   the data plane with DATAPLANE_TRANSPORT=aiohttp (only with --also-aiohttp)

The proxies (b)-(e) and (g) are pinned to core 0 with `taskset`; the upstream and wrk share core 1;
(f) may use both cores (so its second worker shares core 1 with wrk and the upstream). Each
round measures every target at 50 connections and at 1 connection (wrk, 1 thread), targets
interleaved; the table shows medians over the rounds. Then the ratios, p99 at 50 connections beside
nginx's, (f)/(d), the data planes' peak RSS (VmHWM) and the routing microbenchmark
(configdoc.RouteTable lookups/s at 10 and 10,000 endpoints).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from configdoc import RouteTable  # noqa: E402

PROXY_CORE = "0"
LOAD_CORE = "1"
BODY = "hello from the bench upstream\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout} s")


@contextmanager
def started(argv: list[str], log: Path, ready: str, env: dict[str, str] | None = None) -> Any:
    with log.open("wb") as out:
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)  # noqa: S603
        try:
            wait_ready(ready, process)
            yield process
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def nginx_conf(work: Path, name: str, port: int, body: str) -> Path:
    prefix = work / name
    prefix.mkdir()
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"""
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 1000000;
{body}
}}
"""
    )
    return conf


def upstream_block(port: int) -> str:
    return f"""
    server {{
        listen 127.0.0.1:{port};
        default_type text/plain;
        location / {{ return 200 "{BODY.strip()}\\n"; }}
    }}"""


def reverse_proxy_block(port: int, upstream_port: int) -> str:
    return f"""
    upstream origin {{ server 127.0.0.1:{upstream_port}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}"""


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def parse_wrk(output: str) -> tuple[float, float, float, int]:
    """Requests/s, p50 ms, p99 ms, errors (non-2xx/3xx answers + socket errors incl. wrk's 2 s timeouts)."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]

    def percentile(p: str) -> float:
        match = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
        assert match, output
        return float(match.group(1)) * _UNITS[match.group(2)]

    errors = 0
    if found := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output):
        errors += int(found.group(1))
    if found := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output):
        errors += sum(int(x) for x in found.groups())
    return rps, percentile("50"), percentile("99"), errors


def wrk(url: str, connections: int, duration: float) -> tuple[float, float, float, int]:
    argv = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency", url]
    result = subprocess.run(argv, capture_output=True, text=True, check=True)  # noqa: S603
    return parse_wrk(result.stdout)


def peak_rss_kib(pid: int) -> int:
    """VmHWM of the process and its children (a supervisor with workers counts them all)."""
    total = 0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(child) for child in children]
    except OSError:
        pass
    for each in pids:
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def routing_benchmark(lookups: int = 20_000, repeats: int = 51) -> dict[int, float]:
    """Lookups/s of the data plane's route table at 10 and 10,000 endpoints (each claims `/v1/name` and
    `/name`), on 4-segment request paths (`/v1/service-N/users/M/items`, N uniform over the endpoints).
    Many short repeats, the two sizes interleaved (in alternating order), timed in CPU time of this
    thread (`time.thread_time`: time the core spent on other processes does not count); medians."""
    rng = random.Random(5)
    tables: dict[int, tuple[RouteTable[int], list[str]]] = {}
    for size in (10, 10_000):
        entries: dict[str, int] = {}
        for i in range(size):
            entries[f"/v1/service-{i}"] = i
            entries[f"/service-{i}"] = i
        paths = [f"/v1/service-{rng.randrange(size)}/users/{rng.randrange(1000)}/items" for _ in range(1000)]
        tables[size] = (RouteTable(entries), paths)
    rates: dict[int, list[float]] = {size: [] for size in tables}
    order = list(tables)
    for _ in range(repeats):
        order.reverse()
        for size in order:
            table, paths = tables[size]
            match = table.match
            started_at = time.thread_time()
            for _n in range(lookups // len(paths)):
                for path in paths:
                    match(path)
            rates[size].append(lookups / (time.thread_time() - started_at))
    return {size: statistics.median(values) for size, values in rates.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--also-httpx", action="store_true", help="also the data plane on its httpx transport")
    parser.add_argument("--also-aiohttp", action="store_true", help="also the data plane on its aiohttp transport")
    args = parser.parse_args()
    for tool in ("wrk", "nginx", "taskset"):
        if shutil.which(tool) is None:
            print(f"bench/proxy.py: {tool} not found (apt-get install -y wrk nginx)", file=sys.stderr)
            return 2

    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        names = ("upstream", "nginx", "seed", "dataplane", "dp-httpx", "dp-workers2", "dp-aiohttp")
        ports = {name: free_port() for name in names}
        upstream = f"http://127.0.0.1:{ports['upstream']}"
        conf = nginx_conf(work, "upstream", ports["upstream"], upstream_block(ports["upstream"]))
        nginx = shutil.which("nginx") or "nginx"
        stack.enter_context(
            started(["taskset", "-c", LOAD_CORE, nginx, "-c", str(conf)], work / "upstream.log", upstream + "/")
        )
        conf = nginx_conf(work, "proxy", ports["nginx"], reverse_proxy_block(ports["nginx"], ports["upstream"]))
        targets: dict[str, str] = {"a upstream": upstream + "/"}
        stack.enter_context(
            started(
                ["taskset", "-c", PROXY_CORE, nginx, "-c", str(conf)],
                work / "nginx.log",
                f"http://127.0.0.1:{ports['nginx']}/",
            )
        )
        targets["b nginx"] = f"http://127.0.0.1:{ports['nginx']}/"
        base_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT)}
        stack.enter_context(
            started(
                [
                    "taskset", "-c", PROXY_CORE, python, "-m", "uvicorn", "bench.seedproxy:app",
                    "--host", "127.0.0.1", "--port", str(ports["seed"]), "--no-access-log", "--log-level", "warning",
                ],
                work / "seed.log",
                f"http://127.0.0.1:{ports['seed']}/",
                env={**base_env, "BENCH_UPSTREAM": upstream},
            )
        )  # fmt: skip
        targets["c seed"] = f"http://127.0.0.1:{ports['seed']}/bench/x"
        seed = work / "seed.yaml"
        document = {
            "format_version": 1,
            "breaker_policies": [],
            "endpoints": [{"name": "bench", "version": "v1", "default": True, "targets": [{"url": upstream}]}],
        }
        seed.write_text(yaml.safe_dump(document))
        # (label, port name, DATAPLANE_TRANSPORT or None for the default, workers, cores)
        variants: list[tuple[str, str, str | None, int, str]] = [("d dataplane", "dataplane", None, 1, PROXY_CORE)]
        if args.also_httpx:
            variants.append(("e dp-httpx", "dp-httpx", "httpx", 1, PROXY_CORE))
        variants.append(("f dp-workers2", "dp-workers2", None, 2, f"{PROXY_CORE},{LOAD_CORE}"))
        if args.also_aiohttp:
            variants.append(("g dp-aiohttp", "dp-aiohttp", "aiohttp", 1, PROXY_CORE))
        pids: dict[str, int] = {}
        for label, port_name, transport, workers, cores in variants:
            admin = free_port()
            env = {
                **base_env,
                "DATAPLANE_LISTEN": f"127.0.0.1:{ports[port_name]}",
                "DATAPLANE_ADMIN_LISTEN": f"127.0.0.1:{admin}",
                "DATAPLANE_SEED": str(seed),
                "DATAPLANE_NODE_ID": f"bench-{port_name}",
            }
            if transport is not None:
                env["DATAPLANE_TRANSPORT"] = transport
            process = stack.enter_context(
                started(
                    ["taskset", "-c", cores, python, "-m", "dataplane", "--workers", str(workers)],
                    work / f"{port_name}.log",
                    f"http://127.0.0.1:{admin}/-/readyz",
                    env=env,
                )
            )
            pids[label] = process.pid
            targets[label] = f"http://127.0.0.1:{ports[port_name]}/bench/x"

        for label, url in targets.items():  # correctness and warm-up
            response = httpx.get(url)
            assert response.status_code == 200 and response.text == BODY, (label, response.status_code, response.text)
            wrk(url, 50, 1)

        results: dict[tuple[str, int], list[tuple[float, float, float, int]]] = {}
        for number in range(1, args.rounds + 1):
            for label, url in targets.items():
                for connections in (50, 1):
                    results.setdefault((label, connections), []).append(wrk(url, connections, args.duration))
            print(f"round {number}/{args.rounds} done", file=sys.stderr, flush=True)
        rss = {label: peak_rss_kib(pid) for label, pid in pids.items()}

    def median(label: str, connections: int, index: int) -> float:
        return statistics.median(sample[index] for sample in results[(label, connections)])

    print(f"\n{args.rounds} interleaved rounds of {args.duration:g} s per run; medians. Proxies on core {PROXY_CORE}.")
    print(
        f"{'target':<16} {'rps@50':>10} {'p50@50':>9} {'p99@50':>9}"
        f" {'rps@1':>9} {'p50@1':>8} {'p99@1':>8} {'errors':>7}"
    )
    for label in targets:
        errors = sum(sample[3] for c in (50, 1) for sample in results[(label, c)])
        print(
            f"{label:<16} {median(label, 50, 0):>10.0f} {median(label, 50, 1):>7.2f}ms {median(label, 50, 2):>7.2f}ms"
            f" {median(label, 1, 0):>9.0f} {median(label, 1, 1):>6.2f}ms {median(label, 1, 2):>6.2f}ms {errors:>7}"
        )
    for connections in (50, 1):
        d = median("d dataplane", connections, 0)
        print(
            f"ratios @{connections}: (d)/(c) = {d / median('c seed', connections, 0):.1f}x,"
            f" (d)/(b) = {d / median('b nginx', connections, 0):.3f}x"
            + (" (targets: >= 10x, >= 0.10x)" if connections == 50 else "")
        )
    print(
        f"p99 @50: (d) {median('d dataplane', 50, 2):.2f} ms (target <= 10 ms),"
        f" (b) nginx {median('b nginx', 50, 2):.2f} ms"
    )
    print(
        "(f)/(d) = {:.2f}x at 50 connections, {:.2f}x at 1 (--workers 2 on cores {},{}; (d) on core {} alone)".format(
            median("f dp-workers2", 50, 0) / median("d dataplane", 50, 0),
            median("f dp-workers2", 1, 0) / median("d dataplane", 1, 0),
            PROXY_CORE,
            LOAD_CORE,
            PROXY_CORE,
        )
    )
    sizes = ", ".join(f"{label} {kib / 1024:.1f} MiB" for label, kib in rss.items())
    print(f"peak RSS (VmHWM, workers included): {sizes}")
    routing = routing_benchmark()
    print(
        f"routing: {routing[10]:,.0f} lookups/s at 10 endpoints, {routing[10_000]:,.0f} at 10,000"
        f" (ratio {routing[10_000] / routing[10]:.2f}, target >= 0.95)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
