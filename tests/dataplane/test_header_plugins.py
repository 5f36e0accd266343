"""`request_headers`, `response_headers` and `preserve_host` (ARCHITECTURE §11) through the real proxy
app in-process (fake upstream): remove, then set, then add; every copy of a name whatever its case;
response rules on upstream and gateway-made answers alike; hostile config refused by validation with
the field's path."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

import httpx
import pytest

from configdoc import validate_document
from dataplane.plugins.headers import HeaderRules
from tests.dataplane.harness import Gateway, endpoint


def document(
    plugins: dict[str, Any] | None = None, *, everywhere: dict[str, Any] | None = None, **fields: Any
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "format_version": 2,
        "endpoints": [endpoint("users", default=True, **({"plugins": plugins} if plugins else {}), **fields)],
    }
    if everywhere is not None:
        data["plugins"] = everywhere
    canonical, problems = validate_document(data, max_format_version=2)
    assert problems == [], problems
    return canonical


def upstream_headers(request: httpx.Request) -> httpx.Response:
    """Echo the request's headers in order, and answer with a few of its own."""
    pairs = [[name.decode("latin-1"), value.decode("latin-1")] for name, value in request.headers.raw]
    return httpx.Response(
        200, json=pairs, headers=[("Server", "upstream/1.0"), ("X-Upstream", "a"), ("X-Upstream", "b")]
    )


def call(gateway: Gateway, path: str = "/users/x", **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=gateway.proxy, client=(kwargs.pop("peer", "127.0.0.1"), 5555))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
            return await client.request(kwargs.pop("method", "GET"), path, **kwargs)

    return asyncio.run(go())


def values(pairs: list[list[str]], name: str) -> list[str]:
    return [value for key, value in pairs if key.lower() == name.lower()]


def test_request_rules_remove_then_set_then_add() -> None:
    rules = {
        "remove": ["X-Debug", "Cookie"],
        "set": {"X-Env": "prod", "X-Tenant": "acme"},
        "add": {"X-Env": "extra", "X-Added": "1"},
    }
    gateway = Gateway(document({"request_headers": rules}), upstream_headers)
    sent = [
        ("X-Debug", "1"),
        ("x-debug", "2"),
        ("Cookie", "a=1"),
        ("X-Env", "client-says-dev"),
        ("X-ENV", "again"),
        ("X-Tenant", "evil"),
        ("X-Kept", "yes"),
    ]
    pairs = call(gateway, headers=sent).json()
    assert values(pairs, "x-debug") == [] and values(pairs, "cookie") == []
    assert values(pairs, "x-env") == ["prod", "extra"]  # set replaced the client's two, add came after
    assert values(pairs, "x-tenant") == ["acme"]
    assert values(pairs, "x-added") == ["1"]
    assert values(pairs, "x-kept") == ["yes"]
    # The gateway's own headers are still its own.
    assert values(pairs, "x-forwarded-for") == ["127.0.0.1"]
    assert values(pairs, "host") == ["127.0.0.1:8010"]


def test_remove_drops_every_copy_of_a_header_in_any_case() -> None:
    gateway = Gateway(document({"request_headers": {"remove": ["x-secret"]}}), upstream_headers)
    sent = [("X-Secret", "1"), ("x-secret", "2"), ("X-SECRET", "3"), ("X-Other", "4")]
    pairs = call(gateway, headers=sent).json()
    assert values(pairs, "x-secret") == []
    assert values(pairs, "x-other") == ["4"]


def test_response_rules_edit_the_upstreams_answer() -> None:
    rules = {"remove": ["Server"], "set": {"X-Upstream": "one", "Strict-Transport-Security": "max-age=60"}}
    gateway = Gateway(document({"response_headers": rules | {"add": {"X-Frame-Options": "DENY"}}}), upstream_headers)
    response = call(gateway)
    assert response.status_code == 200
    assert "server" not in response.headers
    assert response.headers.get_list("x-upstream") == ["one"]
    assert response.headers["strict-transport-security"] == "max-age=60"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-request-id"]  # the gateway's own stay


RESPONSE_RULES = {"response_headers": {"set": {"X-Policy": "on"}, "remove": ["Content-Type"]}}


