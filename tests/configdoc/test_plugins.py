"""Format 2: plugins and preserve_host (ARCHITECTURE §11), their schemas, merge rule and format rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from configdoc import (
    PHASES,
    PLUGINS,
    canonical_json,
    config_sha256,
    dump_document_yaml,
    effective_endpoint,
    effective_plugins,
    load_document,
    validate_document,
)
from configdoc.plugins import (
    FORMAT_2_ENDPOINT_KEYS,
    MAX_LIST,
    effective_plugin_config,
    normalize_origin,
    origin_key,
    reference_markdown,
)

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "fixtures" / "snapshot-golden.json"
TARGET = [{"url": "http://127.0.0.1:8010"}]


def document(*, version: Any = 2, global_plugins: Any = None, **endpoint: Any) -> dict[str, Any]:
    """A document with one endpoint (`endpoint` adds to it); `global_plugins` is the top-level `plugins`."""
    data: dict[str, Any] = {
        "format_version": version,
        "endpoints": [{"name": "orders", "version": "v1", "targets": TARGET, **endpoint}],
    }
    if global_plugins is not None:
        data["plugins"] = global_plugins
    return data


def validate(data: Any, **options: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """The canonical document and its problems as {path: message}."""
    options.setdefault("max_format_version", 2)
    canonical, problems = validate_document(data, **options)
    return canonical, {problem.path: problem.message for problem in problems}


def endpoint_plugin(name: str, config: Any) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """Validate `config` as an endpoint's plugin `name`: its canonical config (None if refused), problems."""
    canonical, problems = validate(document(plugins={name: config}))
    if problems:
        return None, problems
    return canonical["endpoints"][0].get("plugins", {}).get(name), problems


# --- the registry ---------------------------------------------------------------------------------


def test_every_plugin_has_a_known_phase_a_description_and_enabled() -> None:
    for name, spec in PLUGINS.items():
        assert spec.name == name and spec.phase in PHASES and spec.description
        assert "\n" not in spec.description
        assert spec.fields["enabled"].default is True
        assert ("mode" in spec.fields) == spec.access


def test_the_phases_run_in_the_documented_order() -> None:
    order = [PHASES.index(phase) for phase in ("ip_restriction", "cors", "authentication", "request_headers")]
    assert order == sorted(order)
    assert PHASES.index("response_headers") == len(PHASES) - 1
    assert PLUGINS["ip_restriction"].access and not PLUGINS["cors"].access


# --- format 1 and format 2 ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "path"),
    [
        (document(version=1, global_plugins={"cors": {}}), "plugins"),
        (document(version=1, global_plugins={"cors": {}}, plugins={"cors": {}}), "endpoints[0].plugins"),
        (document(version=1, preserve_host=False), "endpoints[0].preserve_host"),
    ],
)
def test_a_format_1_document_using_a_format_2_key_is_refused_naming_the_key(data: dict[str, Any], path: str) -> None:
    canonical, problems = validate(data)
    assert canonical == {}
    assert "needs format_version: 2" in problems[path] and "set format_version: 2" in problems[path]


def test_a_format_1_document_gets_every_format_2_problem_and_the_plugins_own_problems_at_once() -> None:
    _, problems = validate(document(version=1, plugins={"cors": {"max_age": -1}}, preserve_host=True))
    assert set(problems) == {"endpoints[0].plugins", "endpoints[0].preserve_host", "endpoints[0].plugins.cors.max_age"}


def test_a_format_2_document_without_format_2_keys_canonicalises_to_format_1_with_the_same_hash() -> None:
    one, _ = validate(document(version=1))
    two, problems = validate(document(version=2, preserve_host=False, plugins={}))
    assert problems == {}
    assert two["format_version"] == 1 and config_sha256(two) == config_sha256(one)


