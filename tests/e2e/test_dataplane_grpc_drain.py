"""Draining (SIGTERM) while a gRPC call is in flight (ARCHITECTURE §13), on real processes: a grpcio
server behind the data plane, a grpcio client in front (h2c with prior knowledge) reading a
server-streaming call that paces its messages. The call either finishes within the drain grace, every
message and an OK status delivered, or, when it outlasts the grace, ends with a status the client can
act on (UNAVAILABLE: retry elsewhere); never a hang, never a connection that just goes."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.dataplane.processes import DataPlane, dataplane
from tests.e2e.test_dataplane_grpc import GrpcUpstream

pytestmark = pytest.mark.e2e


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[GrpcUpstream]:
    upstream = GrpcUpstream(tmp_path)
    yield upstream
    upstream.stop()


@pytest.fixture
def node(tmp_path: Path, origin: GrpcUpstream) -> Iterator[DataPlane]:
    endpoint = {
        "name": "echo",
        "version": "v1",
        "protocol": "grpc",
        "methods": ["POST"],
        "paths": ["/test.Echo"],
        "targets": [{"url": origin.url}],
        "strip_path": False,
    }
    with dataplane(tmp_path, {"format_version": 2, "endpoints": [endpoint]}) as running:
        yield running


def ticks(channel: grpc.Channel, count: int, interval: float) -> Any:
    stream = channel.unary_stream("/test.Echo/Ticks")
    # The deadline only bounds a hang: the call must end long before it.
    return stream(b"%d,%s" % (count, str(interval).encode()), timeout=120)


def test_a_streaming_call_in_flight_finishes_within_the_drain_grace(node: DataPlane) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{node.port}") as channel:
        call = ticks(channel, 20, 0.1)
        received = [next(call)]
        node.process.send_signal(signal.SIGTERM)
        received += list(call)  # raises grpc.RpcError on any status but OK
        assert call.code() == grpc.StatusCode.OK
    assert received == [b"tick %d" % index for index in range(20)]
    assert node.process.wait(timeout=60) == 0
    log = (node.seed.parent / "dataplane.log").read_text()
    assert "Traceback" not in log, log[-3000:]


def test_a_streaming_call_outlasting_the_grace_ends_unavailable_not_reset(node: DataPlane) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{node.port}") as channel:
        call = ticks(channel, 100_000, 0.1)  # hours of ticks: only the drain ends it
        assert next(call) == b"tick 0"
        node.process.send_signal(signal.SIGTERM)
        with pytest.raises(grpc.RpcError) as ended:
            for _ in call:
                pass
        failed: Any = ended.value
        # The gateway's own status in trailers (a reset stream would read INTERNAL, a dropped connection
        # "Socket closed").
        assert (failed.code(), failed.details()) == (grpc.StatusCode.UNAVAILABLE, "the gateway is shutting down")
    try:
        assert node.process.wait(timeout=60) == 0
    except subprocess.TimeoutExpired:
        pytest.fail("the data plane did not stop after its drain grace")
