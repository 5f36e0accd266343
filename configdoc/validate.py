"""Validation and normalisation of endpoints, breaker policies and whole documents.

Every function returns `(value, problems)` and reports every problem it finds, not the first:
a person fixing a file wants the whole list. The value is the canonical sparse form: keys equal to
their default dropped (recursively, empty objects too), lists in a stable order, so the same intent
always has the same bytes and the same hash. `effective_*` puts the defaults back.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from .consumers import normalize_consumers
from .egress import is_denied_target_host
from .plugins import (
    ANONYMOUS_PLUGINS,
    FORMAT_2_ENDPOINT_KEYS,
    chain_problems,
    effective_plugin_config,
    effective_plugins,
    format_2_message,
    normalize_endpoint_policies,
    normalize_plugins,
    required_format_version,
)
from .problems import Problem, child, item
from .routes import Matchers, ambiguous_pairs, endpoint_key, matchers_of, route_keys, version_sort_key
from .schema import (
    BREAKER_POLICY_FIELDS,
    ENDPOINT_FIELDS,
    HEALTH_CHECK_FIELDS,
    POLICY_ALWAYS,
    RETRY_CONDITIONS,
    Field,
)
from .splits import split_problems
from .untrusted import text_problem

# A document says which format it is. Format 1 is §3; format 2 adds §11's keys (configdoc.plugins).
# A document canonicalises to the lowest format that holds it, so a document without §11 keys stays
# format 1 with the bytes and hash it always had. A reader accepts formats up to the one it is given
# (`max_format_version`, default 1), so a reader that has not been taught the policy chain refuses a
# document with policies instead of silently running it without them.
FORMAT_VERSION = 1
LATEST_FORMAT_VERSION = 2
READ_ONLY_KEYS = frozenset({"id", "key", "created_at", "updated_at", "status", "health"})
DOCUMENT_KEYS = ("format_version", "breaker_policies", "health_check", "consumers", "plugins", "endpoints")

_STATUS_CLASS = re.compile(r"^[1-5]xx$")
_PATH_SEGMENT = re.compile(r"^[A-Za-z0-9._~!$&'()*+,;=:@%-]+$")


class _Invalid:
    """Marks a value that failed validation (its problems are already recorded)."""


INVALID = _Invalid()


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return type(value).__name__


def _number(spec: Field, value: Any, path: str, problems: list[Problem], *, integer: bool) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.append(Problem(path, f"must be {'an integer' if integer else 'a number'}, not {_type_name(value)}"))
        return INVALID
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            problems.append(Problem(path, "must be a finite number"))
            return INVALID
        if value.is_integer():
            value = int(value)
        elif integer:
            problems.append(Problem(path, f"must be an integer, not {value}"))
            return INVALID
    low, high = spec.minimum, spec.maximum
    too_low = low is not None and (value <= low if spec.exclusive_minimum else value < low)
    if too_low or (high is not None and value > high):
        lower = f"greater than {_fmt(low)}" if spec.exclusive_minimum else f"at least {_fmt(low)}"
        if low is not None and high is not None:
            message = f"must be {lower} and at most {_fmt(high)}, not {_fmt(value)}"
        elif low is not None:
            message = f"must be {lower}, not {_fmt(value)}"
        else:
            message = f"must be at most {_fmt(high)}, not {_fmt(value)}"
        problems.append(Problem(path, message))
        return INVALID
    return value


def _fmt(number: float | None) -> str:
    if isinstance(number, float) and number.is_integer():
        return str(int(number))
    return str(number)


def _status_list(
    spec: Field, value: Any, path: str, problems: list[Problem], *, extra: tuple[str, ...] = (), lowest: int = 100
) -> Any:
    if not isinstance(value, list):
        problems.append(Problem(path, f"must be a list, not {_type_name(value)}"))
        return INVALID
    if len(value) < spec.min_items:
        problems.append(Problem(path, "must not be empty"))
        return INVALID
    if spec.max_items is not None and len(value) > spec.max_items:
        problems.append(Problem(path, f"must have at most {spec.max_items} entries"))
        return INVALID
    seen: dict[Any, None] = {}
    ok = True
    for index, entry in enumerate(value):
        where = item(path, index)
        if isinstance(entry, str) and (entry.lower() in extra or _STATUS_CLASS.match(entry.lower())):
            seen[entry.lower()] = None
        elif isinstance(entry, str) and entry.isdigit() and lowest <= int(entry) <= 599:
            seen[int(entry)] = None
        elif isinstance(entry, int) and not isinstance(entry, bool) and lowest <= entry <= 599:
            seen[entry] = None
        else:
            allowed = ", ".join(f"{e!r}" for e in extra)
            classes = "'5xx'" if lowest >= 400 else "a class like '5xx'"
            problems.append(
                Problem(
                    where,
                    f"must be {allowed + ', ' if allowed else ''}{classes} or a status {lowest}-599, not {entry!r}",
                )
            )
            ok = False
    if not ok:
        return INVALID
    return sorted(seen, key=lambda v: (isinstance(v, int), str(v)))


def _str(spec: Field, value: Any, path: str, problems: list[Problem]) -> Any:
    if not isinstance(value, str):
        problems.append(Problem(path, f"must be a string, not {_type_name(value)}"))
        return INVALID
    unstorable = text_problem(value)
    if unstorable:
        problems.append(Problem(path, unstorable))
        return INVALID
    if spec.max_length is not None and len(value) > spec.max_length:
        problems.append(Problem(path, f"must be at most {spec.max_length} characters"))
        return INVALID
    if spec.pattern is not None and not spec.pattern.match(value):
        shown = repr(value) if len(value) <= 100 else f"{value[:100]!r}…"
        problems.append(Problem(path, f"{shown} is not valid: use {spec.pattern_help}"))
        return INVALID
    return value


def _value(spec: Field, value: Any, path: str, problems: list[Problem], *, keep_defaults: bool = False) -> Any:
    if value is None:
        if spec.nullable:
            return None
        problems.append(Problem(path, "must not be null"))
        return INVALID
    kind = spec.kind
    if kind == "bool":
        if not isinstance(value, bool):
            problems.append(Problem(path, f"must be true or false, not {_type_name(value)}"))
            return INVALID
        result: Any = value
    elif kind in ("int", "number"):
        result = _number(spec, value, path, problems, integer=kind == "int")
    elif kind == "str":
        result = _str(spec, value, path, problems)
    elif kind == "enum":
        if not isinstance(value, str) or value not in spec.choices:
            problems.append(Problem(path, f"must be one of {', '.join(spec.choices)}, not {value!r}"))
            return INVALID
        result = value
    elif kind == "statuses":
        result = _status_list(spec, value, path, problems)
    elif kind == "retry_on":
        result = _status_list(spec, value, path, problems, extra=RETRY_CONDITIONS[:2], lowest=400)
    elif kind == "list":
        result = _list(spec, value, path, problems)
    elif kind == "map":
        result = _map(spec, value, path, problems)
    elif kind == "object":
        result = _object(spec.fields, value, path, problems, keep_defaults=keep_defaults)
    else:  # pragma: no cover - a schema mistake, not a user's
        raise AssertionError(f"unknown field kind {kind}")
    if result is not INVALID and spec.check is not None:
        message = spec.check(result)
        if message:
            problems.append(Problem(path, message))
            return INVALID
    return result


def _list(spec: Field, value: Any, path: str, problems: list[Problem]) -> Any:
    if not isinstance(value, list):
        problems.append(Problem(path, f"must be a list, not {_type_name(value)}"))
        return INVALID
    if len(value) < spec.min_items:
        problems.append(
            Problem(
                path, "must not be empty" if spec.min_items == 1 else f"must have at least {spec.min_items} entries"
            )
        )
        return INVALID
    if spec.max_items is not None and len(value) > spec.max_items:
        problems.append(Problem(path, f"must have at most {spec.max_items} entries, not {len(value)}"))
        return INVALID
    assert spec.item is not None
    items = []
    for index, entry in enumerate(value):
        if spec.item.kind == "enum" and isinstance(entry, str) and entry not in spec.item.choices:
            entry = entry.upper()  # methods: `get` is GET
        items.append(_value(spec.item, entry, item(path, index), problems))
    if any(entry is INVALID for entry in items):
        return INVALID
    return items


def _map(spec: Field, value: Any, path: str, problems: list[Problem]) -> Any:
    """A mapping whose keys are data (header names): each key passes `spec.key`, each value `spec.item`."""
    if not isinstance(value, Mapping):
        problems.append(Problem(path, f"must be a mapping, not {_type_name(value)}"))
        return INVALID
    if spec.max_items is not None and len(value) > spec.max_items:
        problems.append(Problem(path, f"must have at most {spec.max_items} entries, not {len(value)}"))
        return INVALID
    assert spec.key is not None and spec.item is not None
    result: dict[str, Any] = {}
    ok = True
    for key, entry in value.items():
        where = child(path, key)
        name = _value(spec.key, key, where, problems)
        normalized = _value(spec.item, entry, where, problems)
        if name is INVALID or normalized is INVALID:
            ok = False
        else:
            result[name] = normalized
    return result if ok else INVALID


def _object(
    fields: Mapping[str, Field],
    value: Any,
    path: str,
    problems: list[Problem],
    *,
    keep_defaults: bool = False,
    required: tuple[str, ...] = (),
) -> Any:
    if not isinstance(value, Mapping):
        problems.append(Problem(path, f"must be a mapping, not {_type_name(value)}"))
        return INVALID
    result: dict[str, Any] = {}
    ok = True
    for key, entry in value.items():
        where = child(path, key)
        spec = fields.get(key) if isinstance(key, str) else None
        if spec is None:
            if key in READ_ONLY_KEYS:
                problems.append(Problem(where, "is read-only and cannot be set"))
            else:
                problems.append(Problem(where, f"unknown key (expected one of {', '.join(fields)})"))
            ok = False
            continue
        normalized = _value(spec, entry, where, problems)
        if normalized is INVALID:
            ok = False
        elif keep_defaults or key in required or not _is_default(spec, normalized):
            result[key] = normalized
    for key in required:
        if key not in value:
            problems.append(Problem(child(path, key), "is required"))
            ok = False
    return result if ok else INVALID


def _is_default(spec: Field, value: Any) -> bool:
    if spec.kind == "object":
        return bool(value == {})
    return bool(value == spec.default)


def _effective(fields: Mapping[str, Field], sparse: Mapping[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, spec in fields.items():
        if spec.kind == "object":
            result[key] = _effective(spec.fields, sparse.get(key, {}))
        elif key in sparse:
            result[key] = _copied(sparse[key])
        elif spec.default is not None or spec.nullable:
            result[key] = _copied(spec.default)
    return result


_SCALARS = (str, int, float, bool, type(None))


def _copied(value: Any) -> Any:
    """`copy.deepcopy` of document data, made directly for its JSON types (dicts, lists, scalars):
    deepcopy's memo bookkeeping was a third of compiling 10,000 endpoints."""
    if isinstance(value, list):
        return [_copied(entry) for entry in value]
    if isinstance(value, dict):
        return {key: _copied(entry) for key, entry in value.items()}
    if isinstance(value, _SCALARS):
        return value
    return copy.deepcopy(value)