def test_a_document_with_plugins_canonicalises_to_format_2_and_export_writes_it() -> None:
    canonical, problems = validate(document(global_plugins={"cors": {}}))
    assert problems == {} and canonical["format_version"] == 2 and canonical["plugins"] == {"cors": {}}
    text = dump_document_yaml(canonical)
    assert text.splitlines()[0] == "format_version: 2"
    assert load_document(text, max_format_version=2).document == canonical


def test_the_golden_snapshot_document_is_still_format_1_and_canonical_byte_for_byte() -> None:
    golden = json.loads(GOLDEN.read_bytes())
    canonical, problems = validate(golden["config"])
    assert problems == {}
    assert canonical_json(canonical) == canonical_json(golden["config"])
    assert config_sha256(canonical) == golden["config_sha256"]
    assert golden["format_version"] == 1


def test_readers_refuse_a_format_2_document_unless_they_apply_format_2() -> None:
    """The data plane's seed file and the control plane's import read with the default (format 1): a
    document with policies is refused there, never run without them."""
    text = "format_version: 2\nplugins: {cors: {}}\nendpoints: []\n"
    refused = load_document(text)
    assert refused.document == {}
    assert [(p.path, p.line) for p in refused.problems] == [("format_version", 1)]
    assert "newer than this reader applies (format 1 at most)" in refused.problems[0].message
    assert load_document(text, max_format_version=2).ok


@pytest.mark.parametrize("version", [0, 3, "2", True, None, 1.5])
def test_an_unknown_format_version_is_refused(version: Any) -> None:
    _, problems = validate(document(version=version))
    assert "must be 1 or 2" in problems["format_version"]


# --- canonical and effective forms ----------------------------------------------------------------


def test_a_plugin_at_its_defaults_stays_on_as_an_empty_config_and_its_effective_form_has_every_default() -> None:
    canonical, _ = endpoint_plugin("cors", {"enabled": True, "max_age": 600, "methods": ["post", "GET"]})
    assert canonical == {}
    assert effective_plugin_config("cors", canonical) == {
        "origins": ["*"],
        "methods": ["GET", "POST"],
        "headers": ["Content-Type"],
        "expose_headers": [],
        "credentials": False,
        "max_age": 600,
        "enabled": True,
    }


def test_canonical_plugin_configs_are_sorted_deduplicated_and_spelled_one_way() -> None:
    cors, _ = endpoint_plugin(
        "cors",
        {
            "origins": ["HTTPS://App.Example.com:443", "http://localhost:8080", "https://app.example.com"],
            "headers": ["X-B", "x-a", "X-A"],
            "methods": ["PUT", "get", "PUT"],
        },
    )
    assert cors == {
        "origins": ["http://localhost:8080", "https://app.example.com"],
        "headers": ["x-a", "X-B"],
        "methods": ["GET", "PUT"],
    }
    ips, _ = endpoint_plugin("ip_restriction", {"allow": ["2001:db8::1/32", "10.1.2.3/8", "10.0.0.0/8", "192.0.2.7"]})
    assert ips == {"allow": ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]}
    rules, _ = endpoint_plugin("request_headers", {"remove": ["X-Debug", "x-debug", "A"], "set": {"X-Env": "prod"}})
    assert rules == {"remove": ["A", "X-Debug"], "set": {"X-Env": "prod"}}


def test_an_ipv6_origin_is_written_compressed_as_browsers_send_it() -> None:
    cors, _ = endpoint_plugin("cors", {"origins": ["http://[0:0:0:0:0:0:0:1]:3000", "https://[2001:DB8::0:1]:443"]})
    assert cors == {"origins": ["http://[::1]:3000", "https://[2001:db8::1]"]}


def test_origin_key_reads_a_request_origin_as_normalize_origin_writes_a_configured_one() -> None:
    assert origin_key("HTTPS://App.Example.com:443") == normalize_origin("https://app.example.com")
    assert origin_key("http://localhost:08080") == "http://localhost:8080"
    for not_an_origin in ("null", "*", "", "https://a.example/", "https://a.example\n", "https://a.example:0"):
        assert origin_key(not_an_origin) is None, not_an_origin
    assert origin_key("https://" + "a." * 2000 + "example") is None


