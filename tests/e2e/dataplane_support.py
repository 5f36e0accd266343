"""Real data-plane and upstream processes on 127.0.0.1 for the data plane's end-to-end tests."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.servers import clean_env, free_port, running


@dataclass
class Upstream:
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class DataPlane:
    port: int
    admin_port: int
    seed: Path
    process: Any

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"


@contextmanager
def upstream(tmp_path: Path, name: str = "upstream") -> Iterator[Upstream]:
    port = free_port()
    argv = [sys.executable, "-m", "tests.dataplane.upstream", str(port), name]
    with running(argv, env=clean_env(), ready_url=f"http://127.0.0.1:{port}/_seen", log=tmp_path / f"{name}.log"):
        yield Upstream(port)


@contextmanager
def dataplane(tmp_path: Path, seed: dict[str, Any] | None, **env: str) -> Iterator[DataPlane]:
    port, admin_port = free_port(), free_port()
    seed_path = tmp_path / "seed.yaml"
    variables = {
        "DATAPLANE_LISTEN": f"127.0.0.1:{port}",
        "DATAPLANE_ADMIN_LISTEN": f"127.0.0.1:{admin_port}",
        "DATAPLANE_NODE_ID": "e2e-node",
        "DATAPLANE_DRAIN_DELAY": "0.2",
        **env,
    }
    if seed is not None:
        seed_path.write_text(yaml.safe_dump(seed))
        variables["DATAPLANE_SEED"] = str(seed_path)
    with running(
        [sys.executable, "-m", "dataplane"],
        env=clean_env(**variables),
        ready_url=f"http://127.0.0.1:{admin_port}/-/{'readyz' if seed is not None else 'livez'}",
        log=tmp_path / "dataplane.log",
    ) as process:
        yield DataPlane(port, admin_port, seed_path, process)


def seed(*endpoints: dict[str, Any], policies: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"format_version": 1, "breaker_policies": policies or [], "endpoints": list(endpoints)}


def raw_exchange(port: int, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Send raw bytes and read until the server closes the connection (or stays silent for `timeout`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            received += b"<<still open>>"
        return received
