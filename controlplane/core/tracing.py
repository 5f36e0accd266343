"""OpenTelemetry tracing of the control plane (ARCHITECTURE §13, docs/tracing.md).

Off unless `GATEWAY_OTLP_ENDPOINT` is set. Off, nothing here imports OpenTelemetry: the accessors below
return "" and the processes start no exporter thread. On, each process calls `setup(role)` once:

    web      config/asgi.py, config/wsgi.py    before Django's handler loads its middleware
    worker   config/celery.py                  worker_init (solo/threads pools) or worker_process_init
                                               (each prefork child, after the fork)
    beat     config/celery.py                  beat_init

and gets a TracerProvider exporting OTLP/HTTP through a BatchSpanProcessor (its own thread, a bounded
queue, a short export timeout: a collector that is down costs dropped spans, never a slower answer),
the official instrumentations of Django, psycopg (3) and Celery, and a sampler that is parent-based
with `GATEWAY_TRACE_SAMPLE` for new traces and drops root database spans (the data-plane sync's ETag
watcher reads one row every 200 ms; outside a request or a task a query is not worth a trace).

What a config change looks like: the API request's SERVER span (Django) with its database spans; the
revision it makes stores that span's W3C traceparent (`ConfigRevision.traceparent`); every snapshot
answer for it (`GET /api/v1/dataplane/config`) is a SERVER span LINKED to that write span, and carries
the traceparent to the node in `X-Config-Traceparent`, so the data plane can link its apply span too.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

# W3C Trace Context: version 00, lower-case hex, neither id all zeros (checked where it is read).
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
SERVICE_NAME = "gateway-controlplane"
# The exporter gives up on a batch after this long (connection refused is at once; a black-holed
# collector is what this bounds). It runs on the processor's thread, never on a request's.
EXPORT_TIMEOUT_SECONDS = 2.0
MAX_QUEUE_SIZE = 2048
# URLs (searched in the full URL) that are polled, not used: a span each would be noise (override with
# OTEL_PYTHON_DJANGO_EXCLUDED_URLS).
EXCLUDED_URLS = "/healthz$,/readyz$,/metrics$,/static/"
# Header values never recorded even when an operator turns header capture on (OTEL_INSTRUMENTATION_HTTP_CAPTURE_*).
SENSITIVE_HEADERS = ("authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "x-csrftoken")


EXPORTER_LOGGER = "opentelemetry.exporter.otlp.proto.http.trace_exporter"
QUEUE_LOGGER = "opentelemetry.sdk._shared_internal"
LOG_INTERVAL_SECONDS = 60.0


class OncePerInterval(logging.Filter):
    """Lets one record per level through every `interval` seconds and drops the rest, saying how many
    were dropped on the next one let through."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._interval = interval
        self._clock = clock
        self._last: dict[int, float] = {}
        self._dropped: dict[int, int] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        now = self._clock()
        with self._lock:
            last = self._last.get(record.levelno)
            if last is not None and now - last < self._interval:
                self._dropped[record.levelno] = self._dropped.get(record.levelno, 0) + 1
                return False
            self._last[record.levelno] = now
            dropped = self._dropped.pop(record.levelno, 0)
        if dropped:
            record.msg = f"{record.msg} ({dropped} more like it in the last {self._interval:.0f} s not logged)"
        return True


@dataclass
class _State:
    pid: int
    role: str
    provider: Any
    tracer: Any


_state: _State | None = None
_lock = threading.Lock()


def enabled() -> bool:
    """Tracing is set up in this process (so OpenTelemetry is imported)."""
    return _state is not None and _state.pid == os.getpid()


def otlp_traces_url(endpoint: str) -> str:
    """`GATEWAY_OTLP_ENDPOINT` as the exporter's URL: a collector's base URL (`http://collector:4318`) gets
    the OTLP/HTTP traces path `/v1/traces`; a URL with a path is used as it is."""
    parts = urlsplit(endpoint)
    if parts.path in ("", "/"):
        return urlunsplit((parts.scheme, parts.netloc, "/v1/traces", parts.query, ""))
    return endpoint


