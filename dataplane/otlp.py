"""The OpenTelemetry SDK side of tracing (tracing.py): span records and their export over OTLP/HTTP.
Imported only when tracing is on.

Spans are built once, when a sampled request ends, as the SDK's `ReadableSpan` records (what its
exporters read), not through the SDK's live `Span`, and handed to its `BatchSpanProcessor`: its own
thread encodes and posts them. The processor is bounded by `CountingSpanProcessor`, which drops and
counts where the SDK would drop silently; `CountingExporter` counts batches the collector did not take.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from . import __version__

if TYPE_CHECKING:
    from .exchange import Exchange
    from .settings import Settings
    from .tracing import Trace

logger = logging.getLogger("dataplane.tracing")

SERVICE_NAME = "gateway-dataplane"
# Semantic conventions: a method outside the well-known set is `_OTHER` (its text in method_original).
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"})
EXPORT_BATCH = 512
EXPORT_DELAY_MS = 1000.0

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_ERROR = Status(StatusCode.ERROR)
_UNSET = Status(StatusCode.UNSET)


class CountingExporter(SpanExporter):
    """The OTLP exporter, counting what it takes off the queue and what the collector did not accept."""

    def __init__(self, exporter: SpanExporter, on_failed: Callable[[int], None]) -> None:
        self.exporter = exporter
        self.on_failed = on_failed
        self.taken = 0  # written by the processor's thread only

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.taken += len(spans)
        try:
            result = self.exporter.export(spans)
        except Exception:
            logger.exception("exporting %d spans failed", len(spans))
            result = SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            self.on_failed(len(spans))
        return result

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.exporter.force_flush(timeout_millis)


class CountingSpanProcessor(BatchSpanProcessor):
    """The SDK's batch processor (its own thread, off the event loop), bounded at `limit` waiting spans
    by this class rather than by the SDK's deque: the deque gets `limit + batch` room, so it never
    drops on its own (silently); a span that finds `limit` waiting is dropped here and counted.

    What waits is counted as handed over minus taken by the exporter; a batch the SDK has popped but
    not yet passed to `export` still counts as waiting for that instant, so the count is never below
    the deque's length."""

    def __init__(
        self, exporter: CountingExporter, *, limit: int, on_dropped: Callable[[], None], batch: int = EXPORT_BATCH
    ) -> None:
        batch = min(batch, limit)
        super().__init__(
            exporter, max_queue_size=limit + batch, max_export_batch_size=batch, schedule_delay_millis=EXPORT_DELAY_MS
        )
        self.counting = exporter
        self.limit = limit
        self.on_dropped = on_dropped
        self.handed = 0

    def on_end(self, span: ReadableSpan) -> None:
        if self.handed - self.counting.taken >= self.limit:
            self.on_dropped()
            return
        self.handed += 1
        super().on_end(span)


def otlp_exporter(endpoint: str, timeout: float) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=endpoint, timeout=timeout)


class Spans:
    """One process's span records and their processor."""

    def __init__(
        self, settings: Settings, *, dropped: Callable[[str, int], None], exporter: SpanExporter | None = None
    ) -> None:
        assert settings.otlp_endpoint is not None
        self.resource = Resource({"service.name": SERVICE_NAME, "service.instance.id": settings.node_id})
        self.scope = InstrumentationScope("dataplane", __version__)
        self.counting = CountingExporter(
            exporter or otlp_exporter(settings.otlp_endpoint, settings.trace_export_timeout),
            lambda count: dropped("export_failed", count),
        )
        self.processor = CountingSpanProcessor(
            self.counting, limit=settings.trace_queue, on_dropped=lambda: dropped("queue_full", 1)
        )

    def record(self, exchange: Exchange, trace: Trace, elapsed: float) -> None:
        """The request's server span and its tries' client spans, to the processor."""
        trace_id = int(trace.trace_id, 16)
        server = SpanContext(trace_id, int(trace.span_id, 16), False, _SAMPLED)
        parent = SpanContext(trace_id, int(trace.parent_id, 16), True, _SAMPLED) if trace.parent_id else None
        scope = exchange.scope
        method = exchange.method if exchange.method in KNOWN_METHODS else "_OTHER"
        status = exchange.status
        attributes: dict[str, str | int] = {
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
        on_end = self.processor.on_end
        on_end(
            ReadableSpan(
                name,
                server,
                parent,
                self.resource,
                attributes,
                kind=SpanKind.SERVER,
                status=_ERROR if failed else _UNSET,
                start_time=start,
                end_time=start + int(elapsed * 1e9),
                instrumentation_scope=self.scope,
            )
        )
        for span_id, attempt, target, offset, spent, try_status, error in trace.tries:
            address = urlsplit(target.url)
            client: dict[str, str | int] = {
                "http.request.method": method,
                "server.address": address.hostname or "",
                "server.port": address.port or (443 if target.scheme == "https" else 80),
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
            on_end(
                ReadableSpan(
                    method,
                    SpanContext(trace_id, int(span_id, 16), False, _SAMPLED),
                    server,
                    self.resource,
                    client,
                    kind=SpanKind.CLIENT,
                    status=_ERROR if try_failed else _UNSET,
                    start_time=began,
                    end_time=began + int(spent * 1e9),
                    instrumentation_scope=self.scope,
                )
            )
