"""The `cors` plugin (ARCHITECTURE §11) through the real proxy app, in-process, with a fake upstream:
preflights, allowed and refused origins, the headers on every answer (the upstream's and the
gateway's own), and hostile requests (a duplicated Origin, odd spellings, `null`, very long values,
methods and headers a preflight may not ask for). Chunked trailers are the server's concern (it drops
them before the app): tests/e2e/test_dataplane_cors.py sends one over a socket."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from configdoc import validate_document
from configdoc.plugins import PLUGINS, PluginSpec, effective_plugin_config
from configdoc.schema import Field
from dataplane.breaker import State
from dataplane.errors import GatewayError
from dataplane.exchange import Exchange
from dataplane.plugins import NO_CONTEXT, REGISTRY, Answer, Phase, Plugin
from dataplane.plugins.cors import Cors, add_vary_origin
from dataplane.snapshot import compile_document
from tests.dataplane.harness import Gateway

APP = "https://app.example.com"
EVIL = "https://evil.example"


def cors_document(cors: dict[str, Any] | None, *, everywhere: dict[str, Any] | None = None, **fields: Any) -> Any:
    """A format-2 document, validated as the control plane would: endpoint `users` (the default
    route) with `cors` as its plugin config, and `everywhere` as the document's global plugins."""
    endpoint: dict[str, Any] = {
        "name": "users",
        "version": "v1",
        "default": True,
        "methods": ["GET", "POST", "PUT"],
        "targets": [{"url": "http://127.0.0.1:8010/api"}],
        **fields,
    }
    if cors is not None:
        endpoint["plugins"] = {"cors": cors}
    data: dict[str, Any] = {"format_version": 2, "endpoints": [endpoint]}
    if everywhere is not None:
        data["plugins"] = everywhere
    canonical, problems = validate_document(data, max_format_version=2)
    assert problems == [], problems
    return canonical


def upstream(request: httpx.Request) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if request.url.path.endswith("/vary"):
        headers["vary"] = "Accept-Encoding"
    if request.url.path.endswith("/own-cors"):
        headers["access-control-allow-origin"] = "*"
        headers["access-control-allow-credentials"] = "false"
    return httpx.Response(200, headers=headers, json={"path": request.url.path})


def call(gateway: Gateway, method: str, path: str, headers: list[tuple[str, str]] | None = None) -> httpx.Response:
    async def go() -> httpx.Response:
        async with gateway.client() as client:
            return await client.request(method, path, headers=headers or [])

    return asyncio.run(go())


def preflight(origin: str = APP, method: str = "PUT", asked: str | None = None) -> list[tuple[str, str]]:
    headers = [("Origin", origin), ("Access-Control-Request-Method", method)]
    if asked is not None:
        headers.append(("Access-Control-Request-Headers", asked))
    return headers


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {name: value for name, value in response.headers.items() if name.startswith("access-control-")}


EXACT = {"origins": [APP, "http://localhost:3000"], "methods": ["GET", "POST", "PUT"], "headers": ["X-Custom"]}
CREDENTIALED = {**EXACT, "credentials": True, "expose_headers": ["X-Request-ID", "ETag"], "max_age": 120}


@pytest.fixture
def gateway() -> Gateway:
    return Gateway(cors_document(CREDENTIALED), upstream)


# --- the plugin and its place in the chain ------------------------------------------------------


def test_cors_is_registered_early_after_ip_restrictions_priority() -> None:
    plugin = REGISTRY["cors"](effective_plugin_config("cors", {}), NO_CONTEXT)
    assert isinstance(plugin, Cors) and plugin.phase is Phase.EARLY and plugin.priority == 200
    chain = compile_document(cors_document({})).endpoints["users:v1"].chain
    assert chain is not None and [each.name for each in chain.early] == ["cors"]
    assert [each.name for each in chain.response] == ["cors"]


# --- preflights ---------------------------------------------------------------------------------


def test_a_preflight_from_an_allowed_origin_is_answered_here_with_every_header(gateway: Gateway) -> None:
    response = call(gateway, "OPTIONS", "/users/items", preflight(asked="x-custom"))
    assert response.status_code == 204 and response.content == b""
    assert cors_headers(response) == {
        "access-control-allow-origin": APP,
        "access-control-allow-methods": "GET, POST, PUT",
        "access-control-allow-headers": "X-Custom",
        "access-control-allow-credentials": "true",
        "access-control-max-age": "120",
    }
    assert response.headers.get_list("vary") == [
        "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
    ]
    assert response.headers["x-endpoint-id"] == "users:v1" and response.headers["x-request-id"]
    assert gateway.seen == []  # never upstream


