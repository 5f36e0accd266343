"""A real HTTP upstream on 127.0.0.1 for health-check tests, whose answer a test flips."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.e2e.servers import http_server


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

    with http_server(Handler) as port:
        state.port = port
        yield state
