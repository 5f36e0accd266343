"""The seed gateway's `config.yaml` (format v0) mapped onto the v1 document (ARCHITECTURE §3).

A document without `format_version` is a seed file:

    endpoints: [{url, name, version, methods, auth_type, disabled, health_check_path, timeout}]
    circuit_breaker: {failure_threshold, reset_timeout, half_open_max_calls, fallback_strategy}
    health_check: {enabled, interval, timeout, unhealthy_threshold, healthy_threshold}
    log_level, metrics_enabled, auth_algorithm

`url` becomes the only target, `disabled` becomes `enabled` negated, `circuit_breaker` becomes the
`default` policy (missing fields keep v1 defaults), `health_check` becomes the document defaults and
`health_check_path` the endpoint's `health_check.path`. The process-level keys are accepted with a
warning (this gateway configures logging, metrics and JWT elsewhere); any other key is an error.
`fallback_strategy: redirect` is refused by the v1 policy validator with the reason.

`to_v1` returns the v1 data (still to be validated), problems, warnings and `v1 path → v0 path`, so
the loader can point a v1 problem at the seed file's own line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .problems import Problem, child, item

SEED_TOP_KEYS = ("endpoints", "circuit_breaker", "health_check")
SEED_IGNORED_KEYS = ("log_level", "metrics_enabled", "auth_algorithm")
SEED_ENDPOINT_KEYS = ("url", "name", "version", "methods", "auth_type", "disabled", "health_check_path", "timeout")


def is_seed_document(data: Any) -> bool:
    """A mapping without `format_version` is the seed (v0) format."""
    return isinstance(data, Mapping) and "format_version" not in data


def to_v1(data: Mapping[str, Any]) -> tuple[dict[str, Any], list[Problem], list[Problem], dict[str, str]]:
    problems: list[Problem] = []
    warnings: list[Problem] = []
    paths: dict[str, str] = {}
    document: dict[str, Any] = {"format_version": 1}
    for key in data:
        if key in SEED_IGNORED_KEYS:
            warnings.append(Problem(str(key), "ignored: this gateway does not configure it in the config document"))
        elif key not in SEED_TOP_KEYS:
            allowed = ", ".join(SEED_TOP_KEYS + SEED_IGNORED_KEYS)
            problems.append(Problem(child("", key), f"unknown key in a seed (v0) file (expected one of {allowed})"))

    breaker = data.get("circuit_breaker")
    if breaker is not None:
        if not isinstance(breaker, Mapping):
            problems.append(Problem("circuit_breaker", "must be a mapping"))
        elif "name" in breaker:
            problems.append(Problem("circuit_breaker.name", "unknown key (the seed's breaker becomes policy default)"))
        else:
            document["breaker_policies"] = [{"name": "default", **breaker}]
            paths["breaker_policies[0]"] = "circuit_breaker"

    if data.get("health_check") is not None:
        document["health_check"] = data["health_check"]

    endpoints = data.get("endpoints")
    if endpoints is not None and not isinstance(endpoints, list):
        problems.append(Problem("endpoints", "must be a list"))
    elif endpoints is not None:
        document["endpoints"] = [_endpoint(entry, index, problems, paths) for index, entry in enumerate(endpoints)]
    return document, problems, warnings, paths


def _endpoint(entry: Any, index: int, problems: list[Problem], paths: dict[str, str]) -> Any:
    where = item("endpoints", index)
    if not isinstance(entry, Mapping):
        return entry  # the v1 validator names the wrong type
    endpoint: dict[str, Any] = {}
    for key, value in entry.items():
        if key not in SEED_ENDPOINT_KEYS:
            problems.append(
                Problem(child(where, key), f"unknown key (a seed endpoint has {', '.join(SEED_ENDPOINT_KEYS)})")
            )
        elif key == "url":
            endpoint["targets"] = [{"url": value}]
            paths[f"{where}.targets[0].url"] = child(where, "url")
            paths[f"{where}.targets"] = child(where, "url")
        elif key == "disabled":
            if not isinstance(value, bool):
                problems.append(Problem(child(where, "disabled"), "must be true or false"))
            else:
                endpoint["enabled"] = not value
            paths[f"{where}.enabled"] = child(where, "disabled")
        elif key == "health_check_path":
            endpoint["health_check"] = {"path": value}
            paths[f"{where}.health_check.path"] = child(where, "health_check_path")
            paths[f"{where}.health_check"] = child(where, "health_check_path")
        else:
            endpoint[key] = value
    if "url" not in entry:
        paths[f"{where}.targets"] = child(where, "url")
    return endpoint
