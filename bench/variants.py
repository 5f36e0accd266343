"""Variants of one endpoint measured against the plain one in the same run (bench/auth.py,
bench/rate_limit.py): interleaved wrk rounds at 50 and 1 connections, CPU time per request and peak
RSS of each data plane, then the table of medians and each variant's ratio against its target."""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable, Mapping

from proxy import cpu_seconds, peak_rss_kib

Sample = tuple[float, float, float, int]  # rps, p50 ms, p99 ms, errors (common.parse_wrk)


def compare(
    urls: Mapping[str, str],
    pids: Mapping[str, int],
    run: Callable[[str, str, int], Sample],
    *,
    rounds: int,
    duration: float,
    core: str,
    targets: Mapping[str, float],
    ready: Callable[[str, str], None] | None = None,
) -> dict[str, float]:
    """`run(name, url, connections)` is one wrk run of `duration` seconds; `urls` must name `plain`.
    `ready(name, url)`, if given, runs before each run, outside its time and CPU count. Returns each
    variant's req/s at 50 connections as a ratio of plain's (medians)."""
    results: dict[tuple[str, int], list[Sample]] = {}
    cpu: dict[str, list[float]] = {}
    for number in range(1, rounds + 1):
        for name, url in urls.items():
            for connections in (50, 1):
                if ready is not None:
                    ready(name, url)
                before = cpu_seconds(pids[name])
                sample = run(name, url, connections)
                results.setdefault((name, connections), []).append(sample)
                if connections == 50:
                    spent = cpu_seconds(pids[name]) - before
                    cpu.setdefault(name, []).append(spent / (sample[0] * duration))
        print(f"round {number}/{rounds} done", file=sys.stderr, flush=True)
    rss = {name: peak_rss_kib(pid) for name, pid in pids.items()}

    def median(name: str, connections: int, index: int) -> float:
        return statistics.median(sample[index] for sample in results[(name, connections)])

    width = max(8, *(len(name) for name in urls))
    print(f"\n{rounds} interleaved rounds of {duration:g} s per run, medians, core {core}")
    print(
        f"{'variant':<{width}} {'rps@50':>9} {'p99@50':>9} {'rps@1':>8} {'x plain@50':>11} {'x plain@1':>10}"
        f" {'CPU/req':>9} {'RSS':>8} {'errors':>7}"
    )
    for name in urls:
        errors = sum(sample[3] for c in (50, 1) for sample in results[(name, c)])
        ratio50 = median(name, 50, 0) / median("plain", 50, 0)
        ratio1 = median(name, 1, 0) / median("plain", 1, 0)
        print(
            f"{name:<{width}} {median(name, 50, 0):>9.0f} {median(name, 50, 2):>7.2f}ms {median(name, 1, 0):>8.0f}"
            f" {ratio50:>10.3f}x {ratio1:>9.3f}x {statistics.median(cpu[name]) * 1e6:>7.0f}us"
            f" {rss[name] / 1024:>6.1f}MB {errors:>7}"
        )
    print()
    ratios = {name: median(name, 50, 0) / median("plain", 50, 0) for name in urls}
    for name, target in targets.items():
        verdict = "met" if ratios[name] >= target else "MISSED"
        print(f"{name}: {ratios[name]:.3f}x of plain at 50 connections (target >= {target}x): {verdict}")
    return ratios
