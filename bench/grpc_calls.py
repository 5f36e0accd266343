"""gRPC unary calls through the data plane (docs/dataplane.md, "gRPC") against the same calls made to
the upstream directly, in one run, only on 127.0.0.1:

    .venv/bin/python bench/grpc_calls.py [--rounds 3] [--duration 5] [--streams 10]

Needs `h2load` (nghttp2-client) and `taskset` on PATH, and grpcio (requirements/dev.txt); installs
nothing. Starts tests/dataplane/grpc_upstream.py (a grpcio server, core 1, with h2load) and the data
plane (core 0) with a `protocol: grpc` endpoint in front of it, checks one call with grpcio's client,
then loads `/test.Echo/Unary` with h2load as a gRPC client would (POST, `content-type:
application/grpc`, `te: trailers`, one length-prefixed message) on 10 connections with `--streams`
calls in flight each:

  (d) direct        h2load -> grpcio server
  (g) dataplane     h2load -> data plane (h2c) -> grpcio server (h2c, one multiplexed connection)

Rounds interleaved, medians shown, and the ratio (g)/(d). grpcio's Python server is slow itself
(a thread pool per call), so the ratio says how much the gateway adds on top of a Python upstream.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import H2LOAD_DONE, H2LOAD_RPS, free_port, started  # noqa: E402

PROXY_CORE = "0"
LOAD_CORE = "1"
CONNECTIONS = 10


def h2load(url: str, body: Path, duration: float, streams: int) -> tuple[float, int]:
    argv = ["taskset", "-c", LOAD_CORE, "h2load", f"-c{CONNECTIONS}", "-t1", f"-m{streams}"]
    argv += [f"-D{duration:g}", "--warm-up-time=1", "-d", str(body)]
    argv += ["-H", "content-type: application/grpc", "-H", "te: trailers", url]
    result = subprocess.run(argv, capture_output=True, text=True, check=True)  # noqa: S603
    rps, done = H2LOAD_RPS.search(result.stdout), H2LOAD_DONE.search(result.stdout)
    if rps is None or done is None:
        raise RuntimeError(f"unexpected h2load output:\n{result.stdout}\n{result.stderr}")
    return float(rps.group(1)), int(done.group(5)) + int(done.group(6))


def wait_port(port: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5, help="seconds per h2load run")
    parser.add_argument("--streams", type=int, default=10, help="calls in flight per connection (-m)")
    args = parser.parse_args()
    for tool in ("h2load", "taskset"):
        if shutil.which(tool) is None:
            print(f"bench/grpc_calls.py: {tool} not found (apt-get install -y nghttp2-client)", file=sys.stderr)
            return 2
    import grpc

    with tempfile.TemporaryDirectory(prefix="bench-grpc-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        ports = {name: free_port() for name in ("upstream", "plain", "admin")}
        log = (work / "upstream.log").open("wb")
        upstream = subprocess.Popen(  # noqa: S603
            ["taskset", "-c", LOAD_CORE, sys.executable, "-m", "tests.dataplane.grpc_upstream", str(ports["upstream"])],  # noqa: S607
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        stack.callback(upstream.wait)
        stack.callback(upstream.terminate)
        wait_port(ports["upstream"])
        seed = work / "seed.yaml"
        document = {
            "format_version": 2,
            "breaker_policies": [],
            "endpoints": [
                {
                    "name": "echo",
                    "version": "v1",
                    "protocol": "grpc",
                    "methods": ["POST"],
                    "paths": ["/test.Echo"],
                    "strip_path": False,
                    "targets": [{"url": f"http://127.0.0.1:{ports['upstream']}"}],
                }
            ],
        }
        seed.write_text(yaml.safe_dump(document))
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(ROOT),
            "DATAPLANE_LISTEN": f"127.0.0.1:{ports['plain']}",
            "DATAPLANE_ADMIN_LISTEN": f"127.0.0.1:{ports['admin']}",
            "DATAPLANE_SEED": str(seed),
            "DATAPLANE_NODE_ID": "bench-grpc",
            "DATAPLANE_ACCESS_LOG": "off",
        }
        stack.enter_context(
            started(
                ["taskset", "-c", PROXY_CORE, sys.executable, "-m", "dataplane"],
                work / "dataplane.log",
                f"http://127.0.0.1:{ports['admin']}/-/readyz",
                env=env,
            )
        )
        for port in (ports["upstream"], ports["plain"]):  # correctness: a real client's call
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                assert channel.unary_unary("/test.Echo/Unary")(b"bench", timeout=10) == b"echo:bench"
        message = b"bench"
        body = work / "call.bin"
        body.write_bytes(b"\x00" + len(message).to_bytes(4, "big") + message)
        targets = {
            "d direct": f"http://127.0.0.1:{ports['upstream']}/test.Echo/Unary",
            "g dataplane": f"http://127.0.0.1:{ports['plain']}/test.Echo/Unary",
        }
        results: dict[str, list[tuple[float, int]]] = {}
        for number in range(1, args.rounds + 1):
            for label, url in targets.items():
                results.setdefault(label, []).append(h2load(url, body, args.duration, args.streams))
            print(f"round {number}/{args.rounds} done", file=sys.stderr, flush=True)

    print(f"\n{args.rounds} interleaved rounds of {args.duration:g} s, {CONNECTIONS} connections, ", end="")
    print(f"{CONNECTIONS * args.streams} unary calls in flight; medians.")
    print(f"{'target':<14} {'calls/s':>9} {'failed':>7}")
    for label in targets:
        rate = statistics.median(sample[0] for sample in results[label])
        print(f"{label:<14} {rate:>9.0f} {sum(sample[1] for sample in results[label]):>7}")
    direct = statistics.median(sample[0] for sample in results["d direct"])
    gateway = statistics.median(sample[0] for sample in results["g dataplane"])
    print(f"(g)/(d) = {gateway / direct:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
