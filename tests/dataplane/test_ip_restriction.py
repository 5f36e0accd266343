"""`ip_restriction` (ARCHITECTURE §11) through the real proxy app in-process (fake upstream): who the
client is (the peer, or behind a trusted proxy the first untrusted X-Forwarded-For hop), deny wins,
v4 and v6, IPv4-mapped peers, report mode and the decisions metric."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from typing import Any

import httpx
import pytest

from configdoc import validate_document
from dataplane.forwarding import Forwarding, parse_address
from dataplane.plugins import NO_CONTEXT, REGISTRY
from dataplane.plugins.ip_restriction import IpRestriction, Networks
from dataplane.settings import Settings
from tests.dataplane.harness import Gateway, endpoint, ok

TRUSTED = "10.9.9.9"


def document(plugins: dict[str, Any], *, everywhere: dict[str, Any] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "format_version": 2,
        "endpoints": [endpoint("users", default=True, plugins=plugins), endpoint("open")],
    }
    if everywhere is not None:
        data["plugins"] = everywhere
    canonical, problems = validate_document(data, max_format_version=2)
    assert problems == [], problems
    return canonical


def gateway(rule: dict[str, Any], **settings: Any) -> Gateway:
    settings.setdefault("trusted_proxies", (ipaddress.ip_network(f"{TRUSTED}/32"),))
    return Gateway(document({"ip_restriction": rule}), ok, **settings)


def call(
    gateway: Gateway, peer: str, *, headers: list[tuple[str, str]] | None = None, path: str = "/users/x"
) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=gateway.proxy, client=(peer, 5555))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
            return await client.get(path, headers=headers)

    return asyncio.run(go())


def refused(response: httpx.Response) -> bool:
    if response.status_code == 200:
        return False
    assert response.status_code == 403, response.text
    assert response.json()["error"] == "ip_forbidden"
    return True


def decisions(gateway: Gateway) -> dict[tuple[str, str, str], float]:
    gateway.runtime.metrics.flush()
    counts: dict[tuple[str, str, str], float] = {}
    for metric in gateway.runtime.metrics.policy_decisions.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                labels = sample.labels
                counts[(labels["endpoint"], labels["plugin"], labels["decision"])] = sample.value
    return counts


def test_an_allow_list_lets_only_its_networks_in() -> None:
    gw = gateway({"allow": ["192.0.2.0/24", "2001:db8::/32"]})
    assert not refused(call(gw, "192.0.2.77"))
    assert not refused(call(gw, "2001:db8:1::5"))
    assert refused(call(gw, "198.51.100.1"))
    assert refused(call(gw, "2001:db9::1"))
    # The other endpoint has no restriction.
    assert call(gw, "198.51.100.1", path="/open/x").status_code == 200


def test_the_refusal_is_the_gateways_json_error_with_its_headers() -> None:
    gw = gateway({"allow": ["192.0.2.0/24"]})
    response = call(gw, "198.51.100.1")
    assert response.status_code == 403
    body = response.json()
    assert body["error"] == "ip_forbidden"
    assert body["endpoint"] == "users:v1"
    assert body["request_id"] == response.headers["x-request-id"]
    assert "198.51.100.1" not in response.text  # the address goes to the access log's detail only
    assert response.headers["content-type"] == "application/json"
    assert gw.seen == []  # the upstream never heard of it


def test_deny_wins_over_allow() -> None:
    gw = gateway({"allow": ["10.0.0.0/8"], "deny": ["10.1.0.0/16"]})
    assert not refused(call(gw, "10.2.3.4"))
    assert refused(call(gw, "10.1.3.4"))


def test_without_an_allow_list_everything_not_denied_passes() -> None:
    gw = gateway({"deny": ["203.0.113.7", "2001:db8::/48"]})
    assert refused(call(gw, "203.0.113.7"))
    assert not refused(call(gw, "203.0.113.8"))
    assert refused(call(gw, "2001:db8:0:ffff::1"))
    assert not refused(call(gw, "2001:db8:1::1"))


def test_an_ipv4_mapped_ipv6_peer_matches_ipv4_rules() -> None:
    gw = gateway({"allow": ["10.0.0.0/8"], "deny": ["10.6.6.6"]})
    assert not refused(call(gw, "::ffff:10.0.0.1"))
    assert refused(call(gw, "::ffff:10.6.6.6"))
    assert refused(call(gw, "::ffff:192.0.2.1"))


def test_it_runs_before_the_method_check() -> None:
    gw = gateway({"allow": ["192.0.2.0/24"]})

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=gw.proxy, client=("198.51.100.1", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
            return await client.delete("/users/x")

    assert refused(asyncio.run(go()))  # not 405: a refused client learns nothing of the endpoint


def test_an_untrusted_peer_cannot_pass_for_another_address() -> None:
    gw = gateway({"allow": ["192.0.2.0/24"]})
    spoofs = [
        ("X-Forwarded-For", "192.0.2.1"),
        ("X-Real-IP", "192.0.2.1"),
        ("Forwarded", "for=192.0.2.1"),
        ("X_Forwarded_For", "192.0.2.1"),
    ]
    assert refused(call(gw, "198.51.100.1", headers=spoofs))


def test_behind_a_trusted_proxy_the_first_untrusted_hop_is_the_client() -> None:
    gw = gateway({"allow": ["192.0.2.0/24"]})
    assert not refused(call(gw, TRUSTED, headers=[("X-Forwarded-For", "192.0.2.5")]))
    assert refused(call(gw, TRUSTED, headers=[("X-Forwarded-For", "198.51.100.1")]))
    # What the client wrote itself (left of the hop the trusted proxy appended) is not believed.
    assert refused(call(gw, TRUSTED, headers=[("X-Forwarded-For", "192.0.2.5, 198.51.100.1")]))
    # Trusted hops are skipped, from the right.
    assert not refused(call(gw, TRUSTED, headers=[("X-Forwarded-For", f"198.51.100.1, 192.0.2.5, {TRUSTED}")]))
    # Two X-Forwarded-For headers are one list, in order: the last hop of the last header counts.
    duplicated = [("X-Forwarded-For", "192.0.2.5"), ("X-Forwarded-For", "198.51.100.1")]
    assert refused(call(gw, TRUSTED, headers=duplicated))
    # An underscore spelling is another header: not read, from a trusted proxy either.
    assert refused(call(gw, TRUSTED, headers=[("X_Forwarded_For", "192.0.2.5")]))
    # A trusted proxy that sent no X-Forwarded-For is itself the client.
    assert refused(call(gw, TRUSTED))


def test_an_unreadable_hop_refuses_rather_than_guesses() -> None:
    gw = gateway({"deny": ["203.0.113.0/24"]})
    assert refused(call(gw, TRUSTED, headers=[("X-Forwarded-For", f"unknown, {TRUSTED}")]))
    # ...but garbage left of an untrusted hop is never reached.
    assert not refused(call(gw, TRUSTED, headers=[("X-Forwarded-For", "garbage, 192.0.2.5")]))


def test_report_mode_lets_the_request_through_and_counts_what_it_would_have_done() -> None:
    gw = gateway({"allow": ["192.0.2.0/24"], "mode": "report"})
    response = call(gw, "198.51.100.1")
    assert response.status_code == 200
    assert len(gw.seen) == 1
    assert call(gw, "192.0.2.1").status_code == 200
    assert decisions(gw) == {
        ("users:v1", "ip_restriction", "would_deny"): 1.0,
        ("users:v1", "ip_restriction", "allow"): 1.0,
    }


def test_enforce_mode_counts_its_decisions() -> None:
    gw = gateway({"allow": ["192.0.2.0/24"]})
    call(gw, "198.51.100.1")
    call(gw, "198.51.100.2")
    call(gw, "192.0.2.1")
    call(gw, "198.51.100.1", path="/open/x")  # no plugin there: no decision
    assert decisions(gw) == {
        ("users:v1", "ip_restriction", "deny"): 2.0,
        ("users:v1", "ip_restriction", "allow"): 1.0,
    }
    text = gw.runtime.metrics.render().decode()
    assert 'gateway_policy_decisions_total{decision="deny",endpoint="users:v1",plugin="ip_restriction"} 2.0' in text


def test_the_access_log_line_names_the_refused_address(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dataplane.access")
    gw = gateway({"allow": ["192.0.2.0/24"]}, access_log="json")
    call(gw, "198.51.100.1")
    report = gateway({"allow": ["192.0.2.0/24"], "mode": "report"}, access_log="json")
    call(report, "198.51.100.2")
    gw.proxy.access_log.flush()
    report.proxy.access_log.flush()
    lines = [
        json.loads(line)
        for record in caplog.records
        if record.name == "dataplane.access"
        for line in record.getMessage().split("\n")
    ]
    details = {line["status"]: (line["error"], line["detail"]) for line in lines}
    assert details[403] == ("ip_forbidden", "ip_restriction refused 198.51.100.1")
    assert details[200] == ("", "ip_restriction (report mode) would refuse 198.51.100.2")


def test_an_endpoint_turns_a_global_restriction_off() -> None:
    doc = document({"ip_restriction": {"enabled": False}}, everywhere={"ip_restriction": {"allow": ["192.0.2.0/24"]}})
    gw = Gateway(doc, ok)
    assert call(gw, "198.51.100.1").status_code == 200
    assert refused(call(gw, "198.51.100.1", path="/open/x"))


# --- the parts --------------------------------------------------------------------------------------


def test_networks_match_by_prefix_in_both_versions() -> None:
    networks = Networks(["10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "::1"])
    inside = ["10.255.0.1", "192.0.2.7", "2001:db8:ffff::1", "::1"]
    outside = ["11.0.0.1", "192.0.2.8", "2001:db9::", "::2", "9.255.255.255"]
    assert all(ipaddress.ip_address(a) in networks for a in inside)
    assert not any(ipaddress.ip_address(a) in networks for a in outside)
    assert not Networks([])
    # An IPv4 number never matches an IPv6 rule of the same bits.
    assert ipaddress.ip_address("::a00:1") not in Networks(["10.0.0.0/8"])


def test_addresses_are_read_with_ports_and_mapped_forms() -> None:
    assert parse_address("::ffff:10.0.0.1") == ipaddress.ip_address("10.0.0.1")
    assert parse_address("10.0.0.1:5000") == ipaddress.ip_address("10.0.0.1")
    assert parse_address("[2001:db8::1]:443") == ipaddress.ip_address("2001:db8::1")
    assert parse_address("2001:db8::1") == ipaddress.ip_address("2001:db8::1")
    for bad in (
        "",
        "unknown",
        "10.0.0.1.5",
        "[2001:db8::1",
        "1.2.3.4:5:6",
        "_hidden",
        "10.0.0.1:",
        "10.0.0.1:x",
        "2001:db8::1]:80",
    ):
        assert parse_address(bad) is None, bad


def test_a_trusted_proxy_given_in_mapped_form_is_trusted() -> None:
    forwarding = Forwarding(Settings(node_id="n", trusted_proxies=(ipaddress.ip_network("10.0.0.0/8"),)))
    scope = {"client": ("::ffff:10.0.0.2", 1), "headers": [(b"x-forwarded-for", b"192.0.2.9")]}
    assert forwarding.trusted(scope)
    assert forwarding.client_address(scope) == ipaddress.ip_address("192.0.2.9")


def test_the_plugin_is_registered_early_and_before_cors() -> None:
    plugin = REGISTRY["ip_restriction"](
        {"allow": ["10.0.0.0/8"], "deny": [], "mode": "enforce", "enabled": True}, NO_CONTEXT
    )
    assert isinstance(plugin, IpRestriction)
    assert plugin.priority == 100 and plugin.phase.name == "EARLY"
