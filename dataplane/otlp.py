"""The OpenTelemetry side of tracing (tracing.py): span records, their queue and their export over
OTLP/HTTP. Imported only when tracing is on.

When a recorded request ends, its server span and client spans are built once as plain tuples and
queued whole (`Finished`, one queue item per request) in the SDK's `BatchSpanProcessor`, whose own
thread batches them and posts them with the SDK's OTLP/HTTP client (`OtlpExporter`: its retries,
timeout, TLS and header settings). Neither the SDK's live `Span` nor its protobuf encoder is used:
both are pure Python and cost several times the proxying of the request (an `encode_spans` of two spans
with twenty attributes took longer than the request itself); `encode` writes the protobuf wire format of
`ExportTraceServiceRequest` directly (https://protobuf.dev/programming-guides/encoding/), with each
attribute's encoding remembered, since most repeat request after request (method, endpoint, target,
route, status). tests/e2e/test_dataplane_tracing.py decodes it with opentelemetry-proto's classes.

The processor is bounded by `CountingSpanProcessor`, which drops and counts where the SDK would drop
silently; `CountingExporter` counts batches the collector did not take.
"""

from __future__ import annotations

import functools
import logging
import struct
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanContext, TraceFlags

from . import __version__

if TYPE_CHECKING:
    from .exchange import Exchange
    from .settings import Settings
    from .tracing import Trace

logger = logging.getLogger("dataplane.tracing")

SERVICE_NAME = "gateway-dataplane"
# Semantic conventions: a method outside the well-known set is `_OTHER` (its text in method_original).
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"})
EXPORT_BATCH = 512  # recorded requests per post
EXPORT_DELAY_MS = 1000.0
SERVER, CLIENT, CONSUMER = 2, 3, 5  # opentelemetry.proto.trace.v1.Span.SpanKind

Attributes = dict[str, str | int]
# trace id, span id, parent span id (b"" for none), name, kind, start and end (ns since the epoch),
# failed, attributes
SpanData = tuple[bytes, bytes, bytes, str, int, int, int, bool, Attributes]


class Finished(list[SpanData]):
    """One recorded request's spans, queued as one item (a list: made by a C-level call). The SDK's
    processor passes on only what is sampled (it reads `context.trace_flags`): everything queued here is."""

    __slots__ = ()
    context = SpanContext(1, 1, False, TraceFlags(TraceFlags.SAMPLED))


# --- the protobuf wire format ------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL = [bytes((value,)) for value in range(128)]  # the one-byte varints
_TAGS = {number: _varint(number << 3 | 2) for number in range(1, 16)}


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    size = len(payload)
    return _TAGS[number] + (_SMALL[size] if size < 128 else _varint(size)) + payload


def _any_value(value: str | int) -> bytes:
    if isinstance(value, str):
        return _field(1, value.encode("utf-8", "replace"))  # AnyValue.string_value
    return b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)  # AnyValue.int_value (int64, two's complement)


def _key_value(key: str, value: str | int) -> bytes:
    return _field(1, key.encode()) + _field(2, _any_value(value))


_FIXED64 = struct.Struct("<Q").pack
_ERROR_STATUS = _field(15, b"\x18\x02")  # Span.status = Status{code: STATUS_CODE_ERROR}
KEPT_ATTRIBUTES = 4096
YIELD_EVERY = 32  # recorded requests encoded between two releases of the GIL (Encoder.encode)


