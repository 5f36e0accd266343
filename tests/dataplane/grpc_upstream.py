"""A real gRPC server (grpcio, h2c) for tests/e2e/test_dataplane_grpc.py and bench/grpc.py: raw-bytes
methods (no protobuf), one per kind of call.

    python -m tests.dataplane.grpc_upstream PORT [CERT KEY]   (with CERT and KEY: TLS, ALPN h2)
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc

SERVICE = "test.Echo"


def unary(request: bytes, context: Any) -> bytes:
    context.set_trailing_metadata((("x-upstream-trailer", "kept"),))
    return b"echo:" + request


def metadata(request: bytes, context: Any) -> bytes:
    return json.dumps([[key, value] for key, value in context.invocation_metadata() if isinstance(value, str)]).encode()


def fail(request: bytes, context: Any) -> bytes:
    context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the upstream refused: " + request.decode())
    return b""


def slow(request: bytes, context: Any) -> bytes:
    deadline = time.monotonic() + float(request.decode() or "1")
    while time.monotonic() < deadline and context.is_active():
        time.sleep(0.02)
    return b"slow done"


def client_stream(requests: Iterator[bytes], context: Any) -> bytes:
    parts = list(requests)
    return b"%d:" % len(parts) + b"|".join(parts)


def server_stream(request: bytes, context: Any) -> Iterator[bytes]:
    count, size = (int(x) for x in request.decode().split(","))
    for index in range(count):
        yield (b"%06d" % index) + b"x" * max(0, size - 6)


def ticks(request: bytes, context: Any) -> Iterator[bytes]:
    """`count,interval`: `count` messages, one every `interval` seconds (a call that stays in flight)."""
    count, interval = request.decode().split(",")
    for index in range(int(count)):
        if not context.is_active():
            return
        yield b"tick %d" % index
        time.sleep(float(interval))


def bidi(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
    for request in requests:
        yield b"re:" + request


def die(request: bytes, context: Any) -> Iterator[bytes]:
    yield b"first"
    yield b"second"
    time.sleep(0.2)
    os._exit(3)  # killed mid-stream: no trailers, the connection just goes


HANDLERS = {
    "Unary": grpc.unary_unary_rpc_method_handler(unary),
    "Metadata": grpc.unary_unary_rpc_method_handler(metadata),
    "Fail": grpc.unary_unary_rpc_method_handler(fail),
    "Slow": grpc.unary_unary_rpc_method_handler(slow),
    "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
    "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
    "Ticks": grpc.unary_stream_rpc_method_handler(ticks),
    "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
    "Die": grpc.unary_stream_rpc_method_handler(die),
}


def main() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, HANDLERS),))
    address = f"127.0.0.1:{int(sys.argv[1])}"
    if len(sys.argv) > 3:
        with open(sys.argv[2], "rb") as cert, open(sys.argv[3], "rb") as key:
            credentials = grpc.ssl_server_credentials([(key.read(), cert.read())])
        server.add_secure_port(address, credentials)
    else:
        server.add_insecure_port(address)
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