# --- targets and paths -----------------------------------------------------------------------------


def normalize_target_url(url: str, path: str, problems: list[Problem], *, allow_link_local: bool) -> str | None:
    """The canonical spelling of a target's base URL (scheme and host lower-case, no trailing `/`)."""
    normalized, message = _normalized_target_url(url, allow_link_local)
    if message is not None:
        problems.append(Problem(path, message))
    return normalized


@functools.lru_cache(maxsize=32_768)
def _normalized_target_url(url: str, allow_link_local: bool) -> tuple[str | None, str | None]:
    """normalize_target_url's answer as (URL, None) or (None, problem message). Memoised: it depends on
    its arguments alone, and the targets of a large document share a few hosts, so parsing each URL
    once halves validating 10,000 endpoints. Bounded: documents come and go for a process."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        return None, f"{url!r} is not a valid URL: {error}"
    if parts.scheme.lower() not in ("http", "https"):
        return None, f"{url!r} must be an http:// or https:// URL"
    if not parts.hostname:
        return None, f"{url!r} has no host"
    if parts.username is not None or parts.password is not None:
        return None, "must not carry credentials (user:password@); send them in headers instead"
    if parts.query or parts.fragment or url.rstrip().endswith(("?", "#")):
        return None, f"{url!r} must not have a query string or fragment"
    if any(character.isspace() for character in url):
        return None, f"{url!r} must not contain whitespace"
    if not allow_link_local and is_denied_target_host(parts.hostname):
        return None, (
            f"{parts.hostname} is a link-local or cloud metadata address, which targets may not use "
            "(GATEWAY_ALLOW_LINK_LOCAL_TARGETS allows it)"
        )
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    base = parts.path.rstrip("/")
    if any(is_dot(segment) for segment in base.split("/")):
        return None, f"{url!r} must not have '.' or '..' path segments"
    return f"{parts.scheme.lower()}://{netloc}{base}", None


def is_dot(segment: str) -> bool:
    return segment.lower().replace("%2e", ".") in (".", "..")


def normalize_route_path(value: str, path: str, problems: list[Problem]) -> str | None:
    """An extra route prefix: starts with `/`, whole segments, no trailing `/` (except the root `/`)."""
    if not value.startswith("/"):
        problems.append(Problem(path, f"{value!r} must start with '/'"))
        return None
    stripped = value.rstrip("/")
    if not stripped:
        return "/"
    for segment in stripped.split("/")[1:]:
        if not segment:
            problems.append(Problem(path, f"{value!r} has an empty segment ('//')"))
            return None
        if is_dot(segment):
            problems.append(Problem(path, f"{value!r} must not have '.' or '..' segments"))
            return None
        if not _PATH_SEGMENT.match(segment) or "%2f" in segment.lower():
            problems.append(Problem(path, f"{value!r} has characters a path segment cannot hold"))
            return None
    return stripped


# --- endpoints -------------------------------------------------------------------------------------


def normalize_endpoint(
    data: Any,
    *,
    path: str = "",
    allow_link_local: bool = False,
    health_check_defaults: Mapping[str, Any] | None = None,
    format_version: int = FORMAT_VERSION,
) -> tuple[dict[str, Any], list[Problem]]:
    """An endpoint's canonical sparse form and every problem with it.

    `name`, `version`, `default` and `targets` are always present; `health_check` keeps every key
    given (an endpoint's health settings are overrides of the document's, so an explicit value that
    happens to equal the built-in default still means something). `format_version` is the document's:
    §11's `plugins` and `preserve_host` and §13's `websocket` need 2 (configdoc.plugins).
    """
    problems: list[Problem] = []
    if not isinstance(data, Mapping):
        return {}, [Problem(path, f"an endpoint must be a mapping, not {_type_name(data)}")]
    fields = {key: spec for key, spec in ENDPOINT_FIELDS.items() if key != "health_check"}
    raw = {key: value for key, value in data.items() if key != "health_check" and key not in FORMAT_2_ENDPOINT_KEYS}
    policies = normalize_endpoint_policies(data, path, problems, format_version=format_version)
    document = _object(fields, raw, path, problems, required=("name", "version", "targets"))
    health: Any = {}
    if "health_check" in data:
        health = _object(
            HEALTH_CHECK_FIELDS, data["health_check"], child(path, "health_check"), problems, keep_defaults=True
        )
    if document is INVALID or health is INVALID:
        _report_target_urls(data, path, problems, allow_link_local=allow_link_local)
        return {}, problems
    document.setdefault("default", False)
    if health:
        document["health_check"] = health
    document.update(policies)
    _endpoint_rules(
        document, path, problems, allow_link_local=allow_link_local, health_check_defaults=health_check_defaults
    )
    return (document, problems) if not problems else ({}, problems)


def _report_target_urls(data: Mapping[str, Any], path: str, problems: list[Problem], *, allow_link_local: bool) -> None:
    """Check target URLs even when other fields failed, so one answer lists every problem."""
    targets = data.get("targets")
    if not isinstance(targets, list):
        return
    reported = {problem.path for problem in problems}
    for index, target in enumerate(targets):
        where = child(item(child(path, "targets"), index), "url")
        if isinstance(target, Mapping) and isinstance(target.get("url"), str) and where not in reported:
            normalize_target_url(target["url"], where, problems, allow_link_local=allow_link_local)


def _endpoint_rules(
    document: dict[str, Any],
    path: str,
    problems: list[Problem],
    *,
    allow_link_local: bool,
    health_check_defaults: Mapping[str, Any] | None,
) -> None:
    targets = []
    seen: dict[str, int] = {}
    for index, target in enumerate(document["targets"]):
        where = child(item(child(path, "targets"), index), "url")
        if "url" not in target:
            problems.append(Problem(where, "is required"))
            continue
        url = normalize_target_url(target["url"], where, problems, allow_link_local=allow_link_local)
        if url is None:
            continue
        if url in seen:
            problems.append(Problem(where, f"duplicates targets[{seen[url]}].url ({url})"))
            continue
        seen[url] = index
        targets.append({**target, "url": url})
    document["targets"] = sorted(targets, key=lambda t: t["url"])

    if "methods" in document:
        methods = sorted(set(document["methods"]))
        if methods == ["GET"]:
            del document["methods"]
        else:
            document["methods"] = methods
    if "tags" in document:
        document["tags"] = sorted(set(document["tags"]))
    if "paths" in document:
        normalized: dict[str, None] = {}
        for index, value in enumerate(document["paths"]):
            route = normalize_route_path(value, item(child(path, "paths"), index), problems)
            if route is not None:
                normalized[route] = None
        document["paths"] = sorted(normalized)
        if not document["paths"]:
            del document["paths"]

    timeout = document.get("timeout", ENDPOINT_FIELDS["timeout"].default)
    per_try = document.get("retries", {}).get("per_try_timeout")
    if per_try is not None and per_try > timeout:
        problems.append(
            Problem(
                child(child(path, "retries"), "per_try_timeout"),
                f"must not exceed the endpoint's timeout ({_fmt(timeout)})",
            )
        )
    # Only a connect_timeout that is set is held to the timeout: unset, it is min(5, timeout)
    # (effective_connect_timeout), so `timeout: 1` alone is valid, as the seed format writes it. The
    # canonical form drops a 5 like any default, so 5 also means "unset" (a form left at 5 while the
    # timeout is lowered). Nothing else is dropped: the canonical form of stored documents is unchanged.
    connect = document.get("connect_timeout")
    if connect is not None and connect > timeout:
        problems.append(
            Problem(child(path, "connect_timeout"), f"must not exceed the endpoint's timeout ({_fmt(timeout)})")
        )
    health = effective_health_check(health_check_defaults, document.get("health_check"))
    if health["timeout"] > health["interval"]:
        problems.append(
            Problem(
                child(child(path, "health_check"), "timeout"),
                f"must not exceed the interval ({_fmt(health['interval'])}s)",
            )
        )


def effective_health_check(
    defaults: Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Built-in health-check defaults, then the document's `health_check`, then an endpoint's own."""
    result = _effective(HEALTH_CHECK_FIELDS, defaults or {})
    result.update(_copied(dict(overrides or {})))
    return result


