"""`rate_limit` (ARCHITECTURE §11) on real processes: two standalone data planes in front of a real echo
upstream, sharing their counts through a real redis-server the test starts (and kills, and restarts);
a limit changed in the seed taking effect on reload, without a restart.

Counting is by wall-clock window, so a test that counts exactly waits, if it must, until it is not
near a window's end (`clear_of_the_window_edge`): a bound on where the requests fall, never a timing
assertion."""

from __future__ import annotations

import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.dataplane.processes import DataPlane, Upstream, dataplane, upstream
from tests.e2e.servers import RawAnswer, eventually, redis_server

pytestmark = pytest.mark.e2e


def clear_of_the_window_edge(seconds: int, margin: float = 15.0) -> None:
    """Wait for the next window if this one ends within `margin` seconds."""
    left = seconds - time.time() % seconds
    if left < margin:
        time.sleep(left + 0.2)


def limit(requests: int, per: str, **config: Any) -> dict[str, Any]:
    return {"rate_limit": {"limits": [{"requests": requests, "per": per}], **config}}


def document(origin: str) -> dict[str, Any]:
    def endpoint(name: str, plugins: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, "version": "v1", "targets": [{"url": origin}], "plugins": plugins}

    return {
        "format_version": 2,
        "endpoints": [
            endpoint("shared", limit(20, "minute", by="endpoint", policy="redis")),
            endpoint("tolerant", limit(1000, "hour", by="header", header_name="X-Client-Id", policy="redis")),
            endpoint(
                "strict",
                limit(5, "hour", by="header", header_name="X-Client-Id", policy="redis", fault_tolerant=False),
            ),
        ],
    }


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[Upstream]:
    with upstream(tmp_path, "echo") as server:
        yield server


@contextmanager
def two_nodes(tmp_path: Path, seed: dict[str, Any], redis_port: int) -> Iterator[tuple[DataPlane, DataPlane]]:
    env = {"DATAPLANE_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0", "DATAPLANE_REDIS_TIMEOUT": "0.2"}
    with ExitStack() as stack:
        nodes = []
        for name in ("a", "b"):
            directory = tmp_path / name
            directory.mkdir()
            nodes.append(stack.enter_context(dataplane(directory, seed, DATAPLANE_NODE_ID=f"node-{name}", **env)))
        yield nodes[0], nodes[1]


