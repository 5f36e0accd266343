"""Loading documents from YAML/JSON (caps, lines, the seed format) and writing them back as YAML."""

from __future__ import annotations

import json
import time

import pytest

from configdoc import dump_document_yaml, load_document
from configdoc.yamlio import MAX_ALIASES, MAX_DOCUMENT_BYTES

V1 = """\
format_version: 1
breaker_policies:
  - name: strict
    failure_threshold: 2
endpoints:
  - name: users
    version: v1
    targets:
      - url: http://127.0.0.1:8010/api
    methods: [POST, GET]
    breaker_policy: strict
"""

SEED = """\
endpoints:
  - url: "http://127.0.0.1:8010/get"
    name: "httpbin_get"
    version: "v1"
    methods: ["GET"]
    auth_type: "none"
    disabled: true
    health_check_path: "/get"
    timeout: 20
circuit_breaker:
  failure_threshold: 7
  reset_timeout: 60
  half_open_max_calls: 3
  fallback_strategy: "error_response"
health_check:
  enabled: true
  interval: 15
log_level: "INFO"
metrics_enabled: true
auth_algorithm: "HS256"
"""


def billion_laughs() -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, 9):
        name, previous = chr(97 + level), chr(96 + level)
        lines.append(f"{name}: &{name} [" + ",".join([f"*{previous}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_a_v1_yaml_document_loads_into_its_canonical_form() -> None:
    result = load_document(V1)
    assert result.problems == [] and result.warnings == []
    assert result.document["endpoints"][0]["methods"] == ["GET", "POST"]
    assert [p["name"] for p in result.document["breaker_policies"]] == ["default", "strict"]


def test_json_text_loads_like_yaml() -> None:
    as_json = json.dumps(load_document(V1).document)
    assert load_document(as_json.encode()).document == load_document(V1).document


def test_a_billion_laughs_file_is_refused_quickly_with_a_clear_problem() -> None:
    started = time.monotonic()
    result = load_document(billion_laughs())
    assert time.monotonic() - started < 2
    assert result.document == {}
    [problem] = result.problems
    assert "aliases" in problem.message and problem.line is not None


def test_too_many_aliases_are_refused() -> None:
    text = "x: &x 1\nys: [" + ",".join(["*x"] * (MAX_ALIASES + 1)) + "]\n"
    [problem] = load_document(text).problems
    assert f"more than {MAX_ALIASES} aliases" in problem.message


def test_a_self_referring_alias_is_refused() -> None:
    [problem] = load_document("a: &a [*a]\n").problems
    assert "refers to itself" in problem.message


def test_an_input_over_the_size_cap_is_refused_before_parsing() -> None:
    [problem] = load_document(b"#" * (MAX_DOCUMENT_BYTES + 1)).problems
    assert "limit" in problem.message


@pytest.mark.parametrize("text", ["", "---\n", "[1, 2\n", "!!python/object:os.system {}\n", b"\xff\xfe\x00"])
def test_empty_broken_unsafe_or_undecodable_input_is_a_problem_not_an_exception(text: str | bytes) -> None:
    result = load_document(text)
    assert result.document == {} and result.problems


def test_an_unknown_key_is_reported_with_its_line() -> None:
    text = V1.replace("    breaker_policy: strict\n", "    breaker_policy: strict\n    colour: blue\n")
    [problem] = load_document(text).problems
    assert (problem.path, problem.line) == ("endpoints[0].colour", 12)


def test_every_problem_is_reported_at_once_with_lines() -> None:
    text = V1 + "  - name: users\n    version: v2\n    targets: [{url: 'ftp://127.0.0.1/'}]\ncolour: red\n"
    problems = {(p.path, p.line) for p in load_document(text).problems}
    assert problems == {("endpoints[1].targets[0].url", 14), ("colour", 15)}


def test_a_duplicate_mapping_key_is_reported_not_silently_overwritten() -> None:
    text = V1.replace("    version: v1\n", "    version: v1\n    version: v2\n")
    [problem] = load_document(text).problems
    assert (problem.path, problem.line) == ("endpoints[0].version", 8)
    assert "duplicate" in problem.message


def test_a_seed_allowing_one_half_open_call_loads_unchanged() -> None:
    result = load_document(SEED.replace("half_open_max_calls: 3", "half_open_max_calls: 1"))
    assert result.problems == []
    assert result.document["breaker_policies"] == [
        {"name": "default", "failure_threshold": 7, "half_open_max_calls": 1}
    ]


def test_the_seed_format_maps_onto_v1_with_warnings_for_process_settings() -> None:
    result = load_document(SEED)
    assert result.problems == []
    assert {w.path for w in result.warnings} == {"log_level", "metrics_enabled", "auth_algorithm"}
    assert result.warnings[0].line == 18
    assert result.document["breaker_policies"] == [{"name": "default", "failure_threshold": 7}]
    assert result.document["health_check"] == {"interval": 15}
    assert result.document["endpoints"] == [
        {
            "name": "httpbin_get",
            "version": "v1",
            "default": True,
            "enabled": False,
            "targets": [{"url": "http://127.0.0.1:8010/get"}],
            "timeout": 20,
            "health_check": {"path": "/get"},
        }
    ]


def test_a_seed_endpoint_with_a_timeout_under_five_seconds_loads() -> None:
    result = load_document(SEED.replace("    timeout: 20\n", "    timeout: 1\n"))
    assert result.problems == []
    assert result.document["endpoints"][0]["timeout"] == 1
    assert "connect_timeout" not in result.document["endpoints"][0]


def test_a_v1_document_with_a_timeout_under_five_seconds_loads() -> None:
    text = "format_version: 1\nendpoints:\n  - {name: a, version: v1, targets: [{url: 'http://127.0.0.1'}], timeout: 1}"
    result = load_document(text)
    assert result.problems == []
    assert result.document["endpoints"][0]["timeout"] == 1


def test_an_unknown_seed_key_is_an_error_at_its_line() -> None:
    result = load_document(SEED.replace("    timeout: 20\n", "    timeout: 20\n    retries: 3\n") + "colour: red\n")
    assert {(p.path, p.line) for p in result.problems} == {("endpoints[0].retries", 10), ("colour", 22)}


def test_a_seed_redirect_fallback_is_refused_with_the_reason() -> None:
    [problem] = load_document(SEED.replace('"error_response"', '"redirect"')).problems
    assert problem.path == "circuit_breaker.fallback_strategy" and problem.line == 14
    assert "redirect is not supported" in problem.message


def test_a_bad_seed_url_is_reported_at_the_seed_url_line() -> None:
    [problem] = load_document(SEED.replace("http://127.0.0.1:8010/get", "ftp://127.0.0.1/")).problems
    assert (problem.path, problem.line) == ("endpoints[0].url", 2)


def test_a_seed_endpoint_without_url_names_url() -> None:
    problems = load_document(SEED.replace('  - url: "http://127.0.0.1:8010/get"\n    name', "  - name")).problems
    assert [p.path for p in problems] == ["endpoints[0].url"]


def test_dump_is_stable_sparse_and_loads_back_to_the_same_document() -> None:
    document = load_document(V1).document
    text = dump_document_yaml(document)
    assert text == dump_document_yaml(load_document(text).document)
    assert load_document(text).document == document
    assert text.splitlines()[0] == "format_version: 1"
    assert "timeout" not in text  # defaults stay sparse


def test_the_retries_on_key_of_section_3_is_a_string_not_yaml_1_1_true() -> None:
    text = V1.replace("    breaker_policy: strict\n", "    retries: {attempts: 3, on: [timeout]}\n")
    result = load_document(text)
    assert result.problems == []
    assert result.document["endpoints"][0]["retries"] == {"attempts": 3, "on": ["timeout"]}


def test_yes_and_no_are_not_guessed_as_booleans() -> None:
    [problem] = load_document(V1.replace("    methods: [POST, GET]\n", "    enabled: yes\n")).problems
    assert problem.path == "endpoints[0].enabled" and "true or false" in problem.message


def test_a_dumped_retries_on_key_loads_back_under_any_yaml_reader() -> None:
    text = V1.replace("    breaker_policy: strict\n", "    retries: {on: [timeout, 503]}\n")
    document = load_document(text).document
    dumped = dump_document_yaml(document)
    assert "'on':" in dumped
    assert load_document(dumped).document == document