def test_validating_a_canonical_document_again_gives_the_same_bytes() -> None:
    data = document(
        global_plugins={"cors": {"origins": ["https://b.example", "https://A.example"], "credentials": True}},
        preserve_host=True,
        plugins={
            "ip_restriction": {"deny": ["192.0.2.0/24"], "mode": "report"},
            "response_headers": {"set": {"Strict-Transport-Security": "max-age=31536000"}, "remove": ["Server"]},
            "cors": {"enabled": False},
        },
    )
    canonical, problems = validate(data)
    assert problems == {}
    again, _ = validate(json.loads(canonical_json(canonical)))
    assert canonical_json(again) == canonical_json(canonical)
    endpoint = canonical["endpoints"][0]
    assert endpoint["preserve_host"] is True
    assert endpoint["plugins"]["ip_restriction"] == {"deny": ["192.0.2.0/24"], "mode": "report"}
    assert endpoint["plugins"]["cors"] == {"enabled": False}


def test_an_endpoints_effective_form_carries_its_format_2_keys_only_when_set() -> None:
    canonical, _ = validate(document(preserve_host=True, plugins={"ip_restriction": {"deny": ["192.0.2.1"]}}))
    effective = effective_endpoint(canonical["endpoints"][0])
    assert effective["preserve_host"] is True
    assert effective["plugins"] == {
        "ip_restriction": {"allow": [], "deny": ["192.0.2.1"], "enabled": True, "mode": "enforce"}
    }
    plain, _ = validate(document(version=1))
    assert not set(FORMAT_2_ENDPOINT_KEYS) & set(effective_endpoint(plain["endpoints"][0]))


def test_export_writes_plugin_fields_in_schema_order() -> None:
    rules = {"remove": ["X-Debug"], "add": {"X-B": "b"}, "set": {"X-A": "a"}}
    canonical, _ = validate(document(global_plugins={"response_headers": rules}, plugins={"request_headers": rules}))
    text = dump_document_yaml(canonical)
    for block in text.split("_headers:")[1:]:
        assert block.index("set:") < block.index("add:") < block.index("remove:"), text
    assert text.index("plugins:") < text.index("endpoints:")


# --- merging the document's plugins with an endpoint's --------------------------------------------


def test_an_endpoint_runs_the_documents_plugins_and_its_own_in_chain_order() -> None:
    chain = effective_plugins(
        {"response_headers": {"remove": ["Server"]}, "cors": {}},
        {"request_headers": {"set": {"X-Env": "prod"}}, "ip_restriction": {"allow": ["10.0.0.0/8"]}},
    )
    assert list(chain) == ["ip_restriction", "cors", "request_headers", "response_headers"]
    assert chain["ip_restriction"] == {"allow": ["10.0.0.0/8"], "deny": [], "enabled": True, "mode": "enforce"}
    assert chain["response_headers"]["remove"] == ["Server"] and chain["response_headers"]["set"] == {}


def test_an_endpoint_entry_replaces_the_documents_entry_wholly() -> None:
    chain = effective_plugins({"cors": {"origins": ["https://a.example"], "max_age": 60}}, {"cors": {"max_age": 5}})
    assert chain["cors"]["origins"] == ["*"] and chain["cors"]["max_age"] == 5


def test_enabled_false_on_an_endpoint_turns_the_documents_plugin_off() -> None:
    assert effective_plugins({"cors": {}}, {"cors": {"enabled": False}}) == {}
    assert effective_plugins({"cors": {"enabled": False}}, None) == {}
    assert list(effective_plugins({"cors": {"enabled": False}}, {"cors": {}})) == ["cors"]


def test_ip_restriction_enabled_false_alone_is_valid_but_enabled_needs_an_address() -> None:
    assert endpoint_plugin("ip_restriction", {"enabled": False}) == ({"enabled": False}, {})
    _, problems = endpoint_plugin("ip_restriction", {"allow": [], "deny": []})
    assert problems == {"endpoints[0].plugins.ip_restriction": "needs at least one address or CIDR in allow or deny"}


