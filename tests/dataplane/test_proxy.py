"""The proxy's answers (ARCHITECTURE §5), in-process with a fake upstream."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from tests.dataplane.harness import Gateway, document, endpoint, ok


def get(gateway: Gateway, path: str, **kwargs: Any) -> httpx.Response:
    return request(gateway, "GET", path, **kwargs)


def request(gateway: Gateway, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        async with gateway.client() as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


def test_a_request_is_forwarded_to_the_target_base_path_plus_the_rest() -> None:
    gateway = Gateway(document(endpoint("users", "http://127.0.0.1:8010/api", default=True)), ok)
    response = get(gateway, "/users/42/profile")
    assert response.status_code == 200
    assert str(gateway.seen[0].url) == "http://127.0.0.1:8010/api/42/profile"


def test_the_versioned_route_key_is_stripped_too() -> None:
    gateway = Gateway(document(endpoint("users", "http://127.0.0.1:8010/api")), ok)
    get(gateway, "/v1/users/42")
    assert gateway.seen[0].url.raw_path == b"/api/42"


def test_the_query_string_is_forwarded_byte_for_byte() -> None:
    gateway = Gateway(document(endpoint("users", "http://127.0.0.1:8010/", default=True)), ok)
    get(gateway, "/users/x?b=2&a=1&a=%20&empty=&flag")
    assert gateway.seen[0].url.raw_path == b"/x?b=2&a=1&a=%20&empty=&flag"


def test_an_encoded_slash_is_never_decoded() -> None:
    gateway = Gateway(document(endpoint("files", "http://127.0.0.1:8010/", default=True)), ok)
    get(gateway, "/files/a%2Fb")
    assert gateway.seen[0].url.raw_path == b"/a%2Fb"


def test_an_extra_path_is_stripped_when_strip_path_is_on() -> None:
    gateway = Gateway(document(endpoint("users", "http://127.0.0.1:8010/svc", paths=["/api/people"])), ok)
    get(gateway, "/api/people/7")
    assert gateway.seen[0].url.raw_path == b"/svc/7"


def test_an_extra_path_is_kept_when_strip_path_is_off() -> None:
    gateway = Gateway(
        document(endpoint("users", "http://127.0.0.1:8010/svc", paths=["/api/people"], strip_path=False)), ok
    )
    get(gateway, "/api/people/7")
    assert gateway.seen[0].url.raw_path == b"/svc/api/people/7"


def test_a_mount_prefix_is_part_of_every_route() -> None:
    gateway = Gateway(document(endpoint("users", default=True)), ok, mount_prefix="/orchestrator")
    assert get(gateway, "/orchestrator/users/1").status_code == 200
    assert get(gateway, "/users/1").json()["error"] == "no_route"


def test_the_upstream_host_header_is_the_targets_and_the_clients_goes_in_x_forwarded_host() -> None:
    gateway = Gateway(document(endpoint("users", "http://127.0.0.1:8010/api", default=True)), ok)
    get(gateway, "/users")
    sent = gateway.seen[0].headers
    assert sent["host"] == "127.0.0.1:8010"
    assert sent["x-forwarded-host"] == "gw.test"
    assert sent["x-forwarded-proto"] == "http"
    assert sent["x-forwarded-for"] == "127.0.0.1"
    assert sent["via"] == "1.1 node-a"


def test_forwarded_headers_from_an_untrusted_client_are_replaced() -> None:
    gateway = Gateway(document(endpoint("users", default=True)), ok)
    get(
        gateway,
        "/users",
        headers={"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Host": "evil", "X-Forwarded-Proto": "https"},
    )
    sent = gateway.seen[0].headers
    assert sent["x-forwarded-for"] == "127.0.0.1"
    assert sent["x-forwarded-host"] == "gw.test"
    assert sent["x-forwarded-proto"] == "http"


def test_forwarded_headers_from_a_trusted_proxy_are_kept_and_appended_to() -> None:
    import ipaddress

    gateway = Gateway(
        document(endpoint("users", default=True)), ok, trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),)
    )
    get(gateway, "/users", headers={"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"})
    sent = gateway.seen[0].headers
    assert sent["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert sent["x-forwarded-proto"] == "https"


def test_an_absolute_form_targets_authority_the_server_passes_on_is_the_forwarded_host() -> None:
    gateway = Gateway(document(endpoint("users", default=True)), ok)
    # The scope the server builds for `GET http://public.example:8443/users/1 HTTP/1.1` + `Host: other`.
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": "/users/1", "raw_path": b"/users/1", "query_string": b"", "root_path": "",
        "headers": [(b"host", b"other.example")], "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8080),
        "authority": b"public.example:8443",
    }  # fmt: skip
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(gateway.proxy(scope, receive, send))
    assert sent[0]["status"] == 200
    assert gateway.seen[0].headers["x-forwarded-host"] == "public.example:8443"


def test_hop_by_hop_headers_are_removed_both_ways_and_end_to_end_ones_pass() -> None:
    def upstream(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Connection": "X-Secret", "X-Secret": "1", "Keep-Alive": "5", "X-Up": "y"})

    gateway = Gateway(document(endpoint("users", default=True)), upstream)
    response = get(
        gateway,
        "/users",
        headers={
            "Connection": "X-Drop",
            "X-Drop": "1",
            "TE": "trailers",
            "Proxy-Authorization": "x",
            "Authorization": "Bearer t",
        },
    )
    sent = gateway.seen[0].headers
    assert "x-drop" not in sent and "te" not in sent and "proxy-authorization" not in sent
    assert sent["authorization"] == "Bearer t"
    assert "x-secret" not in response.headers and "keep-alive" not in response.headers
    assert response.headers["x-up"] == "y"


def test_responses_carry_request_endpoint_and_timing_headers() -> None:
    gateway = Gateway(document(endpoint("users", default=True)), ok)
    response = get(gateway, "/users", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    assert gateway.seen[0].headers["x-request-id"] == "abc-123"
    assert response.headers["x-endpoint-id"] == "users:v1"
    assert response.headers["x-response-time"].endswith("ms")


def test_a_malformed_request_id_is_replaced_with_a_generated_one() -> None:
    gateway = Gateway(document(endpoint("users", default=True)), ok)
    response = get(gateway, "/users", headers={"X-Request-ID": "bad id with spaces"})
    assert response.headers["x-request-id"] != "bad id with spaces"
    assert len(response.headers["x-request-id"]) == 32


def test_the_response_time_header_can_be_hidden() -> None:
    gateway = Gateway(document(endpoint("users", default=True)), ok, hide_response_time=True)
    assert "x-response-time" not in get(gateway, "/users").headers


def test_redirects_are_passed_back_not_followed() -> None:
    gateway = Gateway(
        document(endpoint("users", default=True)), lambda r: httpx.Response(302, headers={"Location": "/elsewhere"})
    )
    response = get(gateway, "/users")
    assert response.status_code == 302
    assert response.headers["location"] == "/elsewhere"
    assert len(gateway.seen) == 1


def test_an_encoded_body_is_passed_through_as_bytes() -> None:
    import gzip

    payload = gzip.compress(b"hello " * 100)
    gateway = Gateway(
        document(endpoint("users", default=True)),
        lambda r: httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=payload),
    )

    async def go() -> bytes:
        async with gateway.client() as client, client.stream("GET", "/users") as response:
            assert response.headers["content-encoding"] == "gzip"
            return b"".join([chunk async for chunk in response.aiter_raw()])

    assert asyncio.run(go()) == payload


def test_upstream_error_statuses_pass_through_unchanged() -> None:
    gateway = Gateway(document(endpoint("users", default=True)), lambda r: httpx.Response(418, text="teapot"))
    response = get(gateway, "/users")
    assert (response.status_code, response.text) == (418, "teapot")


def test_a_request_body_reaches_the_upstream() -> None:
    gateway = Gateway(
        document(endpoint("users", default=True, methods=["POST"])),
        lambda r: httpx.Response(201, content=r.read()),
    )
    response = request(gateway, "POST", "/users", content=b'{"name": "ada"}')
    assert (response.status_code, response.content) == (201, b'{"name": "ada"}')


# --- the §5 table --------------------------------------------------------------------------------


def error_of(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = json.loads(response.content)
    assert set(body) == {"error", "message", "request_id", "endpoint"}
    assert body["request_id"] == response.headers["x-request-id"]
    return body


def test_no_config_answers_503_no_config() -> None:
    gateway = Gateway(None, ok)
    response = get(gateway, "/users")
    assert response.status_code == 503
    assert error_of(response)["error"] == "no_config"


def test_an_unknown_path_answers_404_no_route() -> None:
    gateway = Gateway(document(endpoint("users", default=True)), ok)
    response = get(gateway, "/usersx")
    assert response.status_code == 404
    assert error_of(response) | {"request_id": None} == {
        "error": "no_route",
        "message": "no endpoint serves this path",
        "request_id": None,
        "endpoint": None,
    }


def test_a_dot_segment_answers_400_and_closes_the_connection() -> None:
    gateway = Gateway(document(endpoint("users", default=True)), ok)
    response = get(gateway, "/users/%2e%2e/admin")
    assert response.status_code == 400
    assert response.headers["connection"] == "close"
    assert error_of(response)["error"] == "bad_request"
    assert gateway.seen == []


def test_a_method_the_endpoint_does_not_allow_answers_405_with_allow() -> None:
    gateway = Gateway(document(endpoint("users", default=True, methods=["GET", "POST"])), ok)
    response = request(gateway, "DELETE", "/users/1")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD, POST"
    body = error_of(response)
    assert (body["error"], body["endpoint"]) == ("method_not_allowed", "users:v1")


def test_head_is_allowed_wherever_get_is() -> None:
    gateway = Gateway(document(endpoint("users", default=True)), ok)
    assert request(gateway, "HEAD", "/users").status_code == 200


def test_a_disabled_endpoint_answers_503_endpoint_disabled() -> None:
    gateway = Gateway(document(endpoint("users", default=True, enabled=False)), ok)
    response = get(gateway, "/users")
    assert response.status_code == 503
    assert error_of(response)["error"] == "endpoint_disabled"


def test_a_body_over_the_limit_answers_413() -> None:
    gateway = Gateway(document(endpoint("users", default=True, methods=["POST"], max_body_bytes=10)), ok)
    response = request(gateway, "POST", "/users", content=b"x" * 11)
    assert response.status_code == 413
    assert error_of(response)["error"] == "body_too_large"
    assert gateway.seen == []


def test_over_the_concurrency_cap_answers_503_overloaded() -> None:
    gateway = Gateway(document(endpoint("users", default=True)), ok, max_concurrency=1)
    gateway.runtime.in_flight = 1
    response = get(gateway, "/users")
    assert response.status_code == 503
    assert error_of(response)["error"] == "overloaded"


def test_no_enabled_target_answers_503_with_retry_after() -> None:
    doc = document({"name": "users", "version": "v1", "targets": [{"url": "http://127.0.0.1:8010", "enabled": False}]})
    gateway = Gateway(doc, ok)
    response = get(gateway, "/v1/users")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert error_of(response)["error"] == "no_healthy_target"


def test_a_refused_connection_answers_502_upstream_unavailable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    gateway = Gateway(document(endpoint("users", default=True)), refuse)
    response = get(gateway, "/users")
    assert response.status_code == 502
    assert error_of(response)["error"] == "upstream_unavailable"


def test_garbage_from_the_upstream_answers_502_upstream_protocol_error() -> None:
    def garbage(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("illegal status line")

    gateway = Gateway(document(endpoint("users", default=True)), garbage)
    response = get(gateway, "/users")
    assert response.status_code == 502
    assert error_of(response)["error"] == "upstream_protocol_error"


def test_a_connect_timeout_answers_504_upstream_timeout() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out")

    gateway = Gateway(document(endpoint("users", default=True, retries={"attempts": 1})), slow)
    response = get(gateway, "/users")
    assert response.status_code == 504
    assert error_of(response)["error"] == "upstream_timeout"


def test_a_request_that_already_passed_this_node_answers_508() -> None:
    gateway = Gateway(document(endpoint("users", default=True)), ok)
    response = get(gateway, "/users", headers={"Via": "1.1 other, 1.1 node-a"})
    assert response.status_code == 508
    assert error_of(response)["error"] == "loop_detected"


def test_an_upgrade_request_answers_501() -> None:
    gateway = Gateway(document(endpoint("users", default=True)), ok)
    response = get(gateway, "/users", headers={"Connection": "Upgrade", "Upgrade": "websocket"})
    assert response.status_code == 501
    assert error_of(response)["error"] == "upgrade_not_supported"


def test_a_uri_over_8_kib_answers_414() -> None:
    gateway = Gateway(document(endpoint("users", default=True)), ok)
    response = get(gateway, "/users?" + "a" * 9000)
    assert response.status_code == 414
    assert error_of(response)["error"] == "uri_too_long"


def test_a_header_block_over_32_kib_answers_431() -> None:
    gateway = Gateway(document(endpoint("users", default=True)), ok)
    response = get(gateway, "/users", headers={f"x-h{i}": "v" * 1000 for i in range(40)})
    assert response.status_code == 431
    assert error_of(response)["error"] == "headers_too_large"


def stalled_upload(gateway: Gateway, length: int, sent: bytes = b"") -> list[dict[str, Any]]:
    """POST /users announcing `length` bytes, of which the client sends `sent` and then nothing more;
    the messages the gateway sends back."""
    messages: list[dict[str, Any]] = []

    async def go() -> None:
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/users",
            "raw_path": b"/users",
            "query_string": b"",
            "headers": [(b"host", b"gw.test"), (b"content-length", str(length).encode())],
            "scheme": "http",
            "client": ("127.0.0.1", 5000),
        }
        parts = [{"type": "http.request", "body": sent, "more_body": True}] if sent else []
        stalled = asyncio.Event()

        async def receive() -> dict[str, Any]:
            if parts:
                return parts.pop()
            await stalled.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            messages.append(message)

        await gateway.proxy(scope, receive, send)

    asyncio.run(go())
    return messages


def test_a_request_body_that_stalls_answers_408_and_closes() -> None:
    gateway = Gateway(document(endpoint("users", default=True, methods=["POST"])), ok)
    gateway.proxy.body_stall_timeout = 0.05
    messages = stalled_upload(gateway, 10)
    assert messages[0]["status"] == 408
    assert (b"connection", b"close") in messages[0]["headers"]
    assert json.loads(messages[1]["body"])["error"] == "request_timeout"
    assert gateway.seen == []


def test_a_streamed_upload_that_stalls_answers_408_and_is_no_fault_of_the_target() -> None:
    doc = document(endpoint("users", default=True, methods=["POST"], timeout=1, connect_timeout=1))
    gateway = Gateway(doc, ok)
    gateway.proxy.body_stall_timeout = 1.3  # longer than the endpoint's timeout: the client's stall still wins
    messages = stalled_upload(gateway, 200_000, b"x" * 100_000)
    assert messages[0]["status"] == 408
    assert json.loads(messages[1]["body"])["error"] == "request_timeout"
    state = gateway.runtime.states["users:v1"]
    assert [target.consecutive_failures for target in state.balancer.states] == [0]
    assert state.breaker.state.value == "closed"


def test_gateway_errors_are_counted_by_endpoint_and_code() -> None:
    gateway = Gateway(document(endpoint("users", default=True, enabled=False)), ok)
    get(gateway, "/users")
    text = gateway.runtime.metrics.render().decode()
    assert 'gateway_errors_total{endpoint="users:v1",error="endpoint_disabled"} 1.0' in text
    assert 'gateway_requests_total{endpoint="users:v1",method="GET",status_class="5xx"} 1.0' in text
