"""Start real processes on 127.0.0.1 for end-to-end tests, and always stop them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port free on 127.0.0.1 now and never handed out before by this process: once a probe socket
    is closed the kernel may give the same port to the next probe, and two listeners of one test (a
    data plane's proxy and ops ports) then collide ("address already in use", seen in CI)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def free_ports(count: int) -> int:
    """The first of `count` consecutive ports, all free on 127.0.0.1 now and never handed out before:
    `rungateway --dataplanes N` puts the i-th data plane on the configured port plus i-1."""
    while True:
        first = free_port()
        ports = range(first, first + count)
        if any(port in _HANDED_OUT for port in ports[1:]):
            continue
        try:
            for port in ports[1:]:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        _HANDED_OUT.update(ports)
        return first


def wait_for_http(url: str, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


@contextmanager
def running(
    argv: list[str], *, env: Mapping[str, str], ready_url: str | None, log: Path, timeout: float = 60.0
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `argv` (from the repo root) until the block ends; its output goes to `log`.

    With `ready_url`, the block starts once that URL answers; without (a worker, beat), at once.
    """
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603 - our own argv
            argv, cwd=ROOT, env=dict(env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            if ready_url is not None:
                wait_for_http(ready_url, process, timeout)
            yield process
        except BaseException:
            sys.stderr.write(log.read_text(errors="replace")[-4000:])
            raise
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=40)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


def clean_env(**overrides: str) -> dict[str, str]:
    """The environment a user's shell would have: ours, minus the test settings and database."""
    env = {k: v for k, v in os.environ.items() if k not in {"DJANGO_SETTINGS_MODULE", "DATABASE_URL"}}
    env.update(overrides)
    return env


def eventually(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll `condition` until it holds: a bound on waiting, never a timing assertion."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"gave up waiting for {what}")


def wait_for_redis(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Until the Redis on `port` answers PING (raw RESP: no client library needed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {process.returncode} before answering")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"redis-server on port {port} did not answer within {timeout}s")


@contextmanager
def redis_server(log: Path, port: int | None = None) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A throwaway redis-server on 127.0.0.1 (a free port unless `port`: a restart reuses its port),
    nothing saved to disk, until the block ends (or until the test kills it: `process.kill()`).
    Yields the port and the process."""
    port = port or free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    with log.open("ab") as out:
        process = subprocess.Popen(argv, cwd=log.parent, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # noqa: S603
        try:
            wait_for_redis(port, process)
            yield port, process
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()


@contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    """Serve `handler` on 127.0.0.1 in a thread until the block ends; yields the port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class RawAnswer:
    """An HTTP/1.1 answer read whole off a raw socket (tests that send what httpx would not: trailers,
    duplicated or underscore headers, a chosen source address)."""

    def __init__(self, raw: bytes) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = [tuple(line.split(": ", 1)) for line in lines[1:]]

    def header(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body)

    def error(self) -> str:
        return str(self.json()["error"])

    def upstream_got(self, name: str) -> list[str]:
        """The values of `name` the echo upstream received."""
        assert self.status == 200, self.body
        return [value for key, value in self.json()["headers"] if key == name.lower()]
