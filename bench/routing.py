"""The routing microbenchmark with §12's matchers in use: lookups/s at 10 and 10,000 endpoints.

    .venv/bin/python bench/routing.py [--repeats 151]

Two cases, each at 10 and 10,000 services (names zero-padded so both sizes hash and compare strings of
the same length: only the table's size differs):

- plain: each service one endpoint claiming `/v1/service-N` and `/service-N` (RouteTable.match, what
  bench/proxy.py measures; the data plane's path when no endpoint uses a matcher);
- matchers: each service three endpoints sharing those keys (MatcherTable.select): one with an exact
  host `service-N.example.com` (GET), one with the wildcard `*.example.com` and `match_headers`
  `{X-Tenant: [acme]}` (GET), one without hosts serving POST. The requests mix the four outcomes:
  exact host, wildcard host with the header, the POST endpoint, and a host nothing matches (404).

Timing as in bench/proxy.py's routing_benchmark: many short repeats, both sizes back to back in
alternating order, thread CPU time, pinned to one core when it can be; the ratio (10,000 over 10, in
lookups/s) is the median of the per-repeat ratios with its interquartile range. Target >= 0.95 (§12).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from configdoc import Matchers, MatcherTable, RouteTable  # noqa: E402

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=151, help="paired repeats per case")
    args = parser.parse_args()
    for name, build in (("plain", _plain), ("matchers", _matchers)):
        result = measure(build, args.repeats)
        print(
            f"{name}: {result['rate_10']:,.0f} lookups/s at 10 services, {result['rate_10000']:,.0f} at 10,000;"
            f" ratio {result['ratio']:.3f} (median of {args.repeats} paired repeats, interquartile range"
            f" {result['ratio_q1']:.3f}-{result['ratio_q3']:.3f}; target >= 0.95)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
