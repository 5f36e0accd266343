"""The access log (ARCHITECTURE §13): one line per request, `DATAPLANE_ACCESS_LOG=text|json|off`; what
a client chooses (the path, the user agent) can never break a line or forge a field. Driven through
the proxy's ASGI interface with header bytes no HTTP client library would send."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

import pytest

from dataplane.settings import Settings, SettingsError
from tests.dataplane.harness import Gateway, document, endpoint, ok

SENT: list[int] = []
HOSTILE_AGENT = b'evil"\n2026-01-01 00:00:00,000 INFO dataplane.access request_id=forged status=200 \x1b[31m\x85\\'
# No route: the gateway answers it itself (the upstream client would refuse such a URL anyway).
HOSTILE_PATH = b'/nowhere/a"b\nstatus=999/' + b"x" * 5000


def serve(gateway: Gateway, path: bytes, headers: list[tuple[bytes, bytes]], request_id: str) -> int:
    """One GET through the app with exactly these raw header bytes; the status (SENT: the body bytes)."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path.decode("latin-1"),
        "raw_path": path,
        "query_string": b"q=secret-query",
        "headers": [(b"host", b"gw.test"), (b"x-request-id", request_id.encode()), *headers],
        "client": ("203.0.113.9", 40000),
        "server": ("127.0.0.1", 8080),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(gateway.proxy(scope, receive, send))
    gateway.proxy.access_log.flush()
    SENT[:] = [sum(len(message.get("body", b"")) for message in sent)]
    return int(sent[0]["status"])


def access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        line
        for record in caplog.records
        if record.name == "dataplane.access"
        for line in record.getMessage().split("\n")
    ]


@pytest.fixture
def caplog_access(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="dataplane.access")
    return caplog


def test_a_text_line_carries_every_field_and_hostile_values_stay_inside_their_quotes(
    caplog_access: pytest.LogCaptureFixture,
) -> None:
    gateway = Gateway(document(endpoint("users", default=True)), ok)
    assert serve(gateway, b"/users/list", [(b"user-agent", HOSTILE_AGENT)], "text-1") == 200
    body_bytes = SENT[0]
    assert serve(gateway, HOSTILE_PATH, [(b"user-agent", b"curl/8")], "text-2") == 404
    first, second = access_lines(caplog_access)
    for line in (first, second):
        # Every field before the last one is the gateway's own: the forgery is inside the quoted agent.
        head = line.split(" user_agent=", 1)[0]
        assert head.count("request_id=") == 1 and head.count(" status=") == 1 and line.isascii()
        assert "secret-query" not in line  # the path is logged without its query
    for field in ("method=GET", "endpoint=users:v1", "client=203.0.113.9", "bytes_in=0", "trace_id=-", "consumer=-"):
        assert field in first
    assert "status=200" in first and f"bytes_out={body_bytes}" in first and "target=http://127.0.0.1:8010/api" in first
    assert 'path="/users/list"' in first
    assert json.loads(first.split(" user_agent=", 1)[1]) == HOSTILE_AGENT.decode("latin-1")
    assert "\x1b" not in first and "\x85" not in first
    assert "status=404" in second and "error=no_route" in second and "endpoint=-" in second
    path = json.loads(second.split(" path=", 1)[1].split(" bytes_in=", 1)[0])
    assert path.startswith('/nowhere/a"b\nstatus=999/') and len(path) == 2048  # capped at 2 KiB
    assert second.endswith('user_agent="curl/8"')


def test_a_json_line_is_one_valid_object_with_every_field(caplog_access: pytest.LogCaptureFixture) -> None:
    gateway = Gateway(document(endpoint("users", default=True)), ok, access_log="json")
    serve(gateway, b"/users/list", [(b"user-agent", HOSTILE_AGENT)], "json-1")
    serve(gateway, HOSTILE_PATH, [], "json-2")
    first, second = (json.loads(line) for line in access_lines(caplog_access))
    assert set(first) == {
        "time", "request_id", "trace_id", "client", "method", "path", "status", "bytes_in", "bytes_out",
        "duration_ms", "upstream_ms", "endpoint", "target", "consumer", "error", "detail", "user_agent",
    }  # fmt: skip
    assert (first["request_id"], first["status"], first["endpoint"], first["client"]) == (
        "json-1",
        200,
        "users:v1",
        "203.0.113.9",
    )
    assert first["user_agent"] == HOSTILE_AGENT.decode("latin-1") and first["path"] == "/users/list"
    assert (second["status"], second["error"], second["endpoint"], len(second["path"])) == (404, "no_route", "", 2048)


def test_the_user_agent_is_capped(caplog_access: pytest.LogCaptureFixture) -> None:
    gateway = Gateway(document(endpoint("users", default=True)), ok, access_log="json")
    serve(gateway, b"/users", [(b"user-agent", b"a" * 10_000)], "json-3")
    [line] = access_lines(caplog_access)
    assert json.loads(line)["user_agent"] == "a" * 512


def test_off_writes_nothing(caplog_access: pytest.LogCaptureFixture) -> None:
    gateway = Gateway(document(endpoint("users", default=True)), ok, access_log="off")
    assert serve(gateway, b"/users", [], "off-1") == 200
    assert access_lines(caplog_access) == []


def test_the_setting_takes_text_json_or_off_and_refuses_anything_else() -> None:
    assert Settings.from_env({}).access_log == "text"
    assert Settings.from_env({"DATAPLANE_ACCESS_LOG": " JSON "}).access_log == "json"
    with pytest.raises(SettingsError, match="DATAPLANE_ACCESS_LOG must be text, json or off, not 'yes'"):
        Settings.from_env({"DATAPLANE_ACCESS_LOG": "yes"})


TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"


def test_with_tracing_on_every_text_line_names_its_trace(caplog_access: pytest.LogCaptureFixture) -> None:
    gateway = Gateway(
        document(endpoint("users", default=True)), ok, otlp_endpoint="http://127.0.0.1:9/v1/traces", trace_sample=0
    )
    try:
        serve(gateway, b"/users/list", [(b"traceparent", TRACEPARENT)], "trace-1")
        serve(gateway, b"/users/list", [], "trace-2")
    finally:
        assert gateway.proxy.tracer is not None
        asyncio.run(gateway.proxy.tracer.shutdown())
    continued, started = access_lines(caplog_access)
    assert " trace_id=4bf92f3577b34da6a3ce929d0e0e4736 " in continued
    assert re.search(r" trace_id=[0-9a-f]{32} ", started) and "4bf92f35" not in started


def test_with_tracing_off_only_an_error_line_names_the_callers_trace(caplog_access: pytest.LogCaptureFixture) -> None:
    gateway = Gateway(document(endpoint("users", default=True)), ok)
    serve(gateway, b"/users/list", [(b"traceparent", TRACEPARENT)], "off-trace-1")
    serve(gateway, b"/nowhere", [(b"traceparent", TRACEPARENT)], "off-trace-2")
    proxied, refused = access_lines(caplog_access)
    assert " trace_id=- " in proxied
    assert " trace_id=4bf92f3577b34da6a3ce929d0e0e4736 " in refused and "status=404" in refused
