"""Route keys and the matching rule (ARCHITECTURE §3 and §5).

Each endpoint claims `/{version}/{name}`; the default version also claims `/{name}`; each extra path
is claimed as written. A request path matches the longest key by whole segments: `/users` matches
`/users` and `/users/42`, never `/usersx`. A `.` or `..` segment, raw or percent-encoded, is refused
rather than resolved, and `%2F` is never decoded, so a path cannot climb out of its route.

§12's matchers (`hosts`, `match_headers`, endpoints on one key told apart by `methods`) are
MatcherTable's: the same selection for the data plane's proxy and `/-/routes`, the control plane's
`routes/resolve/` and the admin's route-debug page, so the three cannot disagree; `ambiguous` is the
validation rule that refuses two endpoints no request could choose between.

The control plane (`routes/resolve/`) and the data plane use this same code.
"""

from __future__ import annotations

import re
import sys
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


# Match(...) and Selection(...) run the named tuple's generated __new__, a Python function (about
# 300 ns a call here); the lookups make them with tuple.__new__ from a tuple of every field, in half that.
_new = tuple.__new__


class Match(NamedTuple, Generic[T]):
    """`key` is the route key that matched; `rest` the raw path after it (`""` or starting with `/`)."""

    key: str
    value: T
    rest: str


_NO_HEADERS: Mapping[str, str | None] = {}


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

    def match(
        self, raw_path: str, host: str | None = None, method: str = "", headers: Mapping[str, str | None] = _NO_HEADERS
    ) -> Match[T] | None:
        """The entry whose key is the longest whole-segment prefix of `raw_path`, or None.

        With `host` (and the method and headers: what MatcherTable selects by) the values are §12's
        groups: each one found picks among its endpoints, a group that picks none lets a shorter key
        serve, and the Match holds what was picked. One walk for both tables, without a generator:
        resuming one per lookup cost a fifth of a selection.

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
                if host is not None:
                    value = value.pick(host, method, headers)  # type: ignore[attr-defined]  # a _Group or _FlatGroup
                    if value is None:
                        continue
                rest = raw_path[len(prefix) :] if prefix != "/" else raw_path
                return _new(Match, (prefix, value, rest))
        return None


# --- matchers beyond the path (§12) --------------------------------------------------------------------


class Matchers(NamedTuple):
    """What an endpoint asks of a request besides its path (§12), in canonical form.

    `hosts`: lower-case names, `*.example.com` for one leading wildcard label; empty: any host.
    `headers`: (lower-case name, accepted values) pairs; every one must hold. `methods`: the methods the
    endpoint serves (HEAD included where GET is), the last thing that tells endpoints on one key apart.
    """

    hosts: tuple[str, ...] = ()
    headers: tuple[tuple[str, frozenset[str]], ...] = ()
    methods: frozenset[str] = frozenset()

    @property
    def plain(self) -> bool:
        return not self.hosts and not self.headers


def matchers_of(endpoint: Mapping[str, Any]) -> Matchers:
    """An endpoint's matchers, from its canonical or effective form (`methods` defaults to GET)."""
    methods = set(endpoint.get("methods") or ("GET",))
    if "GET" in methods:
        methods.add("HEAD")  # HEAD is allowed wherever GET is (§3)
    headers = tuple(
        sorted((name.lower(), frozenset(values)) for name, values in (endpoint.get("match_headers") or {}).items())
    )
    return Matchers(tuple(h.lower() for h in endpoint.get("hosts") or ()), headers, frozenset(methods))


def request_host(raw: str) -> str:
    """The Host header as the matchers compare it: lower-cased, the port and one trailing dot removed.
    `[::1]:8080` → `[::1]`. Whatever else a client sends is compared as is (it then matches no name)."""
    host = raw.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end > 0 else host
    name, colon, port = host.rpartition(":")
    if colon and port.isdigit():
        host = name
    return host[:-1] if host.endswith(".") else host


# Which matcher decided, in a Match and in every route-debug answer (data plane, API, admin).
DECIDED_PATH = "path"
DECIDED_HOST = "host"
DECIDED_WILDCARD_HOST = "wildcard_host"
DECIDED_HEADERS = "match_headers"
DECIDED_METHOD = "method"


# What a group's pick() answers: the endpoint, which matcher decided, the methods for `Allow`, and
# whether the endpoint serves the request's method.
_Picked = tuple[T, str, frozenset[str], bool]