class Encoder:
    """`ExportTraceServiceRequest` bytes for a batch of `Finished` requests of one resource and scope."""

    def __init__(self, resource: Attributes, scope: str, version: str) -> None:
        self.resource = _field(1, b"".join(_field(1, _key_value(k, v)) for k, v in resource.items()))
        self.scope = _field(1, _field(1, scope.encode()) + _field(2, version.encode()))
        self._attributes: dict[tuple[str, str | int], bytes] = {}  # Span.attributes entries, encoded
        self._names: dict[str, bytes] = {}  # Span.name fields, encoded

    def span(self, data: SpanData) -> bytes:
        trace_id, span_id, parent_id, name, kind, start, end, failed, attributes = data
        known = self._attributes
        encoded_name = self._names.get(name)
        if encoded_name is None:
            if len(self._names) >= KEPT_ATTRIBUTES:
                self._names.clear()
            encoded_name = self._names[name] = _field(5, name.encode("utf-8", "replace"))
        parts = [
            b"\x0a\x10",
            trace_id,
            b"\x12\x08",
            span_id,
            b"\x22\x08" + parent_id if parent_id else b"",
            encoded_name,
            b"\x30",
            _SMALL[kind],
            b"\x39",
            _FIXED64(start),
            b"\x41",
            _FIXED64(end),
        ]
        for item in attributes.items():
            encoded = known.get(item)
            if encoded is None:
                if len(known) >= KEPT_ATTRIBUTES:
                    known.clear()  # values that vary (paths, ids) must not grow it without end
                encoded = known[item] = _field(9, _key_value(*item))
            parts.append(encoded)
        if failed:
            parts.append(_ERROR_STATUS)
        return b"".join(parts)

    def encode(self, batch: Sequence[Finished]) -> bytes:
        """Run on the processor's thread, which shares the GIL with the event loop: it lets go every
        `YIELD_EVERY` requests (`time.sleep(0)`), so the loop waits at most that long for it (~1 ms)
        instead of up to the interpreter's 5 ms switch interval each time it gives the GIL up for I/O
        (bench/tracing.py's p99 at 100 % sampling once read 600 ms, on a loaded machine, without this)."""
        parts: list[bytes] = []
        span = self.span
        for start in range(0, len(batch), YIELD_EVERY):
            if start:
                time.sleep(0)
            parts.extend(_field(2, span(data)) for finished in batch[start : start + YIELD_EVERY] for data in finished)
        scope_spans = _field(2, self.scope + b"".join(parts))
        return _field(1, self.resource + scope_spans)


# --- queue and export ---------------------------------------------------------------------------------


class OtlpExporter(OTLPSpanExporter):
    """The SDK's OTLP/HTTP exporter (its client: retries with back-off inside `timeout`, TLS, the
    OTEL_EXPORTER_OTLP_TRACES_* headers, certificate and compression settings) posting `Encoder`'s bytes.
    `_client` is the exporter's own (a private name of the pinned version, requirements/dataplane.txt;
    the e2e tests fail if it moves)."""

    def __init__(self, endpoint: str, timeout: float, encoder: Encoder) -> None:
        super().__init__(endpoint=endpoint, timeout=timeout)
        self.encoder = encoder

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        if self._shutdown:
            return SpanExportResult.FAILURE
        result = self._client.export(self.encoder.encode(spans))
        return SpanExportResult.SUCCESS if result.success else SpanExportResult.FAILURE


def _span_count(batch: Sequence[Any]) -> int:
    return sum(len(item) if isinstance(item, Finished) else 1 for item in batch)


class CountingExporter(SpanExporter):
    """An exporter counting what it takes off the queue and the spans the collector did not accept."""

    def __init__(self, exporter: SpanExporter, on_failed: Callable[[int], None]) -> None:
        self.exporter = exporter
        self.on_failed = on_failed
        self.taken = 0  # written by the processor's thread only

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        self.taken += len(spans)
        try:
            result = self.exporter.export(spans)
        except Exception:
            logger.exception("exporting %d traced requests failed", len(spans))
            result = SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            self.on_failed(_span_count(spans))
        return result

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.exporter.force_flush(timeout_millis)


class CountingSpanProcessor(BatchSpanProcessor):
    """The SDK's batch processor (its own thread, off the event loop), bounded at `limit` waiting items
    by this class rather than by the SDK's deque: the deque gets `limit + batch` room, so it never
    drops on its own (silently); an item that finds `limit` waiting is dropped here and its spans
    counted.

    What waits is counted as handed over minus taken by the exporter; a batch the SDK has popped but
    not yet passed to `export` still counts as waiting for that instant, so the count is never below
    the deque's length."""

    def __init__(
        self,
        exporter: CountingExporter,
        *,
        limit: int,
        on_dropped: Callable[[int], None],
        batch: int = EXPORT_BATCH,
    ) -> None:
        batch = min(batch, limit)
        super().__init__(
            exporter, max_queue_size=limit + batch, max_export_batch_size=batch, schedule_delay_millis=EXPORT_DELAY_MS
        )
        self.counting = exporter
        self.limit = limit
        self.on_dropped = on_dropped
        self.handed = 0

    def on_end(self, span: Any) -> None:
        if self.handed - self.counting.taken >= self.limit:
            self.on_dropped(len(span) if isinstance(span, Finished) else 1)
            return
        self.handed += 1
        super().on_end(span)


@functools.lru_cache(maxsize=4096)
def _address(url: str) -> tuple[str, int]:
    """A target URL's host and port (the scheme's default when it names none), remembered per URL."""
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


