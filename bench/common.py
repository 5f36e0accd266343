"""Helpers the benches share. A bench runs as a script (`.venv/bin/python bench/NAME.py`), so its own
folder is on `sys.path` and `from common import …` finds this file."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The tests' free_port: never the same port twice in one run (two listeners of one bench would collide).
from tests.e2e.servers import free_port  # noqa: E402, F401  (re-exported for the benches)


def manage(*args: str, env: dict[str, str]) -> str:
    """`manage.py ARGS` from the repository root; its stdout."""
    result = subprocess.run(  # noqa: S603 - our own argv
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    )
    return result.stdout


def percentile(values: list[float], share: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


PASSWORD = "bench-admin-password-0123"  # noqa: S105 - the admin of a throwaway bench database


@contextmanager
def bench_database(name: str, extra_env: dict[str, str] | None = None) -> Iterator[dict[str, str]]:
    """A fresh PostgreSQL database `name` on 127.0.0.1 (dropped first, and again afterwards), migrated,
    with the admin user `bench` (PASSWORD); yields the environment a control plane on it runs with:
    local settings, DEBUG off, none of the caller's DATAPLANE_/GATEWAY_ variables, plus `extra_env`."""
    dropdb = ["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", name]
    subprocess.run(dropdb, check=True)  # noqa: S603
    subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", name], check=True)  # noqa: S603, S607
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith(("DATAPLANE_", "GATEWAY_"))},
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{name}",
        "DJANGO_SETTINGS_MODULE": "config.settings.local",
        "DJANGO_DEBUG": "false",
        **(extra_env or {}),
    }
    try:
        manage("migrate", "-v", "0", env=env)
        manage("createadmin", "bench", "--password", PASSWORD, env=env)
        yield env
    finally:
        subprocess.run(dropdb, check=False)  # noqa: S603


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    """Until `url` answers 200; RuntimeError when `process` exits first or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout} s")


@contextmanager
def started(argv: list[str], log: Path, ready: str, env: dict[str, str] | None = None) -> Iterator[Any]:
    """A process (output to `log`) once `ready` answers 200; SIGTERM (then SIGKILL after 15 s) on exit."""
    with log.open("wb") as out:
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)  # noqa: S603
        try:
            wait_ready(ready, process)
            yield process
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# --- nginx (the fast local upstream, and the reference reverse proxy) and wrk ------------------------

BODY = "hello from the bench upstream\n"


def nginx_conf(work: Path, name: str, port: int, body: str) -> Path:
    """An nginx.conf in `work/name` (one worker, in the foreground, no access log) around `body`, the
    server blocks; `port` is the one the caller's blocks listen on."""
    prefix = work / name
    prefix.mkdir()
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"""
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 1000000;
{body}
}}
"""
    )
    return conf


def upstream_block(port: int) -> str:
    """A server answering every request with BODY."""
    return f"""
    server {{
        listen 127.0.0.1:{port};
        default_type text/plain;
        location / {{ return 200 "{BODY.strip()}\\n"; }}
    }}"""


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def parse_wrk(output: str) -> tuple[float, float, float, int]:
    """Requests/s, p50 ms, p99 ms, errors (non-2xx/3xx answers + socket errors incl. wrk's 2 s timeouts)
    of a `wrk --latency` run."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]

    def percentile(p: str) -> float:
        match = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
        assert match, output
        return float(match.group(1)) * _UNITS[match.group(2)]

    errors = 0
    if found := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output):
        errors += int(found.group(1))
    if found := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output):
        errors += sum(int(x) for x in found.groups())
    return rps, percentile("50"), percentile("99"), errors