# --- every field: valid and invalid values --------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "config"),
    [
        ("cors", {"origins": ["*"], "credentials": False}),
        ("cors", {"origins": ["https://app.example.com", "http://[::1]:3000", "capacitor://localhost"]}),
        ("cors", {"origins": ["https://xn--bcher-kva.example"], "credentials": True, "max_age": 0}),
        ("cors", {"max_age": 86400, "expose_headers": ["X-Request-ID", "ETag"], "headers": []}),
        ("cors", {"methods": ["DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"]}),
        ("ip_restriction", {"allow": ["0.0.0.0/0", "::/0"], "mode": "enforce"}),
        ("ip_restriction", {"deny": ["fe80::1", "203.0.113.9"], "mode": "report"}),
        ("request_headers", {"set": {"X-Env": "prod", "X-Empty": ""}, "add": {"Via-Team": "a\tb"}}),
        ("request_headers", {"remove": ["Authorization", "Cookie"], "enabled": True}),
        ("response_headers", {"set": {"Strict-Transport-Security": "max-age=31536000"}, "remove": ["Server"]}),
        ("response_headers", {"add": {"Set-Cookie": "a=b; Secure", "Host": "fine on a response"}}),
        ("response_headers", {"set": {"X-Latin": "caf\u00e9"}}),
        ("rate_limit", {"limits": [{"requests": 100, "per": "minute"}]}),
        ("rate_limit", {"limits": [{"requests": 1, "per": "second"}, {"requests": 10**9, "per": "day"}], "by": "ip"}),
        ("rate_limit", {"limits": [{"requests": 5, "per": "hour"}], "by": "header", "header_name": "X-Client-Id"}),
        ("rate_limit", {"limits": [{"requests": 5, "per": "hour"}], "by": "header", "header_name": "X-Real-IP"}),
        ("rate_limit", {"limits": [{"requests": 5, "per": "hour"}], "by": "endpoint", "policy": "redis"}),
        ("rate_limit", {"limits": [{"requests": 5, "per": "hour"}], "fault_tolerant": False, "mode": "report"}),
        ("rate_limit", {"enabled": False}),
    ],
)
def test_a_valid_plugin_config_is_accepted(name: str, config: dict[str, Any]) -> None:
    canonical, problems = endpoint_plugin(name, config)
    assert problems == {} and canonical is not None