def setup(role: str, *, instrument_django: bool = False) -> bool:
    """Set tracing up in this process when `GATEWAY_OTLP_ENDPOINT` is set (and OTEL_SDK_DISABLED is not true).
    Idempotent per process. Returns whether tracing is on. `role` (web, worker, beat) is a resource attribute."""
    global _state
    from django.conf import settings

    endpoint = getattr(settings, "GATEWAY_OTLP_ENDPOINT", "")
    if not endpoint or os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    with _lock:
        if enabled():
            return True
        _state = _configure(role, endpoint, float(settings.GATEWAY_TRACE_SAMPLE), instrument_django)
    return True


def _configure(role: str, endpoint: str, ratio: float, instrument_django: bool) -> _State:
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased

    # process.pid tells a prefork worker's children apart (each exports its own spans).
    attributes: dict[str, str | int] = {
        "gateway.process": role,
        "service.namespace": "gateway",
        "process.pid": os.getpid(),
    }
    if not os.environ.get("OTEL_SERVICE_NAME"):  # an operator's name wins over ours
        attributes["service.name"] = SERVICE_NAME
    provider = TracerProvider(
        resource=Resource.create(attributes), sampler=ParentBased(root=_root_sampler(ratio)), shutdown_on_exit=True
    )
    exporter = OTLPSpanExporter(endpoint=otlp_traces_url(endpoint), timeout=EXPORT_TIMEOUT_SECONDS)
    provider.add_span_processor(
        BatchSpanProcessor(
            exporter,
            max_queue_size=MAX_QUEUE_SIZE,
            schedule_delay_millis=500,
            export_timeout_millis=EXPORT_TIMEOUT_SECONDS * 1000,
        )
    )
    # The global provider, so the instrumentations (and anything else in the process) use it.
    trace.set_tracer_provider(provider)
    # A collector that is down makes the exporter log every failed batch (twice a second in a busy process),
    # and a full queue every dropped span: one line per minute each says as much.
    for name in (EXPORTER_LOGGER, QUEUE_LOGGER):
        logging.getLogger(name).addFilter(OncePerInterval(LOG_INTERVAL_SECONDS))
    _protect_captured_headers()
    if instrument_django:
        from opentelemetry.instrumentation.django import DjangoInstrumentor

        excluded = None if os.environ.get("OTEL_PYTHON_DJANGO_EXCLUDED_URLS") else EXCLUDED_URLS
        DjangoInstrumentor().instrument(tracer_provider=provider, excluded_urls=excluded)
    # Statements only, never their parameters (capture_parameters stays off); Django always sends values as
    # parameters, so a password hash, a token digest or a consumer's key never appears in `db.statement`.
    PsycopgInstrumentor().instrument(tracer_provider=provider, capture_parameters=False, enable_commenter=False)
    # The task's run span is a child of its publish span (beat's tick), so a trace reads beat → publish →
    # worker run → its queries and probes.
    CeleryInstrumentor().instrument(tracer_provider=provider)
    return _State(pid=os.getpid(), role=role, provider=provider, tracer=provider.get_tracer("gateway.controlplane"))


def _root_sampler(ratio: float) -> Any:
    from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult, TraceIdRatioBased
    from opentelemetry.trace import SpanKind

    ratio_sampler = TraceIdRatioBased(ratio)

    class RootSampler(Sampler):
        """New traces at `ratio`, except a CLIENT span (a query) with no request or task around it."""

        def should_sample(
            self,
            parent_context: Any,
            trace_id: int,
            name: str,
            kind: Any = None,
            attributes: Any = None,
            links: Sequence[Any] | None = None,
            trace_state: Any = None,
        ) -> SamplingResult:
            if kind == SpanKind.CLIENT:
                return SamplingResult(Decision.DROP)
            return ratio_sampler.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

        def get_description(self) -> str:
            return f"GatewayRoot{{{ratio_sampler.get_description()}, no root CLIENT spans}}"

    return RootSampler()


def _protect_captured_headers() -> None:
    """Header capture is off unless an operator turns it on; if they do, credentials stay masked."""
    name = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS"
    present = [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]
    os.environ[name] = ",".join([*present, *(h for h in SENSITIVE_HEADERS if h not in {p.lower() for p in present})])


