"""Tracing (ARCHITECTURE §13) with a real `python -m dataplane`, real upstreams and a real OTLP/HTTP
receiver (tests/e2e/otlp.py) decoding what the data plane exports."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.dataplane.processes import DataPlane, dataplane, raw_exchange, seed, upstream
from tests.e2e.otlp import Receiver, Span, otlp_receiver
from tests.e2e.servers import ROOT, clean_env, eventually

pytestmark = pytest.mark.e2e

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
VALID = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]")
SERVER, CLIENT = "server", "client"


def users(origin_url: str, **extra: Any) -> dict[str, Any]:
    return seed({"name": "users", "version": "v1", "targets": [{"url": origin_url}], **extra})


def received(response: httpx.Response, name: str) -> list[str]:
    """The values of header `name` the upstream received (its /echo answer)."""
    return [value for key, value in response.json()["headers"] if key == name]


def spans_of(collector: Receiver, trace_id: str, count: int) -> list[Span]:
    eventually(lambda: len([s for s in collector.snapshot() if s.trace_id == trace_id]) >= count, "the spans")
    return [s for s in collector.snapshot() if s.trace_id == trace_id]


def dropped(gateway: DataPlane) -> float:
    text = httpx.get(f"{gateway.admin}/-/metrics").text
    return sum(float(v) for v in re.findall(r"^gateway_trace_spans_dropped_total\{[^}]*\} (\S+)$", text, re.M))


def test_ids_line_up_from_the_client_through_the_gateway_to_the_upstream(tmp_path: Path) -> None:
    with (
        otlp_receiver() as collector,
        upstream(tmp_path) as origin,
        dataplane(
            tmp_path, users(origin.url), DATAPLANE_OTLP_ENDPOINT=collector.url, DATAPLANE_ACCESS_LOG="json"
        ) as gateway,
    ):
        response = httpx.get(
            f"{gateway.url}/v1/users/echo",
            headers={"traceparent": f"00-{TRACE}-{PARENT}-01", "tracestate": "vendor=abc", "user-agent": "tracer"},
        )
        assert response.status_code == 200
        (upstream_parent,) = received(response, "traceparent")
        assert received(response, "tracestate") == ["vendor=abc"]
        version, trace_id, client_span_id, flags = upstream_parent.split("-")
        assert (version, trace_id, flags) == ("00", TRACE, "01") and client_span_id != PARENT

        spans = spans_of(collector, TRACE, 2)
        (server,) = [s for s in spans if s.kind == SERVER]
        (client,) = [s for s in spans if s.kind == CLIENT]
        assert server.parent_span_id == PARENT  # the caller's span
        assert client.parent_span_id == server.span_id
        assert client.span_id == client_span_id  # what the upstream was told is its parent
        assert server.name == "GET /v1/users"
        assert server.attributes["http.request.method"] == "GET"
        assert server.attributes["url.path"] == "/v1/users/echo"
        assert server.attributes["http.route"] == "/v1/users"
        assert server.attributes["http.response.status_code"] == 200
        assert server.attributes["gateway.endpoint"] == "users:v1"
        assert server.attributes["gateway.target"] == origin.url
        assert server.attributes["gateway.breaker.state"] == "closed"
        assert server.attributes["server.address"] == "127.0.0.1"
        assert server.attributes["network.peer.address"] == "127.0.0.1"
        assert server.attributes["user_agent.original"] == "tracer"
        assert "error.type" not in server.attributes and server.status == 0
        assert client.attributes["server.port"] == origin.port
        assert client.attributes["http.response.status_code"] == 200
        assert server.start <= client.start <= client.end <= server.end
        assert server.resource["service.name"] == "gateway-dataplane"
        assert server.resource["service.instance.id"] == "e2e-node"

        def logged() -> bool:
            return f'"trace_id":"{TRACE}"' in (tmp_path / "dataplane.log").read_text()

        eventually(logged, "the access line with the trace id")


def test_retries_are_sibling_client_spans_under_the_server_span(tmp_path: Path) -> None:
    with (
        otlp_receiver() as collector,
        upstream(tmp_path, "alpha") as alpha,
        upstream(tmp_path, "beta") as beta,
        dataplane(
            tmp_path,
            seed(
                {
                    "name": "users",
                    "version": "v1",
                    "targets": [{"url": alpha.url}, {"url": beta.url}],
                    "retries": {"attempts": 2, "on": ["5xx"]},
                }
            ),
            DATAPLANE_OTLP_ENDPOINT=collector.url,
        ) as gateway,
    ):
        response = httpx.get(f"{gateway.url}/v1/users/status/503", headers={"traceparent": f"00-{TRACE}-{PARENT}-01"})
        assert response.status_code == 503
        spans = spans_of(collector, TRACE, 3)
        (server,) = [s for s in spans if s.kind == SERVER]
        tries = sorted((s for s in spans if s.kind == CLIENT), key=lambda s: s.start)
        assert len(tries) == 2
        assert {t.parent_span_id for t in tries} == {server.span_id}
        assert tries[0].span_id != tries[1].span_id
        assert {t.attributes["gateway.target"] for t in tries} == {alpha.url, beta.url}
        assert "http.request.resend_count" not in tries[0].attributes
        assert tries[1].attributes["http.request.resend_count"] == 1
        assert all(t.attributes["http.response.status_code"] == 503 and t.status == 2 for t in tries)
        assert server.attributes["error.type"] == "503" and server.status == 2


def test_new_traces_are_sampled_at_the_configured_ratio(tmp_path: Path) -> None:
    requests = 2000
    with (
        otlp_receiver() as collector,
        upstream(tmp_path) as origin,
        dataplane(
            tmp_path, users(origin.url), DATAPLANE_OTLP_ENDPOINT=collector.url, DATAPLANE_TRACE_SAMPLE="0.25"
        ) as gateway,
        httpx.Client() as client,
    ):
        flags = {"00": 0, "01": 0}
        for _ in range(requests):
            response = client.get(f"{gateway.url}/v1/users/echo")
            assert response.status_code == 200
            (parent,) = received(response, "traceparent")
            assert VALID.fullmatch(parent)
            flags[parent[-2:]] += 1
        # Binomial(2000, 0.25): mean 500, standard deviation ~19.4; ±150 is beyond 7 deviations.
        assert 350 <= flags["01"] <= 650
        eventually(lambda: len({s.trace_id for s in collector.snapshot()}) >= flags["01"], "the sampled spans")
        assert len({s.trace_id for s in collector.snapshot() if s.kind == SERVER}) == flags["01"]


def test_the_callers_sampled_flag_decides_for_a_continued_trace(tmp_path: Path) -> None:
    with (
        otlp_receiver() as collector,
        upstream(tmp_path) as origin,
        dataplane(
            tmp_path, users(origin.url), DATAPLANE_OTLP_ENDPOINT=collector.url, DATAPLANE_TRACE_SAMPLE="0.5"
        ) as gateway,
        httpx.Client() as client,
    ):
        sampled = [f"{index:032x}" for index in range(1, 41)]
        unsampled = [f"{index:032x}" for index in range(101, 141)]
        for trace_id in sampled:
            response = client.get(f"{gateway.url}/v1/users/echo", headers={"traceparent": f"00-{trace_id}-{PARENT}-01"})
            assert received(response, "traceparent")[0].endswith("-01")
        for trace_id in unsampled:
            header = f"00-{trace_id}-{PARENT}-00"
            response = client.get(f"{gateway.url}/v1/users/echo", headers={"traceparent": header})
            assert received(response, "traceparent") == [header]  # recorded nothing: the caller stays the parent
        eventually(lambda: {s.trace_id for s in collector.snapshot()} >= set(sampled), "every sampled trace")
        assert not {s.trace_id for s in collector.snapshot()} & set(unsampled)


HOSTILE = [
    f"00-{TRACE}-{PARENT}-01-extra",  # a version 00 header with more after it
    f"00-{TRACE.upper()}-{PARENT}-01",  # upper-case hex
    f"ff-{TRACE}-{PARENT}-01",  # version ff is invalid
    f"01-{TRACE}-{PARENT}-01",  # a version this gateway does not read strictly
    f"00-{'0' * 32}-{PARENT}-01",  # all-zero trace id
    f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
    f"00-{TRACE[:-1]}-{PARENT}-01",  # short
    f"00-{TRACE}-{PARENT}-1",
    f"00-{TRACE}-{PARENT}-zz",
    "00-" + "a" * 4000,
    "",
    f"00-{TRACE}-{PARENT}-01 x",
]


def test_hostile_traceparents_are_replaced_never_passed_on_and_never_a_500(tmp_path: Path) -> None:
    with (
        otlp_receiver() as collector,
        upstream(tmp_path) as origin,
        dataplane(tmp_path, users(origin.url), DATAPLANE_OTLP_ENDPOINT=collector.url) as gateway,
        httpx.Client() as client,
    ):
        for value in HOSTILE:
            response = client.get(
                f"{gateway.url}/v1/users/echo", headers={"traceparent": value, "tracestate": "evil=1"}
            )
            assert response.status_code == 200, value
            (parent,) = received(response, "traceparent")
            assert VALID.fullmatch(parent) and TRACE not in parent, value
            assert received(response, "tracestate") == []  # only with a valid traceparent
        # Two traceparent headers: neither is believed.
        response = client.get(
            f"{gateway.url}/v1/users/echo",
            headers=[("traceparent", f"00-{TRACE}-{PARENT}-01"), ("traceparent", f"00-{TRACE}-{PARENT}-01")],
        )
        (parent,) = received(response, "traceparent")
        assert VALID.fullmatch(parent) and TRACE not in parent
        # Bytes httpx will not send: a NUL, a control character, a non-ASCII byte in the value.
        for raw in (b"00-\x00", b"00-" + TRACE.encode() + b"\x01", "00-é".encode(), b"  "):
            answer = raw_exchange(
                gateway.port,
                b"GET /v1/users/echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\ntraceparent: " + raw + b"\r\n\r\n",
            )
            status = int(answer.split(b" ", 2)[1])
            assert status in (200, 400), answer[:200]
            if status == 200:
                parent = json.loads(answer.partition(b"\r\n\r\n")[2])["headers"]
                assert raw.decode("latin-1") not in dict(parent).values()
        # A huge tracestate with a valid traceparent: dropped, not passed on.
        response = client.get(
            f"{gateway.url}/v1/users/echo",
            headers={"traceparent": f"00-{TRACE}-{PARENT}-01", "tracestate": "k=" + "v" * 1000},
        )
        assert response.status_code == 200 and received(response, "tracestate") == []


def test_gateway_errors_name_the_trace_in_the_body(tmp_path: Path) -> None:
    with (
        otlp_receiver() as collector,
        upstream(tmp_path) as origin,
        dataplane(tmp_path, users(origin.url), DATAPLANE_OTLP_ENDPOINT=collector.url) as gateway,
    ):
        answer = httpx.get(f"{gateway.url}/nowhere", headers={"traceparent": f"00-{TRACE}-{PARENT}-01"})
        assert answer.status_code == 404 and answer.json()["trace_id"] == TRACE
        started = httpx.get(f"{gateway.url}/nowhere").json()["trace_id"]
        assert re.fullmatch(r"[0-9a-f]{32}", started)
        (server,) = spans_of(collector, TRACE, 1)
        assert server.attributes["gateway.error"] == "no_route"
        assert server.attributes["http.response.status_code"] == 404 and "http.route" not in server.attributes


def test_with_tracing_off_trace_headers_pass_untouched_and_errors_still_name_the_callers_trace(
    tmp_path: Path,
) -> None:
    with upstream(tmp_path) as origin, dataplane(tmp_path, users(origin.url), DATAPLANE_ACCESS_LOG="json") as gateway:
        header = f"00-{TRACE}-{PARENT}-01"
        response = httpx.get(f"{gateway.url}/v1/users/echo", headers={"traceparent": header, "tracestate": "a=b"})
        assert received(response, "traceparent") == [header] and received(response, "tracestate") == ["a=b"]
        assert httpx.get(f"{gateway.url}/nowhere", headers={"traceparent": header}).json()["trace_id"] == TRACE
        assert "trace_id" not in httpx.get(f"{gateway.url}/nowhere").json()
        bad = httpx.get(f"{gateway.url}/nowhere", headers={"traceparent": header.upper()}).json()
        assert "trace_id" not in bad
        assert dropped(gateway) == 0

        def logged() -> bool:
            return f'"trace_id":"{TRACE}"' in (tmp_path / "dataplane.log").read_text()

        eventually(logged, "the error's access line with the caller's trace id")


def test_a_collector_killed_mid_run_costs_no_request_and_the_lost_spans_are_counted(tmp_path: Path) -> None:
    with (
        otlp_receiver() as collector,
        upstream(tmp_path) as origin,
        dataplane(
            tmp_path,
            users(origin.url),
            DATAPLANE_OTLP_ENDPOINT=collector.url,
            DATAPLANE_TRACE_QUEUE="50",
            DATAPLANE_TRACE_EXPORT_TIMEOUT="0.3",
        ) as gateway,
        httpx.Client(timeout=10) as client,
    ):
        statuses = []
        for index in range(600):
            if index == 100:
                eventually(lambda: len(collector.snapshot()) > 0, "the first spans")
                collector.stop()
            statuses.append(client.get(f"{gateway.url}/v1/users/echo").status_code)
        assert set(statuses) == {200}
        eventually(lambda: dropped(gateway) > 0, "dropped spans counted")


@pytest.mark.parametrize("mode", ["slow", "black_hole"])
def test_a_slow_or_silent_collector_never_holds_an_answer(tmp_path: Path, mode: str) -> None:
    with (
        otlp_receiver() as collector,
        upstream(tmp_path) as origin,
        dataplane(
            tmp_path,
            users(origin.url),
            DATAPLANE_OTLP_ENDPOINT=collector.url,
            DATAPLANE_TRACE_EXPORT_TIMEOUT="0.5",
            DATAPLANE_TRACE_QUEUE="20",
        ) as gateway,
        # Each answer within 5 s while the collector holds each export 30 s (or for ever): a request
        # that waited on the collector would time out here.
        httpx.Client(timeout=5) as client,
    ):
        if mode == "slow":
            collector.delay = 30
        else:
            collector.black_hole = True
        statuses = [client.get(f"{gateway.url}/v1/users/echo").status_code for _ in range(300)]
        assert set(statuses) == {200}
        eventually(lambda: dropped(gateway) > 0, "dropped spans counted")


def test_each_worker_traces_and_a_drain_flushes_what_waits(tmp_path: Path) -> None:
    with (
        otlp_receiver() as collector,
        upstream(tmp_path) as origin,
        dataplane(tmp_path, users(origin.url), workers=2, DATAPLANE_OTLP_ENDPOINT=collector.url) as gateway,
    ):
        trace_ids = set()
        for _ in range(40):
            with httpx.Client() as client:  # a new connection each time, so either worker may take it
                response = client.get(f"{gateway.url}/v1/users/echo")
            assert response.status_code == 200
            trace_ids.add(received(response, "traceparent")[0].split("-")[1])
        # At once: the processor exports once a second, so most spans are still queued in the workers.
        gateway.process.send_signal(signal.SIGTERM)
        assert gateway.process.wait(timeout=30) == 0
        spans = collector.snapshot()
        assert {s.trace_id for s in spans if s.kind == SERVER} == trace_ids
        assert {s.resource["service.instance.id"] for s in spans} == {"e2e-node-w0", "e2e-node-w1"}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATAPLANE_TRACE_SAMPLE", "25"),
        ("DATAPLANE_TRACE_SAMPLE", "nan"),
        ("DATAPLANE_OTLP_ENDPOINT", "127.0.0.1:4318"),
    ],
)
def test_a_bad_tracing_setting_stops_the_start_naming_the_variable(name: str, value: str) -> None:
    env = clean_env(**{"DATAPLANE_OTLP_ENDPOINT": "http://127.0.0.1:4318", name: value})
    result = subprocess.run(
        [sys.executable, "-m", "dataplane"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert name in result.stderr


def test_a_websocket_tunnel_is_traced_and_its_upstream_gets_the_handshakes_client_span(tmp_path: Path) -> None:
    from websockets.sync.client import connect

    from tests.dataplane.ws_upstream import ws_upstream

    with (
        otlp_receiver() as collector,
        ws_upstream() as ws,
        dataplane(
            tmp_path,
            seed({"name": "chat", "version": "v1", "targets": [{"url": ws.url}]}),
            DATAPLANE_OTLP_ENDPOINT=collector.url,
        ) as gateway,
    ):
        with connect(
            f"ws://127.0.0.1:{gateway.port}/v1/chat/headers",
            additional_headers={"traceparent": f"00-{TRACE}-{PARENT}-01"},
            open_timeout=10,
        ) as client:
            seen = {name.lower(): value for name, value in json.loads(client.recv(timeout=10)).items()}
        _, trace_id, client_span_id, flags = seen["traceparent"].split("-")
        assert (trace_id, flags) == (TRACE, "01")
        spans = spans_of(collector, TRACE, 2)
        (server,) = [s for s in spans if s.kind == SERVER]
        (handshake,) = [s for s in spans if s.kind == CLIENT]
        assert handshake.span_id == client_span_id and handshake.parent_span_id == server.span_id
        assert server.attributes["http.response.status_code"] == 101 and server.parent_span_id == PARENT
