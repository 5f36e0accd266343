"""The management API at 10,000 endpoints (docs/performance.md, "API"), each figure beside the same at 10 endpoints.

Starts two real control planes (uvicorn + httptools), each on a PostgreSQL database of its own
(`gateway_bench_bigapi10` and `gateway_bench_bigapi<N>`, created and dropped), only on 127.0.0.1:

  import   `manage.py import_config FILE` of a YAML file of N endpoints (2 targets, 2 tags, a description
           each) into the empty database: wall time and the peak RSS of that process (wait4); then the
           same file POSTed to /api/v1/config/import/ (nothing changes: parse, validate, compare)
  reads    `--requests` sequential GETs per query with a JWT, after 5 unmeasured: p50 / p95 of the time
           to the whole answer. Queries: the first page (default limit 100), the first page of 10, a deep
           page of 10 (the last one: offset N-10), ?tag= (one of 50 teams) and ?search= (a description)
           in pages of 10, one endpoint by key. The 10-endpoint reference answers fewer items on the
           default page (10 instead of 100), so the pages of 10 are the like-for-like comparison.

    .venv/bin/python bench/api_scale.py [--endpoints 10000] [--requests 50]

Needs PostgreSQL on 127.0.0.1:5432 (user postgres).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from large_config import SMALL, ControlPlane, bench_document, percentile, write_document

DB_PREFIX = "gateway_bench_bigapi"


def queries(count: int) -> dict[str, str]:
    number = count * 7 // 10  # 7 of 10, 7,000 of 10,000
    return {
        "first page (default 100)": "/api/v1/endpoints/",
        "first page of 10": "/api/v1/endpoints/?limit=10",
        "last page of 10 (deep offset)": f"/api/v1/endpoints/?limit=10&offset={count - 10}",
        "?tag=team-07, page of 10": "/api/v1/endpoints/?tag=team-07&limit=10",
        "?search=<a description>, page of 10": f"/api/v1/endpoints/?search=number+{number}&limit=10",
        "one endpoint by key": f"/api/v1/endpoints/svc-{number:05d}:v1/",
    }


def time_reads(cp: ControlPlane, count: int, requests: int) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    with cp.client() as client:
        for name, url in queries(count).items():
            for _ in range(5):
                response = client.get(url)
                response.raise_for_status()
            body = response.json()
            items = len(body["results"]) if "results" in body else 1
            times = []
            for _ in range(requests):
                started_at = time.perf_counter()
                client.get(url).raise_for_status()
                times.append(time.perf_counter() - started_at)
            out[name] = {"p50": statistics.median(times), "p95": percentile(times, 0.95), "items": items}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoints", type=int, default=10_000, help="endpoints of the large config (default 10000)")
    parser.add_argument("--requests", type=int, default=50, help="measured GETs per query (default 50)")
    args = parser.parse_args()
    sizes = (SMALL, args.endpoints)
    results: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        for size in sizes:
            path = write_document(work / f"config-{size}.yaml", bench_document(size, "http://127.0.0.1:9"))
            cp = stack.enter_context(ControlPlane(f"{DB_PREFIX}{size}", work).running())
            wall, peak = cp.import_file(path)
            with cp.client() as client:
                started_at = time.perf_counter()
                answer = client.post(
                    "/api/v1/config/import/", content=path.read_bytes(), headers={"Content-Type": "application/yaml"}
                )
                api_wall = time.perf_counter() - started_at
                answer.raise_for_status()
                assert answer.json()["summary"] == {"create": 0, "update": 0, "delete": 0}, answer.text[:500]
            results[size] = {
                "import_seconds": wall,
                "import_peak_kib": peak,
                "file_bytes": path.stat().st_size,
                "api_reimport_seconds": api_wall,
                "reads": time_reads(cp, size, args.requests),
            }
            print(f"{size} endpoints measured", file=sys.stderr, flush=True)
    report(results, sizes, args)
    return 0


def report(results: dict[int, dict[str, Any]], sizes: tuple[int, int], args: argparse.Namespace) -> None:
    small, big = sizes
    s, b = results[small], results[big]
    print(f"\nAPI at {big} endpoints against {small} (the reference), same run; {args.requests} GETs per query")
    print(f"{'query':<38} {'items':>11} {'p50 @' + str(small):>10} {'p50 @' + str(big):>11} {'ratio':>7}", end="")
    print(f" {'p95 @' + str(small):>10} {'p95 @' + str(big):>11} {'ratio':>7}")
    for name in s["reads"]:
        a, c = s["reads"][name], b["reads"][name]
        print(
            f"{name:<38} {a['items']:>5}/{c['items']:<5} {a['p50'] * 1000:>8.1f}ms {c['p50'] * 1000:>9.1f}ms"
            f" {c['p50'] / a['p50']:>6.2f}x {a['p95'] * 1000:>8.1f}ms {c['p95'] * 1000:>9.1f}ms"
            f" {c['p95'] / a['p95']:>6.2f}x"
        )
    print(
        f"import_config (empty database): {s['import_seconds']:.2f} s / {b['import_seconds']:.1f} s"
        f" ({b['import_seconds'] / s['import_seconds']:.0f}x for {big // small}x the endpoints);"
        f" file {s['file_bytes'] / 1024:.1f} KiB / {b['file_bytes'] / 1048576:.2f} MiB;"
        f" peak RSS {s['import_peak_kib'] / 1024:.0f} MiB / {b['import_peak_kib'] / 1024:.0f} MiB"
    )
    print(
        f"per endpoint: {s['import_seconds'] / small * 1000:.1f} ms / {b['import_seconds'] / big * 1000:.2f} ms;"
        f" the same file again over the API (no change): {s['api_reimport_seconds']:.2f} s /"
        f" {b['api_reimport_seconds']:.1f} s"
    )


if __name__ == "__main__":
    raise SystemExit(main())
