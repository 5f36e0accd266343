"""Where a matched request goes upstream (ARCHITECTURE §5, "Forwarding"), as a pure function.

Upstream URL = the target's origin + its base path (no trailing `/`) + the raw path after the matched
route key; `/{name}` and `/{version}/{name}` are always stripped, an extra path only when the endpoint's
`strip_path` is set. An empty remainder goes to the base path as it is, or to `/` when the target has
no path. The query string follows byte for byte.

The data plane's `/-/routes` answer uses this function; its proxy builds the same URL inline on the hot
path (from the target's pre-split origin and base path). tests/configdoc/test_forwarding.py holds this
function to both on a table of cases, so the control plane's `routes/resolve/` says what a node would do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from .routes import Matchers, MatcherTable, endpoint_key, matchers_of, request_host, route_keys
from .splits import BY_RANDOM, DECIDED_BY_SPLIT, TrafficSplit, compile_split, debug_split
from .validate import effective_endpoint


def forwarded_rest(*, route_key: str, rest: str, extra_paths: frozenset[str] | set[str], strip_path: bool) -> str:
    """The raw path sent after the target's base path: the remainder of the match, with the matched
    key put back in front when it is an extra path of an endpoint that does not strip it."""
    if route_key in extra_paths and not strip_path:
        return route_key + rest
    return rest


def upstream_url(target_url: str, rest: str, query: str = "") -> str:
    """The URL a request is forwarded to on the target `target_url` (as in the document)."""
    parts = urlsplit(target_url)
    host = parts.netloc.rpartition("@")[2]
    base_path = parts.path.rstrip("/")
    url = f"{parts.scheme}://{host}{base_path}{rest or ('' if base_path else '/')}"
    return f"{url}?{query}" if query else url


@dataclass(frozen=True)
class RouteEntry:
    """What the resolver needs of one endpoint (its effective config)."""

    key: str
    enabled: bool
    methods: tuple[str, ...]
    strip_path: bool
    extra_paths: frozenset[str]
    targets: tuple[Mapping[str, Any], ...]
    hosts: tuple[str, ...] = ()
    match_headers: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False, compare=False)
    # §12's canary on a default version: the compiled split and the entry of its target (None: missing).
    split: TrafficSplit | None = field(default=None, hash=False, compare=False)
    split_target: RouteEntry | None = field(default=None, hash=False, compare=False)


@dataclass(frozen=True)
class Resolution:
    path: str
    endpoint: RouteEntry
    route_key: str
    rest: str
    upstream_urls: tuple[tuple[str, str], ...]  # (target url, upstream URL) per enabled target
    decided_by: str = "path"  # which matcher chose the endpoint (routes.DECIDED_*)
    method_allowed: bool = True
    allow: tuple[str, ...] = ()  # the methods the endpoints matching host and headers serve
    traffic_split: Mapping[str, Any] | None = None  # splits.debug_split's answer, on a split `/{name}` key


def route_table(document: Mapping[str, Any]) -> MatcherTable[RouteEntry]:
    """The route table of a canonical document, keyed as the data plane keys it (no mount prefix),
    with §12's matchers: the selection the data plane runs."""
    entries: list[tuple[str, RouteEntry, Matchers]] = []
    effective = [
        effective_endpoint(canonical, document.get("health_check")) for canonical in document.get("endpoints", [])
    ]
    built: dict[str, RouteEntry] = {}
    for eff in effective:
        matchers = matchers_of(eff)
        entry = RouteEntry(
            key=endpoint_key(eff["name"], eff["version"]),
            enabled=bool(eff["enabled"]),
            methods=tuple(sorted(matchers.methods)),  # HEAD is allowed wherever GET is (§3)
            strip_path=bool(eff["strip_path"]),
            extra_paths=frozenset(eff["paths"]),
            targets=tuple(eff["targets"]),
            hosts=tuple(eff.get("hosts", ())),
            match_headers={name: tuple(values) for name, values in (eff.get("match_headers") or {}).items()},
        )
        built[entry.key] = entry
    for eff in effective:
        entry = built[endpoint_key(eff["name"], eff["version"])]
        split = eff.get("traffic_split")
        if split:  # a split's target is a non-default version, which has no split of its own
            compiled = compile_split(eff["name"], split)
            entry = replace(entry, split=compiled, split_target=built.get(compiled.target_key))
        for key in route_keys(eff):
            entries.append((key, entry, matchers_of(eff)))
    return MatcherTable(entries)


def resolve(
    table: MatcherTable[RouteEntry],
    path: str,
    *,
    host: str = "",
    method: str = "GET",
    headers: Mapping[str, str | None] | None = None,
    client_ip: str | None = None,
) -> Resolution | None:
    """Route `path` (raw, optionally with `?query`), `host` (as the client sent it), `method` and
    `headers` (lower-case name → value; None for a header sent twice) like the proxy does; None when
    no endpoint serves them. On a split `/{name}` key (§12) the split decides as the proxy would, with
    `client_ip` standing for the client's address (`sticky: ip`).

    Raises configdoc.UnsafePath for the paths the proxy refuses with 400.
    """
    raw_path, _, query = path.partition("?")
    match = table.select(raw_path, host=request_host(host), method=method.upper(), headers=headers)
    if match is None:
        return None
    entry = match.value
    decided_by = match.decided_by
    shown: Mapping[str, Any] | None = None
    if entry.split is not None and match.method_allowed and match.key == f"/{entry.key.partition(':')[0]}":
        target = entry.split_target
        shown, to_target = debug_split(
            entry.split,
            source_version=entry.key.partition(":")[2],
            source_methods=entry.methods,
            target_methods=target.methods if target is not None else None,
            target_enabled=target is not None and target.enabled,
            method=method.upper(),
            headers=headers or {},
            client_ip=client_ip,
        )
        if shown["applies"] and shown["decided_by"] != BY_RANDOM:
            decided_by = DECIDED_BY_SPLIT
        if to_target and target is not None:
            entry = target
    rest = forwarded_rest(
        route_key=match.key, rest=match.rest, extra_paths=entry.extra_paths, strip_path=entry.strip_path
    )
    urls = tuple((t["url"], upstream_url(t["url"], rest, query)) for t in entry.targets if t.get("enabled", True))
    return Resolution(
        path=path,
        endpoint=entry,
        route_key=match.key,
        rest=rest,
        upstream_urls=urls,
        decided_by=decided_by,
        method_allowed=match.method_allowed,
        allow=tuple(sorted(match.allow)),
        traffic_split=shown,
    )
