"""Breaker fallbacks, retries, failover, ejection and panic through the proxy, with a fake upstream."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from dataplane.breaker import State
from tests.dataplane.harness import Body, Gateway, document, endpoint

POLICY = {"name": "strict", "failure_threshold": 2, "reset_timeout": 60}


def get(gateway: Gateway, path: str, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        async with gateway.client() as client:
            return await client.get(path, **kwargs)

    return asyncio.run(go())


def failing(request: httpx.Request) -> httpx.Response:
    return httpx.Response(500, text="boom")


def test_an_open_circuit_answers_503_circuit_open_without_calling_the_upstream() -> None:
    gateway = Gateway(document(endpoint("users", default=True, breaker_policy="strict"), policies=[POLICY]), failing)
    assert [get(gateway, "/users").status_code for _ in range(2)] == [500, 500]
    response = get(gateway, "/users")
    assert response.status_code == 503
    assert response.json()["error"] == "circuit_open"
    assert response.headers["x-circuit-breaker"] == "open"
    assert response.headers["retry-after"] == "60"
    assert len(gateway.seen) == 2


def test_the_default_response_fallback_serves_the_policys_answer() -> None:
    policy = {
        **POLICY,
        "fallback_strategy": "default_response",
        "fallback": {"status": 200, "content_type": "application/json", "body": '{"items": []}'},
    }
    gateway = Gateway(document(endpoint("users", default=True, breaker_policy="strict"), policies=[policy]), failing)
    get(gateway, "/users")
    get(gateway, "/users")
    response = get(gateway, "/users")
    assert (response.status_code, response.text) == (200, '{"items": []}')
    assert response.headers["x-gateway-fallback"] == "default"
    assert response.headers["content-type"] == "application/json"


def test_the_cached_response_fallback_serves_the_last_good_answer_with_its_age() -> None:
    answers = iter([httpx.Response(200, text="fresh"), httpx.Response(500), httpx.Response(500)])
    policy = {**POLICY, "fallback_strategy": "cached_response"}
    gateway = Gateway(
        document(endpoint("users", default=True, breaker_policy="strict"), policies=[policy]), lambda r: next(answers)
    )
    assert get(gateway, "/users?page=1").text == "fresh"
    get(gateway, "/users?page=1")
    get(gateway, "/users?page=1")
    response = get(gateway, "/users?page=1")
    assert (response.status_code, response.text) == (200, "fresh")
    assert response.headers["x-gateway-fallback"] == "cached"
    assert response.headers["age"] == "0"


def test_the_cached_response_fallback_without_an_entry_answers_circuit_open() -> None:
    policy = {**POLICY, "fallback_strategy": "cached_response"}
    gateway = Gateway(document(endpoint("users", default=True, breaker_policy="strict"), policies=[policy]), failing)
    get(gateway, "/users")
    get(gateway, "/users")
    assert get(gateway, "/users?other").json()["error"] == "circuit_open"


def test_an_answer_to_a_request_with_authorization_is_never_served_from_the_cache() -> None:
    answers = iter([httpx.Response(200, text="alice's data"), httpx.Response(500), httpx.Response(500)])
    policy = {**POLICY, "fallback_strategy": "cached_response"}
    gateway = Gateway(
        document(endpoint("users", default=True, breaker_policy="strict"), policies=[policy]), lambda r: next(answers)
    )
    get(gateway, "/users/me", headers={"Authorization": "Bearer alice"})
    get(gateway, "/users/me")
    get(gateway, "/users/me")
    assert get(gateway, "/users/me").json()["error"] == "circuit_open"


def test_the_circuit_closes_again_after_successful_probes() -> None:
    statuses = iter([500, 500, 200, 200, 200])
    policy = {**POLICY, "reset_timeout": 1, "success_threshold": 2}
    gateway = Gateway(
        document(endpoint("users", default=True, breaker_policy="strict"), policies=[policy]),
        lambda r: httpx.Response(next(statuses)),
    )
    get(gateway, "/users")
    get(gateway, "/users")
    state = gateway.runtime.states["users:v1"]
    assert state.breaker.state is State.OPEN
    state.breaker._opened_at -= 1  # as if reset_timeout passed
    assert get(gateway, "/users").status_code == 200
    assert get(gateway, "/users").status_code == 200
    assert state.breaker.state is State.CLOSED


def test_a_connect_error_is_retried_on_the_other_target() -> None:
    def upstream(request: httpx.Request) -> httpx.Response:
        if request.url.port == 9001:
            raise httpx.ConnectError("refused")
        return httpx.Response(200, text=f"from {request.url.port}")

    doc = document(endpoint("users", "http://127.0.0.1:9001", "http://127.0.0.1:9002", default=True))
    gateway = Gateway(doc, upstream)
    assert {get(gateway, "/users").text for _ in range(4)} == {"from 9002"}


def test_a_post_is_not_retried_after_a_timeout() -> None:
    def upstream(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow")

    doc = document(
        endpoint("users", default=True, methods=["POST"], retries={"attempts": 3, "on": ["connect_error", "timeout"]})
    )
    gateway = Gateway(doc, upstream)

    async def go() -> httpx.Response:
        async with gateway.client() as client:
            return await client.post("/users", content=b"x")

    assert asyncio.run(go()).status_code == 504
    assert len(gateway.seen) == 1


def test_a_5xx_is_retried_when_configured_and_the_second_answer_is_returned() -> None:
    statuses = iter([503, 200])
    doc = document(endpoint("users", default=True, retries={"attempts": 2, "on": ["5xx"]}))
    gateway = Gateway(doc, lambda r: httpx.Response(next(statuses)))
    assert get(gateway, "/users").status_code == 200
    assert len(gateway.seen) == 2


def test_retries_on_lists_single_statuses_and_classes() -> None:
    doc = document(endpoint("users", default=True, retries={"attempts": 2, "on": [429, 503]}))
    for first, tries in ((429, 2), (503, 2), (502, 1), (404, 1)):
        statuses = iter([first, 200])
        gateway = Gateway(doc, lambda r, statuses=statuses: httpx.Response(next(statuses)))
        assert get(gateway, "/users").status_code == (200 if tries == 2 else first), first
        assert len(gateway.seen) == tries, first
    statuses = iter([409, 200])
    gateway = Gateway(
        document(endpoint("users", default=True, retries={"attempts": 2, "on": ["4xx"]})),
        lambda r: httpx.Response(next(statuses)),
    )
    assert get(gateway, "/users").status_code == 200


def test_a_503_storm_with_retries_does_not_multiply_upstream_load_beyond_the_budget() -> None:
    doc = document(
        endpoint("users", default=True, retries={"attempts": 3, "on": ["5xx"]}),
        policies=[{"name": "default", "failure_threshold": 1000}],
    )
    gateway = Gateway(doc, lambda r: httpx.Response(503))
    for _ in range(100):
        assert get(gateway, "/users").status_code == 503
    assert 100 < len(gateway.seen) <= 120


def test_a_failing_target_is_ejected_and_traffic_goes_to_the_others() -> None:
    def upstream(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500 if request.url.port == 9001 else 200)

    doc = document(
        endpoint(
            "users",
            "http://127.0.0.1:9001",
            "http://127.0.0.1:9002",
            default=True,
            outlier={"consecutive_failures": 2, "max_ejection_percent": 50},
        ),
        policies=[{"name": "default", "failure_threshold": 100}],
    )
    gateway = Gateway(doc, upstream)
    for _ in range(10):
        get(gateway, "/users")
    hits = [r.url.port for r in gateway.seen]
    assert hits.count(9001) == 2
    assert gateway.runtime.states["users:v1"].balancer.is_ejected(_target(gateway, 9001))


def _target(gateway: Gateway, port: int) -> Any:
    return next(t for t in gateway.runtime.states["users:v1"].endpoint.targets if t.url.endswith(str(port)))


def test_panic_routes_to_unhealthy_targets_and_says_so() -> None:
    doc = document(endpoint("users", default=True, health_check={"panic": True}))
    gateway = Gateway(doc, lambda r: httpx.Response(200))
    for state in gateway.runtime.states["users:v1"].balancer.states:
        state.healthy = False
    response = get(gateway, "/users")
    assert response.status_code == 200
    assert response.headers["x-gateway-panic"] == "1"


def test_an_upstream_failing_mid_body_leaves_the_response_incomplete() -> None:
    gateway = Gateway(
        document(endpoint("users", default=True)),
        lambda r: httpx.Response(200, headers={"content-length": "100"}, stream=Body(b"x" * 10, fail_after=True)),
    )
    messages: list[dict[str, Any]] = []

    async def go() -> None:
        scope = {
            "type": "http",
            "method": "GET",
            "path": "/users",
            "raw_path": b"/users",
            "query_string": b"",
            "headers": [(b"host", b"gw.test")],
            "scheme": "http",
            "client": ("127.0.0.1", 5000),
        }

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            messages.append(message)

        await gateway.proxy(scope, receive, send)

    asyncio.run(go())
    assert messages[0]["status"] == 200
    assert all(m.get("more_body", False) for m in messages[1:])  # never completed: uvicorn drops the connection
    assert b"error" not in b"".join(m.get("body", b"") for m in messages[1:])


def test_metrics_show_an_ejection_ending_and_an_open_circuit_ready_to_probe() -> None:
    gateway = Gateway(document(endpoint("users", default=True, breaker_policy="strict"), policies=[POLICY]), failing)
    get(gateway, "/users")
    get(gateway, "/users")
    state = gateway.runtime.states["users:v1"]
    gateway.runtime.refresh_gauges()
    assert 'gateway_circuit_state{endpoint="users:v1"} 1.0' in gateway.runtime.metrics.render().decode()
    state.breaker._opened_at -= 60
    gateway.runtime.refresh_gauges()
    assert 'gateway_circuit_state{endpoint="users:v1"} 2.0' in gateway.runtime.metrics.render().decode()
    assert state.breaker._state is State.OPEN  # a scrape never moves the circuit


def test_a_head_answer_is_never_cached_for_a_later_get() -> None:
    answers = iter([httpx.Response(200, text=""), httpx.Response(500), httpx.Response(500)])
    policy = {**POLICY, "fallback_strategy": "cached_response"}
    gateway = Gateway(
        document(endpoint("users", default=True, breaker_policy="strict"), policies=[policy]), lambda r: next(answers)
    )

    async def head() -> None:
        async with gateway.client() as client:
            await client.head("/users")

    asyncio.run(head())
    get(gateway, "/users")
    get(gateway, "/users")
    assert get(gateway, "/users").json()["error"] == "circuit_open"
