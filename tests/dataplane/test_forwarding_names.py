"""The upstream request headers (forwarding.Forwarding.upstream_headers) decide what to do with a header
by looking its name up in a table; names not in the fixed table are learned, up to LEARNED_NAMES. These
tests hold the decisions to what §5 says whether a name was learned, was not (the table full), or comes
listed in `Connection`."""

from __future__ import annotations

import ipaddress

from dataplane.exchange import Exchange
from dataplane.forwarding import LEARNED_NAMES, Forwarding
from dataplane.settings import Settings
from dataplane.snapshot import Target

TARGET = Target("http://up:8080", "http", "up:8080", "http://up:8080", "", 1, True, b"up:8080")
ATTACKS = [
    (b"x_forwarded_for", b"6.6.6.6"),
    (b"x-forwarded-for", b"6.6.6.7"),
    (b"x-forwarded-port", b"1"),
    (b"forwarded", b"for=6.6.6.8"),
    (b"x-real-ip", b"6.6.6.9"),
    (b"x-consumer-username", b"admin"),
    (b"x-request-id", b"mine"),
    (b"proxy-authorization", b"Basic eA=="),
    (b"proxy-anything", b"1"),
    (b"keep-alive", b"5"),
    (b"te", b"trailers"),
]


Headers = list[tuple[bytes, bytes]]


def upstream(forwarding: Forwarding, headers: Headers, peer: str = "192.0.2.1") -> Headers:
    scope = {"type": "http", "method": "GET", "scheme": "http", "client": (peer, 5000)}
    scope["headers"] = [(b"host", b"gw"), *headers]
    exchange = Exchange(scope, None, None, 0.0)  # type: ignore[arg-type]
    exchange.request_id = "rid"
    return forwarding.upstream_headers(exchange, TARGET)


def expected_untrusted(kept: Headers) -> Headers:
    return [
        *kept,
        (b"x-forwarded-for", b"192.0.2.1"),
        (b"x-forwarded-proto", b"http"),
        (b"x-forwarded-host", b"gw"),
        (b"via", b"1.1 n"),
        (b"x-request-id", b"rid"),
        (b"host", b"up:8080"),
    ]


def test_the_same_answer_before_and_after_the_names_are_learned_and_with_the_table_full() -> None:
    forwarding = Forwarding(Settings(node_id="n"))
    fixed = len(forwarding.kinds)
    headers = [(b"x-kept", b"1"), *ATTACKS, (b"accept", b"*/*")]
    want = expected_untrusted([(b"x-kept", b"1"), (b"accept", b"*/*")])
    assert upstream(forwarding, headers) == want  # first sight: classified, then learned
    assert upstream(forwarding, headers) == want  # from the table
    # A client sending ever new names fills the table to its bound and no further...
    for number in range(LEARNED_NAMES + 500):
        assert upstream(forwarding, [(b"x-n%d" % number, b"v")]) == expected_untrusted([(b"x-n%d" % number, b"v")])
    assert len(forwarding.kinds) == fixed + LEARNED_NAMES
    # ...and names it has not learned are still decided right, each time.
    unseen = [(b"x-unseen", b"1"), (b"x-forwarded-unseen", b"2"), (b"x_unseen", b"3"), (b"proxy-unseen", b"4")]
    assert upstream(forwarding, unseen) == expected_untrusted([(b"x-unseen", b"1")])
    assert upstream(forwarding, unseen) == expected_untrusted([(b"x-unseen", b"1")])


def test_names_listed_in_connection_are_dropped_whatever_the_table_says() -> None:
    forwarding = Forwarding(Settings(node_id="n"))
    upstream(forwarding, [(b"x-secret", b"0"), (b"x-kept", b"0")])  # both learned as forwarded
    headers = [(b"x-secret", b"1"), (b"connection", b"close, X-Secret"), (b"x-kept", b"2")]
    assert upstream(forwarding, headers) == expected_untrusted([(b"x-kept", b"2")])
    # The next request without Connection forwards the name again.
    assert upstream(forwarding, [(b"x-secret", b"3")]) == expected_untrusted([(b"x-secret", b"3")])


def test_a_trusted_proxy_keeps_its_forwarded_headers_and_still_loses_underscores() -> None:
    forwarding = Forwarding(Settings(node_id="n", trusted_proxies=(ipaddress.ip_network("10.0.0.0/8"),)))
    got = upstream(forwarding, [*ATTACKS, (b"x-forwarded-proto", b"https")], peer="10.0.0.2")
    assert (b"x-forwarded-port", b"1") in got and (b"forwarded", b"for=6.6.6.8") in got
    assert (b"x-real-ip", b"6.6.6.9") in got and (b"x-forwarded-for", b"6.6.6.7, 10.0.0.2") in got
    assert (b"x-forwarded-proto", b"https") in got
    names = [name for name, _ in got]
    for dropped in (b"x_forwarded_for", b"x-consumer-username", b"proxy-authorization", b"keep-alive", b"te"):
        assert dropped not in names
    assert names.count(b"x-request-id") == 1 and (b"x-request-id", b"rid") in got


def test_tracing_on_drops_the_clients_traceparent_even_once_learned_without_tracing() -> None:
    plain, traced = Forwarding(Settings(node_id="n")), Forwarding(Settings(node_id="n"), tracing=True)
    headers = [(b"traceparent", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01")]
    assert upstream(plain, headers) == expected_untrusted(headers)
    assert upstream(traced, headers) == expected_untrusted([])