def shutdown() -> None:
    """Flush and stop this process's exporter (tests; processes also do it at exit)."""
    global _state
    state = _state
    if state is not None and state.pid == os.getpid():
        state.provider.shutdown()
        _state = None


# --- what the rest of the control plane asks ----------------------------------------------------------


def current_traceparent() -> str:
    """The W3C traceparent of the span current in this thread or task, or "" (off, no span, or a span the
    sampler did not keep: there would be no trace to follow)."""
    if not enabled():
        return ""
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid or not context.trace_flags.sampled:
        return ""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def annotate_current(attributes: Mapping[str, str | int]) -> None:
    """Add attributes to the span current in this thread or task (nothing when off)."""
    if not enabled():
        return
    from opentelemetry import trace

    trace.get_current_span().set_attributes(dict(attributes))


def current_trace_id() -> str:
    """The 32-hex trace id current in this thread or task, or ""."""
    traceparent = current_traceparent()
    return traceparent[3:35] if traceparent else ""


def parse_traceparent(value: str) -> tuple[int, int, int] | None:
    """(trace id, span id, flags) of a well-formed traceparent, else None."""
    match = TRACEPARENT.match(value or "")
    if match is None:
        return None
    trace_id, span_id, flags = int(match[1], 16), int(match[2], 16), int(match[3], 16)
    if trace_id == 0 or span_id == 0:
        return None
    return trace_id, span_id, flags


def record_config_answer(
    *,
    headers: Sequence[tuple[bytes, bytes]],
    method: str,
    path: str,
    started_ns: int,
    status: int,
    revision: int | None,
    etag: str | None,
    write_traceparent: str,
    token_name: str | None,
    node_id: str | None,
    waited: bool,
) -> None:
    """One SERVER span for one answer of the sync API's `GET /dataplane/config` (called when it is sent,
    with the time it arrived): the child of the node's own traceparent when it sent a valid one, LINKED to
    the span of the config write that made `revision` (`write_traceparent`, stored with the revision)."""
    if not enabled():
        return
    assert _state is not None
    from opentelemetry.propagate import extract
    from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

    carrier = _Carrier(headers)
    parent = extract(carrier)  # a malformed traceparent is ignored by the propagator: a new trace starts
    links = []
    write = parse_traceparent(write_traceparent)
    if write is not None:
        trace_id, span_id, flags = write
        context = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags))
        links.append(Link(context, {"gateway.link": "config.write", "gateway.config.revision": revision or 0}))
    attributes: dict[str, Any] = {
        "http.request.method": method,
        "url.path": path,
        "http.route": path,
        "http.response.status_code": status,
        "gateway.sync.long_poll": waited,
    }
    if revision is not None:
        attributes["gateway.config.revision"] = revision
    if etag:
        attributes["gateway.config.etag"] = etag
    if token_name:
        attributes["gateway.dataplane.token"] = token_name
    if node_id:
        attributes["gateway.dataplane.node_id"] = node_id
    span = _state.tracer.start_span(
        f"{method} {path}",
        context=parent,
        kind=SpanKind.SERVER,
        attributes=attributes,
        links=links,
        start_time=started_ns,
    )
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))
    span.end()


class _Carrier(Mapping[str, str]):
    """ASGI headers as the propagator's mapping (lower-case names; the first value of each)."""

    def __init__(self, headers: Sequence[tuple[bytes, bytes]]) -> None:
        self._headers: dict[str, str] = {}
        for key, value in headers:
            name = bytes(key).decode("latin-1").lower()
            if name in ("traceparent", "tracestate") and name not in self._headers:
                self._headers[name] = bytes(value).decode("latin-1")

    def __getitem__(self, key: str) -> str:
        return self._headers[key.lower()]

    def __iter__(self) -> Any:
        return iter(self._headers)

    def __len__(self) -> int:
        return len(self._headers)


def start_probe_span(name: str, attributes: Mapping[str, Any]) -> Any:
    """A CLIENT span for one health probe (a context manager), or None when tracing is off."""
    if not enabled():
        return None
    assert _state is not None
    from opentelemetry.trace import SpanKind

    return _state.tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes=dict(attributes))
