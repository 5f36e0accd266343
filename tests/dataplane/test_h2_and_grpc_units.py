"""Unit checks of the pure parts of HTTP/2 and gRPC (h2server.py, grpc.py): the request-head rules of
RFC 9113 §8.2-8.3, the flood budget, grpc-timeout parsing and the gateway-error mapping. The protocol
itself is tested on real processes (tests/e2e/test_dataplane_http2*.py, test_dataplane_grpc.py)."""

from __future__ import annotations

import pytest

from dataplane.grpc import failed, grpc_answer, grpc_message, grpc_status_of, is_grpc, parse_timeout
from dataplane.h2server import Budget, Malformed, request_head

BASE = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"api.test"), (b":path", b"/a?b=1")]


def test_a_well_formed_head_splits_into_pseudo_headers_and_fields() -> None:
    pseudo, fields = request_head([*BASE, (b"accept", b"*/*"), (b"te", b"trailers")])
    assert pseudo[b":path"] == b"/a?b=1" and pseudo[b":authority"] == b"api.test"
    assert fields == [(b"accept", b"*/*"), (b"te", b"trailers")]


@pytest.mark.parametrize(
    "headers",
    [
        [*BASE, (b"connection", b"close")],
        [*BASE, (b"transfer-encoding", b"chunked")],
        [*BASE, (b"te", b"gzip")],
        [*BASE, (b"Accept", b"x")],
        [*BASE, (b"x-a", b"line\r\nbreak")],
        [*BASE, (b"x-a", b" lead")],
        [*BASE, (b":protocol", b"websocket")],
        [BASE[0], (b"x-a", b"b"), *BASE[1:]],
        [*BASE, (b":path", b"/twice")],
        BASE[1:],
        [*BASE[:3], (b":path", b"relative")],
        [(b":method", b"CONNECT"), (b":authority", b"api.test:443")],
    ],
    ids=[
        "connection",
        "transfer-encoding",
        "te-gzip",
        "uppercase",
        "crlf-in-value",
        "leading-space",
        "extended-connect",
        "pseudo-after-field",
        "repeated-path",
        "no-method",
        "relative-path",
        "connect",
    ],
)
def test_a_malformed_head_is_refused(headers: list[tuple[bytes, bytes]]) -> None:
    with pytest.raises(Malformed):
        request_head(headers)


def test_options_star_is_a_valid_path() -> None:
    pseudo, _ = request_head([(b":method", b"OPTIONS"), (b":scheme", b"http"), (b":path", b"*")])
    assert pseudo[b":path"] == b"*"


def test_a_budget_allows_its_burst_then_refills_with_time() -> None:
    now = [0.0]
    budget = Budget(3, 2, lambda: now[0])
    assert [budget.spend() for _ in range(4)] == [True, True, True, False]
    now[0] += 0.5  # one token back at 2 a second
    assert budget.spend() and not budget.spend()


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(b"100m", 0.1), (b"5S", 5.0), (b"2M", 120.0), (b"1H", 3600.0), (b"250u", 0.00025), (b"7n", 7e-9)],
)
def test_grpc_timeout_values_parse(value: bytes, seconds: float) -> None:
    assert parse_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [b"", b"S", b"10", b"1x", b"-1S", b"123456789S", b"1.5S"])
def test_a_malformed_grpc_timeout_is_ignored(value: bytes) -> None:
    assert parse_timeout(value) is None


def test_gateway_errors_map_to_the_grpc_statuses_clients_expect() -> None:
    assert [grpc_status_of(s) for s in (401, 403, 429, 404, 502, 503, 504, 499, 400, 418)] == [
        16,
        7,
        8,
        12,
        14,
        14,
        4,
        1,
        13,
        2,
    ]


def test_a_gateway_answer_becomes_trailers_only_with_the_message_encoded() -> None:
    status, headers = grpc_answer(429, [(b"content-type", b"application/json"), (b"retry-after", b"3")], "slow down ü")
    assert status == 200
    assert (b"content-type", b"application/grpc") in headers and (b"retry-after", b"3") in headers
    assert (b"grpc-status", b"8") in headers
    assert (b"grpc-message", b"slow down %C3%BC") in headers
    assert grpc_message("100%") == b"100%25"


def test_only_http2_requests_with_a_grpc_content_type_are_grpc() -> None:
    grpc_headers = [(b"content-type", b"application/grpc+proto")]
    assert is_grpc({"http_version": "2", "headers": grpc_headers})
    assert not is_grpc({"http_version": "1.1", "headers": grpc_headers})
    assert not is_grpc({"http_version": "2", "headers": [(b"content-type", b"application/json")]})


def test_the_breaker_counts_upstream_failures_not_client_mistakes() -> None:
    assert failed(None) and failed(14) and failed(4) and failed(13)
    assert not failed(0) and not failed(3) and not failed(5) and not failed(16)
