"""TLS termination (docs/dataplane.md, "TLS"): the data plane's TLS listener beside its plain one and
beside nginx terminating TLS, in one run, only on 127.0.0.1:

    .venv/bin/python bench/tls.py [--rounds 3] [--duration 5]

Needs `wrk`, `nginx` and `taskset` on PATH; installs nothing. Starts, in a temporary directory, an nginx
upstream (core 1, with wrk) and, pinned to core 0:

  (p) dp-plain  the data plane as shipped, plain HTTP listener
  (t) dp-tls    the same process's TLS listener (DATAPLANE_TLS_LISTEN; an ECDSA P-256 certificate)
  (n) nginx-tls nginx terminating TLS (same certificate, TLS 1.2 and 1.3, the data plane's cipher list)
                as a keep-alive reverse proxy to the same upstream

Two measures per target, interleaved per round, medians shown:

  keep-alive   wrk, 50 connections kept open: requests/s (handshakes amortised away)
  handshakes   wrk with `Connection: close`, 50 connections: every request on a new connection, so the
               rate is new connections (each a full TLS 1.3 handshake, no session resumption) per second

and the ratios (t)/(p) and (t)/(n).
"""

from __future__ import annotations

import argparse
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
    certificates,
    dataplane_env,
    free_port,
    nginx_conf,
    nginx_tls_proxy_block,
    parse_wrk,
    seed_document,
    start_dataplane,
    start_nginx,
    start_upstream,
    write_seed,
)

PROXY_CORE = "0"
LOAD_CORE = "1"


def nginx_tls_block(port: int, upstream: int, pem: Path) -> str:
    extra = ["ssl_session_cache off;", "ssl_session_tickets off;"]
    return nginx_tls_proxy_block([f"127.0.0.1:{port} ssl"], upstream, pem, extra)


def wrk(url: str, duration: float, *, close: bool) -> tuple[float, float, float, int]:
    argv = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", "-c50", f"-d{duration:g}s", "--latency"]
    if close:
        argv += ["-H", "Connection: close"]
    result = subprocess.run([*argv, url], capture_output=True, text=True, check=True)  # noqa: S603
    return parse_wrk(result.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5, help="seconds per wrk run")
    args = parser.parse_args()
    for tool in ("wrk", "nginx", "taskset"):
        if shutil.which(tool) is None:
            print(f"bench/tls.py: {tool} not found (apt-get install -y wrk nginx)", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        ports = {name: free_port() for name in ("upstream", "nginx-tls", "plain", "tls", "admin")}
        certs = certificates(work)
        upstream = start_upstream(stack, work, LOAD_CORE, ports["upstream"])
        block = nginx_tls_block(ports["nginx-tls"], ports["upstream"], certs / "default.pem")
        start_nginx(stack, work, "nginx-tls", nginx_conf(work, "nginx-tls", ports["nginx-tls"], block), PROXY_CORE)
        seed = write_seed(work / "seed.yaml", seed_document(upstream))
        tls = {"DATAPLANE_TLS_LISTEN": f"127.0.0.1:{ports['tls']}", "DATAPLANE_TLS_CERTS": str(certs)}
        env = dataplane_env("tls", seed, ports["plain"], ports["admin"], **tls)
        start_dataplane(stack, work / "dataplane.log", ports["admin"], env, PROXY_CORE)
        targets = {
            "p dp-plain": f"http://127.0.0.1:{ports['plain']}/bench/x",
            "t dp-tls": f"https://127.0.0.1:{ports['tls']}/bench/x",
            "n nginx-tls": f"https://127.0.0.1:{ports['nginx-tls']}/bench/x",
        }
        with httpx.Client(verify=False) as client:  # noqa: S501 - loopback, the bench's own certificate
            for label, url in targets.items():  # correctness and warm-up
                for _ in range(50):
                    try:
                        response = client.get(url)
                        break
                    except httpx.ConnectError:  # nginx still starting
                        time.sleep(0.1)
                assert response.status_code == 200 and response.text == BODY, (label, response.status_code)
                wrk(url, 1, close=False)
        results: dict[tuple[str, bool], list[tuple[float, float, float, int]]] = {}
        for number in range(1, args.rounds + 1):
            for label, url in targets.items():
                for close in (False, True):
                    results.setdefault((label, close), []).append(wrk(url, args.duration, close=close))
            print(f"round {number}/{args.rounds} done", file=sys.stderr, flush=True)

    def median(label: str, close: bool, index: int) -> float:
        return statistics.median(sample[index] for sample in results[(label, close)])

    print(f"\n{args.rounds} interleaved rounds of {args.duration:g} s per run, 50 connections; medians.")
    print(f"{'target':<14} {'keep-alive rps':>15} {'p99':>9} {'new conn/s':>11} {'p99':>9} {'errors':>7}")
    for label in targets:
        errors = sum(sample[3] for close in (False, True) for sample in results[(label, close)])
        print(
            f"{label:<14} {median(label, False, 0):>15.0f} {median(label, False, 2):>7.2f}ms"
            f" {median(label, True, 0):>11.0f} {median(label, True, 2):>7.2f}ms {errors:>7}"
        )
    for close, what in ((False, "keep-alive"), (True, "handshakes")):
        tls, plain, ref = (median(label, close, 0) for label in ("t dp-tls", "p dp-plain", "n nginx-tls"))
        print(f"{what}: (t)/(p) = {tls / plain:.2f}x, (t)/(n) = {tls / ref:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