@pytest.mark.parametrize(
    ("name", "config", "path", "words"),
    [
        ("cors", {"origins": []}, "origins", "must not be empty"),
        ("cors", {"origins": "*"}, "origins", "must be a list"),
        ("cors", {"origins": ["app.example.com"]}, "origins[0]", "not an origin"),
        ("cors", {"origins": ["https://app.example.com/"]}, "origins[0]", "not an origin"),
        ("cors", {"origins": ["https://user@app.example.com"]}, "origins[0]", "not an origin"),
        ("cors", {"origins": ["https://app.example.com:0"]}, "origins[0]", "1-65535"),
        ("cors", {"origins": ["https://[1::2::3]"]}, "origins[0]", "not an IPv6 address"),
        ("cors", {"origins": ["null"]}, "origins[0]", "sandboxed"),
        ("cors", {"origins": ["https://*.example.com"]}, "origins[0]", "not an origin"),
        ("cors", {"origins": ["https://app.example.com\n"]}, "origins[0]", "not an origin"),
        ("cors", {"origins": ["*", "https://a.example"]}, "origins", "list it alone"),
        ("cors", {"credentials": True}, "origins", "credentials: true"),
        ("cors", {"origins": ["*"], "credentials": True}, "origins", "credentials: true"),
        ("cors", {"methods": ["FETCH"]}, "methods[0]", "must be one of"),
        ("cors", {"methods": []}, "methods", "must not be empty"),
        ("cors", {"headers": ["Bad Header"]}, "headers[0]", "not a valid header name"),
        ("cors", {"expose_headers": [7]}, "expose_headers[0]", "must be a string"),
        ("cors", {"credentials": "yes"}, "credentials", "true or false"),
        ("cors", {"max_age": -1}, "max_age", "at least 0"),
        ("cors", {"max_age": 86401}, "max_age", "at most 86400"),
        ("cors", {"max_age": 1.5}, "max_age", "integer"),
        ("cors", {"mode": "report"}, "mode", "unknown key"),
        ("cors", {"enabled": "no"}, "enabled", "true or false"),
        ("cors", None, "", "must be a mapping ({} turns cors on"),
        ("cors", ["*"], "", "must be a mapping"),
        ("ip_restriction", {"allow": ["10.0.0.0/33"]}, "allow[0]", "not an IPv4 or IPv6"),
        ("ip_restriction", {"deny": ["example.com"]}, "deny[0]", "not an IPv4 or IPv6"),
        ("ip_restriction", {"allow": ["010.0.0.1"]}, "allow[0]", "not an IPv4 or IPv6"),
        ("ip_restriction", {"allow": [10]}, "allow[0]", "must be a string"),
        ("ip_restriction", {"allow": ["fe80::1%eth0"]}, "allow[0]", "IPv6 zone"),
        ("ip_restriction", {"deny": ["::ffff:10.0.0.1"]}, "deny[0]", "write the IPv4 form (10.0.0.1)"),
        ("ip_restriction", {"allow": [" 10.0.0.1"]}, "allow[0]", "not an IPv4 or IPv6"),
        ("ip_restriction", {"allow": "10.0.0.0/8"}, "allow", "must be a list"),
        ("ip_restriction", {"allow": ["10.0.0.0/8"], "mode": "audit"}, "mode", "enforce, report"),
        ("request_headers", {"set": {"X-A": 1}}, "set.X-A", "must be a string"),
        ("request_headers", {"set": {"X-A": "a\r\nX-Injected: 1"}}, "set.X-A", "no CR, LF, NUL"),
        ("request_headers", {"set": {"X-A": " padded"}}, "set.X-A", "whitespace"),
        ("request_headers", {"set": {"X-A": "x" * 8193}}, "set.X-A", "at most 8192"),
        ("request_headers", {"set": {"X-A": "\u20ac"}}, "set.X-A", "visible characters"),
        ("request_headers", {"set": {"Bad:Name": "v"}}, "set.Bad:Name", "not a valid header name"),
        ("request_headers", {"set": {"X-Env": "a", "x-env": "b"}}, "set.x-env", "name the same header"),
        ("request_headers", {"add": ["X-A"]}, "add", "must be a mapping"),
        ("request_headers", {"remove": "X-A"}, "remove", "must be a list"),
        ("request_headers", {"set": {"Host": "api.example.com"}}, "set.Host", "preserve_host"),
        ("request_headers", {"remove": ["host"]}, "remove[0]", "preserve_host"),
        ("request_headers", {"replace": {}}, "replace", "unknown key"),
        ("response_headers", {"remove": ["Content-Length"]}, "remove[0]", "written by the gateway"),
        ("rate_limit", {}, "limits", "is required"),
        ("rate_limit", {"limits": []}, "limits", "must not be empty"),
        ("rate_limit", {"limits": {"requests": 1, "per": "minute"}}, "limits", "must be a list"),
        ("rate_limit", {"limits": [{"requests": 1, "per": "week"}]}, "limits[0].per", "second, minute, hour, day"),
        ("rate_limit", {"limits": [{"requests": 0, "per": "minute"}]}, "limits[0].requests", "at least 1"),
        ("rate_limit", {"limits": [{"requests": -5, "per": "minute"}]}, "limits[0].requests", "at least 1"),
        ("rate_limit", {"limits": [{"requests": 1.5, "per": "minute"}]}, "limits[0].requests", "integer"),
        ("rate_limit", {"limits": [{"requests": "10", "per": "minute"}]}, "limits[0].requests", "integer"),
        ("rate_limit", {"limits": [{"requests": 10**10, "per": "minute"}]}, "limits[0].requests", "at most"),
        ("rate_limit", {"limits": [{"per": "minute"}]}, "limits[0]", "needs requests"),
        ("rate_limit", {"limits": [{"requests": 1}]}, "limits[0]", "needs per"),
        ("rate_limit", {"limits": [{"requests": 1, "per": "minute", "burst": 2}]}, "limits[0].burst", "unknown key"),
        (
            "rate_limit",
            {"limits": [{"requests": 1, "per": "minute"}, {"requests": 2, "per": "minute"}]},
            "limits[1].per",
            "limited twice",
        ),
        ("rate_limit", {"limits": [{"requests": 1, "per": "minute"}], "by": "user"}, "by", "consumer, ip, header"),
        ("rate_limit", {"limits": [{"requests": 1, "per": "minute"}], "by": "header"}, "header_name", "required"),
        (
            "rate_limit",
            {"limits": [{"requests": 1, "per": "minute"}], "header_name": "X-Client"},
            "header_name",
            "only read when by is header",
        ),
        (
            "rate_limit",
            {"limits": [{"requests": 1, "per": "minute"}], "by": "header", "header_name": "X_Client"},
            "header_name",
            "never reads",
        ),
        (
            "rate_limit",
            {"limits": [{"requests": 1, "per": "minute"}], "by": "header", "header_name": "Connection"},
            "header_name",
            "hop-by-hop",
        ),
        (
            "rate_limit",
            {"limits": [{"requests": 1, "per": "minute"}], "by": "header", "header_name": "X Client"},
            "header_name",
            "not a valid header name",
        ),
        ("rate_limit", {"limits": [{"requests": 1, "per": "minute"}], "policy": "cluster"}, "policy", "local, redis"),
        (
            "rate_limit",
            {"limits": [{"requests": 1, "per": "minute"}], "fault_tolerant": "yes"},
            "fault_tolerant",
            "true",
        ),
        ("rate_limit", {"limits": [{"requests": 1, "per": "minute"}], "mode": "audit"}, "mode", "enforce, report"),
    ],
)
def test_a_bad_plugin_value_is_refused_with_its_path(name: str, config: Any, path: str, words: str) -> None:
    canonical, problems = endpoint_plugin(name, config)
    where = f"endpoints[0].plugins.{name}" + (f".{path}" if path else "")
    assert canonical is None
    assert words in problems.get(where, ""), problems