def backend_errors(node: DataPlane) -> float:
    text = httpx.get(f"{node.admin}/-/metrics", timeout=10).text
    found = re.search(r"^gateway_rate_limit_backend_errors_total (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_two_nodes_share_one_limit_through_redis_exactly(tmp_path: Path, origin: Upstream) -> None:
    with redis_server(tmp_path / "redis.log") as (port, _), two_nodes(tmp_path, document(origin.url), port) as (a, b):
        clear_of_the_window_edge(60)
        answers = []
        with httpx.Client(timeout=10) as client:
            for index in range(40):
                node = a if index % 2 == 0 else b
                answers.append(client.get(f"{node.url}/shared/x"))
        assert [answer.status_code for answer in answers] == [200] * 20 + [429] * 20
        assert [answer.headers["ratelimit-remaining"] for answer in answers[:3]] == ["19", "18", "17"]
        assert {answer.headers["ratelimit-limit"] for answer in answers} == {"20"}
        refused = answers[-1]
        assert refused.json()["error"] == "rate_limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert 1 <= int(refused.headers["ratelimit-reset"]) <= 60


def test_redis_killed_mid_traffic_then_restarted(tmp_path: Path, origin: Upstream) -> None:
    log = tmp_path / "redis.log"
    with ExitStack() as stack:
        port, redis = stack.enter_context(redis_server(log))
        a, b = stack.enter_context(two_nodes(tmp_path, document(origin.url), port))
        seen: list[int] = []
        stop = threading.Event()

        def traffic() -> None:
            with httpx.Client(timeout=10) as client:
                while not stop.is_set():
                    for node in (a, b):
                        seen.append(client.get(f"{node.url}/tolerant/x", headers={"X-Client-Id": "load"}).status_code)

        worker = threading.Thread(target=traffic)
        worker.start()
        try:
            eventually(lambda: len(seen) >= 20, "traffic before the kill")
            redis.kill()
            redis.wait()
            before = len(seen)
            eventually(lambda: len(seen) >= before + 40, "traffic after the kill")
        finally:
            stop.set()
            worker.join(30)
        # fault_tolerant: counted locally, served on, never a 5xx.
        assert set(seen) == {200}
        assert backend_errors(a) > 0 and backend_errors(b) > 0
        # Not fault_tolerant: 503 rate_limit_unavailable, with Retry-After.
        strict = httpx.get(f"{a.url}/strict/x", headers={"X-Client-Id": "probe"}, timeout=10)
        assert (strict.status_code, strict.json()["error"]) == (503, "rate_limit_unavailable")
        assert strict.headers["retry-after"] == "1"
        for name in ("a", "b"):  # one warning per outage, not one per request
            text = (tmp_path / name / "dataplane.log").read_text()
            assert text.count("counting locally (fault_tolerant)") == 1, text[-3000:]

        # Redis back on its port, empty: each node finds it again after its backoff, without a restart.
        stack.enter_context(redis_server(log, port=port))
        for node in (a, b):
            eventually(
                lambda node=node: httpx.get(
                    f"{node.url}/strict/x", headers={"X-Client-Id": f"probe-{node.port}"}
                ).status_code
                != 503,
                "the node counting in Redis again",
            )
        # Shared again: 5 an hour for one client across both nodes, exactly.
        clear_of_the_window_edge(3600, margin=30)
        with httpx.Client(timeout=10) as client:
            answers = [
                client.get(f"{node.url}/strict/x", headers={"X-Client-Id": "after"}).status_code for node in (a, b) * 5
            ]
        assert answers == [200] * 5 + [429] * 5
        for name in ("a", "b"):
            assert "shared counting resumed" in (tmp_path / name / "dataplane.log").read_text()


def test_a_limit_changed_in_the_seed_applies_on_reload_without_a_restart(tmp_path: Path, origin: Upstream) -> None:
    def seed(requests: int) -> dict[str, Any]:
        plugins = limit(requests, "hour", by="header", header_name="X-Client-Id")
        endpoint = {"name": "local", "version": "v1", "targets": [{"url": origin.url}], "plugins": plugins}
        return {"format_version": 2, "endpoints": [endpoint]}

    with dataplane(tmp_path, seed(3)) as node, httpx.Client(timeout=10) as client:
        clear_of_the_window_edge(3600, margin=30)
        headers = {"X-Client-Id": "reloaded"}
        assert [client.get(f"{node.url}/local/x", headers=headers).status_code for _ in range(4)] == [200] * 3 + [429]
        pid = node.process.pid
        before = httpx.get(f"{node.admin}/-/readyz").json()["config_sha256"]
        node.seed.write_text(yaml.safe_dump(seed(6)))
        node.process.send_signal(signal.SIGHUP)
        eventually(lambda: httpx.get(f"{node.admin}/-/readyz").json()["config_sha256"] != before, "the reload")
        answers = [client.get(f"{node.url}/local/x", headers=headers) for _ in range(4)]
        # The counts made under the old limit still count: 3 of 6 are left.
        assert [answer.status_code for answer in answers] == [200] * 3 + [429]
        assert answers[0].headers["ratelimit-limit"] == "6" and answers[0].headers["ratelimit-remaining"] == "2"
        assert node.process.pid == pid and node.process.poll() is None


def raw_get(node: DataPlane, *lines: str, body: str = "") -> RawAnswer:
    head = "GET /local/x HTTP/1.1\r\nHost: gw.example\r\n" + "".join(f"{line}\r\n" for line in lines)
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as sock:
        sock.sendall((head + "Connection: close\r\n\r\n" + body).encode("latin-1"))
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    return RawAnswer(raw)


def test_header_keys_cannot_be_spoofed_by_repeating_underscoring_or_smuggling_the_header(
    tmp_path: Path, origin: Upstream
) -> None:
    plugins = limit(1, "hour", by="header", header_name="X-Client-Id")
    endpoint = {"name": "local", "version": "v1", "targets": [{"url": origin.url}], "plugins": plugins}
    with dataplane(tmp_path, {"format_version": 2, "endpoints": [endpoint]}) as node:
        clear_of_the_window_edge(3600, margin=30)
        assert raw_get(node, "X-Client-Id: a").status == 200
        refused = raw_get(node, "x-client-id: a")
        assert refused.status == 429 and refused.error() == "rate_limited" and refused.header("Retry-After")
        # Sent twice: one key of the joined values, neither "a"'s allowance nor a way into it.
        assert raw_get(node, "X-Client-Id: a", "X-Client-Id: a").status == 200
        assert raw_get(node, "X-Client-Id: a, a").status == 429
        # The CGI spelling is another header: this request has no X-Client-Id and counts by address.
        assert raw_get(node, "X_Client_Id: b").status == 200
        assert raw_get(node).status == 429
        # A trailer never reaches the app: the request has no X-Client-Id either (the address: used up).
        chunked = raw_get(
            node, "Transfer-Encoding: chunked", "Trailer: X-Client-Id", body="0\r\nX-Client-Id: c\r\n\r\n"
        )
        assert chunked.status == 429
        assert raw_get(node, "X-Client-Id: c").status == 200
        # A control character in the value never reaches a plugin: the server refuses the request.
        assert raw_get(node, "X-Client-Id: d\x00e").status == 400
