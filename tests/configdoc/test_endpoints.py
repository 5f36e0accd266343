"""configdoc's endpoint rules: every default, range and refusal a person writing a document meets."""

from __future__ import annotations

from typing import Any

import pytest

from configdoc import effective_endpoint, normalize_endpoint


def endpoint(**fields: Any) -> dict[str, Any]:
    return {"name": "users", "version": "v1", "targets": [{"url": "http://127.0.0.1:8010/api"}], **fields}


def problems_of(data: Any, **options: Any) -> dict[str, str]:
    document, problems = normalize_endpoint(data, **options)
    assert (document == {}) == bool(problems)
    return {problem.path: problem.message for problem in problems}


def test_a_minimal_endpoint_is_canonical_with_only_the_keys_that_identify_it() -> None:
    document, problems = normalize_endpoint(endpoint())
    assert problems == []
    assert document == {
        "name": "users",
        "version": "v1",
        "default": False,
        "targets": [{"url": "http://127.0.0.1:8010/api"}],
    }


def test_values_equal_to_their_defaults_are_dropped_recursively() -> None:
    document, _ = normalize_endpoint(
        endpoint(
            timeout=30.0,
            methods=["GET"],
            enabled=True,
            retries={"attempts": 2, "on": ["connect_error"]},
            tls={"verify": True},
            targets=[{"url": "http://127.0.0.1:8010/api", "weight": 100, "enabled": True}],
        )
    )
    assert document == normalize_endpoint(endpoint())[0]


def test_lists_are_put_in_a_stable_order_and_spellings_normalised() -> None:
    document, _ = normalize_endpoint(
        endpoint(
            methods=["post", "GET", "get"],
            tags=["b", "a", "b"],
            paths=["/z/", "/a"],
            targets=[{"url": "HTTP://127.0.0.1:9/b/"}, {"url": "http://127.0.0.1:9/a"}],
        )
    )
    assert document["methods"] == ["GET", "POST"]
    assert document["tags"] == ["a", "b"]
    assert document["paths"] == ["/a", "/z"]
    assert [t["url"] for t in document["targets"]] == ["http://127.0.0.1:9/a", "http://127.0.0.1:9/b"]


def test_effective_form_fills_every_default_of_section_3() -> None:
    full = effective_endpoint(normalize_endpoint(endpoint())[0])
    assert full["methods"] == ["GET"]
    assert (full["timeout"], full["connect_timeout"], full["read_idle_timeout"]) == (30, 5, 60)
    assert full["max_body_bytes"] == 10485760
    assert full["retries"] == {
        "attempts": 2,
        "on": ["connect_error"],
        "per_try_timeout": None,
        "retry_non_idempotent": False,
    }
    assert full["outlier"] == {"consecutive_failures": 5, "base_ejection_seconds": 30, "max_ejection_percent": 50}
    assert full["tls"] == {"verify": True, "ca_file": None, "server_name": None}
    assert (full["auth_type"], full["breaker_policy"], full["strip_path"]) == ("none", "default", True)
    assert full["targets"] == [{"url": "http://127.0.0.1:8010/api", "weight": 100, "enabled": True}]
    assert full["health_check"]["interval"] == 30 and full["health_check"]["expected_statuses"] == ["2xx", "3xx"]


def test_a_timeout_under_five_seconds_alone_is_valid_and_the_connect_timeout_follows_it() -> None:
    document, problems = normalize_endpoint(endpoint(timeout=1))
    assert problems == []
    assert "connect_timeout" not in document
    assert effective_endpoint(document)["connect_timeout"] == 1
    assert effective_endpoint(normalize_endpoint(endpoint(timeout=3.5))[0])["connect_timeout"] == 3.5


def test_a_connect_timeout_that_is_set_must_not_exceed_the_timeout() -> None:
    assert problems_of(endpoint(timeout=2, connect_timeout=3)) == {
        "connect_timeout": "must not exceed the endpoint's timeout (2)"
    }
    document, problems = normalize_endpoint(endpoint(timeout=2, connect_timeout=0.5))
    assert problems == [] and effective_endpoint(document)["connect_timeout"] == 0.5


def test_health_check_keys_are_kept_as_overrides_even_when_equal_to_the_builtin_default() -> None:
    document, _ = normalize_endpoint(endpoint(health_check={"path": "/health", "interval": 30}))
    assert document["health_check"] == {"path": "/health", "interval": 30}
    merged = effective_endpoint(document, {"interval": 60, "panic": True})
    assert (merged["health_check"]["interval"], merged["health_check"]["panic"]) == (30, True)