class Spans:
    """One process's span records and their processor."""

    def __init__(
        self, settings: Settings, *, dropped: Callable[[str, int], None], exporter: SpanExporter | None = None
    ) -> None:
        assert settings.otlp_endpoint is not None
        self.encoder = Encoder(
            {"service.name": SERVICE_NAME, "service.instance.id": settings.node_id}, "dataplane", __version__
        )
        self.counting = CountingExporter(
            exporter or OtlpExporter(settings.otlp_endpoint, settings.trace_export_timeout, self.encoder),
            lambda count: dropped("export_failed", count),
        )
        self.processor = CountingSpanProcessor(
            self.counting, limit=settings.trace_queue, on_dropped=lambda count: dropped("queue_full", count)
        )

    def record(self, exchange: Exchange, trace: Trace, elapsed: float) -> None:
        """The request's server span and its tries' client spans, queued as one item."""
        trace_id = bytes.fromhex(trace.trace_id)
        server_id = bytes.fromhex(trace.span_id)
        scope = exchange.scope
        method = exchange.method if exchange.method in KNOWN_METHODS else "_OTHER"
        status = exchange.status
        attributes: Attributes = {
            "http.request.method": method,
            "url.path": exchange.raw_path[:2048].decode("latin-1"),
            "url.scheme": scope.get("scheme", "http"),
            "network.protocol.version": scope.get("http_version", "1.1"),
            "gateway.request_id": exchange.request_id,
        }
        if method == "_OTHER":
            attributes["http.request.method_original"] = exchange.method[:64]
        if status:
            attributes["http.response.status_code"] = status
        if trace.route:
            attributes["http.route"] = trace.route
        server_pair = scope.get("server")
        if server_pair:
            attributes["server.address"] = str(server_pair[0])
            if server_pair[1] is not None:
                attributes["server.port"] = int(server_pair[1])
        client_pair = scope.get("client")
        if client_pair:
            attributes["client.address"] = attributes["network.peer.address"] = str(client_pair[0])
            attributes["network.peer.port"] = int(client_pair[1])
        if exchange.user_agent:
            attributes["user_agent.original"] = exchange.user_agent[:512].decode("latin-1")
        if exchange.endpoint_key:
            attributes["gateway.endpoint"] = exchange.endpoint_key
        if exchange.target:
            attributes["gateway.target"] = exchange.target
        if exchange.consumer:
            attributes["gateway.consumer"] = exchange.consumer
        state = exchange.state
        if state is not None:
            attributes["gateway.breaker.state"] = state.breaker.peek().value
        failed = status >= 500 or (not status and exchange.error is not None)
        if exchange.error:
            attributes["gateway.error"] = exchange.error
        if failed:
            attributes["error.type"] = exchange.error or str(status)
        start = trace.start_ns
        name = f"{method} {trace.route}" if trace.route else method
        parent_id = bytes.fromhex(trace.parent_id) if trace.parent_id else b""
        spans: list[SpanData] = [
            (trace_id, server_id, parent_id, name, SERVER, start, start + int(elapsed * 1e9), failed, attributes)
        ]
        for span_id, attempt, target, offset, spent, try_status, error in trace.tries:
            host, port = _address(target.url)
            client: Attributes = {
                "http.request.method": method,
                "server.address": host,
                "server.port": port,
                "url.full": target.url,
                "gateway.target": target.url,
            }
            if attempt > 1:
                client["http.request.resend_count"] = attempt - 1
            if try_status:
                client["http.response.status_code"] = try_status
            try_failed = bool(error) or try_status >= 500
            if error:
                client["error.type"] = client["gateway.error"] = error
            elif try_failed:
                client["error.type"] = str(try_status)
            began = start + int(offset * 1e9)
            spans.append(
                (
                    trace_id,
                    bytes.fromhex(span_id),
                    server_id,
                    method,
                    CLIENT,
                    began,
                    began + int(spent * 1e9),
                    try_failed,
                    client,
                )
            )
        self.processor.on_end(Finished(spans))

    def record_config(
        self, trace_id: str, span_id: str, parent_id: str, attributes: Attributes, began: float, failed: bool
    ) -> None:
        """A node's `config apply` span (tracing.Tracer.config_applied): a consumer of the config change,
        the API write's span its parent; from the answer's arrival (`began`, time.time()) to now."""
        start = int(began * 1e9)
        span: SpanData = (
            bytes.fromhex(trace_id),
            bytes.fromhex(span_id),
            bytes.fromhex(parent_id),
            "config apply",
            CONSUMER,
            start,
            max(start, time.time_ns()),
            failed,
            attributes,
        )
        self.processor.on_end(Finished([span]))
