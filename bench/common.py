"""Helpers the benches share. A bench runs as a script (`.venv/bin/python bench/NAME.py`), so its own
folder is on `sys.path` and `from common import …` finds this file."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

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


def millis(text: str) -> float:
    """A duration as wrk or h2load print it (`850.12us`, `1.20ms`, `2.00s`) in milliseconds."""
    value, unit = re.fullmatch(r"([0-9.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * _UNITS[unit]


# h2load's summary lines: requests/s, and the request counts (failed and errored are groups 5 and 6).
H2LOAD_RPS = re.compile(r"finished in [^,]+, ([0-9.]+) req/s")
H2LOAD_DONE = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored"
)


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


# --- the pieces every data plane bench starts ----------------------------------------------------------


def start_upstream(stack: ExitStack, work: Path, core: str, port: int | None = None) -> str:
    """The nginx upstream answering BODY (log `work/upstream.log`), pinned to `core`, until `stack`
    closes; its base URL."""
    port = free_port() if port is None else port
    upstream = f"http://127.0.0.1:{port}"
    conf = nginx_conf(work, "upstream", port, upstream_block(port))
    nginx = shutil.which("nginx") or "nginx"
    stack.enter_context(started(["taskset", "-c", core, nginx, "-c", str(conf)], work / "upstream.log", upstream + "/"))
    return upstream


def start_nginx(stack: ExitStack, work: Path, name: str, conf: Path, core: str) -> None:
    """nginx on `conf` pinned to `core` (stderr to `work/NAME.log`), terminated when `stack` closes;
    not waited for: the caller checks it answers."""
    nginx = shutil.which("nginx") or "nginx"
    process = subprocess.Popen(  # noqa: S603
        ["taskset", "-c", core, nginx, "-c", str(conf)],  # noqa: S607 - taskset from PATH
        stdout=subprocess.DEVNULL,
        stderr=(work / f"{name}.log").open("wb"),
    )
    stack.callback(process.wait)
    stack.callback(process.terminate)


def certificates(work: Path) -> Path:
    """`work/certs` holding `default.pem` (certificate and key for bench.test, from a throwaway CA):
    DATAPLANE_TLS_CERTS, and nginx's ssl_certificate."""
    from tests.dataplane.tls_certs import Authority

    certs = work / "certs"
    certs.mkdir()
    Authority.create(work).issue(certs / "default.pem", "bench.test", days=2)
    return certs


def seed_document(upstream: str) -> dict[str, Any]:
    """The seed of one default endpoint `bench` (v1) in front of `upstream`."""
    return {
        "format_version": 1,
        "breaker_policies": [],
        "endpoints": [{"name": "bench", "version": "v1", "default": True, "targets": [{"url": upstream}]}],
    }


def write_seed(path: Path, document: Mapping[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(dict(document)))
    return path


def dataplane_env(name: str, seed: Path, port: int, admin: int, *, code: Path = ROOT, **extra: str) -> dict[str, str]:
    """The environment of bench data plane `name` (node id `bench-NAME`) running `code`'s dataplane."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(code),
        **extra,
        "DATAPLANE_LISTEN": f"127.0.0.1:{port}",
        "DATAPLANE_ADMIN_LISTEN": f"127.0.0.1:{admin}",
        "DATAPLANE_SEED": str(seed),
        "DATAPLANE_NODE_ID": f"bench-{name}",
    }


def start_dataplane(stack: ExitStack, log: Path, admin: int, env: dict[str, str], core: str) -> subprocess.Popen[bytes]:
    """`python -m dataplane` pinned to `core` with `env`, once its admin port's readyz answers."""
    process: subprocess.Popen[bytes] = stack.enter_context(
        started(
            ["taskset", "-c", core, sys.executable, "-m", "dataplane"],
            log,
            f"http://127.0.0.1:{admin}/-/readyz",
            env=env,
        )
    )
    return process


def start_variants(
    stack: ExitStack,
    work: Path,
    documents: Mapping[str, Mapping[str, Any]],
    core: str,
    env: Callable[[str, Path, int, int], dict[str, str]] | None = None,
) -> tuple[dict[str, str], dict[str, int], dict[str, str]]:
    """One data plane per variant (seed `work/NAME.yaml`, log `work/NAME.log`), all pinned to `core`;
    `env(name, seed, port, admin)` is each one's environment (default `dataplane_env`). Returns each
    variant's base URL, pid and admin URL."""
    bases: dict[str, str] = {}
    pids: dict[str, int] = {}
    admins: dict[str, str] = {}
    for name, document in documents.items():
        seed = write_seed(work / f"{name}.yaml", document)
        port, admin = free_port(), free_port()
        environment = (env or dataplane_env)(name, seed, port, admin)
        pids[name] = start_dataplane(stack, work / f"{name}.log", admin, environment, core).pid
        bases[name] = f"http://127.0.0.1:{port}"
        admins[name] = f"http://127.0.0.1:{admin}"
    return bases, pids, admins


def warm_up(
    urls: Mapping[str, str],
    wrk_once: Callable[[str, str], object],
    headers: Mapping[str, Mapping[str, str]] | None = None,
    check: Callable[[str, str, httpx.Response], None] | None = None,
) -> None:
    """Correctness and warm-up: each variant's URL answers 200 with BODY (sent `headers[name]`), passes
    `check(name, url, response)`, then takes `wrk_once(name, url)`, one short wrk run."""
    for name, url in urls.items():
        response = httpx.get(url, headers=dict((headers or {}).get(name, {})))
        assert response.status_code == 200 and response.text == BODY, (name, response.status_code, response.text)
        if check is not None:
            check(name, url, response)
        wrk_once(name, url)


def nginx_tls_proxy_block(listens: list[str], upstream: int, pem: Path, extra: list[str]) -> str:
    """nginx server blocks terminating TLS with `pem` (TLS 1.2 and 1.3, the data plane's cipher list) on
    `listens` (each a `listen` directive's arguments), with the `extra` directives, as a keep-alive
    reverse proxy to 127.0.0.1:`upstream`."""
    from dataplane.tls import CIPHERS

    listen = "".join(f"\n        listen {where};" for where in listens)
    more = "".join(f"\n        {directive}" for directive in extra)
    return f"""
    upstream origin {{
        server 127.0.0.1:{upstream};
        keepalive 64;
    }}
    server {{{listen}
        ssl_certificate {pem};
        ssl_certificate_key {pem};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers {CIPHERS};{more}
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}"""