def test_an_unknown_plugin_name_is_refused_listing_the_known_ones() -> None:
    _, problems = validate(document(global_plugins={"rate_limiting": {}}, plugins={"CORS": {}}))
    known = "known plugins: acl, basic_auth, cors, forward_auth, ip_restriction, jwt, key_auth, rate_limit, "
    known += "request_headers, response_headers"
    assert known in problems["plugins.rate_limiting"] and known in problems["endpoints[0].plugins.CORS"]


@pytest.mark.parametrize("value", [None, [], "cors", 1])
def test_plugins_must_be_a_mapping(value: Any) -> None:
    _, problems = validate({**document(plugins=value), "plugins": value})
    assert "must be a mapping of plugin name to config" in problems["plugins"]
    assert "must be a mapping of plugin name to config" in problems["endpoints[0].plugins"]


@pytest.mark.parametrize("value", [1, "true", None])
def test_preserve_host_is_a_boolean(value: Any) -> None:
    _, problems = validate(document(preserve_host=value))
    assert problems["endpoints[0].preserve_host"].startswith("must")


# --- header names the gateway owns ---------------------------------------------------------------

HOP_BY_HOP = ["Connection", "KEEP-ALIVE", "proxy-authorization", "Proxy-Connection", "te", "Trailer"]
HOP_BY_HOP += ["transfer-encoding", "UPGRADE"]
OWNED = ["X-Forwarded-For", "x-forwarded-proto", "X-FORWARDED-HOST", "Forwarded", "via", "X-Request-Id"]
OWNED += ["x-endpoint-id", "X-Consumer-Username", "x-consumer-groups", "X-Credential-Identifier", "X-Real-IP"]
OWNED += ["x-anonymous-consumer", "X-Response-Time", "x-circuit-breaker", "X-Gateway-Panic", "content-length"]


