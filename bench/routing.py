"""The routing microbenchmark with §12's matchers in use: lookups/s at 10 and 10,000 endpoints; then
proxy req/s through a real data plane with a 100 hosts × 100 paths table and with a traffic split.

    .venv/bin/python bench/routing.py [--repeats 151] [--rounds 3] [--duration 5] [--no-proxy]

Two cases, each at 10 and 10,000 services (names zero-padded so both sizes hash and compare strings of
the same length: only the table's size differs):

- plain: each service one endpoint claiming `/v1/service-N` and `/service-N` (RouteTable.match, what
  bench/proxy.py measures; the data plane's path when no endpoint uses a matcher);
- matchers: each service three endpoints sharing those keys (MatcherTable.select): one with an exact
  host `service-N.example.com` (GET), one with the wildcard `*.example.com` and `match_headers`
  `{X-Tenant: [acme]}` (GET), one without hosts serving POST. The requests mix the four outcomes:
  exact host, wildcard host with the header, the POST endpoint, and a host nothing matches (404).
  At "10 and 10,000" services that is 30 and 30,000 endpoints;
- matchers-by-endpoint: the same table at 10 and 10,000 *endpoints*, §12's sizes (3 and 3,333
  services of three: 9 and 9,999 endpoints).

Timing as in bench/proxy.py's routing_benchmark: many short repeats, both sizes back to back in
alternating order, thread CPU time, pinned to one core when it can be; the ratio (10,000 over 10, in
lookups/s) is the median of the per-repeat ratios with its interquartile range. Target >= 0.95 (§12).

The proxy part (needs `wrk`, `nginx` and `taskset`, like bench/auth.py; only 127.0.0.1) starts nginx as
the upstream and one data plane per variant, pinned to core 0 (wrk and nginx on core 1), and compares
req/s with bench/variants.py's interleaved rounds:

  plain        one endpoint, `/bench/x` (the reference)
  hosts-one    the same endpoint beside 400 endpoints, 4 per host `host-N.bench.test` (N < 100), each
               with 25 of the extra paths `/p-0` … `/p-99`: 10,000 (host, path) routes; every request
               to one of them (`host-42.bench.test`, `/p-17/x`)
  hosts-mixed  the same table, wrk's Lua script cycling through all 10,000 (host, path) pairs
  split        the plain endpoint with `traffic_split: {version: v2, percent: 10}` (v2 on the same upstream)
  split-sticky the same with `sticky: cookie`, each request carrying its cookie
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
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from configdoc import Matchers, MatcherTable, RouteTable  # noqa: E402

PROXY_CORE = "0"
LOAD_CORE = "1"
HOSTS = PATHS = 100
# wrk cycles through every (host, path) pair of the hosts table, one per request.
MIXED_LUA = f"""
local n = 0
request = function()
  n = n + 1
  local host = n % {HOSTS}
  local path = math.floor(n / {HOSTS}) % {PATHS}
  return wrk.format("GET", "/p-" .. path .. "/x", {{Host = "host-" .. host .. ".bench.test"}})
end
"""

SIZES = (10, 10_000)
GET = frozenset({"GET", "HEAD"})
POST = frozenset({"POST"})
TENANT = (("x-tenant", frozenset({"acme"})),)


def _plain(size: int, rng: random.Random) -> Callable[[], None]:
    entries = {}
    for i in range(size):
        entries[f"/v1/service-{i:05d}"] = i
        entries[f"/service-{i:05d}"] = i
    table = RouteTable(entries)
    paths = [f"/v1/service-{rng.randrange(size):05d}/users/{rng.randrange(1000)}/items" for _ in range(1000)]
    match = table.match

    def run() -> None:
        for path in paths:
            match(path)

    return run


def _matchers(size: int, rng: random.Random) -> Callable[[], None]:
    entries: list[tuple[str, str, Matchers]] = []
    for i in range(size):
        # As a snapshot has them: one object per endpoint, claiming both keys (a default version).
        exact, wild, writes = (f"exact-{i}", f"wild-{i}", f"writes-{i}")
        for key in (f"/v1/service-{i:05d}", f"/service-{i:05d}"):
            entries.append((key, exact, Matchers((f"service-{i:05d}.example.com",), (), GET)))
            entries.append((key, wild, Matchers(("*.example.com",), TENANT, GET)))
            entries.append((key, writes, Matchers((), (), POST)))
    table = MatcherTable(entries)
    assert not table.plain
    requests = []
    for n in range(1000):
        i = rng.randrange(size)
        path = f"/v1/service-{i:05d}/users/{rng.randrange(1000)}/items"
        kind = n % 4
        if kind == 0:
            requests.append((path, f"service-{i:05d}.example.com", "GET", {}))
        elif kind == 1:
            requests.append((path, f"tenant-{i:05d}.example.com", "GET", {"x-tenant": "acme"}))
        elif kind == 2:
            requests.append((path, "gateway.local", "POST", {}))
        else:
            requests.append((path, "elsewhere.invalid", "GET", {}))
    select = table.select

    def run() -> None:
        for path, host, method, headers in requests:
            select(path, host=host, method=method, headers=headers)

    return run


def _matchers_by_endpoint(size: int, rng: random.Random) -> Callable[[], None]:
    """The matchers case with `size` counting endpoints as §12's target does (10 and 10,000 endpoints),
    not services of three: size // 3 services (9 and 9,999 endpoints)."""
    return _matchers(max(1, size // 3), rng)


def measure(build: Callable[[int, random.Random], Callable[[], None]], repeats: int) -> dict[str, float]:
    runs = {size: build(size, random.Random(5)) for size in SIZES}
    seconds: dict[int, list[float]] = {size: [] for size in SIZES}
    order = list(SIZES)
    affinity = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(affinity)})
        for _ in range(repeats):
            order.reverse()
            for size in order:
                run = runs[size]
                started = time.thread_time()
                for _n in range(20):
                    run()
                seconds[size].append(time.thread_time() - started)
    finally:
        os.sched_setaffinity(0, affinity)
    lookups = 20 * 1000
    ratios = sorted(small / large for small, large in zip(seconds[10], seconds[10_000], strict=True))
    quartiles = statistics.quantiles(ratios, n=4)
    return {
        "rate_10": lookups / statistics.median(seconds[10]),
        "rate_10000": lookups / statistics.median(seconds[10_000]),
        "ratio": statistics.median(ratios),
        "ratio_q1": quartiles[0],
        "ratio_q3": quartiles[2],
    }