class _Group(Generic[T]):
    """The endpoints sharing one route key when they name many hosts (virtual hosts by the hundred on
    one key): one dict from each exact name and each `*.parent` wildcard to its entries, laid out as a
    _FlatGroup's, probed with the request's host and with `*.` + its parent; the entries found and
    those without hosts are then scanned as a _FlatGroup is (which also drops what a probe found for a
    host that may not use it, such as `*.example.com` asked for by name)."""

    __slots__ = ("any_host", "hosts")

    def __init__(self, members: list[tuple[T, Matchers]], rules: dict[_Rule, _Rule]) -> None:
        self.hosts: dict[str, tuple[Any, ...]] = {}
        self.any_host: tuple[Any, ...] = ()
        for name, pairs in _entries(members, rules):
            if name is _ANY:
                self.any_host = _row(name, pairs)
            else:
                self.hosts[name] = _row(name, pairs)

    def pick(self, host: str, method: str, headers: Mapping[str, str | None]) -> _Picked[T] | None:
        """As _FlatGroup.pick, over the host's own entries, its parent's wildcard's and those without
        hosts, in that order. An endpoint of the host's own entries that serves the method is what
        that scan would answer first: it is answered without making the wildcard or joining rows."""
        by_host = self.hosts
        own = by_host.get(host, ())
        if own:
            picked = _scan(own, host, method, headers)
            if picked is not None and picked[3]:
                return picked
        return _scan(own + by_host.get(_wildcard_of(host), ()) + self.any_host, host, method, headers)


# The name of the endpoints without hosts: they match every request.
_ANY = ""
# Host entries (an endpoint without hosts counts one) up to which a key's endpoints are a _FlatGroup,
# scanned; more (virtual hosts by the hundred on one key) take a _Group's dict.
_FLAT_MAX = 6

# (which matcher decides, match_headers, methods): one object per distinct rule across a table.
_Rule = tuple[str, tuple[tuple[str, frozenset[str]], ...], frozenset[str]]


def _entries(members: list[tuple[T, Matchers]], rules: dict[_Rule, _Rule]) -> list[tuple[str, list[tuple[T, _Rule]]]]:
    """A key's endpoints by name in §12's order: each exact name, each wildcard, then _ANY (those
    without hosts); under each, (endpoint, rule) pairs with `match_headers` first, then in document
    order. The rules come from `rules`, shared by every key of the table: the few that 10,000
    endpoints use stay in cache."""
    exact: dict[str, list[tuple[T, Matchers]]] = {}
    wild: dict[str, list[tuple[T, Matchers]]] = {}
    for value, matchers in members:
        for host in matchers.hosts or (_ANY,):
            (wild if host.startswith("*.") else exact).setdefault(sys.intern(host), []).append((value, matchers))
    any_host = exact.pop(_ANY, [])
    shared = len(members) > 1
    named: list[tuple[str, list[tuple[T, _Rule]]]] = []
    for names, tier in ((exact, DECIDED_HOST), (wild, DECIDED_WILDCARD_HOST), ({_ANY: any_host}, "")):
        for name, found in names.items():
            pairs: list[tuple[T, _Rule]] = []
            for value, matchers in sorted(found, key=lambda member: not member[1].headers):  # stable
                wanted = matchers.headers
                decided = tier or (DECIDED_HEADERS if wanted else DECIDED_METHOD if shared else DECIDED_PATH)
                rule = (decided, wanted, matchers.methods)
                pairs.append((value, rules.setdefault(rule, rule)))
            if pairs:
                named.append((name, pairs))
    return named


def _row(name: str, pairs: list[tuple[T, _Rule]]) -> tuple[Any, ...]:
    """A name's (endpoint, rule) pairs as a _FlatGroup lays them out: (name, endpoint, rule) each."""
    return tuple(item for value, rule in pairs for item in (name, value, rule))


def _wildcard_of(host: str) -> str:
    """The wildcard name that covers `host` (`*.` + its parent), or "" (no name) when none does: no
    parent, an empty first label, or a first label that is `*` itself."""
    label, dot, parent = host.partition(".")
    return "*." + parent if dot and label and label != "*" else ""