def test_a_preflight_comes_before_the_method_check_and_a_disabled_endpoint() -> None:
    """OPTIONS is not among the endpoint's methods, and the endpoint is disabled: still answered."""
    gateway = Gateway(cors_document(EXACT, enabled=False), upstream)
    assert call(gateway, "OPTIONS", "/users", preflight()).status_code == 204
    assert call(gateway, "OPTIONS", "/users").status_code == 405  # not a preflight: the method check
    assert call(gateway, "GET", "/users", [("Origin", APP)]).status_code == 503


def test_a_preflight_asking_for_a_method_not_allowed_is_refused(gateway: Gateway) -> None:
    response = call(gateway, "OPTIONS", "/users", preflight(method="DELETE"))
    assert response.status_code == 403
    body = response.json()
    assert body["error"] == "cors_forbidden" and "DELETE" in body["message"] and body["endpoint"] == "users:v1"
    assert "access-control-allow-origin" not in response.headers
    assert response.headers["vary"] == "Origin"
    # Methods are case-sensitive: a browser sends GET, PUT... upper-case, and `put` is another method.
    assert call(gateway, "OPTIONS", "/users", preflight(method="put")).status_code == 403


@pytest.mark.parametrize(
    "asked",
    ["x-other", "x-custom, authorization", "X-Custom,x-evil", "x-custom, bad header", "x-custom, x(", "x" * 300],
)
def test_a_preflight_asking_for_a_header_not_allowed_is_refused(gateway: Gateway, asked: str) -> None:
    response = call(gateway, "OPTIONS", "/users", preflight(asked=asked))
    assert response.status_code == 403 and response.json()["error"] == "cors_forbidden"
    assert "access-control-allow-origin" not in response.headers


def test_allowed_headers_compare_ignoring_case_and_spacing(gateway: Gateway) -> None:
    for asked in ("x-custom", "X-CUSTOM", " x-custom ,", "x-custom,x-custom", ""):
        assert call(gateway, "OPTIONS", "/users", preflight(asked=asked)).status_code == 204, asked


def test_a_preflight_with_two_request_methods_or_two_origins_is_refused(gateway: Gateway) -> None:
    two_methods = [*preflight(), ("Access-Control-Request-Method", "GET")]
    assert call(gateway, "OPTIONS", "/users", two_methods).status_code == 403
    two_origins = [*preflight(), ("Origin", APP)]
    assert call(gateway, "OPTIONS", "/users", two_origins).status_code == 403


def test_headers_star_allows_and_reflects_whatever_the_preflight_asks_for() -> None:
    gateway = Gateway(cors_document({**CREDENTIALED, "headers": ["*"]}), upstream)
    response = call(gateway, "OPTIONS", "/users", preflight(asked="authorization, x-anything,authorization"))
    assert response.status_code == 204
    assert response.headers["access-control-allow-headers"] == "authorization, x-anything"
    assert "access-control-allow-headers" not in call(gateway, "OPTIONS", "/users", preflight()).headers
    assert call(gateway, "OPTIONS", "/users", preflight(asked="x y")).status_code == 403  # still header names


def test_no_headers_allows_none_and_the_answer_names_none() -> None:
    gateway = Gateway(cors_document({**EXACT, "headers": []}), upstream)
    plain = call(gateway, "OPTIONS", "/users", preflight())
    assert plain.status_code == 204 and "access-control-allow-headers" not in plain.headers
    assert call(gateway, "OPTIONS", "/users", preflight(asked="content-type")).status_code == 403


def test_underscored_preflight_headers_are_not_preflight_headers(gateway: Gateway) -> None:
    """`Access_Control_Request_Method` is another header: an OPTIONS with it is an ordinary request."""
    response = call(gateway, "OPTIONS", "/users", [("Origin", APP), ("Access_Control_Request_Method", "PUT")])
    assert response.status_code == 405 and response.headers["access-control-allow-origin"] == APP


class Unauthorized(GatewayError):
    status, code = 401, "unauthorized"


class Gatekeeper(Plugin):
    """Stands for authentication and rate limits (the late access phase): refuses every request."""

    name = "gatekeeper"

    def access(self, exchange: Exchange) -> Answer | None:
        raise Unauthorized("no credential")


