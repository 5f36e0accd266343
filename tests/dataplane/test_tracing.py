"""Tracing's parts on their own (dataplane/tracing.py, otlp.py): the strict traceparent reading, the
settings, and the processor's bound counting what it drops (the end-to-end behaviour is in
tests/e2e/test_dataplane_tracing.py)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanContext, TraceFlags

from dataplane.otlp import CLIENT, SERVER, CountingExporter, CountingSpanProcessor, Encoder, Finished
from dataplane.settings import Settings, SettingsError
from dataplane.tracing import incoming

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


def test_a_valid_traceparent_is_read_with_its_flag_and_tracestate() -> None:
    headers = [
        (b"traceparent", f"00-{TRACE}-{PARENT}-01".encode()),
        (b"tracestate", b"a=1"),
        (b"tracestate", b"b=2"),
    ]
    assert incoming(headers) == (f"00-{TRACE}-{PARENT}-01".encode(), TRACE, PARENT, True, b"a=1,b=2")
    assert incoming([(b"traceparent", f"00-{TRACE}-{PARENT}-02".encode())]) == (
        f"00-{TRACE}-{PARENT}-02".encode(),
        TRACE,
        PARENT,
        False,
        b"",
    )


@pytest.mark.parametrize(
    "value",
    [
        f"00-{TRACE}-{PARENT}-01-",
        f"00-{TRACE}-{PARENT}-01\n",
        f"00-{TRACE.upper()}-{PARENT}-01",
        f"ff-{TRACE}-{PARENT}-01",
        f"cc-{TRACE}-{PARENT}-01",
        f"00-{'0' * 32}-{PARENT}-01",
        f"00-{TRACE}-{'0' * 16}-01",
        f"00-{TRACE}-{PARENT}",
        f"00_{TRACE}_{PARENT}_01",
        "\x00" * 55,
        "",
    ],
)
def test_an_invalid_traceparent_is_not_read_nor_its_tracestate(value: str) -> None:
    assert incoming([(b"traceparent", value.encode("latin-1")), (b"tracestate", b"a=1")]) is None


def test_two_traceparents_are_not_read() -> None:
    header = (b"traceparent", f"00-{TRACE}-{PARENT}-01".encode())
    assert incoming([header, header]) is None


def test_a_tracestate_too_long_or_unprintable_is_left_out() -> None:
    parent = (b"traceparent", f"00-{TRACE}-{PARENT}-01".encode())
    assert incoming([parent, (b"tracestate", b"k=" + b"v" * 600)]) == (parent[1], TRACE, PARENT, True, b"")
    assert incoming([parent, (b"tracestate", b"k=\x7f")]) == (parent[1], TRACE, PARENT, True, b"")


def test_tracing_settings_default_off_and_a_base_url_gets_the_traces_path() -> None:
    assert Settings.from_env({}).otlp_endpoint is None
    settings = Settings.from_env({"DATAPLANE_OTLP_ENDPOINT": "http://127.0.0.1:4318/"})
    assert settings.otlp_endpoint == "http://127.0.0.1:4318/v1/traces"
    assert settings.trace_sample == 1.0
    given = Settings.from_env({"DATAPLANE_OTLP_ENDPOINT": "https://otel.example:443/custom/path"})
    assert given.otlp_endpoint == "https://otel.example:443/custom/path"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATAPLANE_TRACE_SAMPLE", "1.5"),
        ("DATAPLANE_TRACE_SAMPLE", "-0.1"),
        ("DATAPLANE_TRACE_SAMPLE", "inf"),
        ("DATAPLANE_TRACE_SAMPLE", "half"),
        ("DATAPLANE_OTLP_ENDPOINT", "grpc://127.0.0.1:4317"),
        ("DATAPLANE_OTLP_ENDPOINT", "http://user:secret@collector:4318"),
        ("DATAPLANE_TRACE_QUEUE", "0"),
        ("DATAPLANE_TRACE_EXPORT_TIMEOUT", "0"),
    ],
)
def test_a_bad_tracing_setting_is_refused_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


class Stuck(SpanExporter):
    """An exporter that holds its first batch until released (a collector that does not answer)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.entered.set()
        self.release.wait(10)
        self.exported += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.release.set()


def span(number: int) -> ReadableSpan:
    return ReadableSpan("GET", SpanContext(1, number, False, TraceFlags(TraceFlags.SAMPLED)))


def test_the_processor_drops_and_counts_the_newest_spans_beyond_its_bound() -> None:
    stuck = Stuck()
    drops: list[str] = []
    counting = CountingExporter(stuck, lambda count: drops.extend(["export_failed"] * count))
    processor = CountingSpanProcessor(
        counting, limit=10, on_dropped=lambda count: drops.extend(["queue_full"] * count), batch=5
    )
    try:
        for number in range(1, 6):  # one batch: the exporter takes it and hangs
            processor.on_end(span(number))
        assert stuck.entered.wait(10)
        for number in range(6, 36):  # 30 more while it hangs: 10 wait, 20 are dropped here
            processor.on_end(span(number))
        assert drops == ["queue_full"] * 20
    finally:
        stuck.release.set()
        processor.shutdown()  # type: ignore[no-untyped-call]
    assert stuck.exported == 15  # the first batch and the 10 that waited: the SDK dropped none silently


def test_a_failed_export_counts_its_spans() -> None:
    class Refusing(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.FAILURE

    failed: list[int] = []
    counting = CountingExporter(Refusing(), failed.append)
    assert counting.export([span(1), span(2)]) is SpanExportResult.FAILURE
    assert failed == [2] and counting.taken == 2


def test_the_encoder_writes_what_the_otlp_protobuf_classes_read() -> None:
    encoder = Encoder({"service.name": "gateway-dataplane", "service.instance.id": "n1"}, "dataplane", "0.1.0")
    trace_id, server_id, client_id = bytes.fromhex(TRACE), bytes.fromhex(PARENT), b"\x01" * 8
    big = 2**63 - 1
    server = (trace_id, server_id, b"", "GET /v1/ü", SERVER, 1, big, True, {"a": "é" * 200, "n": 503, "neg": -1})
    client = (trace_id, client_id, server_id, "GET", CLIENT, 5, 6, False, {"a": "é" * 200})
    request = ExportTraceServiceRequest()
    request.ParseFromString(encoder.encode([Finished([server, client]), Finished([server])]))
    (resource_spans,) = request.resource_spans
    assert {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes} == {
        "service.name": "gateway-dataplane",
        "service.instance.id": "n1",
    }
    (scope_spans,) = resource_spans.scope_spans
    assert (scope_spans.scope.name, scope_spans.scope.version) == ("dataplane", "0.1.0")
    first, second, third = scope_spans.spans
    assert (first.trace_id, first.span_id, first.parent_span_id) == (trace_id, server_id, b"")
    assert (first.name, first.kind, first.start_time_unix_nano, first.end_time_unix_nano) == ("GET /v1/ü", 2, 1, big)
    assert first.status.code == 2 and second.status.code == 0
    values = {kv.key: kv.value for kv in first.attributes}
    assert values["a"].string_value == "é" * 200
    assert values["n"].int_value == 503 and values["neg"].int_value == -1
    assert (second.parent_span_id, second.kind, second.name) == (server_id, 3, "GET")
    assert third == first