def _scan(entries: tuple[Any, ...], host: str, method: str, headers: Mapping[str, str | None]) -> _Picked[Any] | None:
    """Over (name, endpoint, rule) entries in _entries' order: the first entry matching host and
    headers that serves `method`, with which matcher decided; else, when entries match host and
    headers but none serves the method, the first of them, with the union of what they serve for the
    405's `Allow`.

    A name matches the host itself, or is the wildcard `*.` + the host's parent. Names are valid host
    names (configdoc.matchers), so only a wildcard starts with `*`: a request naming a wildcard itself
    (`*.example.com`, or any host starting with `*`) is compared with the wildcard of its parent only,
    and one whose first label is `*` matches no name. The wildcard is made when an entry needs it:
    never when the first entry is the host's own name or has none."""
    wild: str | None = None
    first: tuple[Any, str] | None = None
    allow: frozenset[str] = frozenset()
    it = iter(entries)
    for name, value, (decided, wanted, methods) in zip(it, it, it, strict=True):
        if name is not _ANY and (name != host or host[:1] == "*"):
            if wild is None:
                wild = _wildcard_of(host)
            if name != wild:
                continue
        if wanted and not _headers_match(wanted, headers):
            continue
        if method in methods:
            return value, decided, methods, True
        allow = allow | methods
        if first is None:
            first = (value, decided)
    return None if first is None else (first[0], first[1], allow, False)


class _FlatGroup(tuple[Any, ...]):
    """The few endpoints sharing one route key, the whole of it in one flat tuple: (name, endpoint,
    rule) per entry in _entries' order. A lookup scans it once. At 10,000 endpoints each object a
    lookup touches is a likely cache miss: this is one object where a dict of names, the name strings
    and a tuple per name were four or five."""

    __slots__ = ()

    @classmethod
    def make(cls, members: list[tuple[T, Matchers]], rules: dict[_Rule, _Rule]) -> _FlatGroup:
        return cls(item for name, pairs in _entries(members, rules) for item in _row(name, pairs))

    # The endpoint for this request and which matcher decided: _scan itself, the tuple its entries.
    pick = _scan


def _headers_match(wanted: tuple[tuple[str, frozenset[str]], ...], headers: Mapping[str, str | None]) -> bool:
    for name, values in wanted:
        value = headers.get(name)
        if value is None or value not in values:  # None: absent, or sent more than once
            return False
    return True


class Selection(NamedTuple, Generic[T]):
    """A request routed by path and matchers: `key` and `rest` as in Match, `decided_by` the matcher
    that chose `value` among the endpoints whose path keys match, `method_allowed` False when the
    endpoints there match host and headers but none serves the method (the proxy answers 405 with
    `allow`)."""

    key: str
    value: T
    rest: str
    decided_by: str
    method_allowed: bool
    allow: frozenset[str]


