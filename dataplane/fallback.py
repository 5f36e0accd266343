"""What an open circuit answers (ARCHITECTURE §6): the policy's `default_response`, the cached answer
(`cached_response`, when there is one), else 503 `circuit_open`."""

from __future__ import annotations

from .errors import CircuitOpen
from .exchange import Exchange
from .plugins import Answer
from .runtime import EndpointState
from .types import Scope


def cache_key(scope: Scope) -> bytes:
    """The response cache's key: raw path + query, as the client sent them."""
    return (scope.get("raw_path") or b"").split(b"?", 1)[0] + b"?" + (scope.get("query_string") or b"")


def fallback(exchange: Exchange, state: EndpointState) -> Answer:
    """The answer to send instead of calling the upstream; raises CircuitOpen for `error_response`."""
    policy = state.endpoint.breaker
    strategy = policy.fallback_strategy
    if strategy == "default_response":
        fallback = policy.fallback
        headers = [
            (b"content-type", fallback.content_type),
            (b"content-length", str(len(fallback.body)).encode()),
            (b"x-gateway-fallback", b"default"),
        ]
        return Answer(fallback.status, headers, fallback.body, error=CircuitOpen.code)
    scope = exchange.scope
    if strategy == "cached_response" and state.cache is not None:
        found = state.cache.lookup(cache_key(scope), scope["headers"])
        if found is not None and state.cache.request_cacheable(exchange.method, scope["headers"]):
            cached, age = found
            headers = [(n, v) for n, v in cached.headers if n != b"age"]
            headers += [(b"x-gateway-fallback", b"cached"), (b"age", str(age).encode())]
            body = b"" if exchange.method == "HEAD" else cached.body
            return Answer(cached.status, headers, body, error=CircuitOpen.code)
    raise CircuitOpen(
        "the circuit breaker of this endpoint is open",
        headers=[
            (b"retry-after", str(state.breaker.retry_after()).encode()),
            (b"x-circuit-breaker", b"open"),
        ],
    )
