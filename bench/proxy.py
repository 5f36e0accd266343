"""Proxy throughput and latency (docs/dataplane.md, "Speed"), with nginx as the reference from the same run.

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
  (h) dp-plugins   the data plane as shipped, its endpoint running `ip_restriction`, `cors`,
                   `request_headers` and `response_headers` (PLUGINS below): what a policy chain costs

Every request carries `Origin: https://app.example.com` (an origin (h) allows, so its cors plugin
does its whole work on each answer); the other targets ignore the header.

The proxies (b)-(e) and (g) are pinned to core 0 with `taskset`; the upstream and wrk share core 1;
(f) may use both cores (so its second worker shares core 1 with wrk and the upstream). Each
round measures every target at 50 connections and at 1 connection (wrk, 1 thread), targets
interleaved; the table shows medians over the rounds. Then the ratios, p99 at 50 connections beside
nginx's, (f)/(d), the data planes' peak RSS (VmHWM) and CPU time per request (from /proc, during the
50-connection runs: steadier than rps on a shared machine), what Little's law says p99 <= 10 ms needs,
and the routing microbenchmark (configdoc.RouteTable lookups/s at 10 and 10,000 endpoints; the ratio
as the median of paired repeats, with its interquartile range).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import (  # noqa: E402
    BODY,
    free_port,
    nginx_conf,
    parse_wrk,
    seed_document,
    started,
    upstream_block,
    write_seed,
)

from configdoc import RouteTable  # noqa: E402

PROXY_CORE = "0"
LOAD_CORE = "1"
ORIGIN = "https://app.example.com"
# (h)'s endpoint: the four plugins a typical public API turns on first, each doing real work per request.
PLUGINS = {
    "ip_restriction": {"allow": ["127.0.0.0/8", "10.0.0.0/8"], "deny": ["10.9.0.0/16"]},
    "cors": {"origins": [ORIGIN], "credentials": True, "expose_headers": ["X-Request-ID"]},
    "request_headers": {"set": {"X-Env": "bench"}, "remove": ["X-Debug"]},
    "response_headers": {"set": {"X-Frame-Options": "DENY"}, "remove": ["X-Powered-By"]},
}


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


def wrk(url: str, connections: int, duration: float) -> tuple[float, float, float, int]:
    argv = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency"]
    argv += ["-H", f"Origin: {ORIGIN}", url]
    result = subprocess.run(argv, capture_output=True, text=True, check=True)  # noqa: S603
    return parse_wrk(result.stdout)


def family(pid: int) -> list[int]:
    """The process and its children (a supervisor with workers counts them all)."""
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(child) for child in children]
    except OSError:
        pass
    return pids


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process and its children so far."""
    total = 0
    for each in family(pid):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
    return total / os.sysconf("SC_CLK_TCK")


