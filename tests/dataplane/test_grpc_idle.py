"""The idle timeout of upstream gRPC connections (grpc.py's Pool and UpstreamConnection), against a real
grpcio server on loopback: a connection with no call open closes once the timeout passes (GOAWAY
NO_ERROR), the pool then opens a new one for the next call, and a call that outlasts the timeout is
never cut by it."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Iterator

import pytest

from dataplane.grpc import Pool, UpstreamConnection
from dataplane.snapshot import Endpoint, compile_document
from tests.e2e.test_dataplane_grpc import GrpcUpstream

IDLE = 0.3  # seconds: short, so the test need not wait out the real 30


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcUpstream]:
    upstream = GrpcUpstream(tmp_path_factory.mktemp("grpc-idle"))
    yield upstream
    upstream.stop()


def endpoint_for(origin: GrpcUpstream) -> Endpoint:
    document = {
        "format_version": 2,
        "endpoints": [
            {
                "name": "echo",
                "version": "v1",
                "protocol": "grpc",
                "methods": ["POST"],
                "paths": ["/test.Echo"],
                "targets": [{"url": origin.url}],
                "strip_path": False,
            }
        ],
    }
    return next(iter(compile_document(document).endpoints.values()))


async def call(connection: UpstreamConnection, method: str, message: bytes) -> bytes:
    """One unary call on `connection`; returns its grpc-status."""
    stream = connection.request(
        [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":authority", b"upstream"),
            (b":path", b"/test.Echo/" + method.encode()),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        ],
        end_stream=False,
    )
    assert await stream.send(b"\x00" + struct.pack(">I", len(message)) + message, end_stream=True)
    while True:
        kind, value = await asyncio.wait_for(stream.events.get(), 30)
        if kind == "data":
            stream.consumed(value[1])
        elif kind == "trailers":
            return bytes(dict(value)[b"grpc-status"])
        elif kind != "headers":
            raise AssertionError(f"the call ended with {kind} {value}")


async def closed_within(connection: UpstreamConnection, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not connection.closed and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return connection.closed


def test_an_idle_connection_closes_and_the_next_call_opens_a_new_one(origin: GrpcUpstream) -> None:
    endpoint = endpoint_for(origin)
    target = endpoint.targets[0]

    async def scenario() -> None:
        pool = Pool(idle_timeout=IDLE)
        first = await pool.connection(target, endpoint)
        assert await call(first, "Unary", b"one") == b"0"
        assert await closed_within(first, 20)
        assert first.writer.is_closing()
        second = await pool.connection(target, endpoint)
        assert second is not first
        assert await call(second, "Unary", b"two") == b"0"
        pool.close()

    asyncio.run(scenario())


def test_a_call_outlasting_the_idle_timeout_is_not_cut(origin: GrpcUpstream) -> None:
    endpoint = endpoint_for(origin)
    target = endpoint.targets[0]

    async def scenario() -> None:
        pool = Pool(idle_timeout=IDLE)
        connection = await pool.connection(target, endpoint)
        # Slow: the upstream answers after 1 s (over three idle timeouts) of silence on the connection.
        assert await call(connection, "Slow", b"1") == b"0"
        assert await closed_within(connection, 20)  # ...and once it ended, the timeout applies
        pool.close()

    asyncio.run(scenario())


def test_a_connection_never_used_closes_too(origin: GrpcUpstream) -> None:
    endpoint = endpoint_for(origin)

    async def scenario() -> None:
        connection = await UpstreamConnection.open(endpoint.targets[0], endpoint, Pool().contexts, idle_timeout=IDLE)
        assert await closed_within(connection, 20)

    asyncio.run(scenario())
