"""The plugin chain's seam (ARCHITECTURE §11): a test plugin registered here goes through every phase
of a real request through the proxy app (in-process, fake upstream): access (before the method
check or after the body size check, and able to answer itself), request (upstream headers),
response (every answer, the upstream's and the gateway's own) and log."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import httpx
import pytest

from configdoc.plugins import PLUGINS, PluginSpec
from configdoc.schema import Field
from dataplane.breaker import State
from dataplane.errors import GatewayError
from dataplane.exchange import Exchange
from dataplane.plugins import REGISTRY, Answer, Phase, Plugin, PluginContext
from dataplane.snapshot import SnapshotError, compile_document
from dataplane.types import Headers
from tests.dataplane.harness import Gateway, document, endpoint, ok

LOGGED: list[tuple[str, str, int, str | None]] = []


class Forbidden(GatewayError):
    status, code = 403, "probe_forbidden"


class Probe(Plugin):
    """Answers itself on `X-Probe: answer`, refuses on `X-Probe: refuse`, else lets the request on;
    tags the upstream request and every answer with its config's `tag`, and records its log phase."""

    name = "probe"

    def __init__(self, config: Mapping[str, Any], context: PluginContext) -> None:
        self.tag = str(config.get("tag", "probe")).encode()

    def access(self, exchange: Exchange) -> Answer | None:
        asked = dict(exchange.headers).get(b"x-probe")
        if asked == b"answer":
            return Answer(200, [(b"content-type", b"text/plain")], b"answered by the plugin", error="probe_answered")
        if asked == b"refuse":
            raise Forbidden("the probe refuses")
        return None

    def request(self, exchange: Exchange, headers: Headers) -> None:
        headers[:] = [(name, value) for name, value in headers if name != b"x-drop-me"]
        headers.append((b"x-probe-tag", self.tag))

    def response(self, exchange: Exchange, headers: Headers) -> None:
        headers.append((b"x-probe-tag", self.tag))
        headers.append((b"x-probe-status", str(exchange.status).encode()))

    def log(self, exchange: Exchange) -> None:
        LOGGED.append((self.tag.decode(), exchange.request_id, exchange.status, exchange.error))


class EarlyProbe(Probe):
    """The same, in the early access phase (before the method check, as ip_restriction and cors)."""

    name = "early_probe"
    phase: ClassVar[Phase] = Phase.EARLY


