"""Tracing's pure parts (controlplane/core/tracing.py, the settings); the processes are tested end to end in
tests/e2e/test_tracing.py."""

from __future__ import annotations

import os

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.settings.base import env_ratio, env_url
from controlplane.core import tracing


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        ("http://collector:4318", "http://collector:4318/v1/traces"),
        ("http://collector:4318/", "http://collector:4318/v1/traces"),
        ("https://collector.example.test/otlp/v1/traces", "https://collector.example.test/otlp/v1/traces"),
    ],
)
def test_a_collectors_base_url_gets_the_traces_path_and_a_full_url_is_kept(endpoint: str, url: str) -> None:
    assert tracing.otlp_traces_url(endpoint) == url


@pytest.mark.parametrize("value", ["ftp://collector:4318", "collector:4318", "http://", "http:///v1/traces"])
def test_an_endpoint_that_is_not_an_http_url_stops_the_start(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_OTLP_ENDPOINT", value)
    with pytest.raises(ImproperlyConfigured, match="GATEWAY_OTLP_ENDPOINT"):
        env_url("GATEWAY_OTLP_ENDPOINT")


def test_an_unset_or_empty_endpoint_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_OTLP_ENDPOINT", "")
    assert env_url("GATEWAY_OTLP_ENDPOINT") == ""
    monkeypatch.delenv("GATEWAY_OTLP_ENDPOINT")
    assert env_url("GATEWAY_OTLP_ENDPOINT") == ""


@pytest.mark.parametrize(("value", "ratio"), [("0", 0.0), ("0.25", 0.25), ("1", 1.0), ("", 1.0)])
def test_the_sample_ratio_is_read_from_0_to_1(value: str, ratio: float, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_TRACE_SAMPLE", value)
    assert env_ratio("GATEWAY_TRACE_SAMPLE", 1.0) == ratio


@pytest.mark.parametrize("value", ["-0.1", "1.5", "nan", "inf", "half"])
def test_a_sample_ratio_outside_0_to_1_stops_the_start(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_TRACE_SAMPLE", value)
    with pytest.raises(ImproperlyConfigured, match="GATEWAY_TRACE_SAMPLE"):
        env_ratio("GATEWAY_TRACE_SAMPLE", 1.0)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "00-" + "0" * 32 + "-" + "1" * 16 + "-01",
        "00-" + "1" * 32 + "-" + "0" * 16 + "-01",
        "00-" + "A" * 32 + "-" + "1" * 16 + "-01",
        "01-" + "1" * 32 + "-" + "1" * 16 + "-01",
        "00-" + "1" * 32 + "-" + "1" * 16 + "-01-",
        "00-" + "1" * 31 + "-" + "1" * 16 + "-01",
        "\n00-" + "1" * 32 + "-" + "1" * 16 + "-01",
    ],
)
def test_a_malformed_stored_traceparent_links_nothing(value: str) -> None:
    assert tracing.parse_traceparent(value) is None


def test_a_well_formed_traceparent_is_read() -> None:
    assert tracing.parse_traceparent("00-" + "0" * 31 + "a-" + "0" * 15 + "b-03") == (10, 11, 3)


def test_off_there_is_no_trace_context_to_store() -> None:
    assert not tracing.enabled()
    assert tracing.current_traceparent() == ""
    assert tracing.current_trace_id() == ""


def test_the_sampler_drops_queries_outside_a_request_and_samples_the_rest_at_the_ratio() -> None:
    from opentelemetry.sdk.trace.sampling import Decision
    from opentelemetry.trace import SpanKind

    kept = tracing._root_sampler(1.0)
    assert kept.should_sample(None, 1 << 100, "SELECT", kind=SpanKind.CLIENT).decision == Decision.DROP
    for kind in (SpanKind.SERVER, SpanKind.PRODUCER, SpanKind.CONSUMER, SpanKind.INTERNAL):
        assert kept.should_sample(None, 1 << 100, "x", kind=kind).decision == Decision.RECORD_AND_SAMPLE
    none = tracing._root_sampler(0.0)
    assert none.should_sample(None, 1 << 100, "POST", kind=SpanKind.SERVER).decision == Decision.DROP


def test_captured_headers_always_mask_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    name = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS"
    monkeypatch.setenv(name, "X-Secret, Authorization")
    tracing._protect_captured_headers()
    fields = [item.strip().lower() for item in os.environ[name].split(",")]
    assert {"x-secret", "authorization", "cookie", "set-cookie", "proxy-authorization"} <= set(fields)
    assert fields.count("authorization") == 1


def test_exporter_failures_are_logged_once_a_minute_with_a_count_of_the_rest() -> None:
    import logging

    now = [0.0]
    once = tracing.OncePerInterval(60.0, clock=lambda: now[0])

    def record(message: str, level: int = logging.ERROR) -> logging.LogRecord:
        return logging.LogRecord("exporter", level, __file__, 1, message, None, None)

    assert once.filter(record("failed"))
    now[0] = 30.0
    assert not once.filter(record("failed"))
    assert not once.filter(record("failed"))
    assert once.filter(record("transient", logging.WARNING))  # each level on its own
    now[0] = 61.0
    let_through = record("failed")
    assert once.filter(let_through)
    assert let_through.getMessage() == "failed (2 more like it in the last 60 s not logged)"
