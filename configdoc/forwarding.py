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
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .routes import RouteTable, endpoint_key, route_keys
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


@dataclass(frozen=True)
class Resolution:
    path: str
    endpoint: RouteEntry
    route_key: str
    rest: str
    upstream_urls: tuple[tuple[str, str], ...]  # (target url, upstream URL) per enabled target


def route_table(document: Mapping[str, Any]) -> RouteTable[RouteEntry]:
    """The route table of a canonical document, keyed as the data plane keys it (no mount prefix)."""
    entries: dict[str, RouteEntry] = {}
    for canonical in document.get("endpoints", []):
        eff = effective_endpoint(canonical, document.get("health_check"))
        methods = set(eff["methods"])
        if "GET" in methods:
            methods.add("HEAD")  # HEAD is allowed wherever GET is (§3)
        entry = RouteEntry(
            key=endpoint_key(eff["name"], eff["version"]),
            enabled=bool(eff["enabled"]),
            methods=tuple(sorted(methods)),
            strip_path=bool(eff["strip_path"]),
            extra_paths=frozenset(eff["paths"]),
            targets=tuple(eff["targets"]),
        )
        for key in route_keys(eff):
            entries[key] = entry
    return RouteTable(entries)


def resolve(table: RouteTable[RouteEntry], path: str) -> Resolution | None:
    """Match `path` (raw, optionally with `?query`) like the proxy does; None when no route matches.

    Raises configdoc.UnsafePath for the paths the proxy refuses with 400.
    """
    raw_path, _, query = path.partition("?")
    match = table.match(raw_path)
    if match is None:
        return None
    entry = match.value
    rest = forwarded_rest(
        route_key=match.key, rest=match.rest, extra_paths=entry.extra_paths, strip_path=entry.strip_path
    )
    urls = tuple((t["url"], upstream_url(t["url"], rest, query)) for t in entry.targets if t.get("enabled", True))
    return Resolution(path=path, endpoint=entry, route_key=match.key, rest=rest, upstream_urls=urls)
