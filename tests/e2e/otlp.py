"""A real OTLP/HTTP trace receiver on 127.0.0.1 for the tracing tests: decodes what exporters post to
`/v1/traces` (protobuf, gzip or not) with the `opentelemetry-proto` package and keeps every span.

Modes a test switches at any time: `delay` (seconds each answer waits: a slow collector), `black_hole`
(reads the request, never answers: the exporter's timeout must end it); `stop()` closes the listener
(a collector gone: connections are refused).
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto

from tests.e2e.servers import eventually

KINDS = {
    SpanProto.SPAN_KIND_INTERNAL: "internal",
    SpanProto.SPAN_KIND_SERVER: "server",
    SpanProto.SPAN_KIND_CLIENT: "client",
    SpanProto.SPAN_KIND_PRODUCER: "producer",
    SpanProto.SPAN_KIND_CONSUMER: "consumer",
}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {item.key: _value(item.value) for item in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


@dataclass(frozen=True)
class Link:
    trace_id: str
    span_id: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class Span:
    """One received span, ids as lower-case hex (parent "" for a root); `start`/`end` in Unix
    nanoseconds, `status` the OTLP status code (0 unset, 2 error)."""

    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    links: list[Link] = field(default_factory=list)
    start: int = 0
    end: int = 0
    status: int = 0


class Receiver:
    """What the receiver got: every span, and the raw (decoded) request bodies."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.bodies: list[bytes] = []
        self.requests = 0
        self.delay = 0.0
        self.black_hole = False
        self.lock = threading.Lock()
        self.port = 0
        self._server: ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The traces URL itself (`endpoint` plus `/v1/traces`)."""
        return f"{self.endpoint}/v1/traces"

    def take(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        spans = []
        for resource_spans in request.resource_spans:
            resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append(
                        Span(
                            name=span.name,
                            kind=KINDS.get(span.kind, "unspecified"),
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            attributes={kv.key: _value(kv.value) for kv in span.attributes},
                            resource=resource,
                            links=[
                                Link(
                                    link.trace_id.hex(),
                                    link.span_id.hex(),
                                    {kv.key: _value(kv.value) for kv in link.attributes},
                                )
                                for link in span.links
                            ],
                            start=span.start_time_unix_nano,
                            end=span.end_time_unix_nano,
                            status=span.status.code,
                        )
                    )
        with self.lock:
            self.requests += 1
            self.bodies.append(body)
            self.spans.extend(spans)

    def snapshot(self) -> list[Span]:
        with self.lock:
            return list(self.spans)

    def wait_for(self, predicate: Callable[[Span], bool], what: str, timeout: float = 60.0) -> Span:
        """The first span that satisfies `predicate`, waiting for it to be exported."""
        found: list[Span] = []

        def seen() -> bool:
            found[:] = [span for span in self.snapshot() if predicate(span)]
            return bool(found)

        eventually(seen, what, timeout)
        return found[0]

    def everything(self) -> bytes:
        with self.lock:
            return b"".join(self.bodies)

    def stop(self) -> None:
        """Close the listener: from now on the exporter's connections are refused."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@contextmanager
def otlp_receiver() -> Iterator[Receiver]:
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if receiver.black_hole:
                time.sleep(3600)  # a daemon thread: ends with the test process
                return
            if receiver.delay:
                time.sleep(receiver.delay)
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
                self.send_response(404)
                self.end_headers()
                return
            receiver.take(body)
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    receiver.port = int(server.server_address[1])
    receiver._server = server
    try:
        yield receiver
    finally:
        receiver.stop()
        thread.join(5)