@pytest.mark.parametrize(
    ("fields", "path", "words"),
    [
        ({"timeout": 0}, "timeout", "at least 1 and at most 300"),
        ({"timeout": 301}, "timeout", "at most 300"),
        ({"connect_timeout": 0.05}, "connect_timeout", "at least 0.1"),
        ({"max_body_bytes": -1}, "max_body_bytes", "at least 0"),
        ({"retries": {"attempts": 11}}, "retries.attempts", "at most 10"),
        ({"retries": {"on": ["teapot"]}}, "retries.on[0]", "'teapot'"),
        ({"retries": {"per_try_timeout": 40}}, "retries.per_try_timeout", "must not exceed the endpoint's timeout"),
        ({"outlier": {"max_ejection_percent": 101}}, "outlier.max_ejection_percent", "at most 100"),
        ({"methods": ["BREW"]}, "methods[0]", "must be one of"),
        ({"methods": []}, "methods", "must not be empty"),
        ({"auth_type": "kerberos"}, "auth_type", "must be one of"),
        ({"name": "no spaces"}, "name", "letters, digits"),
        ({"version": "latest"}, "version", "like v1"),
        ({"enabled": "yes"}, "enabled", "true or false"),
        ({"timeout": True}, "timeout", "must be a number"),
        ({"paths": ["api"]}, "paths[0]", "must start with '/'"),
        ({"paths": ["/a/../b"]}, "paths[0]", "'..'"),
        ({"paths": ["/a//b"]}, "paths[0]", "empty segment"),
        ({"targets": []}, "targets", "must not be empty"),
        ({"targets": [{"url": "http://127.0.0.1:1"}] * 2}, "targets[1].url", "duplicates targets[0].url"),
        ({"targets": [{"url": "http://127.0.0.1:1", "weight": 0}]}, "targets[0].weight", "at least 1"),
        ({"health_check": {"interval": 4}}, "health_check.interval", "at least 5"),
        ({"health_check": {"interval": 5, "timeout": 6}}, "health_check.timeout", "must not exceed the interval"),
        ({"health_check": {"path": "health"}}, "health_check.path", "must start with '/'"),
        ({"colour": "blue"}, "colour", "unknown key"),
        ({"id": 7}, "id", "read-only"),
    ],
)
def test_a_bad_value_is_refused_with_its_path_and_a_reason(fields: dict[str, Any], path: str, words: str) -> None:
    found = problems_of(endpoint(**fields))
    assert path in found, found
    assert words in found[path]


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://127.0.0.1/x", "http:// or https://"),
        ("http://user:secret@127.0.0.1/", "credentials"),
        ("http:///nohost", "no host"),
        ("http://127.0.0.1/x?debug=1", "query string"),
        ("http://127.0.0.1:99999/", "not a valid URL"),
        ("http://169.254.169.254/latest/meta-data", "link-local or cloud metadata"),
        ("http://[fe80::1]/", "link-local"),
        ("http://metadata.google.internal/", "metadata"),
        ("http://0xa9fea9fe/", "link-local"),
    ],
)
def test_bad_target_urls_are_refused(url: str, words: str) -> None:
    found = problems_of(endpoint(targets=[{"url": url}]))
    assert words in found["targets[0].url"]


def test_private_and_loopback_targets_are_allowed_and_link_local_only_when_the_setting_says_so() -> None:
    for url in ("http://10.0.0.5:8080", "http://192.168.1.2", "http://[::1]:9000", "https://localhost"):
        assert problems_of(endpoint(targets=[{"url": url}])) == {}
    assert problems_of(endpoint(targets=[{"url": "http://169.254.169.254"}]), allow_link_local=True) == {}


def test_every_problem_is_reported_at_once() -> None:
    found = problems_of(endpoint(timeout=0, methods=["BREW"], targets=[{"url": "ftp://127.0.0.1"}], colour=1))
    assert set(found) == {"timeout", "methods[0]", "targets[0].url", "colour"}


def test_a_document_path_prefix_is_carried_into_problem_paths() -> None:
    found = problems_of(endpoint(timeout=0), path="endpoints[3]")
    assert set(found) == {"endpoints[3].timeout"}
