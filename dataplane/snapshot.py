"""Immutable compiled snapshots of the config document (ARCHITECTURE §4, STYLE 12).

A snapshot is built and validated whole, off the request path, and swapped in with one reference
assignment; nothing on the request path mutates it. `load_seed` is the one place a seed file becomes
a document, so the shared `configdoc.load_document` (YAML caps, v0 mapping) slots in when present.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import configdoc
from configdoc import RouteTable, config_sha256, effective_breaker_policy, effective_endpoint, endpoint_key, route_keys

logger = logging.getLogger("dataplane")


class SnapshotError(ValueError):
    """The document is not valid; `problems` lists every problem, as `path: message` strings."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Target:
    url: str
    scheme: str
    host: str  # what goes in the upstream Host header: host[:port]
    origin: str  # scheme://host[:port]
    base_path: str  # the target's path, without a trailing '/'
    weight: int
    enabled: bool


@dataclass(frozen=True)
class Endpoint:
    """One endpoint's effective config: every field filled in, compiled for the hot path."""

    key: str
    methods: frozenset[str]
    enabled: bool
    strip_path: bool
    extra_paths: frozenset[str]
    targets: tuple[Target, ...]
    timeout: float
    connect_timeout: float
    read_idle_timeout: float
    max_body_bytes: int
    retries: Mapping[str, Any]
    outlier: Mapping[str, Any]
    tls: Mapping[str, Any]
    breaker: Mapping[str, Any]
    health_check: Mapping[str, Any]
    # The effective config as a whole, to tell whether runtime state (breaker, ejections) survives a reload.
    fingerprint: bytes = field(compare=False, default=b"")

    @property
    def allow_header(self) -> str:
        return ", ".join(sorted(self.methods))


@dataclass(frozen=True)
class Snapshot:
    config_sha256: str
    revision: int | None
    endpoints: Mapping[str, Endpoint]
    routes: RouteTable[Endpoint]
    document: Mapping[str, Any]
    # Operational state from the control plane (§4): observed target health `{key: {url: status}}`
    # (a target left out is `unknown`, which is routable) and breaker overrides `{key: override}`.
    target_health: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    breaker_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    state_seq: int = 0


def compile_target(raw: Mapping[str, Any]) -> Target:
    parts = urlsplit(raw["url"])
    host = parts.netloc.rpartition("@")[2]
    return Target(
        url=raw["url"],
        scheme=parts.scheme,
        host=host,
        origin=f"{parts.scheme}://{host}",
        base_path=parts.path.rstrip("/"),
        weight=int(raw["weight"]),
        enabled=bool(raw["enabled"]),
    )


def compile_document(
    document: Mapping[str, Any],
    *,
    mount_prefix: str = "",
    revision: int | None = None,
    state: Mapping[str, Any] | None = None,
    state_seq: int = 0,
) -> Snapshot:
    """A canonical (validated) document → a snapshot. Route keys get the mount prefix in front."""
    policies = {policy["name"]: effective_breaker_policy(policy) for policy in document.get("breaker_policies", [])}
    policies.setdefault("default", effective_breaker_policy({"name": "default"}))
    endpoints: dict[str, Endpoint] = {}
    routes: dict[str, Endpoint] = {}
    for canonical in document.get("endpoints", []):
        eff = effective_endpoint(canonical, document.get("health_check"))
        methods = set(eff["methods"])
        if "GET" in methods:
            methods.add("HEAD")
        key = endpoint_key(eff["name"], eff["version"])
        endpoint = Endpoint(
            key=key,
            methods=frozenset(methods),
            enabled=eff["enabled"],
            strip_path=eff["strip_path"],
            extra_paths=frozenset(mount_prefix + path for path in eff["paths"]),
            targets=tuple(compile_target(target) for target in eff["targets"]),
            timeout=float(eff["timeout"]),
            connect_timeout=float(eff["connect_timeout"]),
            read_idle_timeout=float(eff["read_idle_timeout"]),
            max_body_bytes=int(eff["max_body_bytes"]),
            retries=eff["retries"],
            outlier=eff["outlier"],
            tls=eff["tls"],
            breaker=policies[eff["breaker_policy"]],
            health_check=eff["health_check"],
            fingerprint=configdoc.canonical_json({"endpoint": eff, "policy": policies[eff["breaker_policy"]]}),
        )
        endpoints[key] = endpoint
        for route in route_keys(eff):
            routes[mount_prefix + route] = endpoint
    return Snapshot(
        config_sha256=config_sha256(document),
        revision=revision,
        endpoints=endpoints,
        routes=RouteTable(routes),
        document=document,
        target_health=dict((state or {}).get("targets") or {}),
        breaker_overrides=dict((state or {}).get("breakers") or {}),
        state_seq=state_seq,
    )


def load_document_text(text: str) -> dict[str, Any]:
    """YAML text (v1, or the seed gateway's v0 `config.yaml`) → a canonical document, or SnapshotError
    listing every problem. Warnings (ignored v0 keys) are logged."""
    result = configdoc.load_document(text)
    for warning in result.warnings:
        logger.warning("seed: %s: %s", warning.path or "(document)", warning.message)
    if result.problems:
        raise SnapshotError(
            [f"{p.path or '(document)'}{f' (line {p.line})' if p.line else ''}: {p.message}" for p in result.problems]
        )
    return result.document


def load_seed(path: Path, *, mount_prefix: str = "") -> Snapshot:
    """Read and compile a seed file. Raises OSError or SnapshotError; callers keep their old snapshot."""
    return compile_document(load_document_text(path.read_text(encoding="utf-8")), mount_prefix=mount_prefix)


SNAPSHOT_FORMAT_VERSION = 1


def load_sync_snapshot(body: bytes, *, mount_prefix: str = "") -> Snapshot:
    """A control-plane snapshot (§4: `{format_version, revision, config_sha256, state_seq, generated_at,
    config, state}`) → a compiled snapshot, after checking the document's hash and validating it
    whole. Raises SnapshotError; the caller rejects it, reports it and keeps its current snapshot.
    This is the seam the control-plane sync plugs into."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SnapshotError([f"the snapshot is not JSON: {exc}"]) from None
    if not isinstance(data, dict):
        raise SnapshotError(["the snapshot must be a JSON object"])
    if data.get("format_version") != SNAPSHOT_FORMAT_VERSION:
        raise SnapshotError([f"format_version {data.get('format_version')!r} is not one this node reads"])
    config, claimed = data.get("config"), data.get("config_sha256")
    if config_sha256(config) != claimed:
        raise SnapshotError(["config_sha256 does not match the document"])
    document, problems = configdoc.validate_document(config)
    if problems:
        raise SnapshotError([f"{p.path or '(document)'}: {p.message}" for p in problems])
    state = data.get("state") or {}
    if not isinstance(state, dict):
        raise SnapshotError(["state must be an object"])
    revision, state_seq = data.get("revision"), data.get("state_seq", 0)
    if not isinstance(revision, int) or not isinstance(state_seq, int):
        raise SnapshotError(["revision and state_seq must be integers"])
    return compile_document(document, mount_prefix=mount_prefix, revision=revision, state=state, state_seq=state_seq)
