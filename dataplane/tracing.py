"""Distributed tracing (ARCHITECTURE §13): W3C Trace Context in, OpenTelemetry spans out over OTLP/HTTP.

On only when `DATAPLANE_OTLP_ENDPOINT` is set; then every request has a `Trace`:

- a valid incoming `traceparent` (https://www.w3.org/TR/trace-context/#traceparent-header, read
  strictly: version `00` only, exactly `00-<32 hex>-<16 hex>-<2 hex>` in lower case, neither id all
  zeros, one header only) is continued and its sampled flag decides (parent-based); anything else is
  dropped and a new trace is started, sampled when its trace id falls under `DATAPLANE_TRACE_SAMPLE`
  (the SDK's TraceIdRatioBased rule, so every node of a fleet decides alike for one trace id);
- a sampled request records a server span and one client span per upstream try (retries are
  siblings under the server span); each try's upstream gets `traceparent: 00-<trace>-<that client
  span>-01` and the client's `tracestate` (when its `traceparent` was valid); the client's own
  `traceparent` never goes upstream;
- a sampled-out request records nothing: the upstream gets the client's (validated) `traceparent`
  unchanged, or for a new trace `00-<trace>-<span>-00`, so services behind agree with the decision.

Cost: the SDK (otlp.py) is imported only when tracing is on, and neither its live `Span` (a lock per
attribute, context variables, a sampler call, a processor call per start and end) nor its pure-Python
protobuf encoder is used. The request carries a small slotted `Trace`; when a recorded request ends,
its spans are built once as plain tuples and queued as one item in the SDK's `BatchSpanProcessor`,
whose own thread encodes them (otlp.Encoder) and posts them with the SDK's OTLP/HTTP client.

The processor's queue is bounded and never overflows silently (the SDK drops the oldest item with
only a log line): `CountingSpanProcessor` keeps its own count of what waits (handed over minus taken
by the exporter) and drops the newest recorded request itself at `DATAPLANE_TRACE_QUEUE` waiting,
its spans counted in `gateway_trace_spans_dropped_total{reason="queue_full"}`; a batch the collector
did not take (down, slow past `DATAPLANE_TRACE_EXPORT_TIMEOUT`, refusing) is counted with
`reason="export_failed"`. A request never waits on the collector: queueing its spans is a deque append.

With tracing off the gateway takes no part in tracing and does no per-request work for it: trace
headers pass like any other header. Only a gateway-made error answer (a path that costs nothing on
success) reads a valid incoming `traceparent`, so its body and access line carry the caller's trace id.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .types import Headers

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

    from .exchange import Exchange
    from .otlp import Spans
    from .settings import Settings
    from .snapshot import Target

logger = logging.getLogger("dataplane.tracing")

TRACEPARENT = b"traceparent"
TRACESTATE = b"tracestate"
TRACE_HEADERS = frozenset({TRACEPARENT, TRACESTATE})
# Strict: a future version's longer form is refused too, and upper-case hex (which the spec forbids).
_TRACEPARENT = re.compile(rb"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})").fullmatch
_ZERO_TRACE = b"0" * 32
_ZERO_SPAN = b"0" * 16
# tracestate goes upstream whole or not at all: at most the 512 characters the spec asks a vendor to
# pass on, printable ASCII only (a list of key=value members; the upstream's tracer parses it).
MAX_TRACESTATE = 512
_PRINTABLE = re.compile(rb"[\x20-\x7e]*").fullmatch
# How long a draining process waits for the last spans to reach the collector.
SHUTDOWN_WAIT = 5.0


_LOW64 = (1 << 64) - 1
# Ids need to be unique, not secret: the Mersenne Twister, as the SDK's RandomIdGenerator (re-seeded
# in a forked child by the random module itself).
_getrandbits = random.getrandbits


def new_span_id() -> str:
    bits = _getrandbits(64)
    while not bits:
        bits = _getrandbits(64)
    return bits.to_bytes(8, "big").hex()  # a third of f"{bits:016x}"'s instructions (callgrind)


def incoming(headers: Headers) -> tuple[bytes, str, str, bool, bytes] | None:
    """The client's trace context when valid: (its traceparent, trace id, parent span id, sampled,
    tracestate or b""); None when absent or invalid (then its tracestate is ignored as well)."""
    parent: bytes | None = None
    count = 0
    states: list[bytes] = []
    for name, value in headers:
        if name == TRACEPARENT:
            parent = value
            count += 1
        elif name == TRACESTATE:
            states.append(value)
    if parent is None or count != 1:  # two traceparent headers: which one? Neither (W3C §3.2.2).
        return None
    found = _TRACEPARENT(parent)
    if found is None:
        return None
    trace_id, span_id, flags = found.groups()
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    state = b",".join(states)
    if len(state) > MAX_TRACESTATE or not _PRINTABLE(state):
        state = b""
    return parent, trace_id.decode(), span_id.decode(), bool(int(flags, 16) & 1), state


class Trace:
    """One request's trace: ids, the sampling decision, what goes upstream, and (recorded only) the
    upstream tries to record as client spans. Made by `recorded` and `unrecorded` rather than an
    `__init__`: a class call with a Python `__init__` costs the not-recorded path, taken by every
    request with tracing on, about as much as the rest of it (callgrind)."""

    __slots__ = ("trace_id", "span_id", "parent_id", "sampled", "header", "tracestate", "start_ns", "route", "tries")
    trace_id: str
    span_id: str  # the server span's ("" when not recorded)
    parent_id: str  # the client's span, "" for a trace started here
    sampled: bool
    header: bytes  # what a request not recorded sends upstream as traceparent
    tracestate: bytes
    # Recorded only: when it began (ns since the epoch), the route key that matched, and its upstream
    # tries as (span id, attempt, target, seconds from the request's start to the try's, the try's
    # seconds, status or 0, error code or "").
    start_ns: int
    route: str
    tries: list[tuple[str, int, Target, float, float, int, str]]


_new = object.__new__


def recorded(trace_id: str, span_id: str, parent_id: str, tracestate: bytes) -> Trace:
    trace: Trace = _new(Trace)
    trace.trace_id, trace.span_id, trace.parent_id = trace_id, span_id, parent_id
    trace.sampled, trace.header, trace.tracestate = True, b"", tracestate
    trace.start_ns, trace.route, trace.tries = time.time_ns(), "", []
    return trace


def unrecorded(trace_id: str, parent_id: str, header: bytes, tracestate: bytes) -> Trace:
    trace: Trace = _new(Trace)
    trace.trace_id, trace.span_id, trace.parent_id = trace_id, "", parent_id
    trace.sampled, trace.header, trace.tracestate = False, header, tracestate
    return trace


def from_error_path(headers: Headers) -> Trace | None:
    """With tracing off: the caller's trace, for a gateway-made error's body and log line only."""
    found = incoming(headers)
    if found is None:
        return None
    header, trace_id, parent_id, sampled, state = found
    return unrecorded(trace_id, parent_id, header, state)


class Tracer:
    """One process's tracing: the sampling rule, the span records, the processor. Made in the process
    that serves (each `--workers` worker its own, after the spawn), shut down flushing on drain."""

    def __init__(
        self,
        settings: Settings,
        *,
        dropped: Callable[[str, int], None],
        exporter: SpanExporter | None = None,
    ) -> None:
        from .otlp import Spans  # the SDK is imported only where tracing is on

        self.bound = round(settings.trace_sample * (1 << 64))
        self.spans: Spans = Spans(settings, dropped=dropped, exporter=exporter)

    # --- the request path -------------------------------------------------------------------------

    def begin(self, exchange: Exchange) -> None:
        """The request's trace: the client's continued, or a new one; recorded or not. Every request
        with tracing on passes here, so the common case (no traceparent, not recorded) is kept short:
        one comparison per header, random ids as the SDK makes them (`random.getrandbits`), no clock
        read, no class call."""
        headers = exchange.scope["headers"]
        for name, _ in headers:
            if name == TRACEPARENT:
                exchange.trace = self._continued(headers)
                return
        # _started and unrecorded, written out: two calls fewer on the path most requests take.
        bits = _getrandbits(192)
        if not (bits >> 64 and bits & _LOW64):
            exchange.trace = self._started("", b"")
            return
        ids = bits.to_bytes(24, "big").hex()
        if self.bound and (bits >> 64) & _LOW64 < self.bound:
            exchange.trace = recorded(ids[:32], ids[32:], "", b"")
            return
        trace = exchange.trace = _new(Trace)
        trace.trace_id = trace_id = ids[:32]
        trace.span_id = trace.parent_id = ""
        trace.sampled, trace.tracestate = False, b""
        trace.header = f"00-{trace_id}-{ids[32:]}-00".encode()

    def _started(self, parent_id: str, tracestate: bytes) -> Trace:
        bits = _getrandbits(192)  # the trace id's 128 bits, then the span id's 64
        while not (bits >> 64 and bits & _LOW64):  # all zeros is invalid (W3C): 2^-64 at worst
            bits = _getrandbits(192)
        ids = bits.to_bytes(24, "big").hex()  # a third of an f"{bits:032x}"'s instructions (callgrind)
        trace_id, span_id = ids[:32], ids[32:]
        # OpenTelemetry's TraceIdRatioBased: the trace id's low 64 bits against the ratio, so nodes agree.
        if self.bound and (bits >> 64) & _LOW64 < self.bound:
            return recorded(trace_id, span_id, parent_id, tracestate)
        return unrecorded(trace_id, parent_id, f"00-{trace_id}-{span_id}-00".encode(), tracestate)

    def _continued(self, headers: Headers) -> Trace:
        found = incoming(headers)
        if found is None:  # invalid: replaced by a new trace
            return self._started("", b"")
        header, trace_id, parent_id, sampled, state = found
        if sampled:
            return recorded(trace_id, new_span_id(), parent_id, state)
        return unrecorded(trace_id, parent_id, header, state)

    @staticmethod
    def propagate(trace: Trace, headers: Headers) -> str:
        """Add this try's trace headers to the upstream request's (the client's were left out by
        Forwarding); returns the try's client span id ("" when sampled out)."""
        if trace.sampled:
            span_id = new_span_id()
            headers.append((TRACEPARENT, f"00-{trace.trace_id}-{span_id}-01".encode()))
        else:
            span_id = ""
            headers.append((TRACEPARENT, trace.header))
        if trace.tracestate:
            headers.append((TRACESTATE, trace.tracestate))
        return span_id

    @staticmethod
    def tried(
        exchange: Exchange,
        span_id: str,
        attempt: int,
        target: Target,
        started: float,
        spent: float,
        status: int,
        error: str,
    ) -> None:
        """One upstream try, for its client span (`started`: time.perf_counter() when it began)."""
        trace = exchange.trace
        if trace is not None and trace.sampled:
            trace.tries.append((span_id, attempt, target, started - exchange.began, spent, status, error))

    def end(self, exchange: Exchange, trace: Trace, elapsed: float) -> None:
        """A recorded request is over: its spans go to the processor."""
        try:
            self.spans.record(exchange, trace, elapsed)
        except Exception:  # a span never fails a request (its answer is out)
            logger.exception("recording the spans of request %s failed", exchange.request_id)

    # --- config changes -------------------------------------------------------------------------------

    def config_applied(
        self, write: str, *, node_id: str, etag: str | None, revision: int | None, error: str | None, began: float
    ) -> None:
        """A snapshot from the control plane was applied (or refused: `error`): its span joins the trace
        of the API write that made the revision (`X-Config-Traceparent` on the answer, the write's span
        as parent), so one config change is followed from the write to every node that took it. Only a
        sampled write carries the header; an invalid one is ignored. `began`: time.time() of the answer."""
        found = incoming([(TRACEPARENT, write.encode("latin-1", "replace"))])
        if found is None or not found[3]:
            return
        _, trace_id, parent_id, _, _ = found
        attributes: dict[str, str | int] = {
            "gateway.node.id": node_id,
            "gateway.config.result": "applied" if error is None else "rejected",
        }
        if etag:
            attributes["gateway.config.etag"] = etag[:128]
        if revision is not None:
            attributes["gateway.config.revision"] = revision
        if error is not None:
            attributes["error.type"] = "config_rejected"
            attributes["gateway.error"] = error[:512]
        try:
            self.spans.record_config(trace_id, new_span_id(), parent_id, attributes, began, error is not None)
        except Exception:  # a span never fails the sync
            logger.exception("recording the config-apply span failed")

    # --- shutdown ------------------------------------------------------------------------------------

    async def shutdown(self, wait: float = SHUTDOWN_WAIT) -> None:
        """Flush what waits and stop the processor's thread, waiting at most `wait` seconds (a collector
        that is down must not hold a draining process): the processor's shutdown runs on a daemon
        thread of its own, so the event loop stays free and the process may exit past it."""
        import asyncio

        done = threading.Event()

        def stop() -> None:
            try:
                self.spans.processor.shutdown()  # type: ignore[no-untyped-call]
            finally:
                done.set()

        threading.Thread(target=stop, name="trace-shutdown", daemon=True).start()
        deadline = time.monotonic() + wait
        while not done.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if not done.is_set():
            logger.warning("tracing: spans still unsent after %.1fs at shutdown were dropped", wait)
