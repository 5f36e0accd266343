"""Instructions per proxied request of the plain endpoint, under callgrind (bench/README.md, "What cut
the CPU per request"): the only figure on a shared machine that repeats to ~1 %.

    .venv/bin/python bench/callgrind_proxy.py [--requests 2000] [--connections 20] [--warmup 2000]
        [--plugins | --variant NAME] [--env NAME=VALUE ...] [--header 'Name: value' ...] [--keep DIR]

Needs `nginx` and `valgrind` on PATH. Starts nginx as the upstream (answering a small body) and
`python -m dataplane` under `valgrind --tool=callgrind --instr-atstart=no`, sends a warm-up, then
switches instrumentation on (`callgrind_control -i on`), zeroes the counters, sends `--requests` GETs
from `--connections` keep-alive connections (raw sockets, one thread each), dumps the counters and
prints the instructions (Ir) per request. The access log is on, as shipped. With `--plugins` the
endpoint runs bench/proxy.py's four plugins (target (h) there) and every request carries its Origin.
With `--variant`, the endpoint is one of bench/auth.py's (`key_auth`, `jwt-rs256`, `jwt-hs256`,
`basic`: every request carries its credential), bench/rate_limit.py's `local`, or one of
bench/routing.py's proxy variants (`hosts-one`: the endpoint beside a 100 hosts x 100 paths table,
each request to one (host, path) pair of it; `split`, `split-sticky`), each request as that bench
sends it: the per-request instructions of a policy or a table, against the plain figure of another
run (the ratio is what req/s would be if the machine did nothing else).
`--env` passes a setting to the data plane (e.g. `DATAPLANE_OTLP_ENDPOINT=http://127.0.0.1:9` with
`DATAPLANE_TRACE_SAMPLE=0`: tracing on, nothing recorded; every thread's instructions are counted,
so a sampled run counts the exporter's too). `--header` adds a header to every request (what one more
header costs); `--keep DIR` copies the dumps there for `callgrind_annotate`.
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from auth import documents as auth_documents  # noqa: E402
from common import BODY, free_port, nginx_conf, started, upstream_block  # noqa: E402
from proxy import ORIGIN, PLUGINS  # noqa: E402
from rate_limit import LIMITS  # noqa: E402
from routing import PROXY_REQUESTS, proxy_documents  # noqa: E402

VARIANTS = ("key_auth", "jwt-rs256", "jwt-hs256", "basic")
# bench/routing.py's proxy variants that send one request over and over (hosts-mixed cycles 10,000).
ROUTING = ("hosts-one", "split", "split-sticky")


def load(port: int, requests: int, connections: int, headers: dict[str, str], path: str = "/bench/x") -> None:
    """`requests` GETs of `path` over `connections` keep-alive connections; each answer read whole.
    `headers` may name the Host (127.0.0.1 otherwise)."""
    headers = {"Host": "127.0.0.1", "User-Agent": "callgrind-bench", "Origin": ORIGIN, **headers}
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    request = f"GET {path} HTTP/1.1\r\n{extra}\r\n".encode()
    errors: list[BaseException] = []

    def client(count: int) -> None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
                for _ in range(count):
                    sock.sendall(request)
                    data = b""
                    while b"\r\n\r\n" not in data:
                        data += sock.recv(65536)
                    head, _, rest = data.partition(b"\r\n\r\n")
                    length = int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
                    while len(rest) < length:
                        rest += sock.recv(65536)
                    assert head.startswith(b"HTTP/1.1 200"), head
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(requests // connections,)) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2000)
    parser.add_argument("--plugins", action="store_true", help="the endpoint runs the four plugins of (h)")
    parser.add_argument(
        "--variant", choices=[*VARIANTS, "local", *ROUTING], help="an authentication, rate limit or routing variant"
    )
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the data plane (repeatable)")
    parser.add_argument("--header", action="append", default=[], help="'Name: value' sent on every request")
    parser.add_argument("--keep", type=Path, help="copy the callgrind dumps here (for callgrind_annotate)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="callgrind-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        up_port, port, admin = free_port(), free_port(), free_port()
        conf = nginx_conf(work, "upstream", up_port, upstream_block(up_port))
        stack.enter_context(
            started(
                ["nginx", "-c", str(conf), "-p", str(work / "upstream")],
                work / "nginx.log",
                f"http://127.0.0.1:{up_port}/",
            )
        )
        seed = work / "seed.yaml"
        document = {
            "format_version": 1,
            "breaker_policies": [],
            "endpoints": [
                {"name": "bench", "version": "v1", "default": True, "targets": [{"url": f"http://127.0.0.1:{up_port}"}]}
            ],
        }
        headers: dict[str, str] = {}
        secrets: dict[str, str] = {}
        path = "/bench/x"
        if args.plugins:
            document["format_version"] = 2
            document["endpoints"][0]["plugins"] = PLUGINS  # type: ignore[index]
        elif args.variant == "local":
            document["format_version"] = 2
            document["endpoints"][0]["plugins"] = {"rate_limit": {"limits": LIMITS, "by": "ip"}}  # type: ignore[index]
        elif args.variant in ROUTING:
            document = proxy_documents(f"http://127.0.0.1:{up_port}")[args.variant]
            path, headers = PROXY_REQUESTS[args.variant][0], dict(PROXY_REQUESTS[args.variant][1])
        elif args.variant is not None:
            documents, variant_headers, secrets = auth_documents(f"http://127.0.0.1:{up_port}")
            document, headers = documents[args.variant], variant_headers[args.variant]
        for line in args.header:
            name, _, value = line.partition(":")
            headers[name.strip()] = value.strip()
        seed.write_text(yaml.safe_dump(document))
        out = work / "callgrind.out"
        env = {
            "PATH": "/usr/bin:/bin",
            "DATAPLANE_LISTEN": f"127.0.0.1:{port}",
            "DATAPLANE_ADMIN_LISTEN": f"127.0.0.1:{admin}",
            "DATAPLANE_SEED": str(seed),
            "DATAPLANE_NODE_ID": "bench-callgrind",
            "PYTHONHASHSEED": "0",
            **secrets,
            **dict(item.split("=", 1) for item in args.env),
        }
        argv = [
            "valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
            sys.executable, "-m", "dataplane",
        ]  # fmt: skip
        process = stack.enter_context(
            started(argv, work / "dataplane.log", f"http://127.0.0.1:{admin}/-/readyz", env=env)
        )
        load(port, args.warmup, args.connections, headers, path)
        subprocess.run(["callgrind_control", "-i", "on", str(process.pid)], check=True, capture_output=True)  # noqa: S603, S607
        subprocess.run(["callgrind_control", "-z", str(process.pid)], check=True, capture_output=True)  # noqa: S603, S607
        time.sleep(0.5)
        load(port, args.requests, args.connections, headers, path)
        subprocess.run(["callgrind_control", "-d", str(process.pid)], check=True, capture_output=True)  # noqa: S603, S607
        time.sleep(1)
        total = 0
        for dump in sorted(work.glob("callgrind.out*")):
            text = dump.read_text(errors="replace")
            if "\n-" not in text and "summary:" not in text and "totals:" not in text:
                continue
            found = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
            if found and dump.name != "callgrind.out":
                total = max(total, int(found.group(1)))
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            for dump in work.glob("callgrind.out*"):
                shutil.copy(dump, args.keep / dump.name)
        served = args.requests // args.connections * args.connections
        print(f"{total / served:,.0f} instructions per request ({total:,} over {served} requests)")
        assert BODY
    return 0


if __name__ == "__main__":
    sys.exit(main())
