"""Breaker policies, whole documents, canonical JSON and the hash."""

from __future__ import annotations

from typing import Any

import pytest

from configdoc import (
    assemble_document,
    canonical_json,
    config_sha256,
    effective_breaker_policy,
    normalize_breaker_policy,
    validate_document,
)


def test_a_policy_at_defaults_is_just_its_name_and_its_effective_form_has_every_default() -> None:
    document, problems = normalize_breaker_policy({"name": "default", "failure_threshold": 5, "cache": {}})
    assert (document, problems) == ({"name": "default"}, [])
    assert effective_breaker_policy(document) == {
        "name": "default",
        "failure_threshold": 5,
        "failure_rate_threshold": None,
        "window_seconds": 30,
        "minimum_calls": 20,
        "reset_timeout": 60,
        "half_open_max_calls": 3,
        "success_threshold": 2,
        "failure_statuses": ["5xx"],
        "fallback_strategy": "error_response",
        "fallback": {"status": 503, "content_type": "application/json", "body": ""},
        "cache": {"max_entries": 1000, "max_bytes": 1048576, "max_age": 300},
    }


@pytest.mark.parametrize(
    ("fields", "path", "words"),
    [
        ({"failure_threshold": 0}, "failure_threshold", "at least 1"),
        ({"failure_threshold": 1001}, "failure_threshold", "at most 1000"),
        ({"reset_timeout": 3601}, "reset_timeout", "at most 3600"),
        ({"failure_rate_threshold": 0}, "failure_rate_threshold", "greater than 0"),
        ({"failure_rate_threshold": 101}, "failure_rate_threshold", "at most 100"),
        ({"success_threshold": 4}, "success_threshold", "half_open_max_calls"),
        ({"failure_statuses": ["6xx"]}, "failure_statuses[0]", "'6xx'"),
        ({"failure_statuses": []}, "failure_statuses", "must not be empty"),
        ({"fallback_strategy": "redirect"}, "fallback_strategy", "redirect is not supported"),
        ({"fallback": {"status": 700}}, "fallback.status", "at most 599"),
        ({"cache": {"max_entries": 0}}, "cache.max_entries", "at least 1"),
        ({"name": "a b"}, "name", "letters, digits"),
    ],
)
def test_a_bad_policy_value_is_refused_with_its_path(fields: dict[str, Any], path: str, words: str) -> None:
    document, problems = normalize_breaker_policy({"name": "p", **fields})
    found = {p.path: p.message for p in problems}
    assert document == {}
    assert words in found[path], found


def test_an_unset_success_threshold_never_exceeds_half_open_max_calls() -> None:
    document, problems = normalize_breaker_policy({"name": "p", "half_open_max_calls": 1})
    assert problems == []
    assert effective_breaker_policy(document)["success_threshold"] == 1
    assert effective_breaker_policy({"name": "p", "half_open_max_calls": 5})["success_threshold"] == 2


def test_failure_statuses_mix_classes_and_numbers_in_a_stable_order() -> None:
    document, _ = normalize_breaker_policy({"name": "p", "failure_statuses": [503, "5XX", "429", 503]})
    assert document["failure_statuses"] == ["5xx", 429, 503]


def test_canonical_json_sorts_keys_drops_whitespace_and_writes_whole_numbers_as_integers() -> None:
    assert canonical_json({"b": 30.0, "a": [1.5, "é"]}) == '{"a":[1.5,"é"],"b":30}'.encode()


def test_the_hash_depends_on_content_not_on_spelling() -> None:
    one = validate_document(
        {
            "format_version": 1,
            "endpoints": [
                {
                    "name": "a",
                    "version": "v1",
                    "timeout": 30.0,
                    "targets": [{"url": "http://127.0.0.1:1/", "weight": 100}],
                },
            ],
        }
    )[0]
    two = validate_document(
        {
            "endpoints": [
                {"targets": [{"url": "HTTP://127.0.0.1:1"}], "version": "v1", "name": "a", "default": True},
            ],
            "format_version": 1,
            "breaker_policies": [{"name": "default"}],
        }
    )[0]
    assert config_sha256(one) == config_sha256(two)


def test_a_document_sorts_its_sections_and_always_holds_the_default_policy() -> None:
    document = assemble_document(
        breaker_policies=[{"name": "z"}, {"name": "default"}],
        endpoints=[{"name": "b", "version": "v1"}, {"name": "a", "version": "v2"}, {"name": "a", "version": "v10"}],
    )
    assert [p["name"] for p in document["breaker_policies"]] == ["default", "z"]
    assert [(e["name"], e["version"]) for e in document["endpoints"]] == [("a", "v10"), ("a", "v2"), ("b", "v1")]


def target() -> list[dict[str, str]]:
    return [{"url": "http://127.0.0.1:8010"}]


def test_a_document_reports_every_cross_object_problem() -> None:
    _, problems = validate_document(
        {
            "format_version": 1,
            "breaker_policies": [{"name": "p"}, {"name": "p"}],
            "endpoints": [
                {"name": "a", "version": "v1", "targets": target(), "paths": ["/shop"], "breaker_policy": "nope"},
                {"name": "b", "version": "v1", "targets": target(), "paths": ["/shop/"]},
                {"name": "b", "version": "v1", "targets": target()},
                {"name": "c", "version": "v1", "default": True, "targets": target()},
                {"name": "c", "version": "v2", "default": True, "targets": target()},
            ],
            "colour": "blue",
        }
    )
    found = {p.path: p.message for p in problems}
    assert "defined twice" in found["breaker_policies[1].name"]
    assert "unknown breaker policy 'nope'" in found["endpoints[0].breaker_policy"]
    assert found["endpoints[1].paths"].startswith(
        "route key /shop is claimed by both a:v1 (endpoints[0]) and b:v1 (endpoints[1]), and no request could choose"
    )
    assert "b:v1 is defined twice" in found["endpoints[2].version"]
    assert "c:v1 and c:v2 are both marked default" in found["endpoints[4].default"]
    assert "unknown key" in found["colour"]


def test_a_name_without_a_default_version_gets_its_highest() -> None:
    document, problems = validate_document(
        {
            "format_version": 1,
            "endpoints": [
                {"name": "a", "version": "v9", "targets": target()},
                {"name": "a", "version": "v10", "targets": target()},
            ],
        }
    )
    assert problems == []
    assert {e["version"]: e["default"] for e in document["endpoints"]} == {"v10": True, "v9": False}


def test_the_format_version_is_required() -> None:
    _, problems = validate_document({"endpoints": []})
    assert [p.path for p in problems] == ["format_version"]


def test_problems_carry_yaml_lines_from_the_nearest_located_parent() -> None:
    lines = {"endpoints[0]": 4, "endpoints[0].timeout": 7}
    _, problems = validate_document(
        {"format_version": 1, "endpoints": [{"name": "a", "version": "v1", "timeout": 0, "targets": [{"url": "x"}]}]},
        lines=lines,
    )
    assert {p.path: p.line for p in problems} == {"endpoints[0].timeout": 7, "endpoints[0].targets[0].url": 4}