def effective_connect_timeout(timeout: float) -> float:
    """An endpoint's connect_timeout when it sets none: the default, but never beyond its `timeout`."""
    default: float = ENDPOINT_FIELDS["connect_timeout"].default
    return min(default, timeout)


def effective_endpoint(
    canonical: Mapping[str, Any], health_check_defaults: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Every field of an endpoint, defaults filled in (targets included).

    §11's keys appear only when the endpoint sets them (`preserve_host`, `websocket`, and `plugins` with each of
    the endpoint's own configs filled in), so a format-1 endpoint's effective form is what it always
    was. What an endpoint runs also depends on the document's plugins: see `effective_plugins`.
    """
    fields = {key: spec for key, spec in ENDPOINT_FIELDS.items() if key != "health_check"}
    result = _effective(fields, canonical)
    if "connect_timeout" not in canonical:
        result["connect_timeout"] = effective_connect_timeout(result["timeout"])
    target_fields = ENDPOINT_FIELDS["targets"].item.fields  # type: ignore[union-attr]
    result["targets"] = [_effective(target_fields, target) for target in canonical.get("targets", [])]
    result["health_check"] = effective_health_check(health_check_defaults, canonical.get("health_check"))
    for flag in ("preserve_host", "https_redirect", "websocket", "protocol"):
        if flag in canonical:
            result[flag] = canonical[flag]
    for matcher in ("hosts", "match_headers", "traffic_split"):
        if matcher in canonical:
            result[matcher] = canonical[matcher]
    if "plugins" in canonical:
        result["plugins"] = {
            name: effective_plugin_config(name, config) for name, config in canonical["plugins"].items()
        }
    return result


# --- breaker policies ------------------------------------------------------------------------------


def normalize_breaker_policy(data: Any, *, path: str = "") -> tuple[dict[str, Any], list[Problem]]:
    """A breaker policy's canonical sparse form (`name` always present) and every problem with it."""
    problems: list[Problem] = []
    if not isinstance(data, Mapping):
        return {}, [Problem(path, f"a breaker policy must be a mapping, not {_type_name(data)}")]
    if data.get("fallback_strategy") == "redirect":
        # The seed gateway answered an open circuit with a redirect; a client that follows it lands
        # somewhere that cannot know the request failed. Refused with the alternative spelled out.
        problems.append(
            Problem(
                child(path, "fallback_strategy"),
                "redirect is not supported: a redirect hides the failure from API clients; use "
                "error_response, cached_response or default_response (with a status and body)",
            )
        )
        data = {key: value for key, value in data.items() if key != "fallback_strategy"}
    document = _object(BREAKER_POLICY_FIELDS, data, path, problems, required=POLICY_ALWAYS)
    if document is INVALID or problems:
        return {}, problems
    policy = effective_breaker_policy(document)
    if policy["success_threshold"] > policy["half_open_max_calls"]:
        problems.append(
            Problem(
                child(path, "success_threshold"),
                f"must not exceed half_open_max_calls ({policy['half_open_max_calls']}), or the "
                "circuit could never close",
            )
        )
    return (document, problems) if not problems else ({}, problems)


def effective_breaker_policy(canonical: Mapping[str, Any]) -> dict[str, Any]:
    """Every field of a breaker policy, defaults filled in. An unset `success_threshold` is its
    default (2) but never more than `half_open_max_calls`: a policy (or a seed gateway's v0
    `circuit_breaker`) that allows one probe closes on that probe's success."""
    policy = _effective(BREAKER_POLICY_FIELDS, canonical)
    if "success_threshold" not in canonical:
        policy["success_threshold"] = min(policy["success_threshold"], policy["half_open_max_calls"])
    return policy


# --- whole documents -------------------------------------------------------------------------------


def assemble_document(
    *,
    breaker_policies: list[dict[str, Any]],
    endpoints: list[dict[str, Any]],
    health_check: Mapping[str, Any] | None = None,
    plugins: Mapping[str, Any] | None = None,
    consumers: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The document from canonical objects, in canonical order, with the lowest `format_version` that
    holds it (2 when it uses a §11 key, else 1)."""
    document: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "breaker_policies": sorted(breaker_policies, key=lambda p: p["name"]),
        "endpoints": sorted(endpoints, key=lambda e: (e["name"], e["version"])),
    }
    if health_check:
        document["health_check"] = dict(health_check)
    if plugins:
        document["plugins"] = dict(plugins)
    if consumers:
        document["consumers"] = sorted(consumers, key=lambda c: c["username"])
    document["format_version"] = required_format_version(document)
    return document


def validate_document(
    data: Any,
    *,
    allow_link_local: bool = False,
    lines: Mapping[str, int] | None = None,
    max_format_version: int = FORMAT_VERSION,
) -> tuple[dict[str, Any], list[Problem]]:
    """A whole document: its canonical form and every problem (with YAML lines when `lines` maps
    problem paths to them).

    `max_format_version` is the highest format the caller can act on: a document of a newer format is
    refused, since running it without what that format adds (the policy chain of format 2) would be
    wrong. It defaults to 1; a reader that applies §11's plugins passes 2.
    """
    problems: list[Problem] = []
    if not isinstance(data, Mapping):
        return {}, _with_lines([Problem("", f"the document must be a mapping, not {_type_name(data)}")], lines)
    for key in data:
        if key not in DOCUMENT_KEYS:
            problems.append(Problem(child("", key), f"unknown key (expected one of {', '.join(DOCUMENT_KEYS)})"))
    version = _format_version(data.get("format_version"), max_format_version, problems)

    plugins: Any = None
    if "plugins" in data:
        if version < 2:
            problems.append(Problem("plugins", format_2_message("plugins")))
        plugins = normalize_plugins(data["plugins"], "plugins", problems)

    consumers: list[dict[str, Any]] | None = [] if "consumers" not in data else None
    if "consumers" in data:
        if version < 2:
            problems.append(Problem("consumers", format_2_message("consumers")))
        consumers = normalize_consumers(data["consumers"], "consumers", problems)

    health: Any = {}
    if data.get("health_check") is not None:
        health = _object(HEALTH_CHECK_FIELDS, data["health_check"], "health_check", problems)
        if health is not INVALID:
            effective = effective_health_check(health)
            if effective["timeout"] > effective["interval"]:
                problems.append(
                    Problem("health_check.timeout", f"must not exceed the interval ({_fmt(effective['interval'])}s)")
                )
    health_defaults = health if health is not INVALID else {}

    policies: dict[str, dict[str, Any]] = {}
    for index, entry in _entries(data, "breaker_policies", problems):
        where = item("breaker_policies", index)
        policy, found = normalize_breaker_policy(entry, path=where)
        problems.extend(found)
        if not found:
            if policy["name"] in policies:
                problems.append(Problem(child(where, "name"), f"breaker policy {policy['name']!r} is defined twice"))
            else:
                policies[policy["name"]] = policy
    policies.setdefault("default", {"name": "default"})

    endpoints: list[tuple[int, dict[str, Any]]] = []
    keys: dict[str, int] = {}
    for index, entry in _entries(data, "endpoints", problems):
        where = item("endpoints", index)
        endpoint, found = normalize_endpoint(
            entry,
            path=where,
            allow_link_local=allow_link_local,
            health_check_defaults=health_defaults,
            format_version=version,
        )
        problems.extend(found)
        if found:
            continue
        key = endpoint_key(endpoint["name"], endpoint["version"])
        if key in keys:
            problems.append(
                Problem(child(where, "version"), f"endpoint {key} is defined twice (also endpoints[{keys[key]}])")
            )
            continue
        keys[key] = index
        if endpoint.get("breaker_policy", "default") not in policies:
            problems.append(
                Problem(child(where, "breaker_policy"), f"unknown breaker policy {endpoint['breaker_policy']!r}")
            )
        endpoints.append((index, endpoint))

    _default_versions(endpoints, problems)
    _route_key_collisions(endpoints, problems, lines)
    problems.extend(split_problems((item("endpoints", index), endpoint) for index, endpoint in endpoints))
    if plugins is not None or "plugins" not in data:
        names = {consumer["username"] for consumer in consumers} if consumers is not None else None
        _policy_references(plugins or {}, endpoints, names, problems)
    if problems:
        return {}, _with_lines(problems, lines)
    return assemble_document(
        breaker_policies=list(policies.values()),
        endpoints=[endpoint for _, endpoint in endpoints],
        health_check=health_defaults,
        plugins=plugins,
        consumers=consumers,
    ), []


def _policy_references(
    plugins: Mapping[str, Mapping[str, Any]],
    endpoints: list[tuple[int, dict[str, Any]]],
    usernames: set[str] | None,
    problems: list[Problem],
) -> None:
    """Rules across the document: an `anonymous` names a consumer of the document (when
    the consumers are valid; `usernames` is None otherwise), and each endpoint's
    chain (the document's plugins and its own) holds together (`chain_problems`)."""

    def check_anonymous(configs: Mapping[str, Mapping[str, Any]], where: str) -> None:
        if usernames is None:  # the consumers had problems of their own, already reported
            return
        for name in ANONYMOUS_PLUGINS:
            anonymous = configs.get(name, {}).get("anonymous")
            if anonymous is not None and anonymous not in usernames:
                problems.append(
                    Problem(
                        f"{where}.{name}.anonymous",
                        f"names no consumer: {anonymous!r} is not the username of a consumer of the document",
                    )
                )

    check_anonymous(plugins, "plugins")
    for index, endpoint in endpoints:
        own = endpoint.get("plugins", {})
        where = f"endpoints[{index}]"
        check_anonymous(own, f"{where}.plugins")
        for relative, message in chain_problems(effective_plugins(plugins, own), own):
            problems.append(Problem(child(where, relative) if relative else where, message))


def _format_version(version: Any, highest: int, problems: list[Problem]) -> int:
    """The document's declared format; a bad one is reported, and the rest of the document is then
    checked as the latest format, so only the real mistake is reported."""
    known = tuple(range(FORMAT_VERSION, LATEST_FORMAT_VERSION + 1))
    if isinstance(version, bool) or version not in known:
        problems.append(Problem("format_version", f"must be {' or '.join(map(str, known))}, not {version!r}"))
        return LATEST_FORMAT_VERSION
    if version > highest:
        problems.append(
            Problem(
                "format_version",
                f"format {version} is newer than this reader applies (format {highest} at most): it would run "
                "the document without the policies that format adds",
            )
        )
        return LATEST_FORMAT_VERSION
    return int(version)


def _entries(data: Mapping[str, Any], key: str, problems: list[Problem]) -> list[tuple[int, Any]]:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        problems.append(Problem(key, f"must be a list, not {_type_name(value)}"))
        return []
    return list(enumerate(value))


def _default_versions(endpoints: list[tuple[int, dict[str, Any]]], problems: list[Problem]) -> None:
    """At most one default per name; a name with none gets its highest version as default (§2)."""
    by_name: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for index, endpoint in endpoints:
        by_name.setdefault(endpoint["name"], []).append((index, endpoint))
    for name, versions in by_name.items():
        defaults = [(index, endpoint) for index, endpoint in versions if endpoint["default"]]
        if len(defaults) > 1:
            shown = " and ".join(endpoint_key(name, endpoint["version"]) for _, endpoint in defaults)
            for index, _ in defaults[1:]:
                problems.append(
                    Problem(
                        f"endpoints[{index}].default",
                        f"{shown} are both marked default; a name has one default version",
                    )
                )
        elif not defaults:
            _, highest = max(versions, key=lambda pair: version_sort_key(pair[1]["version"]))
            highest["default"] = True


def _route_key_collisions(
    endpoints: list[tuple[int, dict[str, Any]]], problems: list[Problem], lines: Mapping[str, int] | None = None
) -> None:
    """Two endpoints may claim one route key only when §12's matchers (hosts, match_headers, methods)
    let every request choose between them; a pair no request could choose between is a problem naming
    both endpoints, with their YAML lines when the document came from YAML."""
    claimed: dict[str, list[tuple[tuple[int, str, bool], Matchers]]] = {}
    for index, endpoint in endpoints:
        key = endpoint_key(endpoint["name"], endpoint["version"])
        matchers = matchers_of(endpoint)
        for route in dict.fromkeys(route_keys(endpoint)):  # an extra path may repeat one of its own keys
            extra = route in endpoint.get("paths", ())
            claimed.setdefault(route, []).append(((index, key, extra), matchers))
    for route, members in claimed.items():
        if len(members) < 2:
            continue
        for (first_index, first_key, _), (index, key, extra) in ambiguous_pairs(members):
            where = f"endpoints[{index}].paths" if extra else f"endpoints[{index}]"
            if first_key == key:
                continue  # an endpoint listing a key twice is paths' own problem
            problems.append(
                Problem(
                    where,
                    f"route key {route} is claimed by both {first_key} (endpoints[{first_index}]"
                    f"{_line_note(lines, first_index)}) and {key} (endpoints[{index}]{_line_note(lines, index)}), "
                    "and no request could choose between them: give them different hosts or match_headers, "
                    "or methods that do not overlap",
                )
            )


def _line_note(lines: Mapping[str, int] | None, index: int) -> str:
    line = (lines or {}).get(f"endpoints[{index}]")
    return f", line {line}" if line is not None else ""


_PARENT_STEP = re.compile(r"(\.[^.\[\]]+|\[\d+\])$")


def _with_lines(problems: list[Problem], lines: Mapping[str, int] | None) -> list[Problem]:
    if not lines:
        return problems
    located = []
    for problem in problems:
        line = None
        where = problem.path
        while where and line is None:
            line = lines.get(where)
            parent = _PARENT_STEP.sub("", where)
            # A path whose last step is not `.key` or `[n]` (a top-level key as the document spells
            # it, `0x10` read as 16) has no parent to try: without this the loop never ended.
            where = parent if parent != where else ""
        located.append(Problem(problem.path, problem.message, line if line is not None else lines.get("")))
    return located
