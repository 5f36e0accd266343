"""A real HTTP upstream on 127.0.0.1 for health-check tests, whose answer a test flips."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Upstream:
    """What the server answers and what it saw. `status` and `delay` may be changed at any time."""

    def __init__(self) -> None:
        self.status = 200
        self.delay = 0.0
        self.location = ""
        self.paths: list[str] = []
        self.hosts: list[str] = []
        # (monotonic arrival time, path, status answered) for every request, in arrival order.
        self.log: list[tuple[float, str, int]] = []
        self.port = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def upstream() -> Iterator[Upstream]:
    state = Upstream()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            state.paths.append(self.path)
            state.hosts.append(self.headers.get("Host", ""))
            status = state.status
            state.log.append((time.monotonic(), self.path, status))
            if state.delay:
                time.sleep(state.delay)
            body = b"ok" if status < 400 else b"failing"
            try:
                self.send_response(status)
                if state.location:
                    self.send_header("Location", state.location)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
