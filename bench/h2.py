"""HTTP/2 to clients (docs/dataplane.md, "HTTP/2"): the data plane's h2c and h2-over-TLS beside its
HTTP/1.1 and beside nginx speaking HTTP/2, in one run, only on 127.0.0.1:

    .venv/bin/python bench/h2.py [--rounds 3] [--duration 5] [--streams 10]

Needs `h2load` (nghttp2-client), `nginx` and `taskset` on PATH; installs nothing. Starts, in a temporary
directory, an nginx upstream (core 1, with h2load) and, pinned to core 0:

  (h) dp-http1     the data plane's plain listener, HTTP/1.1 (h2load --h1, one request at a time per connection)
  (c) dp-h2c       the same listener, h2c with prior knowledge
  (t) dp-h2-tls    the same process's TLS listener, h2 by ALPN (ECDSA P-256 certificate)
  (C) nginx-h2c    nginx, `listen ... http2` without TLS (prior knowledge), reverse proxy to the upstream
  (T) nginx-h2-tls nginx terminating TLS with h2, the same certificate and cipher list

Each runs `h2load -c10 -m<streams>` (10 connections, `--streams` concurrent streams each: 100 in flight
by default) for `--duration` seconds after a one-second warm-up; rounds interleaved, medians shown,
with the ratios against nginx. Upstream is HTTP/1.1 keep-alive for every target.
"""

from __future__ import annotations

import argparse
import re
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
    H2LOAD_DONE,
    H2LOAD_RPS,
    certificates,
    dataplane_env,
    free_port,
    millis,
    nginx_conf,
    nginx_tls_proxy_block,
    seed_document,
    start_dataplane,
    start_nginx,
    start_upstream,
    write_seed,
)

PROXY_CORE = "0"
LOAD_CORE = "1"
CONNECTIONS = 10


def nginx_h2_block(plain: int, tls: int, upstream: int, pem: Path) -> str:
    listens = [f"127.0.0.1:{plain} http2", f"127.0.0.1:{tls} ssl http2"]
    return nginx_tls_proxy_block(listens, upstream, pem, ["http2_max_concurrent_streams 128;"])


_MEAN = re.compile(r"time for request:\s+\S+\s+\S+\s+(\S+)")


def h2load(url: str, duration: float, streams: int, *, http1: bool = False) -> tuple[float, float, int]:
    """requests/s, mean time per request (ms) and failed + errored requests."""
    argv = ["taskset", "-c", LOAD_CORE, "h2load", f"-c{CONNECTIONS}", "-t1", f"-D{duration:g}", "--warm-up-time=1"]
    argv += ["--h1", "-m1"] if http1 else [f"-m{streams}"]
    result = subprocess.run([*argv, url], capture_output=True, text=True, check=True)  # noqa: S603
    rps = H2LOAD_RPS.search(result.stdout)
    done = H2LOAD_DONE.search(result.stdout)
    mean = _MEAN.search(result.stdout)
    if rps is None or done is None or mean is None:
        raise RuntimeError(f"unexpected h2load output:\n{result.stdout}\n{result.stderr}")
    return float(rps.group(1)), millis(mean.group(1)), int(done.group(5)) + int(done.group(6))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5, help="seconds per h2load run")
    parser.add_argument("--streams", type=int, default=10, help="concurrent streams per connection (-m)")
    args = parser.parse_args()
    for tool in ("h2load", "nginx", "taskset"):
        if shutil.which(tool) is None:
            print(f"bench/h2.py: {tool} not found (apt-get install -y nghttp2-client nginx)", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="bench-h2-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        names = ("upstream", "nginx-h2c", "nginx-h2-tls", "plain", "tls", "admin")
        ports = {name: free_port() for name in names}
        certs = certificates(work)
        upstream = start_upstream(stack, work, LOAD_CORE, ports["upstream"])
        block = nginx_h2_block(ports["nginx-h2c"], ports["nginx-h2-tls"], ports["upstream"], certs / "default.pem")
        start_nginx(stack, work, "nginx-h2", nginx_conf(work, "nginx-h2", ports["nginx-h2c"], block), PROXY_CORE)
        seed = write_seed(work / "seed.yaml", seed_document(upstream))
        tls = {"DATAPLANE_TLS_LISTEN": f"127.0.0.1:{ports['tls']}", "DATAPLANE_TLS_CERTS": str(certs)}
        env = dataplane_env("h2", seed, ports["plain"], ports["admin"], **tls)
        start_dataplane(stack, work / "dataplane.log", ports["admin"], env, PROXY_CORE)
        targets = {
            "h dp-http1": (f"http://127.0.0.1:{ports['plain']}/bench/x", True),
            "c dp-h2c": (f"http://127.0.0.1:{ports['plain']}/bench/x", False),
            "t dp-h2-tls": (f"https://127.0.0.1:{ports['tls']}/bench/x", False),
            "C nginx-h2c": (f"http://127.0.0.1:{ports['nginx-h2c']}/bench/x", False),
            "T nginx-h2-tls": (f"https://127.0.0.1:{ports['nginx-h2-tls']}/bench/x", False),
        }
        with httpx.Client(verify=False) as client:  # noqa: S501 - loopback, the bench's own certificate
            for _ in range(50):  # nginx still starting
                try:
                    assert client.get(f"https://127.0.0.1:{ports['nginx-h2-tls']}/bench/x").text == BODY
                    break
                except httpx.ConnectError:
                    time.sleep(0.1)
        results: dict[str, list[tuple[float, float, int]]] = {}
        for number in range(1, args.rounds + 1):
            for label, (url, http1) in targets.items():
                results.setdefault(label, []).append(h2load(url, args.duration, args.streams, http1=http1))
            print(f"round {number}/{args.rounds} done", file=sys.stderr, flush=True)

    def median(label: str, index: int) -> float:
        return statistics.median(sample[index] for sample in results[label])

    in_flight = CONNECTIONS * args.streams
    print(f"\n{args.rounds} interleaved rounds of {args.duration:g} s, {CONNECTIONS} connections, ", end="")
    print(f"{in_flight} streams in flight (HTTP/1.1: {CONNECTIONS} requests); medians.")
    print(f"{'target':<16} {'requests/s':>11} {'mean ms':>9} {'failed':>7}")
    for label in targets:
        failed = sum(sample[2] for sample in results[label])
        print(f"{label:<16} {median(label, 0):>11.0f} {median(label, 1):>9.2f} {failed:>7}")
    h2c, tls = median("c dp-h2c", 0), median("t dp-h2-tls", 0)
    print(f"(c)/(C) = {h2c / median('C nginx-h2c', 0):.2f}x, (t)/(T) = {tls / median('T nginx-h2-tls', 0):.2f}x")
    print(f"(c)/(h) = {h2c / median('h dp-http1', 0):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
