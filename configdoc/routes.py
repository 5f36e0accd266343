"""Route keys and the matching rule (ARCHITECTURE §3 and §5).

Each endpoint claims `/{version}/{name}`; the default version also claims `/{name}`; each extra path
is claimed as written. A request path matches the longest key by whole segments: `/users` matches
`/users` and `/users/42`, never `/usersx`. A `.` or `..` segment, raw or percent-encoded, is refused
rather than resolved, and `%2F` is never decoded, so a path cannot climb out of its route.

The control plane (`routes/resolve/`) and the data plane use this same code.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Generic, NamedTuple, TypeVar

T = TypeVar("T")

_DOT_SEGMENT = re.compile(r"^(?:\.|%2e){1,2}$", re.IGNORECASE)


class UnsafePath(ValueError):
    """The request path has a `.` or `..` segment (raw or percent-encoded), or does not start with `/`."""


def endpoint_key(name: str, version: str) -> str:
    """An endpoint's key everywhere: API URLs, `X-Endpoint-ID`, metric labels, reports."""
    return f"{name}:{version}"


def version_sort_key(version: str) -> tuple[int, ...]:
    """Dotted numeric order, `v` ignored: v2 < v10, 1.2 < 1.10."""
    return tuple(int(part) for part in version.lstrip("vV").split(".") if part.isdigit())


def route_keys(endpoint: Mapping[str, Any]) -> list[str]:
    """The route keys an endpoint (canonical or effective form) claims, without any mount prefix."""
    name, version = endpoint["name"], endpoint["version"]
    keys = [f"/{version}/{name}"]
    if endpoint.get("default"):
        keys.append(f"/{name}")
    keys.extend(endpoint.get("paths", ()))
    return keys


def is_dot_segment(segment: str) -> bool:
    return bool(_DOT_SEGMENT.match(segment))


class Match(NamedTuple, Generic[T]):
    """`key` is the route key that matched; `rest` the raw path after it (`""` or starting with `/`)."""

    key: str
    value: T
    rest: str


class RouteTable(Generic[T]):
    """Longest whole-segment prefix match over route keys.

    The keys are split by depth (number of `/`) into one dict per depth: a lookup tries only the
    prefixes of the request path whose depth some key has, longest first, each in the dict of that
    depth alone, so it costs one dict probe per distinct key depth at most (usually one or two),
    whatever the number of endpoints and however deep the request path is. One dict per depth rather
    than one for all keys keeps what a probe touches small: with 10,000 endpoints claiming `/v1/name`
    and `/name`, a probe for `/v1/...` searches 10,000 keys, not 20,000, and its dict's table and the
    key strings it compares against are half the memory (fewer cache misses per lookup).
    """

    def __init__(self, entries: Mapping[str, T] | Iterable[tuple[str, T]]) -> None:
        self._entries: dict[str, T] = dict(entries.items() if isinstance(entries, Mapping) else entries)
        by_depth: dict[int, dict[str, T]] = {}
        for key, value in self._entries.items():
            by_depth.setdefault(0 if key == "/" else key.count("/"), {})[key] = value
        # (depth, the keys of that depth), deepest first ("/" itself counts as depth 0).
        self._levels: tuple[tuple[int, dict[str, T]], ...] = tuple(sorted(by_depth.items(), reverse=True))

    def __len__(self) -> int:
        return len(self._entries)

    def match(self, raw_path: str) -> Match[T] | None:
        """The entry whose key is the longest whole-segment prefix of `raw_path`, or None.

        Raises UnsafePath for dot segments; the proxy answers those 400.
        """
        if not raw_path.startswith("/"):
            raise UnsafePath("the path must start with '/'")
        if ("." in raw_path or "%" in raw_path) and any(is_dot_segment(s) for s in raw_path.split("/")):
            raise UnsafePath("the path has a '.' or '..' segment")
        depth = raw_path.count("/")
        slashes: list[int] | None = None
        for wanted, entries in self._levels:
            if wanted >= depth:
                if wanted > depth:
                    continue
                prefix = raw_path
            elif wanted == 0:
                prefix = "/"
            else:
                if slashes is None:  # where each "/" is: a prefix of n segments ends before the n-th
                    slashes = [0]
                    find = raw_path.find
                    for _ in range(depth - 1):
                        slashes.append(find("/", slashes[-1] + 1))
                prefix = raw_path[: slashes[wanted]]
            value = entries.get(prefix)
            if value is not None:
                rest = raw_path[len(prefix) :] if prefix != "/" else raw_path
                return Match(prefix, value, rest)
        return None
