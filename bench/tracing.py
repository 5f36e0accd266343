"""What tracing costs per request (docs/dataplane.md, "Tracing"): the same data plane without the feature
against it with tracing off, on and sampling 0 %, 1 % and 100 % of new traces, in one run.

    .venv/bin/python bench/tracing.py [--rounds 5] [--duration 5] [--baseline-ref main]

Needs `wrk` and `nginx` on PATH (`apt-get install -y wrk nginx`) and git; only 127.0.0.1. Starts, in a
temporary directory, nginx as the upstream (core 1, with wrk), an OTLP/HTTP sink (a thread of this
process answering every export 200, counting spans' bytes) and one data plane per variant (as shipped,
access log on, pinned to core 0), each on the same one-endpoint seed:

  plain      the data plane without tracing: `git archive --baseline-ref` (default: the commit before
             dataplane/tracing.py was added) unpacked in the temporary directory, run from there
             (the reference)
  off        this checkout, no DATAPLANE_OTLP_ENDPOINT (target >= 0.98x: no per-request work)
  sample-0   tracing on, DATAPLANE_TRACE_SAMPLE=0: every request gets and propagates a trace id,
             nothing is recorded (target >= 0.97x)
  sample-1   DATAPLANE_TRACE_SAMPLE=0.01 (target >= 0.97x)
  sample-100 DATAPLANE_TRACE_SAMPLE=1: a server and a client span per request, exported
             (target >= 0.6x)

No request carries a traceparent (each starts a trace). Each round measures every variant at 50
connections and at 1 (wrk, 1 thread), interleaved; the table shows medians, req/s as a ratio of
`plain`'s from the same run, and CPU time per request (from /proc, at 50 connections: the exporter's
thread included). Afterwards: spans the sink received, and `gateway_trace_spans_dropped_total` of each
traced variant.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import (  # noqa: E402
    dataplane_env,
    free_port,
    parse_wrk,
    seed_document,
    start_upstream,
    start_variants,
    warm_up,
)
from variants import compare  # noqa: E402

PROXY_CORE = "0"
LOAD_CORE = "1"
TARGETS = {"off": 0.98, "sample-0": 0.97, "sample-1": 0.97, "sample-100": 0.6}
SAMPLES = {"off": None, "sample-0": "0", "sample-1": "0.01", "sample-100": "1"}


class Sink:
    """An OTLP/HTTP endpoint that takes every export (200, an empty ExportTraceServiceResponse)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.posts = 0
        self.bytes = 0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                sink.posts += 1
                sink.bytes += len(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def wrk(url: str, connections: int, duration: float) -> tuple[float, float, float, int]:
    argv = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency", url]
    result = subprocess.run(argv, capture_output=True, text=True, check=True)  # noqa: S603
    return parse_wrk(result.stdout)


def baseline(work: Path, ref: str) -> Path:
    """The data plane of `ref` (without tracing), unpacked from git."""
    folder = work / "baseline"
    folder.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], capture_output=True, check=True)  # noqa: S603, S607
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)  # noqa: S603, S607
    return folder


def before_tracing() -> str:
    added = subprocess.run(  # noqa: S603, S607
        ["git", "-C", str(ROOT), "log", "--diff-filter=A", "--format=%H", "--", "dataplane/tracing.py"],  # noqa: S607
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return f"{added[-1]}^"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument(
        "--baseline-ref",
        help="git ref of the data plane without tracing (default: the commit before dataplane/tracing.py was added)",
    )
    args = parser.parse_args()
    for tool in ("wrk", "nginx", "taskset", "git"):
        if shutil.which(tool) is None:
            print(f"bench/tracing.py: {tool} not found (apt-get install -y wrk nginx)", file=sys.stderr)
            return 2

    with tempfile.TemporaryDirectory(prefix="bench-tracing-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        upstream = start_upstream(stack, work, LOAD_CORE)
        sink = Sink()
        stack.callback(sink.server.shutdown)
        document = seed_document(upstream)
        plain_root = baseline(work, args.baseline_ref or before_tracing())

        def env(name: str, seed: Path, port: int, admin: int) -> dict[str, str]:
            sample = SAMPLES.get(name)
            if sample is None:
                return dataplane_env(name, seed, port, admin, code=plain_root if name == "plain" else ROOT)
            otlp = f"http://127.0.0.1:{sink.port}/v1/traces"
            return dataplane_env(name, seed, port, admin, DATAPLANE_OTLP_ENDPOINT=otlp, DATAPLANE_TRACE_SAMPLE=sample)

        bases, pids, admins = start_variants(stack, work, dict.fromkeys(("plain", *SAMPLES), document), PROXY_CORE, env)
        urls = {name: f"{base}/bench/x" for name, base in bases.items()}
        warm_up(urls, lambda name, url: wrk(url, 50, 1))

        compare(
            urls,
            pids,
            lambda name, url, connections: wrk(url, connections, args.duration),
            rounds=args.rounds,
            duration=args.duration,
            core=PROXY_CORE,
            targets=TARGETS,
        )
        print(f"\nOTLP sink: {sink.posts} exports, {sink.bytes / 1e6:.1f} MB")
        for name in SAMPLES:
            if SAMPLES[name] is None:
                continue
            text = httpx.get(f"{admins[name]}/-/metrics").text
            lost = sum(float(v) for v in re.findall(r"^gateway_trace_spans_dropped_total\{[^}]*\} (\S+)$", text, re.M))
            print(f"{name}: gateway_trace_spans_dropped_total {lost:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