def peak_rss_kib(pid: int) -> int:
    """VmHWM of the process and its children (a supervisor with workers counts them all)."""
    total = 0
    for each in family(pid):
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def routing_benchmark(lookups: int = 20_000, repeats: int = 151) -> dict[str, float]:
    """Lookups/s of the data plane's route table at 10 and 10,000 endpoints (each claims `/v1/name` and
    `/name`), on 4-segment request paths (`/v1/service-NNNNN/users/M/items`, N uniform over the
    endpoints, so at 10,000 each lookup lands on a different part of the table: the worst case for the
    caches). Names are zero-padded so both sizes hash, scan and slice strings of the same length: only
    the table's size differs.

    Many short repeats, each timing both sizes back to back (in alternating order), in CPU time of
    this thread (`time.thread_time`: time the core spent on other processes does not count), pinned
    to one core. The ratio is the median of the per-repeat ratios (each pair saw the same machine
    state), with its interquartile range as the spread; the rates are medians."""
    rng = random.Random(5)
    tables: dict[int, tuple[RouteTable[int], list[str]]] = {}
    for size in (10, 10_000):
        entries: dict[str, int] = {}
        for i in range(size):
            entries[f"/v1/service-{i:05d}"] = i
            entries[f"/service-{i:05d}"] = i
        paths = [f"/v1/service-{rng.randrange(size):05d}/users/{rng.randrange(1000)}/items" for _ in range(1000)]
        tables[size] = (RouteTable(entries), paths)
    seconds: dict[int, list[float]] = {size: [] for size in tables}
    order = list(tables)
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(PROXY_CORE)})
    try:
        for _ in range(repeats):
            order.reverse()
            for size in order:
                table, paths = tables[size]
                match = table.match
                started_at = time.thread_time()
                for _n in range(lookups // len(paths)):
                    for path in paths:
                        match(path)
                seconds[size].append(time.thread_time() - started_at)
    finally:
        os.sched_setaffinity(0, affinity)
    ratios = sorted(small / large for small, large in zip(seconds[10], seconds[10_000], strict=True))
    quartiles = statistics.quantiles(ratios, n=4)
    return {
        "rate_10": lookups / statistics.median(seconds[10]),
        "rate_10000": lookups / statistics.median(seconds[10_000]),
        "ratio": statistics.median(ratios),
        "ratio_q1": quartiles[0],
        "ratio_q3": quartiles[2],
    }


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
        names = ("upstream", "nginx", "seed", "dataplane", "dp-httpx", "dp-workers2", "dp-aiohttp", "dp-plugins")
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
        document = seed_document(upstream)
        seed = write_seed(work / "seed.yaml", document)
        plugins_seed = work / "seed-plugins.yaml"
        with_plugins = {**document["endpoints"][0], "plugins": PLUGINS}  # type: ignore[index]
        write_seed(plugins_seed, {**document, "format_version": 2, "endpoints": [with_plugins]})
        # (label, port name, DATAPLANE_TRANSPORT or None for the default, workers, cores, seed)
        variants: list[tuple[str, str, str | None, int, str, Path]] = [
            ("d dataplane", "dataplane", None, 1, PROXY_CORE, seed)
        ]
        if args.also_httpx:
            variants.append(("e dp-httpx", "dp-httpx", "httpx", 1, PROXY_CORE, seed))
        variants.append(("f dp-workers2", "dp-workers2", None, 2, f"{PROXY_CORE},{LOAD_CORE}", seed))
        if args.also_aiohttp:
            variants.append(("g dp-aiohttp", "dp-aiohttp", "aiohttp", 1, PROXY_CORE, seed))
        variants.append(("h dp-plugins", "dp-plugins", None, 1, PROXY_CORE, plugins_seed))
        pids: dict[str, int] = {}
        for label, port_name, transport, workers, cores, variant_seed in variants:
            admin = free_port()
            env = {
                **base_env,
                "DATAPLANE_LISTEN": f"127.0.0.1:{ports[port_name]}",
                "DATAPLANE_ADMIN_LISTEN": f"127.0.0.1:{admin}",
                "DATAPLANE_SEED": str(variant_seed),
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
            response = httpx.get(url, headers={"Origin": ORIGIN})
            assert response.status_code == 200 and response.text == BODY, (label, response.status_code, response.text)
            if label == "h dp-plugins":  # the chain really ran
                assert response.headers.get("access-control-allow-origin") == ORIGIN, response.headers
                assert response.headers.get("x-frame-options") == "DENY", response.headers
            wrk(url, 50, 1)

        results: dict[tuple[str, int], list[tuple[float, float, float, int]]] = {}
        cpu_per_request: dict[str, list[float]] = {}
        for number in range(1, args.rounds + 1):
            for label, url in targets.items():
                for connections in (50, 1):
                    pid = pids.get(label)
                    cpu_before = cpu_seconds(pid) if pid else 0.0
                    sample = wrk(url, connections, args.duration)
                    results.setdefault((label, connections), []).append(sample)
                    if pid and connections == 50:  # CPU per answered request, the data planes only
                        spent = cpu_seconds(pid) - cpu_before
                        cpu_per_request.setdefault(label, []).append(spent / (sample[0] * args.duration))
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
        "(h)/(d) = {:.3f}x at 50 connections, {:.3f}x at 1 (four plugins against the plain endpoint;"
        " target >= 0.85x)".format(
            median("h dp-plugins", 50, 0) / median("d dataplane", 50, 0),
            median("h dp-plugins", 1, 0) / median("d dataplane", 1, 0),
        )
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
    cpu = ", ".join(f"{label} {statistics.median(values) * 1e6:.0f} us" for label, values in cpu_per_request.items())
    print(f"CPU per request at 50 connections (user + system, workers included; medians): {cpu}")
    d_rps, d_p99 = median("d dataplane", 50, 0), median("d dataplane", 50, 2)
    mean_ms = 50 / d_rps * 1000  # Little's law: 50 requests always in flight
    needed = 50 * (d_p99 / mean_ms) / 0.010
    print(
        f"Little's law at 50 connections: (d) mean latency 50 / {d_rps:,.0f} rps = {mean_ms:.1f} ms, p99 {d_p99:.1f} ms"
        f" ({d_p99 / mean_ms:.2f}x the mean); at that spread p99 <= 10 ms needs"
        f" {needed:,.0f} rps on the one core, at most {1e6 / needed:.0f} us of CPU per request"
    )
    routing = routing_benchmark()
    print(
        f"routing: {routing['rate_10']:,.0f} lookups/s at 10 endpoints, {routing['rate_10000']:,.0f} at 10,000;"
        f" ratio {routing['ratio']:.3f} (median of 151 paired repeats, interquartile range"
        f" {routing['ratio_q1']:.3f}-{routing['ratio_q3']:.3f}; target >= 0.95)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
