"""Loading documents from YAML/JSON (caps, lines, the seed format) and writing them back as YAML."""

from __future__ import annotations

import json
import time

import pytest

from configdoc import dump_document_yaml, load_document
from configdoc.untrusted import MAX_DEPTH
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


# --- nesting and characters (configdoc.untrusted's rules) -------------------------------------------


def nested(levels: int) -> str:
    """A document whose mappings and lists nest `levels` deep (the document itself is the first)."""
    return "format_version: 1\nendpoints: " + "[" * (levels - 1) + "]" * (levels - 1) + "\n"


def test_a_document_nested_to_the_limit_parses_and_one_level_more_is_refused() -> None:
    at_limit = load_document(nested(MAX_DEPTH)).problems
    assert [p.path for p in at_limit] == ["endpoints[0]"]  # parsed: the list is simply not an endpoint
    past = load_document(nested(MAX_DEPTH + 1)).problems
    assert [(p.path, p.message, p.line) for p in past] == [
        ("", f"refused: the document is nested more than {MAX_DEPTH} levels deep", 2)
    ]


@pytest.mark.parametrize("text", ["[" * 100_000, "- " * 100_000 + "x", "a: {" * 100_000])
def test_nesting_deep_enough_to_exhaust_the_parser_is_a_problem_not_an_exception(text: str) -> None:
    problems = load_document(text).problems
    assert [p.message for p in problems] == [f"refused: the document is nested more than {MAX_DEPTH} levels deep"]


def test_aliases_nesting_anchored_values_past_the_limit_are_refused() -> None:
    # Each anchored value is 33 deep; the second holds the first, so expanded it is 66.
    text = "a: &a " + "[" * 32 + "1" + "]" * 32 + "\nb: " + "[" * 32 + "*a" + "]" * 32 + "\n"
    problems = load_document(text).problems
    assert [p.message for p in problems] == [
        f"refused: the document is nested more than {MAX_DEPTH} levels deep (with its aliases expanded)"
    ]


def test_a_chain_of_aliases_each_within_the_limit_is_refused_without_recursing_through_it() -> None:
    lines = ["a0: &a0 " + "[" * 60 + "1" + "]" * 60]
    lines += [f"a{i}: &a{i} " + "[" * 60 + f"*a{i - 1}" + "]" * 60 for i in range(1, 200)]
    problems = load_document("\n".join(lines)).problems
    assert len(problems) == 1 and "aliases expanded" in problems[0].message


@pytest.mark.parametrize("character", ["\x00", "\x07", "\x1b", "\x7f", "\ud800"])
def test_a_character_yaml_does_not_allow_is_reported_with_its_line(character: str) -> None:
    problems = load_document(f"format_version: 1\n\nendpoints: []  # {character}\n").problems
    assert [(p.message, p.line) for p in problems] == [
        (f"not valid YAML: character U+{ord(character):04X} is not allowed", 3)
    ]


@pytest.mark.parametrize(
    ("escape", "message"),
    [
        ("\\0", "must not contain NUL characters (\\u0000)"),
        ("\\ud800", "must not contain a lone surrogate (\\ud800): text must be valid Unicode"),
        ("\\udfff", "must not contain a lone surrogate (\\udfff): text must be valid Unicode"),
    ],
)
def test_nul_or_a_lone_surrogate_escaped_in_a_string_is_a_problem_at_its_path(escape: str, message: str) -> None:
    text = V1 + f'    description: "caf\u00e9 {escape}"\n'
    problems = load_document(text).problems
    assert [(p.path, p.message, p.line) for p in problems] == [("endpoints[0].description", message, 12)]


def test_a_lone_surrogate_in_a_key_is_named_with_an_escape() -> None:
    problems = load_document(V1 + '    "\\ud800\\0": 1\n').problems
    assert [(p.path, p.line) for p in problems] == [("endpoints[0].\\ud800\\x00", 12)]
    json.dumps([p.as_dict() for p in problems], ensure_ascii=False).encode("utf-8")  # no lone surrogate left


def test_a_paired_surrogate_escape_is_an_ordinary_character() -> None:
    result = load_document(V1 + '    description: "\\ud83d\\ude80 launch"\n')
    assert result.ok
    assert result.document["endpoints"][0]["description"] == "\U0001f680 launch"


@pytest.mark.parametrize("key", ["0x10", "1_000", "0o17", "+12"])
def test_a_top_level_key_read_as_another_spelling_is_reported_not_looped_on(key: str) -> None:
    # The integer 16 names no line ("0x10" does): the line lookup once looped forever walking up from "16".
    problems = load_document(f"format_version: 1\n{key}: x\n").problems
    assert len(problems) == 1 and problems[0].message.startswith("unknown key")


def test_an_escaped_surrogate_pair_in_a_json_key_is_named_as_one_character() -> None:
    problems = load_document(json.dumps({"format_version": 1, "\U0001f680": 1})).problems
    assert [(p.path, p.line) for p in problems] == [("\U0001f680", 1)]