@pytest.fixture(autouse=True)
def registered(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Both halves of a plugin: its schema entry in configdoc and its module in the data plane."""
    tag = {"tag": Field("str", default="probe", max_length=100), "enabled": Field("bool", default=True)}
    for name, phase in (("probe", "rate_limit"), ("early_probe", "ip_restriction")):
        monkeypatch.setitem(PLUGINS, name, PluginSpec(name, phase, "a test plugin", tag))  # type: ignore[index]
    monkeypatch.setitem(REGISTRY, "probe", Probe)
    monkeypatch.setitem(REGISTRY, "early_probe", EarlyProbe)
    LOGGED.clear()
    yield


def with_plugins(
    doc: dict[str, Any], plugins: dict[str, Any], *, everywhere: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The document with `plugins` on each endpoint (and the global ones): the schema's keys, added after
    validation because configdoc's plugin schemas come separately."""
    for each in doc["endpoints"]:
        each["plugins"] = plugins
    if everywhere is not None:
        doc["plugins"] = everywhere
    return doc


def call(gateway: Gateway, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        async with gateway.client() as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


def test_a_request_passes_every_phase_of_the_chain() -> None:
    gateway = Gateway(with_plugins(document(endpoint("users", default=True)), {"probe": {"tag": "one"}}), ok)
    response = call(gateway, "GET", "/users", headers={"X-Request-ID": "chain-1", "X-Drop-Me": "x"})
    assert response.status_code == 200
    upstream = gateway.seen[0].headers
    assert upstream["x-probe-tag"] == "one" and "x-drop-me" not in upstream
    assert response.headers["x-probe-tag"] == "one" and response.headers["x-probe-status"] == "200"
    assert response.headers["x-request-id"] == "chain-1" and response.headers["x-endpoint-id"] == "users:v1"
    assert LOGGED == [("one", "chain-1", 200, None)]


def test_an_access_hook_answers_instead_of_the_upstream_and_the_answer_gets_every_header() -> None:
    gateway = Gateway(with_plugins(document(endpoint("users", default=True)), {"probe": {"tag": "one"}}), ok)
    response = call(gateway, "GET", "/users", headers={"X-Probe": "answer", "X-Request-ID": "chain-2"})
    assert (response.status_code, response.text) == (200, "answered by the plugin")
    assert gateway.seen == []
    assert response.headers["x-probe-tag"] == "one" and response.headers["x-request-id"] == "chain-2"
    assert response.headers["x-endpoint-id"] == "users:v1" and response.headers["x-response-time"].endswith("ms")
    assert LOGGED == [("one", "chain-2", 200, "probe_answered")]


def test_an_access_hook_that_refuses_gets_the_json_error_with_the_response_hooks_applied() -> None:
    gateway = Gateway(with_plugins(document(endpoint("users", default=True)), {"probe": {}}), ok)
    response = call(gateway, "GET", "/users", headers={"X-Probe": "refuse"})
    assert response.status_code == 403
    assert response.json()["error"] == "probe_forbidden" and response.json()["endpoint"] == "users:v1"
    assert response.headers["x-probe-tag"] == "probe"
    assert gateway.seen == []


def test_the_late_access_phase_comes_after_the_method_check_and_the_early_one_before() -> None:
    late = Gateway(with_plugins(document(endpoint("users", default=True)), {"probe": {}}), ok)
    refused = call(late, "POST", "/users", headers={"X-Probe": "answer"})
    assert refused.status_code == 405 and refused.headers["x-probe-tag"] == "probe"
    early = Gateway(with_plugins(document(endpoint("users", default=True)), {"early_probe": {}}), ok)
    assert call(early, "POST", "/users", headers={"X-Probe": "answer"}).text == "answered by the plugin"


def test_the_early_access_phase_comes_before_a_disabled_endpoints_503_and_the_late_one_after_it() -> None:
    doc = document(endpoint("users", default=True, enabled=False))
    late = Gateway(with_plugins(doc, {"probe": {}}), ok)
    response = call(late, "GET", "/users", headers={"X-Probe": "answer"})
    assert response.status_code == 503 and response.json()["error"] == "endpoint_disabled"
    assert response.headers["x-probe-tag"] == "probe"
    early = Gateway(with_plugins(document(endpoint("users", default=True, enabled=False)), {"early_probe": {}}), ok)
    assert call(early, "GET", "/users", headers={"X-Probe": "answer"}).status_code == 200


def test_gateway_made_answers_get_the_response_hooks_a_503_and_a_404_by_the_global_plugins() -> None:
    doc = with_plugins(
        document(endpoint("users", "http://10.255.0.1", default=True)), {}, everywhere={"probe": {"tag": "global"}}
    )
    gateway = Gateway(doc, ok)
    gateway.runtime.states["users:v1"].breaker.force(State.OPEN)
    circuit = call(gateway, "GET", "/users")
    assert circuit.status_code == 503 and circuit.json()["error"] == "circuit_open"
    assert circuit.headers["x-probe-tag"] == "global" and circuit.headers["x-probe-status"] == "503"
    missing = call(gateway, "GET", "/nothing-here", headers={"X-Request-ID": "chain-404"})
    assert missing.status_code == 404 and missing.json()["error"] == "no_route"
    assert missing.headers["x-probe-tag"] == "global" and "x-endpoint-id" not in missing.headers
    assert ("global", "chain-404", 404, "no_route") in LOGGED


def test_an_endpoint_turns_a_global_plugin_off_and_its_own_config_wins_over_the_global_one() -> None:
    doc = document(endpoint("users", default=True), endpoint("orders"), endpoint("plain"))
    doc["plugins"] = {"probe": {"tag": "global"}}
    by_name = {each["name"]: each for each in doc["endpoints"]}
    by_name["orders"]["plugins"] = {"probe": {"tag": "orders"}}
    by_name["plain"]["plugins"] = {"probe": {"enabled": False}}
    gateway = Gateway(doc, ok)
    assert call(gateway, "GET", "/users").headers["x-probe-tag"] == "global"
    assert call(gateway, "GET", "/orders").headers["x-probe-tag"] == "orders"
    assert "x-probe-tag" not in call(gateway, "GET", "/plain").headers
    assert gateway.runtime.snapshot is not None and gateway.runtime.snapshot.endpoints["plain:v1"].chain is None


def test_an_endpoint_without_plugins_has_no_chain() -> None:
    snapshot = compile_document(document(endpoint("users")))
    assert snapshot.endpoints["users:v1"].chain is None and snapshot.global_chain is None


def test_a_plugin_this_node_does_not_have_refuses_the_snapshot_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The contract knows it (a newer control plane's), this data plane has no module for it."""
    spec = PluginSpec("no_such_plugin", "acl", "newer than this node", {"enabled": Field("bool", default=True)})
    monkeypatch.setitem(PLUGINS, "no_such_plugin", spec)  # type: ignore[index]
    with pytest.raises(SnapshotError, match="no_such_plugin"):
        compile_document(with_plugins(document(endpoint("users")), {"no_such_plugin": {}}))


def test_the_chain_runs_plugins_by_phase_then_priority_whatever_the_document_order() -> None:
    snapshot = compile_document(with_plugins(document(endpoint("users")), {"probe": {}, "early_probe": {}}))
    chain = snapshot.endpoints["users:v1"].chain
    assert chain is not None
    assert [plugin.name for plugin in chain.plugins] == ["early_probe", "probe"]
    assert [p.name for p in chain.early] == ["early_probe"] and [p.name for p in chain.late] == ["probe"]