@pytest.mark.parametrize("plugin", ["request_headers", "response_headers"])
@pytest.mark.parametrize("header", HOP_BY_HOP + OWNED)
def test_hop_by_hop_and_gateway_owned_names_are_refused_in_set_add_and_remove_ignoring_case(
    plugin: str, header: str
) -> None:
    _, problems = validate(document(plugins={plugin: {"set": {header: "v"}, "add": {header: "v"}, "remove": [header]}}))
    base = f"endpoints[0].plugins.{plugin}"
    expected = "hop-by-hop" if header in HOP_BY_HOP else "written by the gateway itself"
    for where in (f"{base}.set.{header}", f"{base}.add.{header}", f"{base}.remove[0]"):
        assert expected in problems[where], problems


# --- hostile input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "config", "path"),
    [
        ("request_headers", {"set": {"X-A\x00": "v"}}, "set.X-A\\x00"),  # paths show such keys escaped
        ("request_headers", {"set": {"X-A": "v\x00"}}, "set.X-A"),
        ("request_headers", {"set": {"X-\ud800": "v"}}, "set.X-\\ud800"),
        ("request_headers", {"set": {"X-A": "\udcff"}}, "set.X-A"),
        ("response_headers", {"remove": ["\ud83d"]}, "remove[0]"),
        ("cors", {"origins": ["https://a.example\x00"]}, "origins[0]"),
        ("cors", {"origins": ["https://\ud800.example"]}, "origins[0]"),
        ("cors", {"expose_headers": ["X-\x00"]}, "expose_headers[0]"),
        ("ip_restriction", {"allow": ["10.0.0.1\x00"]}, "allow[0]"),
        ("ip_restriction", {"allow": ["\ud800"]}, "allow[0]"),
        ("ip_restriction", {"allow": ["1" * 5000]}, "allow[0]"),
        ("cors", {"origins": ["https://a.example"] * (MAX_LIST + 1)}, "origins"),
        ("ip_restriction", {"deny": ["10.0.0.1"] * (MAX_LIST + 1)}, "deny"),
        ("response_headers", {"set": {f"X-{i}": "v" for i in range(MAX_LIST + 1)}}, "set"),
        ("request_headers", {"remove": ["X-A"] * (MAX_LIST + 1)}, "remove"),
        ("cors", {"headers": ["X-A"] * (MAX_LIST + 1)}, "headers"),
        ("rate_limit", {"limits": [{"requests": 1, "per": "minute\x00"}]}, "limits[0].per"),
        ("rate_limit", {"limits": [{"requests": 1, "per": "\ud800"}]}, "limits[0].per"),
        ("rate_limit", {"limits": [{"requests": 1, "per": "minute", "\ud800": 1}]}, "limits[0].\\ud800"),
        ("rate_limit", {"limits": [{"requests": 1, "per": p} for p in ["second"] * 5]}, "limits"),
        ("rate_limit", {"limits": [{"requests": 1, "per": "minute"}] * 100_000}, "limits"),
        ("rate_limit", {"limits": [[[[[[[[[[[]]]]]]]]]]]}, "limits[0]"),
        (
            "rate_limit",
            {"limits": [{"requests": 1, "per": "minute"}], "by": "header", "header_name": "X-\x00"},
            "header_name",
        ),
        (
            "rate_limit",
            {"limits": [{"requests": 1, "per": "minute"}], "by": "header", "header_name": "X-\ud800"},
            "header_name",
        ),
        (
            "rate_limit",
            {"limits": [{"requests": 1, "per": "minute"}], "by": "header", "header_name": "X" * 5000},
            "header_name",
        ),
        ("rate_limit", {"limits": [{"requests": 10**400, "per": "minute"}]}, "limits[0].requests"),
        ("rate_limit", {"limits": [{"requests": float("nan"), "per": "minute"}]}, "limits[0].requests"),
    ],
)
def test_hostile_values_are_refused_with_their_path_not_crashing(name: str, config: Any, path: str) -> None:
    canonical, problems = endpoint_plugin(name, config)
    assert canonical is None
    assert f"endpoints[0].plugins.{name}.{path}" in problems, problems
    for message in problems.values():  # messages show control characters escaped, never raw
        assert "\x00" not in message and "\r" not in message and "\n" not in message
        message.encode("utf-8")  # no lone surrogate made it into a message