class MatcherTable(Generic[T]):
    """§12's selection over route keys shared by several endpoints with hosts, match_headers and methods.

    Built from (route key, value, matchers) triples. Walks the request path's prefixes longest first
    like RouteTable (one dict probe per distinct key depth); at a key, the endpoints matching the
    request's host (exact, then wildcard, then none) and headers (those with `match_headers` first)
    are tried in that order for the method. A key where no endpoint matches host and headers does not
    serve the request: a shorter key may. So a lookup costs a few dict probes and the handful of
    endpoints sharing one key and host, whatever the number of endpoints.

    `plain` is True when no endpoint uses a matcher and no key is shared: then `routes` (a RouteTable
    of the same entries) answers exactly as before §12, at the same cost, and callers use it.
    """

    def __init__(self, entries: Iterable[tuple[str, T, Matchers]]) -> None:
        grouped: dict[str, list[tuple[T, Matchers]]] = {}
        # One object per distinct method set and header rule: the few that 10,000 endpoints use stay
        # in cache, where one each per endpoint would be a cache miss per lookup.
        shared: dict[Any, Any] = {}
        rules: dict[_Rule, _Rule] = {}
        for key, value, matchers in entries:
            methods = shared.setdefault(matchers.methods, matchers.methods)
            headers = shared.setdefault(matchers.headers, matchers.headers)
            grouped.setdefault(key, []).append((value, Matchers(matchers.hosts, headers, methods)))
        self.plain = all(len(members) == 1 and members[0][1].plain for members in grouped.values())
        self.routes: RouteTable[T] = RouteTable((key, members[0][0]) for key, members in grouped.items())
        groups: dict[str, _Group[T] | _FlatGroup] = {}
        if not self.plain:
            # Keys with the same endpoints (`/v1/name` and `/name` of a default version) share a group.
            made: dict[tuple[tuple[int, Matchers], ...], _Group[T] | _FlatGroup] = {}
            for key, members in grouped.items():
                identity = tuple((id(value), matchers) for value, matchers in members)
                group = made.get(identity)
                if group is None:
                    flat = sum(len(matchers.hosts) or 1 for _, matchers in members) <= _FLAT_MAX
                    group = made[identity] = _FlatGroup.make(members, rules) if flat else _Group(members, rules)
                groups[key] = group
        self._groups: RouteTable[_Group[T] | _FlatGroup] = RouteTable(groups)
        self._members = grouped
        names = {name for members in grouped.values() for _, m in members for name, _ in m.headers}
        # The header names some endpoint matches on, as ASGI spells them (lower-case bytes).
        self.header_names: frozenset[bytes] = frozenset(name.encode("latin-1") for name in names)

    def __len__(self) -> int:
        return len(self.routes)

    def header_values(self, raw_headers: Iterable[tuple[bytes, bytes]]) -> Mapping[str, str | None]:
        """The request headers some `match_headers` names, name → value; a header sent more than once
        maps to None, which no matcher accepts (a client cannot pick a route by repeating a header that
        an upstream or another proxy would read differently)."""
        wanted = self.header_names
        if not wanted:
            return _NO_HEADERS
        found: dict[str, str | None] = {}
        for name, value in raw_headers:
            if name in wanted:
                text = name.decode("latin-1")
                found[text] = None if text in found else value.decode("latin-1")
        return found

    def select(
        self, raw_path: str, *, host: str = "", method: str = "GET", headers: Mapping[str, str | None] | None = None
    ) -> Selection[T] | None:
        """The endpoint for a request, or None (no key, or no endpoint matching host and headers).

        `host` as request_host() gives it. Raises UnsafePath like RouteTable.match.
        """
        if self.plain:
            found = self.routes.match(raw_path)
            if found is None:
                return None
            methods = self._members[found.key][0][1].methods
            return _new(Selection, (found.key, found.value, found.rest, DECIDED_PATH, method in methods, methods))
        selected: Match[Any] | None = self._groups.match(raw_path, host, method, headers or _NO_HEADERS)
        if selected is None:
            return None
        picked: _Picked[T] = selected.value  # what the group picked, in place of the group
        value, decided, allow, allowed = picked
        return _new(Selection, (selected.key, value, selected.rest, decided, allowed, allow))


def ambiguous(a: Matchers, b: Matchers) -> bool:
    """Whether some request could match both endpoints on one route key at the same rank of §12's order
    (same host tier, both or neither with match_headers) with a method both serve: then no request
    could choose between them, and the document is refused."""
    if not a.methods & b.methods:
        return False
    if bool(a.headers) != bool(b.headers):
        return False
    if a.headers:
        b_headers = dict(b.headers)
        for name, values in a.headers:
            other = b_headers.get(name)
            if other is not None and not values & other:
                return False  # no single value of `name` satisfies both
    if not a.hosts or not b.hosts:
        return not a.hosts and not b.hosts  # with hosts vs without: always different tiers
    # Same tier: a name both list exactly, or a wildcard both list (it covers names neither lists
    # exactly, since a wildcard stands for endlessly many).
    return bool(set(a.hosts) & set(b.hosts))


def ambiguous_pairs(members: list[tuple[T, Matchers]]) -> list[tuple[T, T]]:
    """The pairs of endpoints on one route key that `ambiguous` finds, in document order. Compared only
    within a host bucket (each exact name, each wildcard, no hosts), so 10,000 virtual hosts on one key
    are not 50 million comparisons."""
    buckets: dict[str, list[int]] = {}
    for index, (_, matchers) in enumerate(members):
        for host in matchers.hosts or ("",):
            buckets.setdefault(host, []).append(index)
    found: set[tuple[int, int]] = set()
    for indexes in buckets.values():
        for i, first in enumerate(indexes):
            for second in indexes[i + 1 :]:
                if (first, second) not in found and ambiguous(members[first][1], members[second][1]):
                    found.add((first, second))
    return [(members[i][0], members[j][0]) for i, j in sorted(found)]
