"""The v1 document's fields: type, default and range of every key (ARCHITECTURE §3).

The schema is data: a tree of `Field`s that `validate.py` walks to check, normalise and fill in
values. Each field knows its default, so the canonical (sparse) form can drop what equals it and the
effective form can put it back.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")
VERSION_RE = re.compile(r"^v?\d+(\.\d+)*$")
TAG_RE = re.compile(r"^[A-Za-z0-9_.:/-]+$")

METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")
AUTH_TYPES = ("none", "bearer", "basic", "api_key", "custom")
FALLBACK_STRATEGIES = ("error_response", "cached_response", "default_response")
RETRY_CONDITIONS = ("connect_error", "timeout", "5xx")

MAX_TARGETS = 64
MAX_PATHS = 32
MAX_TAGS = 32


@dataclass(frozen=True)
class Field:
    """One key of an object.

    kind: "str", "int", "number", "bool", "enum", "list", "object", "map", "statuses", "retry_on".
    `nullable` lets the value be null; `minimum`/`maximum` bound numbers; `choices` is for enums;
    `item` is the element field of a list (or the value field of a map); `fields` the keys of an
    object; `key` the field every key of a map must pass (a map is a mapping whose keys are data, like
    header names, where an object's keys are the schema's); `min_items`/`max_items` bound lists and
    maps; `check` an extra rule returning an error message or None; `help` one line for people
    (docs, forms, OpenAPI descriptions) where type, default and range do not say it all.
    """

    kind: str
    default: Any = None
    nullable: bool = False
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    max_length: int | None = None
    pattern: re.Pattern[str] | None = None
    pattern_help: str = ""
    choices: tuple[str, ...] = ()
    item: Field | None = None
    min_items: int = 0
    max_items: int | None = None
    fields: Mapping[str, Field] = field(default_factory=dict)
    check: Callable[[Any], str | None] | None = None
    key: Field | None = None
    help: str = ""


def _statuses_default(*values: str) -> list[str]:
    return list(values)


# --- breaker policies ------------------------------------------------------------------------------

FALLBACK_FIELDS: dict[str, Field] = {
    "status": Field("int", default=503, minimum=100, maximum=599),
    "content_type": Field("str", default="application/json", max_length=200),
    "body": Field("str", default="", max_length=65536),
}

CACHE_FIELDS: dict[str, Field] = {
    "max_entries": Field("int", default=1000, minimum=1, maximum=100_000),
    "max_bytes": Field("int", default=1_048_576, minimum=1, maximum=1_073_741_824),
    "max_age": Field("int", default=300, minimum=1, maximum=86_400),
}

BREAKER_POLICY_FIELDS: dict[str, Field] = {
    "name": Field("str", pattern=NAME_RE, pattern_help="letters, digits, '_' and '-'", max_length=100),
    "failure_threshold": Field("int", default=5, minimum=1, maximum=1000),
    "failure_rate_threshold": Field(
        "number", default=None, nullable=True, minimum=0, exclusive_minimum=True, maximum=100
    ),
    "window_seconds": Field("int", default=30, minimum=1, maximum=3600),
    "minimum_calls": Field("int", default=20, minimum=1, maximum=100_000),
    "reset_timeout": Field("int", default=60, minimum=1, maximum=3600),
    "half_open_max_calls": Field("int", default=3, minimum=1, maximum=100),
    "success_threshold": Field("int", default=2, minimum=1, maximum=100),
    "failure_statuses": Field("statuses", default=_statuses_default("5xx"), min_items=1, max_items=100),
    "fallback_strategy": Field("enum", default="error_response", choices=FALLBACK_STRATEGIES),
    "fallback": Field("object", fields=FALLBACK_FIELDS),
    "cache": Field("object", fields=CACHE_FIELDS),
}

# --- health checks ---------------------------------------------------------------------------------


def _health_path(value: Any) -> str | None:
    if value is not None and not value.startswith("/"):
        return "must start with '/'"
    return None


HEALTH_CHECK_FIELDS: dict[str, Field] = {
    "enabled": Field("bool", default=True),
    "path": Field("str", default=None, nullable=True, max_length=2000, check=_health_path),
    "interval": Field("int", default=30, minimum=5, maximum=3600),
    "timeout": Field("number", default=10, minimum=0, exclusive_minimum=True, maximum=3600),
    "unhealthy_threshold": Field("int", default=3, minimum=1, maximum=100),
    "healthy_threshold": Field("int", default=2, minimum=1, maximum=100),
    "expected_statuses": Field("statuses", default=_statuses_default("2xx", "3xx"), min_items=1, max_items=100),
    "panic": Field("bool", default=False),
}

# --- endpoints -------------------------------------------------------------------------------------

TARGET_FIELDS: dict[str, Field] = {
    "url": Field("str", max_length=2000),
    "weight": Field("int", default=100, minimum=1, maximum=1000),
    "enabled": Field("bool", default=True),
}

RETRIES_FIELDS: dict[str, Field] = {
    "attempts": Field("int", default=2, minimum=1, maximum=10),
    "on": Field("retry_on", default=["connect_error"], max_items=20),
    "per_try_timeout": Field("number", default=None, nullable=True, minimum=0.1, maximum=300),
    "retry_non_idempotent": Field("bool", default=False),
}

OUTLIER_FIELDS: dict[str, Field] = {
    "consecutive_failures": Field("int", default=5, minimum=1, maximum=1000),
    "base_ejection_seconds": Field("number", default=30, minimum=1, maximum=3600),
    "max_ejection_percent": Field("int", default=50, minimum=0, maximum=100),
}

TLS_FIELDS: dict[str, Field] = {
    "verify": Field("bool", default=True),
    "ca_file": Field("str", default=None, nullable=True, max_length=1000),
    "server_name": Field("str", default=None, nullable=True, max_length=253),
}

ENDPOINT_FIELDS: dict[str, Field] = {
    "name": Field("str", pattern=NAME_RE, pattern_help="letters, digits, '_' and '-'", max_length=100),
    "version": Field("str", pattern=VERSION_RE, pattern_help="like v1, 2 or v1.2.3", max_length=32),
    "default": Field("bool", default=False),
    "description": Field("str", default="", max_length=2000),
    "tags": Field(
        "list",
        default=[],
        max_items=MAX_TAGS,
        item=Field("str", pattern=TAG_RE, pattern_help="letters, digits and _.:/-", max_length=64),
    ),
    "targets": Field("list", min_items=1, max_items=MAX_TARGETS, item=Field("object", fields=TARGET_FIELDS)),
    "methods": Field("list", default=["GET"], min_items=1, max_items=len(METHODS), item=Field("enum", choices=METHODS)),
    "enabled": Field("bool", default=True),
    "paths": Field("list", default=[], max_items=MAX_PATHS, item=Field("str", max_length=1000)),
    "strip_path": Field("bool", default=True),
    "timeout": Field("number", default=30, minimum=1, maximum=300),
    # Unset: min(5, timeout) (validate.effective_connect_timeout), so `timeout: 1` alone is valid.
    "connect_timeout": Field("number", default=5, minimum=0.1, maximum=60),
    "read_idle_timeout": Field("number", default=60, minimum=1, maximum=3600),
    "max_body_bytes": Field("int", default=10_485_760, minimum=0, maximum=10_737_418_240),
    "retries": Field("object", fields=RETRIES_FIELDS),
    "outlier": Field("object", fields=OUTLIER_FIELDS),
    "tls": Field("object", fields=TLS_FIELDS),
    "auth_type": Field("enum", default="none", choices=AUTH_TYPES),
    "breaker_policy": Field(
        "str", default="default", pattern=NAME_RE, pattern_help="a breaker policy name", max_length=100
    ),
    "health_check": Field("object", fields=HEALTH_CHECK_FIELDS),
}

# Keys an endpoint always carries in canonical form, whatever their value.
ENDPOINT_ALWAYS = ("name", "version", "default", "targets")
POLICY_ALWAYS = ("name",)