def test_a_preflight_never_meets_authentication_and_its_refusal_is_readable(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = PluginSpec("gatekeeper", "authentication", "a test plugin", {"enabled": Field("bool", default=True)})
    monkeypatch.setitem(PLUGINS, "gatekeeper", spec)
    monkeypatch.setitem(REGISTRY, "gatekeeper", lambda config, context: Gatekeeper())
    doc = cors_document(CREDENTIALED)
    doc["endpoints"][0]["plugins"]["gatekeeper"] = {}
    gateway = Gateway(doc, upstream)
    assert call(gateway, "OPTIONS", "/users", preflight()).status_code == 204
    refused = call(gateway, "PUT", "/users", [("Origin", APP)])
    assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"
    assert refused.headers["access-control-allow-origin"] == APP  # the page can tell why
    assert call(gateway, "PUT", "/users", [("Origin", EVIL)]).json()["error"] == "cors_forbidden"


# --- origins ------------------------------------------------------------------------------------


def test_a_request_from_an_allowed_origin_gets_the_cors_headers_on_the_upstreams_answer(gateway: Gateway) -> None:
    response = call(gateway, "GET", "/users/items", [("Origin", APP)])
    assert response.status_code == 200 and response.json() == {"path": "/api/items"}
    assert cors_headers(response) == {
        "access-control-allow-origin": APP,
        "access-control-allow-credentials": "true",
        "access-control-expose-headers": "ETag, X-Request-ID",
    }
    assert response.headers["vary"] == "Origin"
    assert gateway.seen[0].headers["origin"] == APP  # the upstream still sees who asked


def test_a_request_without_origin_passes_untouched(gateway: Gateway) -> None:
    response = call(gateway, "GET", "/users/vary")
    assert response.status_code == 200 and cors_headers(response) == {}
    assert response.headers.get_list("vary") == ["Accept-Encoding"]
    assert call(gateway, "OPTIONS", "/users", [("Access-Control-Request-Method", "PUT")]).status_code == 405


@pytest.mark.parametrize(
    "origin",
    [
        EVIL,
        "null",
        "NULL",
        "*",
        "https://app.example.com.evil.example",
        "https://evil.example/https://app.example.com",
        "https://app.example.com/",
        "https://app.example.com:8443",
        "http://app.example.com",
        "https://app.example.com\t",
        "https://app.example.com, https://evil.example",
        "https://" + "a" * 60 + ".example" * 1000,
        "https://app.example.com:99999",
        "",
    ],
)
def test_a_request_from_an_origin_not_allowed_is_refused(gateway: Gateway, origin: str) -> None:
    response = call(gateway, "GET", "/users", [("Origin", origin)])
    assert response.status_code == 403
    assert response.json()["error"] == "cors_forbidden" and response.json()["request_id"]
    assert cors_headers(response) == {} and response.headers["vary"] == "Origin"
    assert gateway.seen == []


@pytest.mark.parametrize("origin", ["HTTPS://APP.example.COM", "https://app.example.com:443", "http://LOCALHOST:3000"])
def test_origins_compare_after_normalisation_and_are_answered_as_sent(gateway: Gateway, origin: str) -> None:
    response = call(gateway, "GET", "/users", [("Origin", origin)])
    assert response.status_code == 200 and response.headers["access-control-allow-origin"] == origin


def test_a_duplicated_origin_is_refused_even_when_both_are_allowed(gateway: Gateway) -> None:
    for pair in ((APP, APP), (APP, EVIL), (EVIL, APP)):
        response = call(gateway, "GET", "/users", [("Origin", pair[0]), ("Origin", pair[1])])
        assert response.status_code == 403 and response.json()["error"] == "cors_forbidden", pair
        assert "more than one Origin" in response.json()["message"]
    assert gateway.seen == []


def test_an_ipv6_origin_matches_in_any_spelling() -> None:
    gateway = Gateway(cors_document({"origins": ["http://[::1]:8080"]}), upstream)
    for origin in ("http://[::1]:8080", "http://[0:0::1]:8080", "http://[0000::0001]:8080"):
        assert call(gateway, "GET", "/users", [("Origin", origin)]).status_code == 200, origin
    assert call(gateway, "GET", "/users", [("Origin", "http://[::2]:8080")]).status_code == 403


def test_the_wildcard_answers_star_to_any_origin_null_included_without_credentials() -> None:
    gateway = Gateway(cors_document({}), upstream)
    for origin in (EVIL, "null", "whatever"):
        response = call(gateway, "GET", "/users", [("Origin", origin)])
        assert response.status_code == 200 and response.headers["access-control-allow-origin"] == "*", origin
        assert "access-control-allow-credentials" not in response.headers
    twice = call(gateway, "GET", "/users", [("Origin", EVIL), ("Origin", APP)])
    assert twice.status_code == 403 and twice.json()["error"] == "cors_forbidden"
    answer = call(gateway, "OPTIONS", "/users", preflight(origin=EVIL, method="POST"))
    assert answer.status_code == 204 and answer.headers["access-control-allow-origin"] == "*"
    assert answer.headers["access-control-allow-methods"] == "GET, POST"
    assert answer.headers["access-control-allow-headers"] == "Content-Type"
    assert answer.headers["access-control-max-age"] == "600"


def test_credentials_with_the_wildcard_never_answer_star() -> None:
    """configdoc refuses `origins: ['*']` with credentials; compiled anyway, the plugin reflects real
    origins only (never `*`, never `null`)."""
    plugin = Cors({**effective_plugin_config("cors", {}), "credentials": True})
    assert plugin.allow_origin(b"https://anyone.example") == b"https://anyone.example"
    for origin in (b"null", b"*", b"https://x.example/", b""):
        assert plugin.allow_origin(origin) is None, origin
    assert b"*" not in {value for name, value in plugin.preflight_headers if name.startswith(b"access-control")}


# --- every answer: the upstream's and the gateway's own -----------------------------------------


def test_origin_is_added_to_the_upstreams_vary_not_put_in_its_place(gateway: Gateway) -> None:
    response = call(gateway, "GET", "/users/vary", [("Origin", APP)])
    assert response.headers.get_list("vary") == ["Accept-Encoding, Origin"]


def test_the_upstreams_own_cors_headers_are_replaced(gateway: Gateway) -> None:
    response = call(gateway, "GET", "/users/own-cors", [("Origin", APP)])
    assert response.headers.get_list("access-control-allow-origin") == [APP]
    assert response.headers.get_list("access-control-allow-credentials") == ["true"]


def test_gateway_made_answers_to_an_allowed_origin_carry_the_cors_headers() -> None:
    doc = cors_document(None, everywhere={"cors": CREDENTIALED})
    doc["endpoints"][0]["targets"] = [{"url": "http://10.255.0.1"}]
    gateway = Gateway(doc, upstream)
    gateway.runtime.states["users:v1"].breaker.force(State.OPEN)
    for method, path, status in (("GET", "/users", 503), ("DELETE", "/users", 405), ("GET", "/nowhere/x", 404)):
        response = call(gateway, method, path, [("Origin", APP)])
        assert response.status_code == status, (method, path)
        assert response.headers["access-control-allow-origin"] == APP, (method, path)
        assert response.headers["access-control-allow-credentials"] == "true"
        assert response.headers["vary"] == "Origin"
    refused = call(gateway, "GET", "/nowhere/x", [("Origin", EVIL)])  # no route: no access phase, so a 404
    assert refused.status_code == 404 and cors_headers(refused) == {} and refused.headers["vary"] == "Origin"
    assert cors_headers(call(gateway, "GET", "/nowhere/x")) == {}


def test_a_body_too_large_answer_from_an_allowed_origin_is_readable() -> None:
    gateway = Gateway(cors_document(EXACT, max_body_bytes=10), upstream)

    async def go() -> httpx.Response:
        async with gateway.client() as client:
            return await client.post("/users", content=b"x" * 100, headers={"Origin": APP})

    response = asyncio.run(go())
    assert response.status_code == 413 and response.headers["access-control-allow-origin"] == APP


def test_an_endpoint_may_turn_a_global_cors_off() -> None:
    doc = cors_document({"enabled": False}, everywhere={"cors": EXACT})
    gateway = Gateway(doc, upstream)
    response = call(gateway, "GET", "/users", [("Origin", EVIL)])
    assert response.status_code == 200 and cors_headers(response) == {}


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ([], [(b"vary", b"Origin")]),
        ([(b"vary", b"accept")], [(b"vary", b"accept, Origin")]),
        ([(b"vary", b"Accept, origin")], [(b"vary", b"Accept, origin")]),
        ([(b"vary", b"*")], [(b"vary", b"*")]),
        ([(b"vary", b"a"), (b"vary", b"b")], [(b"vary", b"a"), (b"vary", b"b, Origin")]),
        ([(b"vary", b" ")], [(b"vary", b"Origin")]),
    ],
)
def test_add_vary_origin(before: list[tuple[bytes, bytes]], after: list[tuple[bytes, bytes]]) -> None:
    headers = list(before)
    add_vary_origin(headers)
    assert headers == after