def assert_ruled(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["x-policy"] == "on"
    assert "content-type" not in response.headers
    assert error in response.text


def test_response_rules_apply_to_gateway_made_answers() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    gateway = Gateway(document(RESPONSE_RULES), refuse)
    assert_ruled(call(gateway), 502, "upstream_unavailable")
    assert_ruled(call(gateway, method="DELETE"), 405, "method_not_allowed")

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("slow")

    assert_ruled(call(Gateway(document(RESPONSE_RULES), slow)), 504, "upstream_timeout")
    disabled = Gateway(document(RESPONSE_RULES, enabled=False), upstream_headers)
    assert_ruled(call(disabled), 503, "endpoint_disabled")


def test_response_rules_apply_to_an_ip_restriction_refusal() -> None:
    plugins = {**RESPONSE_RULES, "ip_restriction": {"allow": ["192.0.2.0/24"]}}
    gateway = Gateway(document(plugins), upstream_headers)
    assert_ruled(call(gateway, peer="198.51.100.1"), 403, "ip_forbidden")
    assert call(gateway, peer="192.0.2.1").headers["x-policy"] == "on"


def test_global_response_rules_apply_to_a_404_no_route() -> None:
    gateway = Gateway(document(everywhere=RESPONSE_RULES), upstream_headers)
    assert_ruled(call(gateway, "/nothing/here"), 404, "no_route")
    assert call(gateway).headers["x-policy"] == "on"


def test_an_endpoint_may_turn_a_global_response_rule_off() -> None:
    gateway = Gateway(document({"response_headers": {"enabled": False}}, everywhere=RESPONSE_RULES), upstream_headers)
    response = call(gateway)
    assert "x-policy" not in response.headers and response.headers["content-type"] == "application/json"


def test_values_are_latin1_bytes_compiled_once() -> None:
    rules = HeaderRules({"remove": ["X-A"], "set": {"X-Name": "caf\u00e9"}, "add": {"X-B": "2"}})
    assert rules.drop == frozenset({b"x-a", b"x-name"})
    assert rules.append == ((b"x-name", b"caf\xe9"), (b"x-b", b"2"))
    headers = [(b"x-a", b"1"), (b"x-name", b"old"), (b"x-c", b"3")]
    rules.apply(headers)
    assert headers == [(b"x-c", b"3"), (b"x-name", b"caf\xe9"), (b"x-b", b"2")]


# --- hostile config: refused by validation, with the field's path ------------------------------------


@pytest.mark.parametrize(
    ("plugin", "rules", "path", "words"),
    [
        ("request_headers", {"set": {"X-A": "a\r\nX-Injected: 1"}}, "set.X-A", "CR, LF"),
        ("request_headers", {"add": {"X-A": "a\nb"}}, "add.X-A", "CR, LF"),
        ("response_headers", {"set": {"X-A": "a\rb"}}, "set.X-A", "CR, LF"),
        ("request_headers", {"set": {"X-A": "a\x00b"}}, "set.X-A", "NUL"),
        ("response_headers", {"add": {"X-A": "\ud800"}}, "add.X-A", "surrogate"),
        ("request_headers", {"set": {"X-A": "x" * 9000}}, "set.X-A", "8192"),
        ("request_headers", {"set": {"X-A\r\nX-B": "v"}}, "set.X-A\\r\\nX-B", "not a valid header name"),
        ("request_headers", {"remove": ["Host"]}, "remove[0]", "preserve_host"),
        ("request_headers", {"set": {"X-Forwarded-For": "1.2.3.4"}}, "set.X-Forwarded-For", "gateway"),
        ("request_headers", {"add": {"X_Forwarded_For": "1.2.3.4"}}, "add.X_Forwarded_For", "gateway"),
        ("request_headers", {"set": {"x_real_ip": "1.2.3.4"}}, "set.x_real_ip", "gateway"),
        ("response_headers", {"remove": ["Transfer_Encoding"]}, "remove[0]", "hop-by-hop"),
        ("request_headers", {"set": {"X_Custom": "v"}}, None, None),
        ("response_headers", {"remove": ["Transfer-Encoding"]}, "remove[0]", "hop-by-hop"),
        ("response_headers", {"set": {"X-Request-ID": "forged"}}, "set.X-Request-ID", "gateway"),
    ],
)
def test_hostile_rules_are_validation_errors_naming_the_field(
    plugin: str, rules: dict[str, Any], path: str | None, words: str | None
) -> None:
    data = {"format_version": 2, "endpoints": [endpoint("users", plugins={plugin: rules})]}
    _, problems = validate_document(data, max_format_version=2)
    if path is None:
        # An underscore name is a valid token: only the spellings of protected names are refused.
        assert problems == []
        return
    assert problems, rules
    where = f"endpoints[0].plugins.{plugin}.{path}"
    assert [p.path for p in problems] == [where], problems
    assert words is not None and words in problems[0].message


# --- preserve_host ---------------------------------------------------------------------------------


def test_preserve_host_sends_the_clients_host_upstream() -> None:
    kept = Gateway(document(preserve_host=True), upstream_headers)
    pairs = call(kept, headers={"Host": "api.example.com"}).json()
    assert values(pairs, "host") == ["api.example.com"]
    assert values(pairs, "x-forwarded-host") == ["api.example.com"]
    plain = Gateway(document(), upstream_headers)
    assert values(call(plain, headers={"Host": "api.example.com"}).json(), "host") == ["127.0.0.1:8010"]


def test_preserve_host_is_a_typed_field_of_the_compiled_endpoint() -> None:
    kept = Gateway(document(preserve_host=True), upstream_headers)
    compiled = kept.runtime.snapshot.endpoints["users:v1"]  # type: ignore[union-attr]
    assert compiled.preserve_host is True
    assert all(target.host_header == b"" for target in compiled.targets)
    plain = Gateway(document(), upstream_headers).runtime.snapshot.endpoints["users:v1"]  # type: ignore[union-attr]
    assert plain.preserve_host is False
    assert plain.chain is None
    assert [target.host_header for target in plain.targets] == [b"127.0.0.1:8010"]


def test_with_a_trusted_proxy_and_rules_the_gateway_headers_still_hold() -> None:
    rules = {"request_headers": {"remove": ["X-Api-Version"], "add": {"X-Api-Version": "2"}}}
    gateway = Gateway(document(rules), upstream_headers, trusted_proxies=(ipaddress.ip_network("10.0.0.0/8"),))
    sent = [("X-Forwarded-For", "192.0.2.1"), ("X-Api-Version", "1")]
    pairs = call(gateway, headers=sent, peer="10.0.0.1").json()
    assert values(pairs, "x-forwarded-for") == ["192.0.2.1, 10.0.0.1"]
    assert values(pairs, "x-api-version") == ["2"]