def proxy_documents(upstream: str) -> dict[str, dict[str, Any]]:
    """The seed document of each proxy variant (see the module docstring)."""
    bench: dict[str, Any] = {"name": "bench", "version": "v1", "default": True, "targets": [{"url": upstream}]}
    plain = {"format_version": 1, "breaker_policies": [], "endpoints": [bench]}
    # An endpoint takes at most 32 extra paths: each host's 100 paths are 4 endpoints of 25.
    hosts = [
        {
            "name": f"svc-{n}-{block}",
            "version": "v1",
            "hosts": [f"host-{n}.bench.test"],
            "paths": [f"/p-{p}" for p in range(block * 25, block * 25 + 25)],
            "targets": [{"url": upstream}],
        }
        for n in range(HOSTS)
        for block in range(PATHS // 25)
    ]
    table = {"format_version": 2, "breaker_policies": [], "endpoints": [bench, *hosts]}
    v2 = {"name": "bench", "version": "v2", "targets": [{"url": upstream}]}

    def split(**extra: Any) -> dict[str, Any]:
        endpoint = {**bench, "traffic_split": {"version": "v2", "percent": 10, **extra}}
        return {"format_version": 2, "breaker_policies": [], "endpoints": [endpoint, v2]}

    return {
        "plain": plain,
        "hosts-one": table,
        "hosts-mixed": table,
        "split": split(),
        "split-sticky": split(sticky="cookie", sticky_name="session"),
    }


# What each proxy variant's requests are: the path, and the headers besides wrk's (bench/callgrind_proxy.py
# sends the same, one variant at a time).
PROXY_REQUESTS: dict[str, tuple[str, dict[str, str]]] = {
    "plain": ("/bench/x", {}),
    "hosts-one": ("/p-17/x", {"Host": "host-42.bench.test"}),
    "hosts-mixed": ("/p-0/x", {"Host": "host-0.bench.test"}),
    "split": ("/bench/x", {}),
    "split-sticky": ("/bench/x", {"Cookie": "theme=dark; session=3f2a9c"}),
}


def proxy_benchmark(rounds: int, duration: float) -> int:
    """Proxy req/s of each variant against `plain`, interleaved (bench/variants.py)."""
    from common import parse_wrk, start_upstream, start_variants, warm_up
    from variants import compare

    for tool in ("wrk", "nginx", "taskset"):
        if shutil.which(tool) is None:
            print(f"bench/routing.py: {tool} not found (apt-get install -y wrk nginx); skipping the proxy part")
            return 2
    requests = PROXY_REQUESTS
    with tempfile.TemporaryDirectory(prefix="bench-routing-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        script = work / "mixed.lua"
        script.write_text(MIXED_LUA)
        upstream = start_upstream(stack, work, LOAD_CORE)
        bases, pids, _ = start_variants(stack, work, proxy_documents(upstream), PROXY_CORE)
        urls = {name: f"{base}{requests[name][0]}" for name, base in bases.items()}

        def wrk(name: str, url: str, connections: int, seconds: float) -> tuple[float, float, float, int]:
            argv = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency"]
            for header, value in requests[name][1].items():
                argv += ["-H", f"{header}: {value}"]
            if name == "hosts-mixed":
                argv += ["-s", str(script)]
            result = subprocess.run([*argv, url], capture_output=True, text=True, check=True)  # noqa: S603
            return parse_wrk(result.stdout)

        warm_up(
            urls, lambda name, url: wrk(name, url, 50, 1), {name: headers for name, (_, headers) in requests.items()}
        )
        compare(
            urls,
            pids,
            lambda name, url, connections: wrk(name, url, connections, duration),
            rounds=rounds,
            duration=duration,
            core=PROXY_CORE,
            targets={"hosts-one": 0.95, "hosts-mixed": 0.9, "split": 0.95, "split-sticky": 0.9},
        )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=151, help="paired repeats per case")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved proxy rounds")
    parser.add_argument("--duration", type=float, default=5, help="seconds per wrk run")
    parser.add_argument("--no-proxy", action="store_true", help="the lookup microbenchmark only")
    args = parser.parse_args()
    cases = (
        ("plain", "services (one endpoint each)", _plain),
        ("matchers", "services (three endpoints each: 30 and 30,000 endpoints)", _matchers),
        ("matchers-by-endpoint", "endpoints (3 and 3,333 services of three)", _matchers_by_endpoint),
    )
    for name, unit, build in cases:
        result = measure(build, args.repeats)
        print(
            f"{name}: {result['rate_10']:,.0f} lookups/s at 10 {unit}, {result['rate_10000']:,.0f} at 10,000;"
            f" ratio {result['ratio']:.3f} (median of {args.repeats} paired repeats, interquartile range"
            f" {result['ratio_q1']:.3f}-{result['ratio_q3']:.3f}; target >= 0.95)",
            flush=True,
        )
    if args.no_proxy:
        return 0
    return proxy_benchmark(args.rounds, args.duration)


if __name__ == "__main__":
    raise SystemExit(main())
