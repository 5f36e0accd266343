"""gRPC proxying (ARCHITECTURE §13) on real processes: a grpcio server behind the data plane, grpcio
clients in front (h2c with prior knowledge), every kind of call, trailers both ways, deadlines, a
cancelled call, an upstream killed mid-stream, key_auth and rate_limit answered as grpc-status, and
the breaker and metrics counting by grpc-status."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from configdoc.consumers import hash_key
from tests.dataplane.processes import DataPlane, dataplane, self_signed_certificate
from tests.e2e.servers import ROOT, clean_env, eventually, free_port

pytestmark = pytest.mark.e2e

KEY = "grpc-key-3Fh8vM2q"


class GrpcUpstream:
    def __init__(self, workdir: Path, name: str = "grpc-upstream", tls: tuple[Path, Path] | None = None) -> None:
        self.port = free_port()
        self.scheme = "https" if tls else "http"
        self.log = (workdir / f"{name}.log").open("wb")
        argv = [sys.executable, "-m", "tests.dataplane.grpc_upstream", str(self.port)]
        argv += [str(path) for path in tls or ()]
        self.process = subprocess.Popen(argv, cwd=ROOT, env=clean_env(), stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
                time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        self.log.close()


def document(origin: str, dead: str) -> dict[str, Any]:
    def endpoint(name: str, path: str, url: str, **fields: Any) -> dict[str, Any]:
        return {
            "name": name,
            "version": "v1",
            "protocol": "grpc",
            "methods": ["POST"],
            "paths": [path],
            "targets": [{"url": url}],
            **fields,
        }

    return {
        "format_version": 2,
        "consumers": [{"username": "partner", "key_auth": [{"key_sha256": hash_key(KEY), "label": "k"}]}],
        "endpoints": [
            # The service's own path goes upstream as it is.
            endpoint("echo", "/test.Echo", origin, strip_path=False),
            # Another public name for it: stripped, and the target's path put in front.
            endpoint(
                "keyed",
                "/test.Keyed",
                f"{origin}/test.Echo",
                plugins={
                    "key_auth": {"key_names": ["apikey"], "in": ["header"]},
                    "rate_limit": {"limits": [{"requests": 3, "per": "minute"}], "by": "consumer"},
                },
            ),
            endpoint("dead", "/test.Dead", f"{dead}/test.Echo"),
            endpoint("flaky", "/test.Flaky", f"{origin}/test.Echo", breaker_policy="tight"),
            endpoint("picky", "/test.Picky", f"{origin}/test.Echo", breaker_policy="tight"),
        ],
        "breaker_policies": [{"name": "tight", "failure_threshold": 2, "reset_timeout": 600}],
    }


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("grpc")


@pytest.fixture(scope="module")
def origin(workdir: Path) -> Iterator[GrpcUpstream]:
    upstream = GrpcUpstream(workdir)
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def node(workdir: Path, origin: GrpcUpstream) -> Iterator[DataPlane]:
    dead = f"http://127.0.0.1:{free_port()}"
    with dataplane(workdir, document(origin.url, dead)) as running:
        yield running


@pytest.fixture
def channel(node: DataPlane) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{node.port}") as opened:
        yield opened


def call(channel: grpc.Channel, method: str, kind: str = "unary_unary") -> Any:
    return getattr(channel, kind)(method)


def grpc_count(node: DataPlane, endpoint: str, code: int) -> float:
    text = httpx.get(f"{node.admin}/-/metrics", timeout=10).text
    prefix = f'gateway_grpc_responses_total{{endpoint="{endpoint}",grpc_status="{code}"}} '
    return sum(float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix))


# --- the four kinds of call ------------------------------------------------------------------------


def test_a_unary_call_passes_with_its_trailers(channel: grpc.Channel) -> None:
    response, state = call(channel, "/test.Echo/Unary").with_call(b"hello", timeout=10)
    assert response == b"echo:hello"
    assert state.code() == grpc.StatusCode.OK
    assert ("x-upstream-trailer", "kept") in state.trailing_metadata()
    assert any(key == "x-request-id" for key, _ in state.initial_metadata())


def test_the_upstream_sees_the_forwarding_headers_and_the_client_metadata(channel: grpc.Channel) -> None:
    seen = dict(json.loads(call(channel, "/test.Echo/Metadata")(b"", metadata=(("x-client", "meta"),), timeout=10)))
    assert seen["x-client"] == "meta"
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert "via" in seen


def test_a_client_streaming_call_gets_every_message(channel: grpc.Channel) -> None:
    messages = (b"part%d" % i for i in range(50))
    assert call(channel, "/test.Echo/ClientStream", "stream_unary")(messages, timeout=10) == (
        b"50:" + b"|".join(b"part%d" % i for i in range(50))
    )


def test_a_server_streaming_call_streams_many_big_messages_under_flow_control(channel: grpc.Channel) -> None:
    # 200 messages of 64 KiB: 12.5 MiB, far past every window on both hops.
    received = list(call(channel, "/test.Echo/ServerStream", "unary_stream")(b"200,65536", timeout=60))
    assert len(received) == 200
    assert [int(message[:6]) for message in received] == list(range(200))
    assert all(len(message) == 65536 for message in received)


def test_a_bidirectional_call_answers_each_message_as_it_comes(channel: grpc.Channel) -> None:
    outbox: list[bytes] = []
    ready = threading.Event()

    def requests() -> Iterator[bytes]:
        for index in range(5):
            outbox.append(b"m%d" % index)
            yield b"m%d" % index
            ready.wait(5)  # the answer to this one came back before the next is sent
            ready.clear()

    answers = []
    for answer in call(channel, "/test.Echo/Bidi", "stream_stream")(requests(), timeout=20):
        answers.append(answer)
        ready.set()
    assert answers == [b"re:m%d" % i for i in range(5)]


def test_a_stripped_path_reaches_the_targets_service(channel: grpc.Channel) -> None:
    response = call(channel, "/test.Keyed/Unary")(b"k", metadata=(("apikey", KEY),), timeout=10)
    assert response == b"echo:k"


# --- statuses ----------------------------------------------------------------------------------------


def test_an_upstream_status_and_message_reach_the_client(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        call(channel, "/test.Echo/Fail")(b"nope", timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "the upstream refused: nope"


def test_a_deadline_passing_upstream_is_deadline_exceeded(node: DataPlane, channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        call(channel, "/test.Echo/Slow")(b"5", timeout=0.5)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_the_gateway_enforces_grpc_timeout_itself(node: DataPlane, channel: grpc.Channel, workdir: Path) -> None:
    # The client's own timer and the gateway's race; the gateway's answer (504 upstream_timeout in the
    # access log, DEADLINE_EXCEEDED on the wire) shows it cut the call itself, not only the client.
    with pytest.raises(grpc.RpcError) as caught:
        call(channel, "/test.Echo/Slow")(b"5", metadata=(("x-mark", "deadline"),), timeout=0.3)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    log = workdir / "dataplane.log"
    eventually(
        lambda: any(
            'path="/test.Echo/Slow"' in line and "error=upstream_timeout" in line
            for line in log.read_text().splitlines()
        ),
        "the gateway's deadline in the access log",
    )


def test_no_upstream_is_unavailable(node: DataPlane, channel: grpc.Channel) -> None:
    before = grpc_count(node, "dead:v1", 14)
    with pytest.raises(grpc.RpcError) as caught:
        call(channel, "/test.Dead/Unary")(b"x", timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert grpc_count(node, "dead:v1", 14) == before + 1


def test_an_unknown_service_is_unimplemented(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        call(channel, "/nothing.Here/Call")(b"x", timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_key_auth_without_a_key_is_unauthenticated_and_with_a_wrong_key_too(channel: grpc.Channel) -> None:
    for metadata in ((), (("apikey", "wrong"),)):
        with pytest.raises(grpc.RpcError) as caught:
            call(channel, "/test.Keyed/Unary")(b"x", metadata=metadata, timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert caught.value.details()


def test_rate_limit_is_resource_exhausted(node: DataPlane, channel: grpc.Channel) -> None:
    codes = []
    for _ in range(6):
        try:
            call(channel, "/test.Keyed/Unary")(b"x", metadata=(("apikey", KEY),), timeout=10)
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as error:
            codes.append(error.code())
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
    assert codes[-1] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert grpc_count(node, "keyed:v1", 8) >= 1


def test_ok_calls_are_counted_by_grpc_status(node: DataPlane, channel: grpc.Channel) -> None:
    before = grpc_count(node, "echo:v1", 0)
    call(channel, "/test.Echo/Unary")(b"count", timeout=10)
    assert grpc_count(node, "echo:v1", 0) == before + 1


def test_a_cancelled_call_cancels_the_upstream_call(node: DataPlane, channel: grpc.Channel, workdir: Path) -> None:
    future = call(channel, "/test.Echo/Slow").future(b"10", timeout=30)
    time.sleep(0.5)
    future.cancel()
    assert future.cancelled()
    log = workdir / "dataplane.log"
    eventually(
        lambda: any(
            'path="/test.Echo/Slow"' in line and "error=client_closed_request" in line
            for line in log.read_text().splitlines()
        ),
        "the cancelled call's access line",
    )
    # The gateway is fine afterwards.
    assert call(channel, "/test.Echo/Unary")(b"after", timeout=10) == b"echo:after"


def test_http_1_1_to_a_grpc_endpoint_is_refused(node: DataPlane) -> None:
    response = httpx.post(f"{node.url}/test.Echo/Unary", content=b"\x00\x00\x00\x00\x00")
    assert response.status_code == 400 and "HTTP/2" in response.json()["message"]


def test_calls_past_their_deadline_open_the_breaker_then_calls_are_unavailable(
    node: DataPlane, channel: grpc.Channel
) -> None:
    for _ in range(2):
        with pytest.raises(grpc.RpcError) as caught:
            call(channel, "/test.Flaky/Slow")(b"5", timeout=0.3)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The client's own timer may end the call a moment before the gateway records it.
    eventually(
        lambda: 'gateway_circuit_state{endpoint="flaky:v1"} 1.0'
        in httpx.get(f"{node.admin}/-/metrics", timeout=10).text,
        "the breaker to open",
        timeout=10,
    )
    with pytest.raises(grpc.RpcError) as caught:
        call(channel, "/test.Flaky/Unary")(b"x", timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert caught.value.details() == "the circuit breaker of this endpoint is open"


def test_a_clients_mistake_does_not_open_the_breaker(channel: grpc.Channel) -> None:
    for _ in range(4):
        with pytest.raises(grpc.RpcError) as caught:
            call(channel, "/test.Picky/Fail")(b"x", timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert call(channel, "/test.Picky/Unary")(b"still", timeout=10) == b"echo:still"


# --- the upstream killed mid-stream ------------------------------------------------------------------


def test_an_upstream_killed_mid_stream_ends_the_call_unavailable(tmp_path: Path) -> None:
    upstream = GrpcUpstream(tmp_path, "dying")
    try:
        with dataplane(tmp_path, document(upstream.url, f"http://127.0.0.1:{free_port()}")) as node:
            with grpc.insecure_channel(f"127.0.0.1:{node.port}") as channel:
                received = []
                with pytest.raises(grpc.RpcError) as caught:
                    for message in call(channel, "/test.Echo/Die", "unary_stream")(b"", timeout=20):
                        received.append(message)
                assert received == [b"first", b"second"]
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
                # With the upstream gone, a new call is UNAVAILABLE too (connect refused), not a hang.
                with pytest.raises(grpc.RpcError) as again:
                    call(channel, "/test.Echo/Unary")(b"x", timeout=10)
                assert again.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        upstream.stop()


def test_an_https_target_is_called_over_h2_with_tls_verified_against_its_ca(tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    upstream = GrpcUpstream(tmp_path, "secure", tls=(cert, key))
    try:
        document = {
            "format_version": 2,
            "breaker_policies": [],
            "endpoints": [
                {
                    "name": "secure",
                    "version": "v1",
                    "protocol": "grpc",
                    "methods": ["POST"],
                    "paths": ["/test.Echo"],
                    "strip_path": False,
                    "targets": [{"url": upstream.url}],
                    "tls": {"ca_file": str(cert)},
                },
                {
                    "name": "untrusted",
                    "version": "v1",
                    "protocol": "grpc",
                    "methods": ["POST"],
                    "paths": ["/test.Untrusted"],
                    "targets": [{"url": f"{upstream.url}/test.Echo"}],
                },
            ],
        }
        with dataplane(tmp_path, document) as node, grpc.insecure_channel(f"127.0.0.1:{node.port}") as channel:
            assert call(channel, "/test.Echo/Unary")(b"tls", timeout=10) == b"echo:tls"
            streamed = list(call(channel, "/test.Echo/ServerStream", "unary_stream")(b"20,1000", timeout=20))
            assert len(streamed) == 20
            # A certificate the endpoint does not trust: no call goes through.
            with pytest.raises(grpc.RpcError) as caught:
                call(channel, "/test.Untrusted/Unary")(b"x", timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert caught.value.details() == "the TLS handshake with the upstream failed"
    finally:
        upstream.stop()