def test_every_problem_in_a_yaml_file_is_reported_at_once_with_its_line() -> None:
    text = """\
format_version: 2
plugins:
  cors: {credentials: true}
  auth: {}
endpoints:
  - name: orders
    version: v1
    targets: [{url: "http://127.0.0.1:8010"}]
    preserve_host: "yes"
    plugins:
      request_headers:
        set:
          X-Forwarded-For: 1.2.3.4
          X-Env: prod
        remove: [Connection]
      ip_restriction:
        allow: [10.0.0.0/8, not-an-ip]
"""
    result = load_document(text, max_format_version=2)
    found = {problem.path: problem.line for problem in result.problems}
    assert found == {
        "plugins.cors.origins": 3,
        "plugins.auth": 4,
        "endpoints[0].preserve_host": 9,
        "endpoints[0].plugins.request_headers.set.X-Forwarded-For": 13,
        "endpoints[0].plugins.request_headers.remove[0]": 15,
        "endpoints[0].plugins.ip_restriction.allow[1]": 17,
    }
    assert result.document == {}


def test_rate_limits_are_written_shortest_window_first_and_the_effective_form_has_every_default() -> None:
    limits = [{"per": "day", "requests": 1000}, {"requests": 10, "per": "second"}, {"requests": 100, "per": "minute"}]
    canonical, problems = endpoint_plugin("rate_limit", {"limits": limits, "by": "consumer", "policy": "local"})
    assert problems == {}
    assert canonical == {
        "limits": [
            {"requests": 10, "per": "second"},
            {"requests": 100, "per": "minute"},
            {"requests": 1000, "per": "day"},
        ]
    }
    assert effective_plugin_config("rate_limit", canonical) == {
        **canonical,
        "by": "consumer",
        "header_name": None,
        "policy": "local",
        "fault_tolerant": True,
        "enabled": True,
        "mode": "enforce",
    }


def test_a_global_rate_limit_is_turned_off_on_an_endpoint_by_enabled_false_alone() -> None:
    limit = {"limits": [{"requests": 10, "per": "minute"}]}
    canonical, problems = validate(
        document(global_plugins={"rate_limit": limit}, plugins={"rate_limit": {"enabled": False}})
    )
    assert problems == {}
    assert effective_plugins(canonical["plugins"], canonical["endpoints"][0]["plugins"]) == {}


# --- the reference page ---------------------------------------------------------------------------


def test_the_docs_plugins_reference_is_the_one_generated_from_the_schema() -> None:
    page = (ROOT / "docs" / "config-document.md").read_text(encoding="utf-8")
    begin, end = "<!-- plugins reference: begin -->\n", "\n<!-- plugins reference: end -->"
    section = page[page.index(begin) + len(begin) : page.index(end)]
    assert section == reference_markdown(), (
        "docs/config-document.md is out of date: paste configdoc.plugins.reference_markdown() between the markers"
    )
    for name, spec in PLUGINS.items():
        assert f"### `{name}`" in section
        for field in spec.fields:
            assert f"| `{field}` |" in section.split(f"### `{name}`")[1].split("###")[0]
    for key in FORMAT_2_ENDPOINT_KEYS:
        assert f"`{key}`" in page
