"""Documents with consumers, and calls through the in-process proxy, for the authentication plugins'
tests (key_auth, basic_auth, acl)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Sequence
from typing import Any

import httpx
import pytest

from configdoc import validate_document
from configdoc.consumers import hash_key, make_password_hash
from tests.dataplane.harness import Gateway, endpoint, ok

ALICE_KEY = "alice-key-Zq8+/ü"  # not URL-safe on purpose: sent in a query it must be percent-encoded
BOB_KEY = "bob-key-4711"
ALICE_PASSWORD = "correct horse:battery staple"  # a `:` in the password is allowed (RFC 7617)
BOB_PASSWORD = "pässwort"
ITERATIONS = 100_000  # the least a document may use: keeps the tests quick


def consumers(*, alice_password: str = ALICE_PASSWORD) -> list[dict[str, Any]]:
    return [
        {
            "username": "alice",
            "custom_id": "crm-1042",
            "groups": ["partners", "beta"],
            "key_auth": [{"key_sha256": hash_key(ALICE_KEY), "label": "2026-q4"}],
            "basic_auth": [
                {
                    "username": "alice@example.com",
                    "password_hash": make_password_hash(alice_password, salt="saltsalt01", iterations=ITERATIONS),
                }
            ],
        },
        {
            "username": "bob",
            "groups": ["staff"],
            "key_auth": [{"key_sha256": hash_key(BOB_KEY), "label": "bob-1"}],
            "basic_auth": [
                {
                    "username": "bob",
                    "password_hash": make_password_hash(BOB_PASSWORD, salt="saltsalt02", iterations=ITERATIONS),
                }
            ],
        },
        {"username": "guest", "groups": ["public"]},
    ]


def document(plugins: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "format_version": 2,
        "consumers": consumers(**kwargs),
        "endpoints": [endpoint("users", default=True, plugins=plugins), endpoint("open")],
    }
    canonical, problems = validate_document(data, max_format_version=2)
    assert problems == [], problems
    return canonical


def gateway(plugins: dict[str, Any], **settings: Any) -> Gateway:
    return Gateway(document(plugins), ok, **settings)


def call(
    gateway: Gateway,
    path: str = "/users/x",
    *,
    headers: Sequence[tuple[str, str] | tuple[bytes, bytes] | tuple[str, bytes]] | None = None,
    params: Any = None,
) -> httpx.Response:
    # In UTF-8: httpx would refuse a str value that is not ASCII.
    raw = [(_utf8(name), _utf8(value)) for name, value in headers or ()]

    async def go() -> httpx.Response:
        async with gateway.client() as client:
            return await client.get(path, headers=raw, params=params)

    return asyncio.run(go())


def _utf8(text: str | bytes) -> bytes:
    return text.encode() if isinstance(text, str) else text


def basic(username: str, password: str) -> tuple[str, str]:
    return ("Authorization", "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode())


def upstream_headers(gateway: Gateway) -> dict[str, list[str]]:
    """The headers the fake upstream got on the last request, name → values."""
    seen: dict[str, list[str]] = {}
    for name, value in gateway.seen[-1].headers.multi_items():
        seen.setdefault(name.lower(), []).append(value)
    return seen


def refused(response: httpx.Response, status: int, error: str) -> bool:
    assert (response.status_code, response.json()["error"]) == (status, error), response.text
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


def access_lines(gateway: Gateway, caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The JSON access log lines written so far (the gateway needs `access_log="json"`)."""
    gateway.proxy.access_log.flush()
    return [
        json.loads(line)
        for record in caplog.records
        if record.name == "dataplane.access"
        for line in record.getMessage().split("\n")
    ]


def every_log_message(caplog: pytest.LogCaptureFixture) -> str:
    """Everything any logger wrote, tracebacks included: where a secret must never show up. Except
    httpx's, which logs every URL at INFO: here it is the test's own client, and a data plane process
    turns it down to WARNING (process.configure_logging)."""
    formatter = logging.Formatter()
    return "\n".join(formatter.format(record) for record in caplog.records if not record.name.startswith("httpx"))
